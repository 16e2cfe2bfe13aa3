"""Quality benchmark: MDL against the baselines per scenario x task (MDL paper, Tables 1-2).

    python -m benchmarks.quality --dataset movielens100k --seeds 3
    python -m benchmarks.quality --dataset census --models mdl mmoe ple --seeds 3
    python -m benchmarks.quality --dataset synthetic --models mdl mdl:task_tokens=false

Protocol (the same for every model):
- one backbone (d_model, num_layers, num_heads, ffn_multiplier) for all models; every
  baseline's width knob (its config's `size_field`) is set so that its parameter count
  is the closest to MDL's (the parameter budget);
- Adam for both variable groups, batch `--batch_size`, at most `--epochs` epochs with
  early stopping on the mean validation AUC over tasks (best weights restored);
- the learning rate of each model is picked from `--lrs` by that validation AUC with
  seed 0 (the test split is never looked at for any choice); then seeds 1..N-1 train at
  the chosen rate, and the N runs at that rate are evaluated on the test split.
A model spec `name:key=value:key=value` trains a config variant (e.g. an MDL ablation),
with the same budget rule for baselines and no resizing for MDL variants.

Writes benchmarks/results/<dataset>.json (`{"dataset", "command", "models", "params",
"cells": [{"scenario", "task", "results": {model: {auc_mean, auc_std, gauc_mean,
gauc_std}}, ...}], ...}`), <dataset>.md (tables: AUC/GAUC mean ± std per cell, best
baseline, MDL's relative gain, whether it exceeds the seed noise, a paired bootstrap on
the test rows; parameter counts, learning rates, training time) and <dataset>.png.

The data is parsed and encoded once per dataset (the feature encoder has no weights and
is the same for every model) and kept in memory; training runs without XLA by default,
since compiling each of the dozens of short runs costs more than it saves on CPU.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import time

import mdl_tf  # noqa: F401
import numpy as np
import tensorflow as tf
from absl import logging

from mdl_tf import data, datasets, metrics, train
from mdl_tf.datasets import synthetic
from mdl_tf.models import build_model, make_config
from mdl_tf.layers import FeatureEncoder
from mdl_tf.models.registry import BASELINES, MODELS

DATASETS = {"movielens100k": "movielens", "census": "census", "synthetic": "synthetic"}
REFERENCE = "mdl"
SYNTHETIC_ROWS = {"train": 80_000, "valid": 10_000, "test": 10_000}
BOOTSTRAP_ROUNDS = 500


@dataclasses.dataclass
class Settings:
    backbone: dict
    lrs: list
    seeds: int
    epochs: int
    patience: int
    batch_size: int
    jit_compile: bool
    warmup_steps: int = 0


@dataclasses.dataclass
class Split:
    """One split, encoded once, in memory."""
    encoded: dict          # {name: np.ndarray}
    labels: np.ndarray     # [N, N_t]
    groups: np.ndarray | None

    def dataset(self, batch_size, seed=None):
        ds = tf.data.Dataset.from_tensor_slices((self.encoded, self.labels))
        if seed is not None:
            ds = ds.shuffle(len(self.labels), seed=seed, reshuffle_each_iteration=True)
        return ds.batch(batch_size, drop_remainder=seed is not None).prefetch(2)


# --- data --------------------------------------------------------------------------------
def prepare_dataset(name, data_dir, work_dir, synthetic_rows=None, schema_path=None):
    """(schema, directory of its train/valid/test files). `schema_path` replaces the
    built-in schema of a recipe dataset (e.g. the same files with other feature groups)."""
    if name == "synthetic":
        rows = synthetic_rows or SYNTHETIC_ROWS
        out = os.path.join(work_dir, f"synthetic_data_{rows['train']}")
        if not os.path.exists(os.path.join(out, "schema.yaml")):
            synthetic.prepare(out, rows=rows)
        schema = datasets.load_schema(os.path.join(out, "schema.yaml"))
        return schema, datasets.resolve(schema, None)
    schema = datasets.load_schema(schema_path or DATASETS[name])
    return schema, datasets.resolve(schema, data_dir, os.path.join(work_dir, f"{name}_data"))


def load_splits(schema, data_dir):
    """{split: Split}: parsed and encoded once (the encoder has no trainable weights)."""
    encoder = FeatureEncoder(schema.features, schema.scenario_names, schema.scenario.separator)
    out = {}
    for split in ("train", "valid", "test"):
        encoded, labels, groups = [], [], []
        for raw, y in data.make_dataset(schema, split, data_dir=data_dir, batch_size=8192):
            if data.GROUP_KEY in raw:
                groups.append(raw.pop(data.GROUP_KEY).numpy())
            encoded.append({k: v.numpy() for k, v in encoder(raw).items()})
            labels.append(y.numpy())
        out[split] = Split({k: np.concatenate([e[k] for e in encoded]) for k in encoded[0]},
                           np.concatenate(labels), np.concatenate(groups) if groups else None)
    return out


# --- models and the parameter budget -------------------------------------------------------
def parse_spec(spec):
    """'name:key=value:...' -> (name, {key: value})."""
    name, *items = spec.split(":")
    if name not in MODELS:
        raise SystemExit(f"unknown model '{name}' in '{spec}'; choose from {', '.join(MODELS)}")
    overrides = dict(item.split("=", 1) for item in items)
    return name, overrides


def count_params(name, schema, overrides):
    model = build_model(name, schema, make_config(name, overrides)).build_from_schema()
    return model.count_params()


def sized_overrides(name, schema, overrides, target):
    """Overrides with the model's size_field set so its parameter count is closest to target
    (bisection on the width: the count grows with it)."""
    field = MODELS[name].config_class.size_field
    if name == REFERENCE or field in overrides:
        return overrides
    lo, hi = 4, 4096
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if count_params(name, schema, {**overrides, field: mid}) <= target:
            lo = mid
        else:
            hi = mid
    best = min((lo, hi), key=lambda u: abs(count_params(name, schema, {**overrides, field: u})
                                           - target))
    return {**overrides, field: best}


# --- training and evaluation ---------------------------------------------------------------
class Runs:
    """Training runs of one model spec. The model is built and compiled once, and
    re-initialised for every (learning rate, seed): weights from a fresh model built
    with that seed, optimizer slots and step counters zeroed. The training and
    validation steps are then traced once per spec instead of once per run."""

    def __init__(self, name, overrides, schema, settings):
        self.name, self.overrides, self.schema, self.settings = name, overrides, schema, settings
        self.model = self._build(seed=0)
        train.compile_model(self.model, train.TrainOptions(
            learning_rate=settings.lrs[0], jit_compile=settings.jit_compile))

    def _build(self, seed):
        tf.keras.utils.set_random_seed(seed)
        return build_model(self.name, self.schema,
                           make_config(self.name, self.overrides)).build_from_schema()

    def _reset(self, lr, seed):
        self.model.set_weights(self._build(seed).get_weights())
        for optimizer in (self.model.optimizer, self.model.embedding_optimizer):
            for v in optimizer.variables():        # Adam: iteration, m and v slots
                v.assign(tf.zeros_like(v))
            optimizer.learning_rate = lr

    def fit(self, splits, lr, seed):
        """Trains with early stopping; (seconds, validation AUC per epoch)."""
        self._reset(lr, seed)
        tf.keras.utils.set_random_seed(seed)
        callbacks = [train.MeanValidationAUC(self.schema.task_names)]
        if self.settings.warmup_steps:
            callbacks.append(LinearWarmup(lr, self.settings.warmup_steps))
        if self.settings.patience > 0:
            callbacks.append(tf.keras.callbacks.EarlyStopping(
                "val_auc_mean", mode="max", patience=self.settings.patience,
                restore_best_weights=True))
        start = time.time()
        history = self.model.fit(splits["train"].dataset(self.settings.batch_size, seed=seed),
                                 validation_data=splits["valid"].dataset(8192),
                                 epochs=self.settings.epochs, callbacks=callbacks, verbose=0)
        return time.time() - start, [round(v, 4) for v in history.history["val_auc_mean"]]


class LinearWarmup(tf.keras.callbacks.Callback):
    """Ramps both optimizers' learning rate linearly from 0 to `lr` over the first steps."""

    def __init__(self, lr, steps):
        super().__init__()
        self.lr, self.steps, self.step = lr, steps, 0

    def on_train_batch_begin(self, batch, logs=None):
        if self.step <= self.steps:
            rate = self.lr * min(1.0, (self.step + 1) / self.steps)
            for optimizer in (self.model.optimizer, self.model.embedding_optimizer):
                optimizer.learning_rate = rate
        self.step += 1


