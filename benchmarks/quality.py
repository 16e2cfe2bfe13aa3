"""Quality benchmark: MDL against the baselines per scenario x task (MDL paper, Tables 1-2).

    python -m benchmarks.quality --dataset movielens100k --seeds 3
    python -m benchmarks.quality --dataset census --models mdl mmoe ple sk_hgb --seeds 3
    python -m benchmarks.quality --dataset epinions --tune_train_fraction 0.3 --steps_per_eval 100
    python -m benchmarks.quality --dataset synthetic --models mdl mdl:task_tokens=false

Protocol (the same for every deep model):
- one backbone (d_model, num_layers, num_heads, ffn_multiplier) for all models; every
  baseline's width knob (its config's `size_field`) is set so that its parameter count is
  the closest to MDL's: by default the *dense* parameters (`--budget dense`: every
  trainable weight but the embedding tables), or all of them (`--budget total`);
- the optimiser pair (`--optimizer_pair`): Adam for both variable groups, or the paper's
  RMSProp (dense weights) + Adagrad (embedding tables, a small initial accumulator and
  `--adagrad_lr_scale` x the learning rate, suited to a batch-mean loss);
- every `--steps_per_eval` steps (default: once per epoch) the exact validation AUC
  (mdl_tf.metrics, no thresholds) of every scenario x task cell is computed; their mean
  drives early stopping (`--patience` evaluations without improvement; best weights
  restored) and every choice below;
- tuning, on validation only: the learning rate (`--lrs`) x the decoupled weight decay of
  the embedding tables (`--weight_decays`; the tables are what memorises the IDs), each
  point trained with `--tune_seeds` seeds on a fixed `--tune_train_fraction` of the
  training rows; the point with the best mean over those seeds wins. `--trials N` replaces
  the grid by N Optuna (TPE) trials over the same ranges;
- `--seeds` runs at the chosen point on `--train_fraction` of the training rows (the same
  valid/test rows), evaluated on the test split (the test split is never used for a choice).
A model spec `name:key=value:...` trains a config variant (e.g. an MDL ablation), with
the same budget rule for baselines and no resizing for MDL variants; the key
`optimizer_pair` sets the pair of that spec alone (`mdl:optimizer_pair=rmsprop_adagrad`).
`sk_logreg` and `sk_hgb` are scikit-learn reference rows (benchmarks/reference_models.py).

Writes <out_dir>/<name>.json (`{"dataset", "command", "models", "params": {model: {dense,
total}}, "cells": [{"scenario", "task", "results": {model: {auc_mean, auc_std, gauc_mean,
gauc_std, logloss_mean, logloss_std, per_seed: {auc, gauc, logloss}}}, ...}], "overall",
"mean_over_cells", "chosen", "tuning", ...}`; std = sample std over seeds), <name>.md
(tables: metrics per cell, the mean over cells, the overall AUC per task, MDL against the
best baseline with a paired bootstrap on the test rows; parameters, chosen settings,
training time) and <name>.png. Progress: one line per training run, with an estimate of
the time left for the whole command.

The data is parsed and encoded once per dataset (the feature encoder has no weights and
is the same for every model) and kept in memory; training runs without XLA unless
`--jit_compile` (see BUILD.md: it pays for MDL on Epinions; off by default so that the
committed results' commands reproduce them).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import pickle
import shlex
import sys
import time

from benchmarks import flags

# --help answers before TensorFlow loads (tens of seconds on a busy machine).
flags.start_script(__name__, __doc__, flags.quality_parser)

import mdl_tf  # noqa: F401
import numpy as np
import tensorflow as tf
from absl import logging

from benchmarks import reference_models
from benchmarks.flags import DATASETS, OPTIMIZER_PAIRS, REFERENCE, SYNTHETIC_ROWS
from mdl_tf import data, datasets, metrics, train
from mdl_tf.datasets import synthetic
from mdl_tf.layers import FeatureEncoder
from mdl_tf.models import build_model, make_config
from mdl_tf.models.registry import BASELINES, MODELS

BOOTSTRAP_ROUNDS = 500
SUBSET_SEED = 0          # the rows of a --train_fraction subset: the same for every model
RUN_OPTIONS = ("optimizer_pair",)   # spec keys that are benchmark settings, not config


@dataclasses.dataclass
class Settings:
    backbone: dict
    lrs: list
    weight_decays: list
    seeds: int = 3
    tune_seeds: int = 2
    trials: int = 0                  # > 0: Optuna trials instead of the grid
    epochs: int = 6
    patience: int = 2
    steps_per_eval: int = 0          # 0: once per epoch
    batch_size: int = 1024
    budget: str = "dense"
    optimizer_pair: str = "adam"
    adagrad_initial_accumulator: float = 1e-6
    adagrad_lr_scale: float = 10.0
    train_fraction: float = 1.0
    tune_train_fraction: float = 1.0
    jit_compile: bool = False
    warmup_steps: int = 0


@dataclasses.dataclass
class Split:
    """One split, encoded once, in memory."""
    encoded: dict          # {name: np.ndarray}
    labels: np.ndarray     # [N, N_t]
    groups: np.ndarray | None

    def __len__(self):
        return len(self.labels)

    def dataset(self, batch_size, seed=None):
        """(encoded, labels) batches. With a seed: the endless shuffled training stream;
        else one pass in order.

        tf.data shuffles and batches the row numbers and each batch is one gather per
        column: shuffling and batching the rows themselves handled every feature of every
        row one by one (Epinions, 42 columns: 19 s to fill the shuffle buffer at each
        epoch, then 42 ms a batch of 1024 against 0.4 s and 2.8 ms). A shuffle's order
        depends only on its seed and buffer size, so the batches are the same as the
        rows' own shuffle gave: earlier results reproduce."""
        columns = tf.nest.map_structure(tf.convert_to_tensor, (self.encoded, self.labels))
        rows = tf.data.Dataset.range(len(self))
        if seed is not None:
            rows = rows.shuffle(len(self), seed=seed, reshuffle_each_iteration=True).repeat()
        rows = rows.batch(batch_size, drop_remainder=seed is not None)
        return rows.map(lambda i: tf.nest.map_structure(lambda c: tf.gather(c, i), columns),
                        num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)

    def take(self, rows):
        return Split({k: v[rows] for k, v in self.encoded.items()}, self.labels[rows],
                     None if self.groups is None else self.groups[rows])

    def subset(self, fraction):
        """A fixed share of the rows, the same for every model and seed; nested (a smaller
        fraction's rows are among a larger one's)."""
        if fraction >= 1.0:
            return self
        order = np.random.default_rng(SUBSET_SEED).permutation(len(self))
        return self.take(np.sort(order[:max(1, round(fraction * len(self)))]))


