"""Extend a trained MDL with a new scenario or a new task, without retraining from scratch.

    python -m mdl_tf.extend --model_dir runs/x --add_scenario mall \\
        --dataset schema_with_mall.yaml --model_dir_out runs/x_mall
    python -m mdl_tf.extend --model_dir runs/x --add_task favourite --label_column favourite \\
        --model_dir_out runs/x_fav

A scenario or a task of MDL is one token. Its weights are one slice (axis 0) of each
per-token tensor of its kind: kernels [T, d_in, d_out] and biases [T, d_out] of
  scenario: scenario_tokenizer, scenario_attention_<l>/query, scenario_ffn_<l>
  task:     task_tokenizer, task_attention_<l>/query, task_ffn_<l>, task_heads
Extending builds the model of the new schema and copies every old variable; the new
token's slices start as the GLOBAL scenario token's (a new scenario: before any training
it predicts with the global token only) or as the mean of the task tokens' (a new task;
`--init_from_task T` copies task T's instead). By default (`--finetune new`) only those
slices train: a gradient mask zeroes every other gradient, so Adam leaves the rest
exactly as it was (its moments stay 0), and every old scenario's and task's outputs stay
the same (up to float reordering, < 1e-6). `--finetune all` trains everything with a small
learning rate (default 2e-4) instead; old outputs then move.

Training reads only the rows of the new scenario (or the rows that have the new label),
`--train_fraction` of them, and stops early on the mean validation AUC of those rows
(scenario: over every task; task: the new task's). The output directory is a model
directory like train's (run.json, schema.yaml, checkpoints, metrics_<split>.json on
`--eval_split`, export/<version>), whose schema and run.json carry `lineage`: one entry per
extension, oldest first ({extends, checkpoint, epoch, step, export_version, added,
finetune});
the export carries it too, as assets.extra/lineage.json.

Prior features of the new token (scenario_priors / task_priors) enter through the rows of
its tokenizer kernel that the zero-padded global (or mean) token never used: those rows
start at 0, so the new token starts equal to its source and learns what its priors add.
Its inputs must fit the tokenizer's width (the widest old token's); a prior feature with
a new embedding table gets that table, freshly initialised and trained.

Supported: MDL with scenario tokens, task tokens and domain attention, and the scenario
not a feature (the defaults). The new schema must equal the old one except for the added
scenario (or task); the old scenarios and tasks keep their order. Numeric scenario ids
("0", "1") follow the new schema's order: append new scenarios to keep old ids valid.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time

from mdl_tf import cli, quiet

# --help answers before TensorFlow loads (tens of seconds on a busy machine).
cli.help_without_tensorflow(__name__, __doc__, cli.define_extend_flags)
quiet.load_tensorflow_quietly(__name__)  # without the CUDA-stub lines of CPU-only machines

import mdl_tf  # noqa: F401
import numpy as np
import tensorflow as tf
from absl import app, flags, logging

from mdl_tf import data, evaluate, export, runs, train
from mdl_tf.contract.versions import versions_on_disk
from mdl_tf.models import build_model, make_config
from mdl_tf.options import ExtendOptions
from mdl_tf.schema import SchemaError, Task

GLOBAL = "<global>"
LINEAGE_FILE = os.path.join("assets.extra", "lineage.json")
COMPARED_KEYS = ("features", "groups", "important_features")
STEP_KEY = "model/optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"   # in train's checkpoints


def check_options(opts: ExtendOptions):
    if bool(opts.add_scenario) == bool(opts.add_task):
        raise ValueError("give exactly one of --add_scenario or --add_task")
    if opts.finetune not in ("new", "all"):
        raise ValueError(f"--finetune must be 'new' or 'all', got '{opts.finetune}'")
    if not 0.0 <= opts.train_fraction <= 1.0:
        raise ValueError(f"--train_fraction must be in [0, 1], got {opts.train_fraction}")
    if opts.add_scenario and (opts.label_column or opts.init_from_task):
        raise ValueError("--label_column and --init_from_task go with --add_task")
    if os.path.exists(os.path.join(opts.model_dir_out, "run.json")):
        raise FileExistsError(f"{opts.model_dir_out} already holds a model; pick a new "
                              "--model_dir_out")


# --- the new schema -------------------------------------------------------------------
def extended_schema(old, opts: ExtendOptions, new=None):
    """The schema of the extended model: `new` (a loaded schema) checked against `old`, or
    `old` plus the added scenario or task. Raises SchemaError naming what does not fit."""
    if new is None:
        new = _derive(old, opts)
    where = new.path or new.name
    old_dict, new_dict = old.to_dict(), new.to_dict()
    for key in COMPARED_KEYS:
        if old_dict[key] != new_dict[key]:
            raise SchemaError(f"{where}: '{key}' differs from the extended model's schema; "
                              f"extend can only add a scenario or a task")
    old_names, new_names = _names(old, opts.kind), _names(new, opts.kind)
    if opts.added in old_names:
        raise SchemaError(f"{where}: {opts.kind} '{opts.added}' is already in the model")
    if opts.added not in new_names:
        raise SchemaError(f"{where}: the schema has no {opts.kind} '{opts.added}'")
    if [n for n in new_names if n != opts.added] != old_names:
        raise SchemaError(f"{where}: the {opts.kind}s must be the model's "
                          f"({', '.join(old_names)}) in the same order, plus '{opts.added}'")
    other = "task" if opts.kind == "scenario" else "scenario"
    if _names(new, other) != _names(old, other):
        raise SchemaError(f"{where}: the {other}s differ from the model's; extend adds one "
                          f"{opts.kind} and changes nothing else")
    if opts.init_from_task and opts.init_from_task not in old.task_names:
        raise ValueError(f"--init_from_task '{opts.init_from_task}' is not a task of the "
                         f"model ({', '.join(old.task_names)})")
    return new


def _names(schema, kind):
    return list(schema.scenario_names if kind == "scenario" else schema.task_names)


def _derive(old, opts):
    if opts.kind == "scenario":
        scenario = dataclasses.replace(old.scenario,
                                       names=tuple(old.scenario.names) + (opts.add_scenario,))
        return dataclasses.replace(old, scenario=scenario)
    task = Task(name=opts.add_task, column=opts.label_column or opts.add_task)
    return dataclasses.replace(old, tasks=tuple(old.tasks) + (task,))


# --- weights ----------------------------------------------------------------------------
def token_mixing(old, new, opts: ExtendOptions):
    """(M [T_new, T_old], new_rows [T_new] bool): new per-token tensor = M @ old (axis 0).

    Scenario tokens are the scenarios then the global token; a new scenario's row copies
    the global token. Task tokens are the tasks; a new task's row is the mean of the old
    tasks' (or a copy of --init_from_task's)."""
    old_tokens, new_tokens = _names(old, opts.kind), _names(new, opts.kind)
    if opts.kind == "scenario":
        old_tokens, new_tokens = old_tokens + [GLOBAL], new_tokens + [GLOBAL]
    mixing = np.zeros([len(new_tokens), len(old_tokens)], np.float32)
    for i, name in enumerate(new_tokens):
        if name in old_tokens:
            mixing[i, old_tokens.index(name)] = 1.0
        elif opts.kind == "scenario":
            mixing[i, old_tokens.index(GLOBAL)] = 1.0
        elif opts.init_from_task:
            mixing[i, old_tokens.index(opts.init_from_task)] = 1.0
        else:
            mixing[i, :] = 1.0 / len(old_tokens)
    return mixing, np.array([n not in old_tokens for n in new_tokens])


def _key(variable):
    """A variable's name without the model's own (uniquified) name: mdl_1/x/kernel:0 -> x/kernel:0."""
    return variable.name.split("/", 1)[-1]


def transfer_weights(old_model, new_model, mixing):
    """Copies every variable of old_model into new_model; the per-token tensors that grew
    from T_old to T_new tokens (axis 0) get M @ old. Returns (grown variables, added
    variables: trainable ones the old model lacks, i.e. tables of new prior features)."""
    old_vars = {_key(v): v for v in old_model.variables}
    grown, added = [], []
    for v in new_model.variables:
        source = old_vars.get(_key(v))
        if source is None:
            if v.trainable:
                added.append(v)
            continue   # otherwise a metric's state (the new task's AUC)
        if source.shape == v.shape:
            v.assign(source)
        elif (source.shape[1:] == v.shape[1:] and source.shape[0] == mixing.shape[1]
              and v.shape[0] == mixing.shape[0]):
            # [T_new, T_old] x [T_old, ...] -> [T_new, ...]
            v.assign(tf.tensordot(mixing, source, axes=[[1], [0]]))
            grown.append(v)
        else:
            raise ValueError(f"variable {_key(v)}: shape {source.shape} in the old model, "
                             f"{v.shape} in the extended one; only the token axis may grow "
                             "(are the new token's prior features wider than the old "
                             "tokens' inputs?)")
    return grown, added


def clear_prior_rows(model, schema, kind, new_rows):
    """Zeroes the new tokens' tokenizer-kernel rows past the important features' width:
    the inputs of their prior features (the source token's rows there never saw a
    non-zero input). kernel [T, width, hidden]."""
    important = sum(1 if f.type == "dense" else f.embedding_dim
                    for f in map(schema.feature, schema.important_features))
    kernel = getattr(model, f"{kind}_tokenizer").ffn.inner.kernel
    keep = np.ones(list(kernel.shape[:2]) + [1], np.float32)                 # [T, width, 1]
    keep[np.flatnonzero(new_rows), important:] = 0.0
    kernel.assign(kernel * keep)


def new_slices_only(grown, new_rows, added=()):
    """A gradient transform for RankingModel.gradient_transform: the gradient of a grown
    per-token tensor is multiplied by a 0/1 mask over its token axis (1 = new token); an
    added variable's passes; every other gradient becomes 0. A zero gradient leaves Adam's
    moments at 0, so those weights do not move at all."""
    rows = new_rows.astype(np.float32)
    masks = {v.ref(): rows.reshape([-1] + [1] * (len(v.shape) - 1)) for v in grown}
    masks.update({v.ref(): np.float32(1.0) for v in added})

    def transform(grads, variables):
        return [None if g is None else _scale(g, masks.get(v.ref(), 0.0))
                for g, v in zip(grads, variables)]
    return transform


def _scale(grad, mask):
    if isinstance(grad, tf.IndexedSlices):   # embedding tables: every one is frozen
        return tf.IndexedSlices(grad.values * mask, grad.indices, grad.dense_shape)
    return grad * tf.constant(mask, grad.dtype)


# --- data -------------------------------------------------------------------------------
def row_filter(schema, opts: ExtendOptions):
    """(encoded example, labels) -> bool: the rows the added scenario or task learns from."""
    if opts.kind == "scenario":
        k = schema.scenario_names.index(opts.add_scenario)
        return lambda x, y: x[data.SCENARIO_KEY][k] > 0
    n = schema.task_names.index(opts.add_task)
    return lambda x, y: y[n] >= 0


def keep_fraction(ds, fraction):
    """Every row i with floor((i + 1) f) > floor(i f): `fraction` of the rows, evenly
    spaced and the same ones in every epoch (unbatched dataset)."""
    if fraction >= 1.0:
        return ds
    f = tf.constant(fraction, tf.float64)
    kept = ds.enumerate().filter(lambda i, row: tf.floor(tf.cast(i + 1, tf.float64) * f)
                                 > tf.floor(tf.cast(i, tf.float64) * f))
    return kept.map(lambda i, row: row)


def extension_datasets(model, schema, data_dir, opts: ExtendOptions):
    """(train, valid) batches of encoded rows of the added scenario or task."""
    keep = row_filter(schema, opts)

    def rows(split):
        ds = data.make_dataset(schema, split, data_dir=data_dir, batch_size=opts.batch_size,
                               bad_rows=opts.bad_rows, transform=train.encoder_transform(model))
        return ds.unbatch().filter(keep)

    # Cached in memory: the new rows are a small part of the files, and each epoch would
    # otherwise read and parse every file again to find them.
    train_rows = keep_fraction(rows("train"), opts.train_fraction).cache()
    train_ds = train_rows.shuffle(10_000, seed=opts.seed).batch(opts.batch_size)
    return train_ds, rows("valid").cache().batch(opts.batch_size)


# --- lineage ----------------------------------------------------------------------------
def lineage_entry(model_dir, opts: ExtendOptions):
    """Which model (directory, checkpoint, epoch, training step, latest export version)
    this extends."""
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    keys = {k for k, _ in tf.train.list_variables(latest)}
    versions = versions_on_disk(os.path.join(model_dir, "export"))
    added = {opts.kind: opts.added}
    if opts.add_task:
        added.update(label_column=opts.label_column or opts.add_task,
                     init_from=opts.init_from_task or "mean of the task tokens")
    return {"extends": os.path.abspath(model_dir), "checkpoint": os.path.basename(latest),
            "epoch": int(tf.train.load_variable(latest, "epoch/.ATTRIBUTES/VARIABLE_VALUE")),
            "step": int(tf.train.load_variable(latest, STEP_KEY)) if STEP_KEY in keys else None,
            "export_version": max(versions) if versions else None, "added": added,
            "finetune": opts.finetune}


def write_lineage(version_dir, lineage):
    path = os.path.join(version_dir, LINEAGE_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(list(lineage), fh, indent=2)


def read_lineage(version_dir):
    """The lineage list an extended export carries ([] for a model trained from scratch)."""
    path = os.path.join(version_dir, LINEAGE_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as fh:
        return json.load(fh)


# --- the whole step ---------------------------------------------------------------------
def prepare(opts: ExtendOptions):
    """(old model, its schema, run info, new schema, data directory)."""
    old_model, old_schema, info = runs.restore_model(opts.model_dir)
    c = old_model.config
    if info["model"] != "mdl" or not (c.scenario_tokens and c.task_tokens
                                      and c.domain_attention) or c.scenario_feature:
        raise ValueError(f"{opts.model_dir}: extend needs an MDL with scenario tokens, task "
                         "tokens and domain attention, and the scenario not a feature")
    if opts.dataset:
        new, data_dir = train.prepare_data(train.TrainOptions(
            dataset=opts.dataset, data_dir=opts.data_dir, model_dir=opts.model_dir_out))
    else:
        new, data_dir = None, opts.data_dir or info["data_dir"]
    new = extended_schema(old_schema, opts, new)
    lineage = tuple(old_schema.lineage) + (lineage_entry(opts.model_dir, opts),)
    return old_model, old_schema, info, dataclasses.replace(new, lineage=lineage), data_dir


def extend(opts: ExtendOptions) -> dict:
    """Builds, initialises, trains, evaluates and exports the extended model.

    Returns {"metrics", "export_path", "history", "model", "seconds"} ("seconds": the wall
    time of the whole step)."""
    start = time.time()
    check_options(opts)
    tf.keras.utils.set_random_seed(opts.seed)
    old_model, old_schema, info, schema, data_dir = prepare(opts)
    model = build_model(info["model"], schema,
                        make_config(info["model"], info["config"])).build_from_schema()
    mixing, new_rows = token_mixing(old_schema, schema, opts)
    grown, added = transfer_weights(old_model, model, mixing)
    clear_prior_rows(model, schema, opts.kind, new_rows)
    if opts.finetune == "new":
        model.gradient_transform = new_slices_only(grown, new_rows, added)
    lr = opts.learning_rate or (2e-3 if opts.finetune == "new" else 2e-4)
    train.compile_model(model, train.TrainOptions(learning_rate=lr,
                                                  jit_compile=opts.jit_compile))
    runs.save_run(opts.model_dir_out, info["model"], model.config, schema, data_dir)
    history = fit(model, schema, data_dir, opts)
    result = evaluate.evaluate(model, schema, opts.eval_split, data_dir,
                               evaluate.metrics_path(opts.model_dir_out, opts.eval_split))
    evaluate.print_tables(result, f"{schema.name} / extended with {opts.kind} "
                                  f"'{opts.added}' / split={opts.eval_split}")
    export_path = None
    if opts.export:
        export_path = export.export_saved_model(
            model, os.path.join(opts.model_dir_out, "export"),
            extra_assets=lambda tmp, _: write_lineage(tmp, schema.lineage))
        print(f"exported SavedModel to {export_path}")
    return {"metrics": result, "export_path": export_path, "history": history,
            "model": model, "seconds": time.time() - start}


def fit(model, schema, data_dir, opts: ExtendOptions) -> dict:
    """Trains on the new rows (no training with --epochs 0 or --train_fraction 0) and
    checkpoints the final (best, with early stopping) weights; returns the history."""
    ckpt, epoch_var = runs.checkpoint(model)
    manager = tf.train.CheckpointManager(
        ckpt, os.path.join(opts.model_dir_out, "checkpoints"), max_to_keep=3)
    history = {}
    if opts.epochs > 0 and opts.train_fraction > 0:
        train_ds, valid_ds = extension_datasets(model, schema, data_dir, opts)
        if next(iter(train_ds.take(1)), None) is None:
            raise ValueError(f"no training rows for {opts.kind} '{opts.added}' in "
                             f"{schema.files_for('train', data_dir)}")
        monitored = schema.task_names if opts.kind == "scenario" else [opts.add_task]
        callbacks = [train.EpochCheckpoint(manager, epoch_var),
                     train.MeanValidationAUC(monitored)]
        if opts.early_stopping_patience > 0:
            callbacks.append(tf.keras.callbacks.EarlyStopping(
                "val_auc_mean", mode="max", patience=opts.early_stopping_patience,
                restore_best_weights=True))
        with data.raise_data_errors(schema, data.expand_files(schema.files_for("train",
                                                                                data_dir))):
            history = model.fit(train_ds, validation_data=valid_ds, epochs=opts.epochs,
                                callbacks=callbacks, verbose=opts.verbose).history
    manager.save(checkpoint_number=opts.epochs + 1)   # the restored best weights
    return history


# --- CLI --------------------------------------------------------------------------------
FLAGS = flags.FLAGS


def define_flags():
    """Command-line flags (defined only when run as a CLI, so importing stays side-effect free)."""
    cli.define_extend_flags()


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    if not FLAGS.model_dir or not FLAGS.model_dir_out:
        raise app.UsageError("--model_dir and --model_dir_out are required")
    names = [f.name for f in dataclasses.fields(ExtendOptions)]
    opts = ExtendOptions(**{n: FLAGS[n].value for n in names if n in FLAGS})
    with cli.user_errors():
        extend(opts)


if __name__ == "__main__":
    define_flags()
    app.run(main)
