"""Which optimizer pair trains MDL best? Validation AUC per task on the synthetic dataset.

    python -m benchmarks.optimizers [--epochs 3] [--out benchmarks/results/optimizers.md]

Compares the paper's setting (RMSProp for dense weights, Adagrad for embeddings) with
Adam for both, each at a small learning-rate grid, judged on the validation split only.
"""
import json
import os
import time

from benchmarks import flags

# --help answers before TensorFlow loads (tens of seconds on a busy machine).
flags.start_script(__name__, __doc__, flags.optimizers_parser)

import mdl_tf  # noqa: F401
from absl import logging

from mdl_tf import train

SETTINGS = [("adam", "adam", 1e-3), ("adam", "adam", 2e-3), ("adam", "adam", 4e-3),
            ("rmsprop", "adagrad", 1e-3), ("rmsprop", "adagrad", 2e-3),
            ("rmsprop", "adagrad", 4e-3)]


def run(setting, epochs, work_dir):
    dense, emb, lr = setting
    name = f"{dense}+{emb}@{lr:g}"
    start = time.time()
    result = train.train(train.TrainOptions(
        model_dir=os.path.join(work_dir, name), epochs=epochs, optimizer=dense,
        embedding_optimizer=emb, learning_rate=lr,
        # Adagrad's per-coordinate steps shrink fast: the paper pairs it with a larger rate.
        embedding_learning_rate=lr * 10 if emb == "adagrad" else lr,
        export=False, verbose=0, cache_data=True))
    overall = result["metrics"]["overall"]
    return {"setting": name, "seconds": round(time.time() - start, 1),
            **{t: round(c["auc"], 4) for t, c in overall.items()}}


def main():
    args = flags.optimizers_parser(__doc__).parse_args()
    logging.set_verbosity(logging.WARNING)
    rows = [run(s, args.epochs, args.work_dir) for s in SETTINGS]
    tasks = [k for k in rows[0] if k not in ("setting", "seconds")]
    lines = ["# Optimizer choice for MDL (synthetic dataset, validation AUC, overall per task)",
             "", f"Command: `python -m benchmarks.optimizers --epochs {args.epochs}`",
             "(dense optimizer + embedding optimizer @ dense learning rate; Adagrad embeddings "
             "use 10x that rate; early stopping on mean validation AUC)", "",
             "Seconds are wall time on the machine of the run: compare AUC, not speed.", "",
             "| setting | " + " | ".join(tasks) + " | mean | seconds |",
             "|---|" + "---|" * (len(tasks) + 2)]
    for r in rows:
        mean = sum(r[t] for t in tasks) / len(tasks)
        lines.append(f"| {r['setting']} | " + " | ".join(f"{r[t]:.4f}" for t in tasks)
                     + f" | {mean:.4f} | {r['seconds']} |")
    text = "\n".join(lines) + "\n"
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        fh.write(text)
    with open(os.path.splitext(args.out)[0] + ".json", "w") as fh:
        json.dump(rows, fh, indent=2)
    print(text)


if __name__ == "__main__":
    main()