@dataclasses.dataclass
class BenchData:
    """A schema and its encoded splits; training subsets are cut once per fraction."""
    schema: object
    splits: dict           # {"train", "valid", "test": Split}
    _subsets: dict = dataclasses.field(default_factory=dict, repr=False)

    def train(self, fraction):
        if fraction not in self._subsets:
            self._subsets[fraction] = self.splits["train"].subset(fraction)
        return self._subsets[fraction]


# --- data --------------------------------------------------------------------------------
def prepare_dataset(name, data_dir, work_dir, synthetic_rows=None, schema_path=None):
    """(schema, directory of its train/valid/test files). `schema_path` replaces the
    built-in schema of a recipe dataset (e.g. the same files with other feature groups)."""
    if name == "synthetic":
        rows = synthetic_rows or SYNTHETIC_ROWS
        out = os.path.join(work_dir, "synthetic_data_" + "_".join(
            str(rows[s]) for s in ("train", "valid", "test")))
        if not os.path.exists(os.path.join(out, "schema.yaml")):
            synthetic.prepare(out, rows=rows)
        schema = datasets.load_schema(schema_path or os.path.join(out, "schema.yaml"))
        return schema, out
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


def load_data(args, name=None):
    """BenchData of the dataset the common flags name (`name`: a --schema-only dataset)."""
    rows = None
    if args.synthetic_rows:
        rows = dict(zip(("train", "valid", "test"), map(int, args.synthetic_rows.split(","))))
    schema, data_dir = prepare_dataset(args.dataset or name, args.data_dir, args.work_dir, rows,
                                       schema_path=args.schema)
    return BenchData(schema, load_splits(schema, data_dir))


# --- models and the parameter budget -------------------------------------------------------
def parse_spec(spec):
    """'name:key=value:...' -> (name, config overrides, benchmark settings of this spec)."""
    name, *items = spec.split(":")
    if name in reference_models.MODELS:
        if items:
            raise SystemExit(f"'{spec}': the scikit-learn rows take no options")
        return name, {}, {}
    if name not in MODELS:
        raise SystemExit(f"unknown model '{name}' in '{spec}'; choose from "
                         f"{', '.join([*MODELS, *reference_models.MODELS])}")
    pairs = dict(item.split("=", 1) for item in items)
    options = {k: pairs.pop(k) for k in RUN_OPTIONS if k in pairs}
    if options.get("optimizer_pair", "adam") not in OPTIMIZER_PAIRS:
        raise SystemExit(f"'{spec}': optimizer_pair must be one of {', '.join(OPTIMIZER_PAIRS)}")
    return name, pairs, options


def param_counts(model):
    """{"dense": trainable weights other than the embedding tables, "total": all weights}."""
    _, dense = model.variable_groups()
    return {"dense": int(sum(np.prod(v.shape) for v in dense)),
            "total": int(model.count_params())}


def count_params(name, schema, overrides, budget="total"):
    model = build_model(name, schema, make_config(name, overrides)).build_from_schema()
    return param_counts(model)[budget]


def budget_target(schema, settings):
    """The reference model's parameter count under the budget rule."""
    return count_params(REFERENCE, schema, settings.backbone, settings.budget)