def predict(model, split):
    logits = model.predict(tf.data.Dataset.from_tensor_slices(split.encoded).batch(8192),
                           verbose=0)
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))             # [N, N_t]


def cell_metrics(schema, split, probs):
    return metrics.scenario_task_metrics(probs, split.labels, split.encoded[data.SCENARIO_KEY],
                                         schema.scenario_names, schema.task_names, split.groups)


def mean_overall_auc(result):
    return float(np.mean([c["auc"] for c in result["overall"].values()]))


def run_model(spec, schema, splits, settings, target, log):
    """LR grid on validation (seed 0), then the remaining seeds at the chosen rate."""
    name, overrides = parse_spec(spec)
    overrides = sized_overrides(name, schema, {**settings.backbone, **overrides}, target)
    runs = Runs(name, overrides, schema, settings)
    grid, results = {}, {}
    for lr in settings.lrs:
        seconds, curve = runs.fit(splits, lr, seed=0)
        grid[lr] = mean_overall_auc(cell_metrics(schema, splits["valid"],
                                                 predict(runs.model, splits["valid"])))
        results[lr] = [(predict(runs.model, splits["test"]), seconds, len(curve))]
        log(f"{spec} lr={lr:g}: valid mean AUC {grid[lr]:.4f} ({seconds:.0f}s, curve {curve})")
    lr = max(grid, key=grid.get)
    for seed in range(1, settings.seeds):
        seconds, curve = runs.fit(splits, lr, seed)
        results[lr].append((predict(runs.model, splits["test"]), seconds, len(curve)))
        log(f"{spec} lr={lr:g} seed={seed}: {seconds:.0f}s, curve {curve}")
    chosen = results[lr]
    probs = [r[0] for r in chosen]
    return {"spec": spec, "config": overrides, "params": int(runs.model.count_params()),
            "lr": lr, "valid_auc_by_lr": {f"{k:g}": round(v, 5) for k, v in grid.items()},
            "test": [cell_metrics(schema, splits["test"], p) for p in probs],
            "mean_probs": np.mean(probs, axis=0),
            "train_seconds": float(np.mean([r[1] for r in chosen])),
            "epochs": [r[2] for r in chosen]}


