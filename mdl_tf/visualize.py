"""Attention maps of a trained MDL (the paper's Figs 3-4) and reliability diagrams.

    python -m mdl_tf.visualize --model_dir runs/demo --split test [--out_dir DIR]
    python -m mdl_tf.visualize --model_dir runs/demo --charts reliability

For every layer, the average attention that each task token and each scenario token
pays to the feature tokens (labelled with the schema's feature-group names), averaged
over heads and over the examples of the split: a task token over all examples, a
scenario token over the examples of its scenario, the global token over all examples.

Writes to `--out_dir` (default `<model_dir>/attention/`):
  task_attention_layer<l>.png, scenario_attention_layer<l>.png   heatmaps (matplotlib, Agg)
  attention.json                                                 the averages
  attention.md                                                   a page showing them

Reliability diagrams (any model; `--charts reliability`), to `--out_dir` (default
`<model_dir>/reliability/`): one panel per scenario x task of the split, the observed
positive rate against the mean predicted probability in equal-mass bins (the bins of the
ECE, mdl_tf/metrics.py), for the model's scores and, when the model directory has a
calibration (mdl_tf/calibration.py), for the calibrated ones (scenario s's maps):
  reliability.png, reliability.json ({"split", "curves": {curve: {scenario: {task:
  {"mean_predicted", "observed_rate", "count", "ece"}}}}})
"""
import inspect
import json
import os

from mdl_tf import cli, quiet

# --help answers before TensorFlow loads (tens of seconds on a busy machine).
cli.help_without_tensorflow(__name__, __doc__, cli.define_visualize_flags)
quiet.load_tensorflow_quietly(__name__)  # without the CUDA-stub lines of CPU-only machines

import mdl_tf  # noqa: F401
import numpy as np
import tensorflow as tf
from absl import app, flags, logging

from mdl_tf import calibration, data, evaluate, metrics, runs

KINDS = ("task", "scenario")
CHARTS = cli.CHARTS


def token_names(schema, kind, num_tokens):
    if kind == "task":
        return list(schema.task_names)
    names = list(schema.scenario_names)
    return names + ["global"] if num_tokens > len(names) else names


def average_attention(model, schema, split, data_dir, batch_size=4096, max_batches=None):
    """{"task"|"scenario": [L x [tokens, N_f]]}: mean attention over heads and examples."""
    @tf.function  # not XLA: the last batch has another shape
    def forward(raw):
        encoded = model.preprocess(raw)
        _, maps = model(encoded, training=False, return_attention=True)
        heads_mean = {k: [tf.reduce_mean(w, axis=1) for w in v] for k, v in maps.items()}
        return heads_mean, encoded[data.SCENARIO_KEY]                  # [B, Q, N_f], [B, N_s]

    sums, counts = {}, {}
    ds = data.make_dataset(schema, split, data_dir=data_dir, batch_size=batch_size)
    for i, (raw, _) in enumerate(ds):
        if max_batches is not None and i >= max_batches:
            break
        raw.pop(data.GROUP_KEY, None)
        maps, membership = forward(raw)
        for kind, layers in maps.items():
            for l, weights in enumerate(layers):
                rows = _example_weights(kind, membership.numpy(), weights.shape[1])  # [B, Q]
                sums[kind, l] = sums.get((kind, l), 0.0) + np.einsum(
                    "bq,bqf->qf", rows, weights.numpy())                      # [Q, N_f]
                counts[kind, l] = counts.get((kind, l), 0.0) + rows.sum(axis=0)
    if not sums:
        raise ValueError("the model returns no domain attention (an MDL with "
                         "domain_attention=true and scenario or task tokens is needed)")
    averages = {}
    for kind, l in sorted(sums):
        mean = sums[kind, l] / np.maximum(counts[kind, l], 1.0)[:, None]
        averages.setdefault(kind, []).append(mean)
    return averages


def _example_weights(kind, membership, num_tokens):
    """[B, Q] 0/1: which examples count for each token's average."""
    ones = np.ones((len(membership), num_tokens))
    if kind == "task":
        return ones
    ones[:, :membership.shape[1]] = membership > 0   # scenario tokens: own examples only
    return ones                                        # the global token (last): all


def plot(matrix, rows, columns, title, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(columns), 1.0 + 0.55 * len(rows)))
    image = ax.imshow(matrix, cmap="viridis", vmin=0.0, aspect="auto")
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels(columns, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(rows)
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, f"{value:.2f}", ha="center", va="center",
                color="white" if value < 0.6 * matrix.max() else "black", fontsize=8)
    ax.set_xlabel("feature token (group)")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(averages, schema, model_name, split, out_dir):
    """PNGs, attention.json and attention.md; returns the page's path."""
    os.makedirs(out_dir, exist_ok=True)
    groups = list(schema.groups)
    lines = [f"# Domain attention over the feature tokens: {schema.name} / {model_name}", "",
             f"Split `{split}`. Each row: one domain token's attention over the feature "
             "tokens, averaged over heads and examples (a scenario token over its "
             "scenario's examples, task and global tokens over all). Rows sum to 1.", ""]
    report = {"split": split, "feature_groups": groups}
    for kind in KINDS:
        for l, matrix in enumerate(averages.get(kind, [])):
            names = token_names(schema, kind, matrix.shape[0])
            png = f"{kind}_attention_layer{l}.png"
            plot(matrix, names, groups, f"{kind} tokens, layer {l}", os.path.join(out_dir, png))
            lines += [f"## {kind.capitalize()} tokens, layer {l}", "", f"![{png}]({png})", "",
                      "| token | " + " | ".join(groups) + " |", "|---|" + "---|" * len(groups)]
            lines += [f"| {n} | " + " | ".join(f"{v:.3f}" for v in row) + " |"
                      for n, row in zip(names, matrix)]
            lines.append("")
            report.setdefault(kind, []).append({n: dict(zip(groups, row.round(5).tolist()))
                                                for n, row in zip(names, matrix)})
    with open(os.path.join(out_dir, "attention.json"), "w") as fh:
        json.dump(report, fh, indent=2)
    page = os.path.join(out_dir, "attention.md")
    with open(page, "w") as fh:
        fh.write("\n".join(lines))
    return page