def sized_overrides(name, schema, overrides, target, budget="total"):
    """Overrides with the model's size_field set so its parameter count (under `budget`)
    is closest to target (bisection on the width: the count grows with it)."""
    field = MODELS[name].config_class.size_field
    if name == REFERENCE or field in overrides:
        return overrides

    @functools.lru_cache(maxsize=None)
    def count(units):
        return count_params(name, schema, {**overrides, field: units}, budget)
    lo, hi = 4, 4096
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if count(mid) <= target:
            lo = mid
        else:
            hi = mid
    return {**overrides, field: min((lo, hi), key=lambda u: abs(count(u) - target))}


# --- evaluation ----------------------------------------------------------------------------
def predict(model, split):
    logits = model.predict(split.dataset(8192), verbose=0)     # predict ignores the labels
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))             # [N, N_t]


def cell_metrics(schema, split, probs, with_groups=True):
    return metrics.scenario_task_metrics(
        probs, split.labels, split.encoded[data.SCENARIO_KEY], schema.scenario_names,
        schema.task_names, split.groups if with_groups else None)


def nanmean(values):
    """Mean of the finite values; NaN when there is none (e.g. GAUC without groups)."""
    values = np.asarray(values, float)
    return float(values[~np.isnan(values)].mean()) if (~np.isnan(values)).any() else math.nan


def sample_std(values):
    """Sample standard deviation (ddof=1) over seeds; NaN for a single seed."""
    values = np.asarray(values, float)
    return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def cell_values(result, key="auc"):
    """[value of every scenario x task cell] of one scenario_task_metrics result."""
    return [c[key] for tasks in result["scenarios"].values() for c in tasks.values()]


def mean_cell_auc(schema, split, probs):
    """The selection metric: the mean over scenario x task cells of the exact AUC."""
    return nanmean(cell_values(cell_metrics(schema, split, probs, with_groups=False)))


class ExactValidationScore(tf.keras.callbacks.Callback):
    """Adds `val_auc_exact` = score_fn(model) to the logs at the end of every Keras epoch
    (here: every steps_per_eval training steps), for EarlyStopping to monitor; keeps
    the curve [(step, score)]. score_fn computes the exact AUC on all validation rows, not
    Keras' 200-threshold approximation (which lumps the scores of a rare task together)."""

    KEY = "val_auc_exact"

    def __init__(self, score_fn, steps_per_eval):
        super().__init__()
        self.score_fn, self.steps_per_eval = score_fn, steps_per_eval
        self.curve = []

    def on_train_begin(self, logs=None):
        self.curve = []

    def on_epoch_end(self, epoch, logs=None):
        score = float(self.score_fn(self.model))
        self.curve.append(((epoch + 1) * self.steps_per_eval, round(score, 5)))
        if logs is not None:
            logs[self.KEY] = score


def exact_early_stopping(score_fn, steps_per_eval, patience, periods):
    """[ExactValidationScore, EarlyStopping on it] (in this order: the second reads the
    first's log). patience <= 0: no early stop, the best evaluation is still restored."""
    score = ExactValidationScore(score_fn, steps_per_eval)
    stop = tf.keras.callbacks.EarlyStopping(
        score.KEY, mode="max", patience=patience if patience > 0 else periods,
        restore_best_weights=True)
    return [score, stop]