# --- summary -------------------------------------------------------------------------------
def paired_bootstrap_p(labels, better, worse, rng, rounds=BOOTSTRAP_ROUNDS):
    """Fraction of row resamples where AUC(better) <= AUC(worse): a one-sided p-value."""
    n, losses = len(labels), 0
    for _ in range(rounds):
        idx = rng.integers(0, n, n)
        diff = metrics.auc(labels[idx], better[idx]) - metrics.auc(labels[idx], worse[idx])
        losses += not diff > 0
    return losses / rounds


def summarise(dataset, command, schema, split, results, settings):
    specs = [r["spec"] for r in results]
    by_spec = {r["spec"]: r for r in results}
    baselines = [s for s in specs if s in BASELINES]
    rng = np.random.default_rng(0)
    cells = []
    for k, scenario in enumerate(schema.scenario_names):
        for n, task in enumerate(schema.task_names):
            cell = {"scenario": scenario, "task": task, "results": {}}
            for spec in specs:
                runs = [m["scenarios"][scenario][task] for m in by_spec[spec]["test"]]
                cell["results"][spec] = {
                    f"{key}_{stat}": float(fn([r[key] for r in runs]))
                    for key in ("auc", "gauc") for stat, fn in (("mean", np.mean),
                                                                ("std", np.std))}
            if REFERENCE in by_spec and baselines:
                cell.update(compare(cell["results"], baselines, split, k, n, by_spec, rng))
            cells.append(cell)
    return {"dataset": dataset, "command": command, "models": specs,
            "params": {s: by_spec[s]["params"] for s in specs},
            "cells": cells,
            "learning_rate": {s: by_spec[s]["lr"] for s in specs},
            "valid_auc_by_lr": {s: by_spec[s]["valid_auc_by_lr"] for s in specs},
            "train_seconds": {s: round(by_spec[s]["train_seconds"], 1) for s in specs},
            "epochs": {s: by_spec[s]["epochs"] for s in specs},
            "configs": {s: by_spec[s]["config"] for s in specs},
            "settings": dataclasses.asdict(settings)}


def compare(results, baselines, split, k, n, by_spec, rng):
    """MDL against the best baseline (by mean test AUC) of one cell."""
    best = max(baselines, key=lambda s: results[s]["auc_mean"])
    mdl, base = results[REFERENCE], results[best]
    rows = (split.encoded[data.SCENARIO_KEY][:, k] > 0) & (split.labels[:, n] >= 0)
    p = paired_bootstrap_p(split.labels[rows, n] > 0, by_spec[REFERENCE]["mean_probs"][rows, n],
                           by_spec[best]["mean_probs"][rows, n], rng)
    gain = (mdl["auc_mean"] - base["auc_mean"]) / base["auc_mean"]
    return {"best_baseline": best, "mdl_relative_gain": gain,
            "exceeds_seed_noise": bool(mdl["auc_mean"] - base["auc_mean"]
                                       > mdl["auc_std"] + base["auc_std"]),
            "bootstrap_p": p}


