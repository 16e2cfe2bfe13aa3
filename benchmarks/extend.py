"""Evidence for `mdl_tf.extend`: a scenario held out of training, then added.

    python -m benchmarks.extend --dataset epinions --epochs 1 --extend_epochs 6 --batch_size 2048
    python -m benchmarks.extend --dataset movielens --holdout age_ge35 --name extend_movielens

Protocol, per seed:
- base: MDL trained (early stopping on the mean validation AUC) on every split with the
  rows of the held-out scenario H removed (rows that belong to H at all, multi-scenario
  rows included), and H removed from the schema;
- zero-shot: `extend` with no training: H's token is a copy of the global token, so H is
  predicted with the global token only;
- extend p%: `extend --add_scenario H --train_fraction p` (only H's new token slices
  train, on p% of H's training rows, early stopping on H's validation rows);
- full retrain: MDL trained from scratch on everything (H included).
Every arm is scored on H's test rows (the full test split): AUC per task; wall time
of each arm (training, evaluation and loading; no export). Mean ± sample std over seeds.

Writes <out_dir>/<name>.json (--name, default extend; {"dataset", "command", "holdout", "settings", "tasks",
"arms": [{"arm", "fraction", "auc": {task: {"mean", "std", "values"}}, "seconds":
{"mean", "std", "values"}}]}), <name>.md and <name>.png. Held-out copies of the data go
under --work_dir (never into the repository).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import shlex
import shutil
import sys
import time

from benchmarks import flags

# --help answers before TensorFlow loads (tens of seconds on a busy machine).
flags.start_script(__name__, __doc__, flags.extend_parser)

import mdl_tf  # noqa: F401
import numpy as np
from absl import logging

from mdl_tf import data, datasets, dialect, extend, schema as schema_lib, train
from mdl_tf.datasets import synthetic
from benchmarks.quality import from_json, json_safe

SPLITS = ("train", "valid", "test")


def prepare_dataset(name, data_dir, work_dir, synthetic_rows):
    """(schema, directory of its files). synthetic: --data_dir may hold a prepared copy."""
    if name == "synthetic":
        out = data_dir or os.path.join(work_dir, "synthetic_data")
        if not os.path.exists(os.path.join(out, "schema.yaml")):
            synthetic.prepare(out, rows={"train": synthetic_rows, "valid": synthetic_rows // 4,
                                         "test": synthetic_rows // 4})
        schema = datasets.load_schema(os.path.join(out, "schema.yaml"))
        return schema, out
    if name not in datasets.BUILTIN:
        raise SystemExit(f"unknown dataset '{name}' (built-in: {', '.join(datasets.BUILTIN)})")
    schema = datasets.load_schema(name)
    return schema, datasets.resolve(schema, data_dir, os.path.join(work_dir, f"{name}_data"))


def static_schema(schema, out_path):
    """Writes `schema` without its recipe (its files are already built); returns the path."""
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    schema_lib.dump(dataclasses.replace(schema, recipe=None, recipe_options={}), out_path)
    return out_path


def hold_out(schema, data_dir, scenario, out_dir):
    """Copies every split's CSV without the rows that belong to `scenario`, and writes the
    schema without it, into out_dir; returns the schema path. Counts dropped rows."""
    if schema.format != "csv":
        raise ValueError(f"{schema.name}: hold_out reads CSV files, not {schema.format}")
    os.makedirs(out_dir, exist_ok=True)
    files = {}
    for split in SPLITS:
        files[split] = f"{split}.csv"
        with open(os.path.join(out_dir, files[split]), "w", newline="") as out:
            writer = None
            for path in data.expand_files(schema.files_for(split, data_dir)):
                # The project's one CSV dialect (mdl_tf/dialect.py), as training reads it.
                if writer is None:
                    writer = csv.DictWriter(out, dialect.read_header(path, schema.csv_delimiter),
                                            delimiter=schema.csv_delimiter)
                    writer.writeheader()
                for _, row in dialect.read_rows(path, schema.csv_delimiter):
                    parts = [p.strip() for p in
                             row[schema.scenario.column].split(schema.scenario.separator)]
                    if scenario not in parts:
                        writer.writerow(row)
    names = tuple(n for n in schema.scenario_names if n != scenario)
    base = dataclasses.replace(
        schema, scenario=dataclasses.replace(schema.scenario, names=names), files=files,
        scenario_priors={k: v for k, v in schema.scenario_priors.items() if k != scenario})
    return static_schema(base, os.path.join(out_dir, "schema.yaml"))


def _train(schema_path, data_dir, model_dir, args, seed):
    return train.train(train.TrainOptions(
        dataset=schema_path, data_dir=data_dir, model_dir=model_dir,
        config=backbone(args), epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.lr, jit_compile=False, seed=seed,
        early_stopping_patience=args.patience, eval_split="test", export=False, verbose=0))


def backbone(args):
    return {"d_model": args.d_model, "num_layers": args.num_layers,
            "num_heads": args.num_heads, "ffn_multiplier": 2}


def run_seed(seed, args, full_schema, data_dir, base_schema, log):
    """{arm: (auc per task on H's test rows, seconds)} for one seed."""
    work = os.path.join(args.work_dir, f"seed{seed}")
    shutil.rmtree(work, ignore_errors=True)   # a fresh run per seed: no resumed or finished arm
    h = args.holdout
    start = time.time()
    _train(base_schema, None, os.path.join(work, "base"), args, seed)
    out = {"base (without the scenario)": (None, time.time() - start)}
    log(f"seed {seed} base (without the scenario): {out['base (without the scenario)']}")
    arms = [("zero-shot (global token)", 0.0)] + [
        (f"extend {f:.0%}", f) for f in args.fractions]
    for name, fraction in arms:
        result = extend.extend(extend.ExtendOptions(
            model_dir=os.path.join(work, "base"), add_scenario=h, dataset=full_schema,
            data_dir=data_dir, model_dir_out=os.path.join(work, f"extend_{fraction}"),
            epochs=args.extend_epochs if fraction > 0 else 0, train_fraction=fraction,
            batch_size=args.batch_size, early_stopping_patience=args.patience,
            eval_split="test", seed=seed, export=False))
        out[name] = (_aucs(result["metrics"], h), result["seconds"])
        log(f"seed {seed} {name}: {out[name]}")
    start = time.time()
    full = _train(full_schema, data_dir, os.path.join(work, "full"), args, seed)
    out["full retrain"] = (_aucs(full["metrics"], h), time.time() - start)
    log(f"seed {seed} full retrain: {out['full retrain']}")
    return out


def seed_settings(args):
    """What a seed's results depend on: a saved seed is reused only under the same."""
    return {"dataset": args.dataset, "holdout": args.holdout, "backbone": backbone(args),
            "epochs": args.epochs, "extend_epochs": args.extend_epochs,
            "patience": args.patience, "batch_size": args.batch_size, "lr": args.lr,
            "fractions": args.fractions}


def saved_or_run_seed(seed, args, full_schema, data_dir, base_schema, log):
    """run_seed's result, saved as <work_dir>/seed<N>.json; a seed saved there under the
    same settings is reused, so an interrupted command resumes after its last whole seed."""
    path = os.path.join(args.work_dir, f"seed{seed}.json")
    if os.path.exists(path):
        with open(path) as fh:
            saved = json.load(fh)
        if saved["settings"] == json_safe(seed_settings(args)):
            log(f"seed {seed}: finished arms reused from {path}")
            # An arm without AUCs stays None; a NaN AUC (one class only) was saved as null.
            return {arm: (None if r["auc"] is None else from_json(r["auc"]), r["seconds"])
                    for arm, r in saved["arms"].items()}
    out = run_seed(seed, args, full_schema, data_dir, base_schema, log)
    with open(path, "w") as fh:
        json.dump(json_safe({"settings": seed_settings(args), "arms": {
            arm: {"auc": auc, "seconds": seconds} for arm, (auc, seconds) in out.items()}}),
            fh, indent=2)
    return out


def _aucs(result, scenario):
    return {t: c["auc"] for t, c in result["scenarios"][scenario].items()}


def _stats(values):
    values = [float(v) for v in values]
    return {"mean": float(np.mean(values)),
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
            "values": values}


def summarise(per_seed, args, tasks, command):
    arms = []
    for name in per_seed[0]:
        aucs = [r[name][0] for r in per_seed]
        arms.append({"arm": name,
                     "auc": None if aucs[0] is None else {
                         t: _stats([a[t] for a in aucs]) for t in tasks},
                     "seconds": _stats([r[name][1] for r in per_seed])})
    return {"dataset": args.dataset, "command": command, "holdout": args.holdout,
            "settings": {**{k: v for k, v in seed_settings(args).items()
                            if k not in ("dataset", "holdout")}, "seeds": args.seeds},
            "tasks": tasks, "arms": arms}


def _pm(stats):
    return f"{stats['mean']:.4f}" + (f" ± {stats['std']:.4f}" if stats["std"] else "")


def markdown(summary):
    tasks = summary["tasks"]
    lines = [f"# Adding a scenario with `mdl_tf.extend`: {summary['dataset']}", "",
             f"Command: `{summary['command']}`", "",
             f"Held-out scenario: `{summary['holdout']}`. Settings: {summary['settings']}. "
             "AUC on the held-out scenario's test rows, mean ± sample std over seeds; "
             "seconds: wall time of the arm (training + evaluation).", "",
             "| arm | " + " | ".join(f"{t} AUC" for t in tasks) + " | seconds |",
             "|---|" + "---|" * (len(tasks) + 1)]
    for arm in summary["arms"]:
        aucs = [("-" if arm["auc"] is None else _pm(arm["auc"][t])) for t in tasks]
        seconds = f"{arm['seconds']['mean']:.1f}"
        lines.append(f"| {arm['arm']} | " + " | ".join(aucs) + f" | {seconds} |")
    return "\n".join(lines) + "\n"


def chart(summary, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    arms = [a for a in summary["arms"] if a["auc"] is not None]
    tasks = summary["tasks"]
    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(arms), 3.5))
    width = 0.8 / len(tasks)
    for j, task in enumerate(tasks):
        means = [a["auc"][task]["mean"] for a in arms]
        stds = [a["auc"][task]["std"] or 0.0 for a in arms]
        ax.bar(np.arange(len(arms)) + j * width, means, width, yerr=stds, label=task)
    ax.set_xticks(np.arange(len(arms)) + 0.4 - width / 2)
    ax.set_xticklabels([a["arm"] for a in arms], rotation=20, ha="right", fontsize=8)
    low = min(a["auc"][t]["mean"] for a in arms for t in tasks)
    ax.set_ylim(max(0.0, low - 0.05), None)
    ax.set_ylabel("AUC on the held-out scenario")
    ax.set_title(f"{summary['dataset']}: adding scenario '{summary['holdout']}'")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_reports(summary, out_dir, name):
    os.makedirs(out_dir, exist_ok=True)
    base = os.path.join(out_dir, name)
    with open(base + ".json", "w") as fh:
        json.dump(json_safe(summary), fh, indent=2)
    with open(base + ".md", "w") as fh:
        fh.write(markdown(summary))
    chart(summary, base + ".png")
    return base


def parse_args(argv):
    return flags.extend_parser(__doc__).parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    args.extend_epochs = args.epochs if args.extend_epochs is None else args.extend_epochs
    logging.set_verbosity(logging.WARNING)
    command = "python -m benchmarks.extend " + shlex.join(argv)
    schema, data_dir = prepare_dataset(args.dataset, args.data_dir, args.work_dir,
                                       args.synthetic_rows)
    args.holdout = args.holdout or schema.scenario_names[-1]
    if args.holdout not in schema.scenario_names:
        raise SystemExit(f"--holdout '{args.holdout}' is not a scenario of {schema.name} "
                         f"({', '.join(schema.scenario_names)})")
    full = static_schema(schema, os.path.join(args.work_dir, "full", "schema.yaml"))
    base = hold_out(schema, data_dir, args.holdout, os.path.join(args.work_dir, "base_data"))

    def log(msg):
        print(msg, flush=True)
    per_seed = [saved_or_run_seed(seed, args, full, data_dir, base, log)
                for seed in range(args.seeds)]
    summary = summarise(per_seed, args, schema.task_names, command)
    print(markdown(summary))
    print(f"wrote {write_reports(summary, args.out_dir, args.name)}.json, .md, .png")
    return summary


if __name__ == "__main__":
    main()