# --- training runs -------------------------------------------------------------------------
class Runs:
    """Training runs of one model spec. The model is built and compiled once, and
    re-initialised for every (learning rate, weight decay, seed): weights from a fresh
    model built with that seed, optimizer variables back to their initial values. The
    training and prediction steps are then traced once per spec (and weight decay) instead
    of once per run. Finished runs are kept: a tuning run on the final training rows is
    reused as a final seed."""

    def __init__(self, name, overrides, bench, settings):
        self.name, self.overrides, self.bench, self.settings = name, overrides, bench, settings
        self.model = self._build(seed=0)
        dense, embedding = OPTIMIZER_PAIRS[settings.optimizer_pair]
        train.compile_model(self.model, train.TrainOptions(
            learning_rate=settings.lrs[0], optimizer=dense, embedding_optimizer=embedding,
            adagrad_initial_accumulator=settings.adagrad_initial_accumulator,
            jit_compile=settings.jit_compile))
        self.embedding_lr_scale = settings.adagrad_lr_scale if embedding == "adagrad" else 1.0
        # The dense, embedding and (MDL domain_learning_rate / domain_weight_decay) domain
        # optimizers: every one is reset between runs.
        self.optimizers = [o for o, _ in self.model.optimizer_groups()]
        # Every optimizer variable starts as a constant (step 0, zero moments, Adagrad's
        # initial accumulator): keep that constant, not a copy of the slots.
        self.initial = [(v, tf.reshape(v, [-1])[0].numpy()) for o in self.optimizers
                        for v in o.variables()]
        self.done = {}

    def _build(self, seed):
        tf.keras.utils.set_random_seed(seed)
        return build_model(self.name, self.bench.schema,
                           make_config(self.name, self.overrides)).build_from_schema()

    def _reset(self, lr, weight_decay, seed):
        self.model.set_weights(self._build(seed).get_weights())
        for v, value in self.initial:
            v.assign(tf.fill(tf.shape(v), tf.constant(value, v.dtype)))
        train.set_learning_rates(self.model, lr)
        embedding = self.model.embedding_optimizer
        embedding.learning_rate = lr * self.embedding_lr_scale
        if (weight_decay or None) != embedding.weight_decay:
            # The decay is read when the train step is traced: trace it again.
            embedding.weight_decay = weight_decay or None
            self.model.train_function = None

    def run(self, fraction, lr, weight_decay, seed, report):
        """Trains on `fraction` of the training rows (once per arguments) and returns
        {"valid_auc", "best_step", "steps", "seconds", "curve"}, plus "test_probs" when
        the rows are the final ones (--train_fraction). `report(work, text)` is called
        after every run that trained."""
        key = (fraction, lr, weight_decay, seed)
        if key not in self.done:
            result = self.fit(self.bench.train(fraction), lr, weight_decay, seed)
            if fraction == self.settings.train_fraction:
                result["test_probs"] = predict(self.model, self.bench.splits["test"])
            report(fraction, f"lr={lr:.3g} wd={weight_decay:g} seed={seed} "
                   f"rows={fraction:g}: valid AUC {result['valid_auc']:.4f} at step "
                   f"{result['best_step']}/{result['steps']} ({result['seconds']:.0f}s)")
            self.done[key] = result
        return self.done[key]

    def fit(self, train_split, lr, weight_decay, seed):
        s, valid = self.settings, self.bench.splits["valid"]
        self._reset(lr, weight_decay, seed)
        tf.keras.utils.set_random_seed(seed)
        per_epoch = max(1, len(train_split) // s.batch_size)
        every = min(s.steps_per_eval or per_epoch, per_epoch * s.epochs)
        periods = max(1, math.ceil(s.epochs * per_epoch / every))
        callbacks = exact_early_stopping(
            lambda model: mean_cell_auc(self.bench.schema, valid, predict(model, valid)),
            every, s.patience, periods)
        if s.warmup_steps:
            callbacks.append(LinearWarmup(
                [(o, o.learning_rate.numpy()) for o in self.optimizers], s.warmup_steps))
        start = time.time()
        self.model.fit(train_split.dataset(s.batch_size, seed=seed), steps_per_epoch=every,
                       epochs=periods, callbacks=callbacks, verbose=0)
        score, stop = callbacks[:2]
        return {"valid_auc": stop.best if np.isfinite(stop.best) else math.nan,
                "best_step": (stop.best_epoch + 1) * every,
                "steps": len(score.curve) * every, "seconds": time.time() - start,
                "curve": score.curve}


class LinearWarmup(tf.keras.callbacks.Callback):
    """Ramps each optimizer's learning rate linearly from 0 to its target over the first
    steps. `targets`: [(optimizer, learning rate)]."""

    def __init__(self, targets, steps):
        super().__init__()
        self.targets, self.steps, self.step = targets, steps, 0

    def on_train_batch_begin(self, batch, logs=None):
        if self.step <= self.steps:
            for optimizer, lr in self.targets:
                optimizer.learning_rate = lr * min(1.0, (self.step + 1) / self.steps)
        self.step += 1


class Progress:
    """One line per finished training run: elapsed time and an estimate of the time left
    for the whole command (the remaining work at the rate so far; a run's work is the
    share of the training rows it trains on, so the estimate ignores that models differ
    in speed)."""

    def __init__(self, total_work):
        self.total, self.work, self.start = float(total_work), 0.0, time.time()

    def reporter(self, label):
        def report(work, text):
            self.work += work
            elapsed = time.time() - self.start
            left = elapsed / self.work * max(self.total - self.work, 0.0) if self.work else 0
            self.log(f"{label} {text}; ~{_minutes(left)} left")
        return report

    def log(self, text):
        print(f"[{_minutes(time.time() - self.start)}] {text}", flush=True)


def _minutes(seconds):
    return f"{seconds / 60:.1f} min"


def planned_work(spec, settings):
    """The work Progress counts for one spec (see Progress), before it runs."""
    name, _, options = parse_spec(spec)
    if name in reference_models.MODELS:       # one unit per fit, reused fits excluded
        points, seeds = len(reference_models.GRIDS[name]), reference_models.seeds(
            name, settings.seeds)
        tuning = min(settings.tune_seeds, seeds) if points > 1 else 0
        return points * tuning + seeds - tuning
    s = dataclasses.replace(settings, **options)
    points = s.trials or len(s.lrs) * len(s.weight_decays)
    tuning = points * s.tune_seeds * s.tune_train_fraction if points > 1 else 0.0
    finals = s.seeds * s.train_fraction
    if tuning and s.tune_train_fraction == s.train_fraction:
        finals -= min(s.seeds, s.tune_seeds) * s.train_fraction     # reused tuning runs
    return tuning + finals


# --- tuning --------------------------------------------------------------------------------
def choose(points, seeds, score):
    """(best point, trials): every point's validation score per seed and their mean; the
    best mean wins. `score(point, seed)` -> float; points are dicts."""
    trials = []
    for point in points:
        scores = [score(point, seed) for seed in seeds]
        trials.append({**point, "valid_auc_per_seed": [round(v, 5) for v in scores],
                       "valid_auc_mean": round(float(np.mean(scores)), 5)})
    best = max(trials, key=lambda t: -math.inf if np.isnan(t["valid_auc_mean"])
               else t["valid_auc_mean"])
    return {k: best[k] for k in points[0]}, trials


def tune(runs, settings, report):
    """(chosen {"learning_rate", "weight_decay"}, trials) on the validation split, each
    point trained with settings.tune_seeds seeds on the tuning rows. A grid of one point
    is not tuned (no trials)."""
    seeds = range(settings.tune_seeds)

    def score(point, seed):
        return runs.run(settings.tune_train_fraction, point["learning_rate"],
                        point["weight_decay"], seed, report)["valid_auc"]
    if settings.trials:
        return optuna_search(settings, lambda point: choose([point], seeds, score)[1][0])
    # Weight decay outermost: the train step is traced again only when it changes.
    points = [{"learning_rate": lr, "weight_decay": wd}
              for wd in settings.weight_decays for lr in settings.lrs]
    if len(points) == 1:
        return points[0], []
    return choose(points, seeds, score)


def optuna_search(settings, evaluate):
    """settings.trials Optuna TPE trials: log-uniform learning rate in [min, max] of
    settings.lrs, weight decay one of settings.weight_decays. `evaluate(point)` -> trial
    record (see choose); returns (best point, trials)."""
    try:
        import optuna
    except ImportError:
        raise SystemExit("--trials needs Optuna: pip install -e '.[bench]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    lo, hi = min(settings.lrs), max(settings.lrs)
    trials = []

    def objective(trial):
        point = {"learning_rate": trial.suggest_float("learning_rate", lo, hi, log=True)
                 if lo < hi else lo,
                 "weight_decay": trial.suggest_categorical("weight_decay",
                                                           settings.weight_decays)}
        trials.append(evaluate(point))
        return trials[-1]["valid_auc_mean"]
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=0))
    study.optimize(objective, n_trials=settings.trials)
    return dict(study.best_params, **({} if lo < hi else {"learning_rate": lo})), trials