# --- reports -------------------------------------------------------------------------------
def pm(mean, std):
    return "n/a" if np.isnan(mean) else f"{mean:.4f} ± {std:.4f}"


def markdown(summary):
    specs, cells = summary["models"], summary["cells"]
    st = summary["settings"]
    lines = [f"# Quality benchmark: {summary['dataset']}", "",
             f"Command: `{summary['command']}`", "",
             f"Backbone for every model: {st['backbone']}. Adam (both groups), batch "
             f"{st['batch_size']}, at most {st['epochs']} epochs, early stopping on the mean "
             f"validation AUC (patience {st['patience']}); learning rate picked per model from "
             f"{st['lrs']} on validation with seed 0; {st['seeds']} seeds at that rate, "
             "evaluated on the test split. Baselines are sized to MDL's parameter count.", "",
             "## Models", "",
             "| model | params | lr | valid AUC by lr | train s/run | epochs |",
             "|---|---|---|---|---|---|"]
    for s in specs:
        lines.append(f"| {s} | {summary['params'][s]:,} | {summary['learning_rate'][s]:g} | "
                     f"{summary['valid_auc_by_lr'][s]} | {summary['train_seconds'][s]} | "
                     f"{summary['epochs'][s]} |")
    for key in ("auc", "gauc"):
        if all(np.isnan(c["results"][specs[0]][f"{key}_mean"]) for c in cells):
            continue
        lines += ["", f"## Test {key.upper()} (mean ± std over seeds)", "",
                  "| scenario | task | " + " | ".join(specs) + " |",
                  "|---|---|" + "---|" * len(specs)]
        for c in cells:
            lines.append(f"| {c['scenario']} | {c['task']} | " + " | ".join(
                pm(c["results"][s][f"{key}_mean"], c["results"][s][f"{key}_std"])
                for s in specs) + " |")
        lines.append("| mean of the cells | | " + " | ".join(
            f"{np.mean([c['results'][s][f'{key}_mean'] for c in cells]):.4f}"
            for s in specs) + " |")
    if "best_baseline" in cells[0]:
        lines += comparison_lines(cells)
    if summary.get("wall_seconds"):
        lines += ["", f"Wall time of the whole command: {summary['wall_seconds'] / 60:.1f} min."]
    return "\n".join(lines) + "\n"


def comparison_lines(cells):
    wins = sum(c["mdl_relative_gain"] > 0 for c in cells)
    clear = sum(c["exceeds_seed_noise"] for c in cells)
    significant = sum(c["bootstrap_p"] < 0.05 for c in cells)
    lines = ["", "## MDL against the best baseline of each cell (test AUC)", "",
             "| scenario | task | best baseline | its AUC | MDL AUC | MDL relative gain | "
             "exceeds seed noise | paired bootstrap p |", "|---|---|---|---|---|---|---|---|"]
    for c in cells:
        b, m = c["results"][c["best_baseline"]], c["results"][REFERENCE]
        lines.append(f"| {c['scenario']} | {c['task']} | {c['best_baseline']} | "
                     f"{b['auc_mean']:.4f} | {m['auc_mean']:.4f} | "
                     f"{100 * c['mdl_relative_gain']:+.2f}% | "
                     f"{'yes' if c['exceeds_seed_noise'] else 'no'} | {c['bootstrap_p']:.3f} |")
    lines += ["", f"MDL is above the best baseline in {wins} of {len(cells)} cells; by more "
              f"than the seed noise (difference of means > sum of the two seed stds) in "
              f"{clear}; with paired-bootstrap p < 0.05 (seed-averaged predictions, "
              f"{BOOTSTRAP_ROUNDS} resamples of the cell's test rows) in {significant}."]
    return lines