def visualize(model_dir, split="test", out_dir=None, data_dir=None, batch_size=4096,
              max_batches=None):
    """Restores the model of `model_dir` and writes its attention maps; returns the page."""
    model, schema, info = runs.restore_model(model_dir)
    if "return_attention" not in inspect.signature(model.call).parameters:
        raise ValueError(f"model '{info['model']}' has no domain attention to show; "
                         "attention maps need an MDL model directory")
    averages = average_attention(model, schema, split, data_dir or info["data_dir"],
                                 batch_size, max_batches)
    return write_report(averages, schema, info["model"], split,
                        out_dir or os.path.join(model_dir, "attention"))


def reliability_curves(model_dir, split="test", data_dir=None, batch_size=4096):
    """(schema, {curve: {scenario: {task: reliability bins + "ece"}}}): the model's scores
    ("model") and, with a calibration in model_dir, the calibrated ones (scenario s's
    rows with s's maps, as scenario_<s> serves them)."""
    model, schema, info = runs.restore_model(model_dir)
    probs, labels, membership, _ = evaluate.predict_split(
        model, schema, split, data_dir or info["data_dir"], batch_size)
    scores = {"model": np.repeat(probs[:, None, :], schema.num_scenarios, axis=1)}
    fitted = calibration.load_for(model_dir, schema)
    if fitted is not None:
        scores[f"calibrated ({fitted.method})"] = fitted.per_scenario(probs).numpy()
    curves = {}
    for name, p in scores.items():                                        # [N, N_s, N_t]
        curves[name] = {}
        for k, scenario in enumerate(schema.scenario_names):
            curves[name][scenario] = {}
            for n, task in enumerate(schema.task_names):
                keep = (membership[:, k] > 0) & (labels[:, n] >= 0)
                curves[name][scenario][task] = {
                    **metrics.reliability_bins(labels[keep, n], p[keep, k, n]),
                    "ece": metrics.ece(labels[keep, n], p[keep, k, n])}
    return schema, curves


def plot_reliability(schema, curves, split, path):
    """A grid of reliability diagrams: rows scenarios, columns tasks, one line per curve."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows, cols = schema.scenario_names, schema.task_names
    fig, axes = plt.subplots(len(rows), len(cols), squeeze=False,
                             figsize=(1.0 + 2.6 * len(cols), 0.6 + 2.4 * len(rows)))
    for (i, scenario), (j, task) in ((a, b) for a in enumerate(rows) for b in enumerate(cols)):
        ax = axes[i][j]
        cells = {name: c[scenario][task] for name, c in curves.items()}
        top = max([max(c["mean_predicted"] + c["observed_rate"], default=0.0)
                   for c in cells.values()] + [1e-3])
        ax.plot([0, top], [0, top], color="grey", lw=0.8, ls="--")
        for name, c in cells.items():
            ax.plot(c["mean_predicted"], c["observed_rate"], marker="o", ms=3,
                    label=f"{name}: ECE {c['ece']:.4f}")
        ax.set_title(f"{scenario} / {task}", fontsize=9)
        ax.legend(fontsize=6, loc="upper left")
        ax.tick_params(labelsize=7)
        if i == len(rows) - 1:
            ax.set_xlabel("mean predicted", fontsize=8)
        if j == 0:
            ax.set_ylabel("observed rate", fontsize=8)
    fig.suptitle(f"Reliability (equal-mass bins), split {split}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def reliability(model_dir, split="test", out_dir=None, data_dir=None, batch_size=4096):
    """Writes reliability.png and reliability.json; returns the PNG's path."""
    schema, curves = reliability_curves(model_dir, split, data_dir, batch_size)
    out_dir = out_dir or os.path.join(model_dir, "reliability")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "reliability.json"), "w") as fh:
        json.dump({"split": split, "curves": curves}, fh, indent=2)
    png = os.path.join(out_dir, "reliability.png")
    plot_reliability(schema, curves, split, png)
    return png


FLAGS = flags.FLAGS


def define_flags():
    """Command-line flags (defined only when run as a CLI, so importing stays side-effect free)."""
    cli.define_visualize_flags()


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    if not FLAGS.model_dir:
        raise app.UsageError("--model_dir is required")
    with cli.user_errors():
        if "reliability" in FLAGS.charts:
            print("wrote " + reliability(FLAGS.model_dir, FLAGS.split, FLAGS.out_dir,
                                         FLAGS.data_dir, FLAGS.batch_size))
        if "attention" in FLAGS.charts:
            page = visualize(FLAGS.model_dir, FLAGS.split, FLAGS.out_dir, FLAGS.data_dir,
                             FLAGS.batch_size, FLAGS.max_batches)
            print(f"wrote {page} and its PNGs")


if __name__ == "__main__":
    define_flags()
    app.run(main)