# --- one model ----------------------------------------------------------------------------
class ResultCache:
    """Each model's finished result, pickled under the work dir and keyed by the spec, the
    model's config (defaults included), the protocol settings and the training rows: an
    interrupted benchmark, run again with the same flags, resumes after its last finished
    model instead of starting over, and a model whose defaults changed runs again."""

    def __init__(self, directory, settings, train_rows):
        self.directory = directory
        self.key = json.dumps([dataclasses.asdict(settings), train_rows], sort_keys=True)

    def _path(self, spec):
        name, overrides, _ = parse_spec(spec)
        config = ({} if name in reference_models.MODELS
                  else dataclasses.asdict(make_config(name, overrides)))
        key = f"{spec}|{self.key}|{json.dumps(config, sort_keys=True, default=str)}"
        digest = hashlib.md5(key.encode()).hexdigest()[:16]
        return os.path.join(self.directory, f"{name}-{digest}.pkl")

    def has(self, spec):
        return os.path.exists(self._path(spec))

    def get(self, spec, compute, progress):
        path = self._path(spec)
        if self.has(spec):
            progress.log(f"{spec}: finished result reused from {path}")
            with open(path, "rb") as fh:
                return pickle.load(fh)
        result = compute()
        os.makedirs(self.directory, exist_ok=True)
        with open(path + ".tmp", "wb") as fh:
            pickle.dump(result, fh)
        os.replace(path + ".tmp", path)
        return result


def run_model(spec, bench, settings, target, progress):
    """Sizing, tuning on validation, then the final seeds: the result of one spec."""
    name, overrides, options = parse_spec(spec)
    if name in reference_models.MODELS:
        return run_reference(name, bench, settings, progress)
    s = dataclasses.replace(settings, **options)
    overrides = sized_overrides(name, bench.schema, {**s.backbone, **overrides}, target,
                                s.budget)
    runs = Runs(name, overrides, bench, s)
    report = progress.reporter(spec)
    chosen, trials = tune(runs, s, report)
    finals = [runs.run(s.train_fraction, chosen["learning_rate"], chosen["weight_decay"],
                       seed, report) for seed in range(s.seeds)]
    return {**final_result(spec, bench, [f["test_probs"] for f in finals],
                           [f["valid_auc"] for f in finals]),
            "config": overrides, "params": param_counts(runs.model),
            "chosen": {**chosen, "optimizer_pair": s.optimizer_pair}, "tuning": trials,
            "train_seconds": float(np.mean([f["seconds"] for f in finals])),
            "best_steps": [f["best_step"] for f in finals]}