def chart(summary, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    specs, cells = summary["models"], summary["cells"]
    labels = [f"{c['scenario']}\n{c['task']}" for c in cells]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(cells)), 4.5))
    width = 0.8 / len(specs)
    for i, s in enumerate(specs):
        means = [c["results"][s]["auc_mean"] for c in cells]
        stds = [c["results"][s]["auc_std"] for c in cells]
        ax.bar(np.arange(len(cells)) + (i - (len(specs) - 1) / 2) * width, means, width,
               yerr=stds, label=s, capsize=2)
    values = [c["results"][s]["auc_mean"] for c in cells for s in specs]
    ax.set_ylim(min(values) - 0.02, min(1.0, max(values) + 0.01))
    ax.set_xticks(np.arange(len(cells)))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("test AUC (mean ± std over seeds)")
    ax.set_title(f"{summary['dataset']}: test AUC per scenario x task")
    ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def json_safe(value):
    """NaN (an undefined metric, e.g. GAUC without groups) -> None, recursively."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


def from_json(value):
    """The inverse of json_safe for the metric fields: None -> NaN."""
    if isinstance(value, dict):
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return float("nan") if value is None else value


def write_reports(summary, out_dir, write_json=True):
    os.makedirs(out_dir, exist_ok=True)
    base = os.path.join(out_dir, summary["dataset"])
    if write_json:
        with open(base + ".json", "w") as fh:
            json.dump(json_safe(summary), fh, indent=2)
    with open(base + ".md", "w") as fh:
        fh.write(markdown(summary))
    chart(summary, base + ".png")
    return base


# --- CLI -----------------------------------------------------------------------------------
def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", choices=sorted(DATASETS))
    p.add_argument("--render", metavar="JSON",
                   help="only rewrite the .md and .png of an existing results JSON")
    p.add_argument("--data_dir", default=None, help="raw files of the dataset's recipe")
    p.add_argument("--schema", default=None,
                   help="a schema YAML: any dataset (e.g. from mdl_tf.infer; --dataset not "
                   "needed), or one replacing a built-in dataset's schema (same recipe)")
    p.add_argument("--name", default=None, help="name of the outputs <out_dir>/<name>.json, "
                   ".md, .png (default: --dataset, or the schema's name)")
    p.add_argument("--models", nargs="+", default=[REFERENCE, *BASELINES],
                   help="model names or name:key=value:... variants")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--lrs", default="2e-3,4e-3", help="learning-rate grid (comma-separated)")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--patience", type=int, default=1)
    p.add_argument("--batch_size", type=int, default=1024)
    p.add_argument("--d_model", type=int, default=32)
    p.add_argument("--num_layers", type=int, default=2)
    p.add_argument("--num_heads", type=int, default=4)
    p.add_argument("--ffn_multiplier", type=int, default=2)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--warmup_steps", type=int, default=0,
                   help="linear learning-rate warm-up over this many steps (0: none)")
    p.add_argument("--jit_compile", action="store_true",
                   help="XLA-compile training steps (slower overall for short CPU runs)")
    p.add_argument("--out_dir", default="benchmarks/results")
    p.add_argument("--work_dir", default="runs/bench_quality")
    return p.parse_args(argv)


COMMITTED_RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def output_name(args):
    """The outputs' name; SystemExit when a custom schema would write into the repository's
    committed results (they hold the built-in datasets' reference numbers only)."""
    custom = args.schema is not None or args.dataset not in DATASETS
    if custom and os.path.abspath(args.out_dir) == COMMITTED_RESULTS:
        raise SystemExit(f"--schema runs do not write into {COMMITTED_RESULTS} (the committed "
                         "results of the built-in datasets): give --out_dir")
    if args.name:
        return args.name
    if args.dataset and not args.schema:
        return args.dataset
    return datasets.load_schema(args.schema).name


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.render:
        with open(args.render) as fh:
            summary = from_json(json.load(fh))
        print(f"rewrote {write_reports(summary, os.path.dirname(args.render), False)}.md, .png")
        return
    if not args.dataset and not args.schema:
        raise SystemExit("--dataset or --schema is required")
    name = output_name(args)
    logging.set_verbosity(logging.WARNING)
    command = "python -m benchmarks.quality " + shlex.join(argv)
    settings = Settings(
        backbone={"d_model": args.d_model, "num_layers": args.num_layers,
                  "num_heads": args.num_heads, "ffn_multiplier": args.ffn_multiplier,
                  "dropout": args.dropout},
        lrs=[float(x) for x in args.lrs.split(",")], seeds=args.seeds, epochs=args.epochs,
        patience=args.patience, batch_size=args.batch_size, jit_compile=args.jit_compile,
        warmup_steps=args.warmup_steps)
    start = time.time()

    def log(msg):
        print(f"[{time.time() - start:6.0f}s] {msg}", flush=True)

    schema, data_dir = prepare_dataset(args.dataset or name, args.data_dir, args.work_dir,
                                       schema_path=args.schema)
    splits = load_splits(schema, data_dir)
    log(f"{name}: {len(splits['train'].labels)} train rows encoded")
    target = count_params(REFERENCE, schema, settings.backbone)
    results = [run_model(spec, schema, splits, settings, target, log) for spec in args.models]
    summary = summarise(name, command, schema, splits["test"], results, settings)
    summary["wall_seconds"] = round(time.time() - start, 1)
    base = write_reports(summary, args.out_dir)
    log(f"wrote {base}.json, .md, .png")
    print(markdown(summary))


if __name__ == "__main__":
    main()
