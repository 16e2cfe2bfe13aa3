"""Scaling sweep (the MDL paper's Fig 2): quality against parameters and FLOPs, MDL vs MMoE.

    python -m benchmarks.scaling [--d_models 16,32,64] [--layers 1,2] [--epochs 2]

On the synthetic dataset, for every width d and depth L: MDL with that backbone, and
MMoE on the same backbone with its expert width sized to MDL's parameter count (as in
benchmarks.quality). One seed, a fixed learning rate and early stopping on validation;
quality is the mean test AUC over the tasks. FLOPs are counted from the traced
forward graph of one example: 2 x the multiply-adds of every MatMul, BatchMatMul and
Einsum (elementwise ops, softmax and normalisation are left out; they are a small
share). Writes benchmarks/results/scaling.{json,md,png}.
"""
import json
import os
import shlex
import sys
import time

from benchmarks import flags

# --help answers before TensorFlow loads (tens of seconds on a busy machine).
flags.start_script(__name__, __doc__, flags.scaling_parser)

import mdl_tf  # noqa: F401
import numpy as np
import tensorflow as tf
from absl import logging

from benchmarks import quality

MODELS = ("mdl", "mmoe")
ROWS = {"train": 40_000, "valid": 8_000, "test": 8_000}


def forward_flops(model, split):
    """FLOPs of one example's forward pass, from the traced graph's contractions."""
    spec = {k: tf.TensorSpec([1, *v.shape[1:]], tf.as_dtype(v.dtype))
            for k, v in split.encoded.items()}
    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec).graph
    return sum(_op_flops(op) for op in graph.get_operations())


def _op_flops(op):
    if op.type == "Einsum":
        equation = op.get_attr("equation").decode()
        inputs, _ = equation.split("->")
        sizes = {}
        for term, tensor in zip(inputs.split(","), op.inputs):
            sizes.update(zip(term, tensor.shape.as_list()))
        return 2 * int(np.prod(list(sizes.values())))
    if op.type == "MatMul":
        a, b = (t.shape.as_list() for t in op.inputs)
        m, k = a[::-1] if op.get_attr("transpose_a") else a
        n = b[0] if op.get_attr("transpose_b") else b[1]
        return 2 * m * k * n
    if op.type in ("BatchMatMulV2", "BatchMatMulV3"):
        a, b = (t.shape.as_list() for t in op.inputs)
        m, k = a[-1:-3:-1] if op.get_attr("adj_x") else a[-2:]
        n = b[-2] if op.get_attr("adj_y") else b[-1]
        return 2 * int(np.prod(a[:-2])) * m * k * n
    return 0


def run_point(name, backbone, schema, splits, settings, target):
    overrides = quality.sized_overrides(name, schema, backbone, target)
    runs = quality.Runs(name, overrides, schema, settings)
    seconds, curve = runs.fit(splits, settings.lrs[0], seed=0)
    test = quality.cell_metrics(schema, splits["test"],
                                quality.predict(runs.model, splits["test"]))
    tables, _ = runs.model.variable_groups()
    return {"model": name, "d_model": backbone["d_model"], "num_layers": backbone["num_layers"],
            "params": int(runs.model.count_params()),
            "dense_params": int(runs.model.count_params() - sum(int(np.prod(v.shape))
                                                                for v in tables)),
            "flops": int(forward_flops(runs.model, splits["test"])),
            "test_auc_mean": quality.mean_overall_auc(test),
            "test_auc": {t: round(c["auc"], 5) for t, c in test["overall"].items()},
            "seconds": round(seconds, 1), "valid_curve": curve, "config": overrides}


def markdown(points, command):
    lines = ["# Scaling: MDL vs MMoE on the synthetic dataset (paper Fig 2)", "",
             f"Command: `{command}`", "",
             "MMoE is sized to MDL's parameter count at every (d, L). FLOPs: forward pass "
             "of one example, 2 x multiply-adds of the contractions. Quality: mean test "
             "AUC over tasks, one seed.", "",
             "| d | L | model | params | dense params | FLOPs/example | mean test AUC | "
             "train s |", "|---|---|---|---|---|---|---|---|"]
    for p in points:
        lines.append(f"| {p['d_model']} | {p['num_layers']} | {p['model']} | {p['params']:,} | "
                     f"{p['dense_params']:,} | {p['flops']:,} | {p['test_auc_mean']:.4f} | "
                     f"{p['seconds']} |")
    mdl = {(p["d_model"], p["num_layers"]): p for p in points if p["model"] == "mdl"}
    lines += ["", "| d | L | MDL - MMoE (mean test AUC) |", "|---|---|---|"]
    for p in points:
        if p["model"] == "mmoe" and (p["d_model"], p["num_layers"]) in mdl:
            gap = mdl[p["d_model"], p["num_layers"]]["test_auc_mean"] - p["test_auc_mean"]
            lines.append(f"| {p['d_model']} | {p['num_layers']} | {gap:+.4f} |")
    return "\n".join(lines) + "\n"


def chart(points, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "params", "parameters"),
                           (axes[1], "flops", "forward FLOPs per example")):
        for name, marker in zip(MODELS, "os"):
            for layers in sorted({p["num_layers"] for p in points}):
                pts = sorted((p[key], p["test_auc_mean"]) for p in points
                             if p["model"] == name and p["num_layers"] == layers)
                if pts:
                    ax.plot(*zip(*pts), marker=marker, label=f"{name}, L={layers}")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("mean test AUC")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("synthetic: quality vs size (d varies along each line)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = flags.scaling_parser(__doc__).parse_args(argv)
    logging.set_verbosity(logging.WARNING)
    settings = quality.Settings(backbone={}, lrs=[args.lr], seeds=1, epochs=args.epochs,
                                patience=1, batch_size=args.batch_size, jit_compile=False)
    schema, data_dir = quality.prepare_dataset("synthetic", None, args.work_dir, ROWS)
    splits = quality.load_splits(schema, data_dir)
    start, points = time.time(), []
    for layers in (int(x) for x in args.layers.split(",")):
        for d in (int(x) for x in args.d_models.split(",")):
            backbone = {"d_model": d, "num_layers": layers, "num_heads": 4}
            target = quality.count_params("mdl", schema, backbone)
            for name in MODELS:
                points.append(run_point(name, backbone, schema, splits, settings, target))
                print(f"[{time.time() - start:5.0f}s] {points[-1]['model']} d={d} L={layers}: "
                      f"{points[-1]['params']:,} params, {points[-1]['flops']:,} FLOPs, "
                      f"AUC {points[-1]['test_auc_mean']:.4f}", flush=True)
    command = "python -m benchmarks.scaling " + shlex.join(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    base = os.path.join(args.out_dir, "scaling")
    with open(base + ".json", "w") as fh:
        json.dump({"command": command, "rows": ROWS, "points": points}, fh, indent=2)
    with open(base + ".md", "w") as fh:
        fh.write(markdown(points, command))
    chart(points, base + ".png")
    print(markdown(points, command))


if __name__ == "__main__":
    main()