def run_reference(name, bench, settings, progress):
    """A scikit-learn reference row: its grid chosen on validation (mean over the tuning
    seeds, or one fit when the estimator is deterministic), then the final seeds; trained
    on --train_fraction of the training rows."""
    report = progress.reporter(name)
    valid, test = bench.splits["valid"], bench.splits["test"]
    fits = {}

    def fit(point, seed):
        key = (tuple(sorted(point.items())), seed)
        if key not in fits:
            start = time.time()
            probs = reference_models.fit_predict(name, bench.schema,
                                                 bench.train(settings.train_fraction),
                                                 [valid, test], point, seed)
            fits[key] = {"valid_auc": mean_cell_auc(bench.schema, valid, probs[0]),
                         "test_probs": probs[1], "seconds": time.time() - start}
            report(1.0, f"{point} seed={seed}: valid AUC {fits[key]['valid_auc']:.4f} "
                   f"({fits[key]['seconds']:.0f}s)")
        return fits[key]
    grid, seeds = reference_models.GRIDS[name], reference_models.seeds(name, settings.seeds)
    chosen, trials = grid[0], []
    if len(grid) > 1:
        chosen, trials = choose(grid, range(min(settings.tune_seeds, seeds)),
                                lambda point, seed: fit(point, seed)["valid_auc"])
    finals = [fit(chosen, seed) for seed in range(seeds)]
    return {**final_result(name, bench, [f["test_probs"] for f in finals],
                           [f["valid_auc"] for f in finals]),
            "config": reference_models.describe(name), "params": None, "chosen": chosen,
            "tuning": trials, "train_seconds": float(np.mean([f["seconds"] for f in finals])),
            "best_steps": None}


def final_result(spec, bench, test_probs, valid_aucs):
    return {"spec": spec, "valid_auc": [round(v, 5) for v in valid_aucs],
            "test": [cell_metrics(bench.schema, bench.splits["test"], p) for p in test_probs],
            "mean_probs": np.mean(test_probs, axis=0)}


# --- summary -------------------------------------------------------------------------------
METRICS = ("auc", "gauc", "logloss")


def seed_stats(per_seed):
    """{metric: [value per seed]} -> {metric_mean, metric_std (sample std), per_seed}."""
    out = {}
    for key, values in per_seed.items():
        out[f"{key}_mean"] = float(np.mean(values))
        out[f"{key}_std"] = sample_std(values)
    return {**out, "per_seed": per_seed}


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
            cell = {"scenario": scenario, "task": task, "results": {
                spec: seed_stats({key: [m["scenarios"][scenario][task][key]
                                        for m in by_spec[spec]["test"]] for key in METRICS})
                for spec in specs}}
            if REFERENCE in by_spec and baselines:
                cell.update(compare(cell["results"], baselines, split, k, n, by_spec, rng))
            cells.append(cell)
    return {"dataset": dataset, "command": command, "models": specs,
            "params": {s: by_spec[s]["params"] for s in specs},
            "cells": cells,
            "overall": {s: {t: seed_stats({key: [m["overall"][t][key]
                                                 for m in by_spec[s]["test"]]
                                           for key in METRICS})
                            for t in schema.task_names} for s in specs},
            "mean_over_cells": {s: seed_stats({key: [nanmean(cell_values(m, key))
                                                     for m in by_spec[s]["test"]]
                                               for key in METRICS}) for s in specs},
            "learning_rate": {s: by_spec[s]["chosen"].get("learning_rate") for s in specs},
            "chosen": {s: by_spec[s]["chosen"] for s in specs},
            "tuning": {s: by_spec[s]["tuning"] for s in specs},
            "valid_auc": {s: by_spec[s]["valid_auc"] for s in specs},
            "train_seconds": {s: round(by_spec[s]["train_seconds"], 1) for s in specs},
            "best_steps": {s: by_spec[s]["best_steps"] for s in specs},
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
    if mean is None or np.isnan(mean):
        return "n/a"
    return f"{mean:.4f}" if std is None or np.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def grid_text(st):
    """The tuning grid (or Optuna's ranges) of the settings dict `st`, in words."""
    return (f"{st['trials']} Optuna trials over lr in [{min(st['lrs']):g}, "
            f"{max(st['lrs']):g}] x embedding weight decay in {st['weight_decays']}"
            if st["trials"] else f"lr {st['lrs']} x embedding weight decay "
            f"{st['weight_decays']}")


def protocol_text(st, settings_sentence=None):
    """The protocol in words; `settings_sentence` replaces the tuning sentence where the
    settings came from elsewhere (the learning curve's --from_results)."""
    evals = (f"every {st['steps_per_eval']} steps" if st["steps_per_eval"]
             else "after every epoch")
    return (f"Backbone for every model: {st['backbone']}. Baselines sized to MDL's "
            f"{st['budget']} parameter count. Optimisers: {st['optimizer_pair']} (unless the "
            f"spec says otherwise), batch {st['batch_size']}, at most {st['epochs']} epochs; "
            f"exact validation AUC (mean over the cells) {evals}, early stopping with "
            f"patience {st['patience']}, best weights restored. " + (settings_sentence or (
                f"Tuning on validation only: {grid_text(st)}, {st['tune_seeds']} seeds per "
                f"point on {rows_text(st['tune_train_fraction'])}, best mean wins; then "
                f"{st['seeds']} seeds on {rows_text(st['train_fraction'])}, evaluated on the "
                "test split.")) + " ± is the sample std over seeds.")


def rows_text(fraction):
    """'all the training rows' or '30 % of the training rows'."""
    return ("all the training rows" if fraction >= 1
            else f"{100 * fraction:g} % of the training rows")


def markdown(summary):
    specs, cells = summary["models"], summary["cells"]
    lines = [f"# Quality benchmark: {summary['dataset']}", "",
             f"Command: `{summary['command']}`", "", protocol_text(summary["settings"]), "",
             "## Models", "",
             "| model | dense params | total params | chosen | valid AUC (final seeds) | "
             "train s/run | best step per seed |", "|---|---|---|---|---|---|---|"]
    for s in specs:
        params = summary["params"][s] or {}
        lines.append(f"| {s} | {_count(params, 'dense')} | {_count(params, 'total')} | "
                     f"{_point(summary['chosen'][s])} | {summary['valid_auc'][s]} | "
                     f"{summary['train_seconds'][s]} | {summary['best_steps'][s] or '—'} |")
    for key in METRICS:
        if all(np.isnan(c["results"][specs[0]][f"{key}_mean"]) for c in cells):
            continue
        lines += ["", f"## Test {key.upper()} (mean ± std over seeds)", "",
                  "| scenario | task | " + " | ".join(specs) + " |",
                  "|---|---|" + "---|" * len(specs)]
        for c in cells:
            lines.append(f"| {c['scenario']} | {c['task']} | " + " | ".join(
                pm(c["results"][s][f"{key}_mean"], c["results"][s][f"{key}_std"])
                for s in specs) + " |")
        mean = summary["mean_over_cells"]
        lines.append("| mean of the cells | | " + " | ".join(
            pm(mean[s][f"{key}_mean"], mean[s][f"{key}_std"]) for s in specs) + " |")
    lines += overall_lines(summary)
    lines += tuning_lines(summary)
    if "best_baseline" in cells[0]:
        lines += comparison_lines(cells)
    if summary.get("wall_seconds"):
        lines += ["", f"Wall time of the whole command: {summary['wall_seconds'] / 60:.1f} min."]
    return "\n".join(lines) + "\n"


def _count(params, key):
    return f"{params[key]:,}" if key in params else "—"


def _point(point):
    return ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in point.items())


def overall_lines(summary):
    specs, overall = summary["models"], summary["overall"]
    tasks = list(overall[specs[0]])
    lines = ["", "## Overall test AUC per task (all scenarios; mean ± std over seeds)", "",
             "| model | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for s in specs:
        lines.append(f"| {s} | " + " | ".join(
            pm(overall[s][t]["auc_mean"], overall[s][t]["auc_std"]) for t in tasks) + " |")
    return lines


def tuning_lines(summary):
    lines = ["", "## Tuning (validation AUC, mean over the cells, per seed)", ""]
    for s in summary["models"]:
        trials = summary["tuning"][s]
        if not trials:
            lines.append(f"- {s}: one setting, not tuned")
            continue
        lines.append(f"- {s}: " + "; ".join(
            f"{_point({k: v for k, v in t.items() if not k.startswith('valid_auc')})} -> "
            f"{t['valid_auc_mean']:.4f} {t['valid_auc_per_seed']}" for t in trials))
    return lines


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
              f"than the seed noise (difference of means > sum of the two sample stds over "
              f"seeds; needs >= 2 seeds) in {clear}; with paired-bootstrap p < 0.05 "
              f"(seed-averaged predictions, {BOOTSTRAP_ROUNDS} resamples of the cell's test "
              f"rows) in {significant}."]
    return lines


# Matplotlib's 10-colour cycle, then 5 dark ones (a table with MDL variants has more rows).
CHART_COLOURS = [f"C{i}" for i in range(10)] + ["black", "saddlebrown", "navy", "darkgreen",
                                                 "indigo"]


def chart(summary, path):
    """Each model's test AUC per cell minus the cell's mean over the models (one row per
    cell, the mean over cells on top): the differences between models, a few thousandths,
    stay visible however far apart the cells' AUCs are."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    specs = summary["models"]
    rows = [("mean of the cells", summary["mean_over_cells"])] + [
        (f"{c['scenario']} / {c['task']}", c["results"]) for c in summary["cells"]]
    height = 1.2 + 0.32 * len(rows)                                         # inches
    fig, ax = plt.subplots(figsize=(8, height))
    offsets = (np.arange(len(specs)) - (len(specs) - 1) / 2) * (0.7 / len(specs))
    aucs = np.array([[r[s]["auc_mean"] for s in specs] for _, r in rows], float)  # [R, M]
    counts = (~np.isnan(aucs)).sum(1)
    # NaN (no warning) for a row where no model has an AUC: a cell without positives.
    row_mean = np.nansum(aucs, 1) / np.where(counts > 0, counts, np.nan)
    for i, spec in enumerate(specs):
        diffs = aucs[:, i] - row_mean
        stds = [np.nan_to_num(r[spec]["auc_std"]) for _, r in rows]
        ax.errorbar(diffs, np.arange(len(rows)) + offsets[i], xerr=stds, fmt="o", ms=3,
                    capsize=2, label=spec, color=CHART_COLOURS[i % len(CHART_COLOURS)])
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(np.arange(len(rows)), [name for name, _ in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("test AUC minus the row's mean over the models (mean ± sample std over seeds)")
    ax.set_title(f"{summary['dataset']}: test AUC per scenario x task, relative to the "
                 "models' mean")
    ax.legend(fontsize=7, ncol=min(len(specs), 5), loc="upper center",
              bbox_to_anchor=(0.5, -0.8 / height))
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def json_safe(value):
    """NaN (an undefined metric, e.g. GAUC without groups) -> None, recursively."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if np.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


METRIC_FIELDS = ("cells", "overall", "mean_over_cells")   # of a results JSON


def from_json(value):
    """The inverse of json_safe for the metric fields: None -> NaN."""
    if isinstance(value, dict):
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return float("nan") if value is None else value


def write_json(summary, path):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as fh:
        json.dump(json_safe(summary), fh, indent=2)


def write_reports(summary, out_dir, name, write_data=True):
    base = os.path.join(out_dir, name)
    if write_data:
        write_json(summary, base + ".json")
    with open(base + ".md", "w") as fh:
        fh.write(markdown(summary))
    chart(summary, base + ".png")
    return base


# --- CLI -----------------------------------------------------------------------------------
def settings_from_args(args):
    fractions = (args.train_fraction, args.tune_train_fraction)
    if not all(0.0 < f <= 1.0 for f in fractions):
        raise SystemExit("--train_fraction and --tune_train_fraction must be in (0, 1]")
    if min(args.seeds, args.tune_seeds) < 1:
        raise SystemExit("--seeds and --tune_seeds must be >= 1")
    return Settings(
        backbone={"d_model": args.d_model, "num_layers": args.num_layers,
                  "num_heads": args.num_heads, "ffn_multiplier": args.ffn_multiplier,
                  "dropout": args.dropout},
        lrs=args.lrs, weight_decays=args.weight_decays, seeds=args.seeds,
        tune_seeds=args.tune_seeds, trials=args.trials, epochs=args.epochs,
        patience=args.patience, steps_per_eval=args.steps_per_eval,
        batch_size=args.batch_size, budget=args.budget, optimizer_pair=args.optimizer_pair,
        adagrad_initial_accumulator=args.adagrad_initial_accumulator,
        adagrad_lr_scale=args.adagrad_lr_scale, train_fraction=args.train_fraction,
        tune_train_fraction=args.tune_train_fraction, jit_compile=args.jit_compile,
        warmup_steps=args.warmup_steps)


def parse_args(argv):
    return flags.quality_parser(__doc__).parse_args(argv)


COMMITTED_RESULTS = flags.RESULTS_DIR


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
            summary = json.load(fh)
        # Undefined metrics back to NaN; elsewhere None means absent (the sk rows' params).
        summary.update({k: from_json(summary[k]) for k in METRIC_FIELDS})
        name = os.path.splitext(os.path.basename(args.render))[0]
        print(f"rewrote {write_reports(summary, os.path.dirname(args.render), name, False)}"
              ".md, .png")
        return
    if not args.dataset and not args.schema:
        raise SystemExit("--dataset or --schema is required")
    name = output_name(args)
    logging.set_verbosity(logging.WARNING)
    settings = settings_from_args(args)
    for spec in args.models:
        parse_spec(spec)                       # fail on a bad spec before any work
    command = "python -m benchmarks.quality " + shlex.join(argv)
    start = time.time()
    bench = load_data(args, name)
    cache = ResultCache(os.path.join(args.work_dir, "results", name), settings,
                        len(bench.splits["train"]))
    progress = Progress(sum(planned_work(spec, settings) for spec in args.models
                            if not cache.has(spec)))
    progress.log(f"{name}: {len(bench.splits['train'])} train rows encoded")
    target = budget_target(bench.schema, settings)
    results = [cache.get(spec, lambda spec=spec: run_model(spec, bench, settings, target,
                                                           progress), progress)
               for spec in args.models]
    summary = summarise(name, command, bench.schema, bench.splits["test"], results, settings)
    summary["wall_seconds"] = round(time.time() - start, 1)
    base = write_reports(summary, args.out_dir, name)
    progress.log(f"wrote {base}.json, .md, .png")
    print(markdown(summary))


if __name__ == "__main__":
    main()
