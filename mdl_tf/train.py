"""Training: `python -m mdl_tf.train` (no flags: MDL on the built-in synthetic dataset).

    python -m mdl_tf.train --dataset movielens --data_dir ../shared/data/movielens_100k_mdmt/raw
    python -m mdl_tf.train --dataset path/to/schema.yaml --model_dir runs/x --steps 2000
    TF_CONFIG=... python -m mdl_tf.train --strategy multi_worker --model_dir /shared/runs/x

Trains (XLA only with `--jit_compile`: 1.35x on CPU at batch 2048, BUILD.md),
checkpoints every epoch and resumes from the latest checkpoint in `--model_dir`; a killed
run restarted with the same command resumes from its last backup (every `--backup_every`
steps, BackupAndRestore) and ends where it would have ended, early stopping included
(mdl_tf/resume.py); a finished run is not trained again unless `--force_retrain`. Logs to
TensorBoard, stops early on the mean validation AUC, then evaluates (per scenario x task;
writes metrics_<split>.json) and exports a SavedModel to `<model_dir>/export/<version>/`.
`--calibrate platt|isotonic` first fits a post-hoc calibration per scenario x task on the
validation split (mdl_tf/calibration.py): the metrics file then has the calibrated metrics
too, and the export serves calibrated probabilities. Every split is checked for a usable row
before training; `--bad_rows` applies to every split, final evaluation included, with
skipped rows counted per file and reason (log and run.json) and limited by
`--max_bad_fraction`; a non-finite training loss stops the run with an error. `--strategy`
and `--mixed_precision` choose the tf.distribute strategy and dtype policy
(mdl_tf/distribute.py); only the chief writes the run's files, evaluates and exports. The
CLI only parses flags into TrainOptions; `train()` is the library entry point.
"""
from __future__ import annotations

import contextlib
import gzip
import math
import os
import shutil
import sys
import time

from mdl_tf import cli, quiet

# --help answers before TensorFlow loads (tens of seconds on a busy machine).
cli.help_without_tensorflow(__name__, __doc__, cli.define_train_flags)
quiet.load_tensorflow_quietly(__name__)  # without the CUDA-stub lines of CPU-only machines

import mdl_tf  # noqa: F401
import tensorflow as tf
from absl import app, flags, logging

from mdl_tf import calibration, data, datasets, distribute, evaluate, export, resume, runs
from mdl_tf.options import (OPTIMIZERS, TrainOptions,  # noqa: F401  (train.TrainOptions: API)
                            suggested_batch_size)
from mdl_tf.models import build_model, make_config, model_names
from mdl_tf.models.base import make_encoder

BACKUP_DIR = "backup"    # under model_dir: BackupAndRestore's fault-tolerance backups
MIN_STEPS = 4            # fewer training batches per epoch than this: warn
COUNT_LIMIT_BYTES = 256 << 20   # larger training files are not counted before training


def make_optimizer(name, learning_rate, weight_decay=0.0, adagrad_initial_accumulator=0.1):
    """A Keras optimizer. weight_decay > 0: decoupled decay, w -= learning_rate *
    weight_decay * w every step (AdamW-style). Adagrad's first steps are about
    g / sqrt(initial accumulator): with a batch-mean loss the gradients of embedding rows
    are small, so Keras' default 0.1 barely moves them; 1e-6..1e-3 is a fairer start."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer '{name}'; choose from {', '.join(OPTIMIZERS)}")
    decay = {"weight_decay": weight_decay} if weight_decay else {}
    if name == "adagrad":
        return tf.keras.optimizers.Adagrad(
            learning_rate, initial_accumulator_value=adagrad_initial_accumulator, **decay)
    if name == "rmsprop":
        return tf.keras.optimizers.RMSprop(learning_rate, **decay)
    if name == "sgd":
        return tf.keras.optimizers.SGD(learning_rate, momentum=0.9, **decay)
    return tf.keras.optimizers.Adam(learning_rate, **decay)


def domain_learning_rate(model, learning_rate):
    """The learning rate of model.domain_variables(): the config's domain_learning_rate
    (MDL) if set, else the dense `learning_rate`."""
    rate = getattr(model.config, "domain_learning_rate", None)
    return learning_rate if rate is None else rate


def make_domain_optimizer(model, opts):
    """The dense optimizer's kind for model.domain_variables(), or None (they stay with the
    dense optimizer) unless the config sets domain_learning_rate or domain_weight_decay."""
    decay = getattr(model.config, "domain_weight_decay", None)
    if getattr(model.config, "domain_learning_rate", None) is None and decay is None:
        return None
    return make_optimizer(opts.optimizer, domain_learning_rate(model, opts.learning_rate),
                          decay)


def set_learning_rates(model, learning_rate, fraction=1.0):
    """Sets every optimizer of a compiled model to `fraction` of its rate: `learning_rate`,
    the domain optimizer that of domain_learning_rate() (benchmarks' grids, warm-up)."""
    for optimizer, _ in model.optimizer_groups():
        rate = (domain_learning_rate(model, learning_rate)
                if optimizer is model.domain_optimizer else learning_rate)
        optimizer.learning_rate = rate * fraction


def compile_model(model, opts: TrainOptions, distribution=None):
    """Optimizers and the XLA policy of the strategy (call inside its scope)."""
    distribution = distribution or distribute.make_distribution(jit_compile=opts.jit_compile)
    if opts.embedding_optimizer != "same":
        model.embedding_optimizer = make_optimizer(
            opts.embedding_optimizer, opts.embedding_learning_rate or opts.learning_rate,
            opts.embedding_weight_decay, opts.adagrad_initial_accumulator)
    elif opts.embedding_weight_decay:
        raise ValueError("embedding_weight_decay needs an embedding optimizer of its own "
                         "(embedding_optimizer != 'same')")
    model.domain_optimizer = make_domain_optimizer(model, opts)
    model.xla_gradients = distribution.xla_gradients
    # Under mixed_float16 Keras wraps the optimizer in a LossScaleOptimizer.
    dense_optimizer = make_optimizer(opts.optimizer, opts.learning_rate,
                                     adagrad_initial_accumulator=opts.adagrad_initial_accumulator)
    model.compile(optimizer=dense_optimizer, jit_compile=distribution.jit_compile)
    build_optimizers(model)


def build_optimizers(model):
    """Creates each optimizer's slots for its own variable group now: BackupAndRestore
    would otherwise build the dense optimizer over every variable, tables included, and
    the first train step would be traced twice (once to create the slots)."""
    for optimizer, variables in model.optimizer_groups():
        optimizer.build(variables)


def encoder_transform(model):
    """Raw (features, labels) -> (encoded features, labels): string work stays in tf.data.

    `model`: a RankingModel (its preprocess) or a raw -> encoded layer such as FeatureEncoder.
    """
    encode = getattr(model, "preprocess", model)

    def transform(raw, labels):
        raw = {k: v for k, v in raw.items() if k != data.GROUP_KEY}
        return encode(raw), labels
    return transform


def training_datasets(model, schema, data_dir, opts, distribution=None, skip_batches=0,
                      counters=None):
    """(train, valid) inputs of encoded features for model.fit under the strategy.

    skip_batches: with --steps, batches of the endless training stream already trained on
    (a resumed run continues where the interrupted one stopped).
    counters: {"train": BadRowCounter, "valid": ...} under --bad_rows skip.
    """
    counters = counters or {}
    name = distribution.name if distribution else "default"
    if name == "parameter_server":
        return _ps_datasets(model, schema, data_dir, opts)
    # Synchronous strategies: encode with a layer built outside the strategy scope, so its
    # lookup tables live with the input pipeline on the host, not on the replicas' devices.
    encoder = model if name == "default" else make_encoder(schema, "input_encoder")
    common = dict(data_dir=data_dir, batch_size=opts.batch_size, bad_rows=opts.bad_rows,
                  transform=encoder_transform(encoder), cache=opts.cache_data)
    train_ds = data.make_dataset(schema, "train", training=True, seed=opts.seed,
                                 repeat=opts.steps > 0, counter=counters.get("train"), **common)
    if opts.steps > 0 and skip_batches:
        train_ds = train_ds.skip(skip_batches)
    valid_ds = data.make_dataset(schema, "valid", counter=counters.get("valid"), **common)
    if name == "tpu":   # TPUs need static shapes: drop the last partial validation batch
        valid_ds = valid_ds.unbatch().batch(opts.batch_size, drop_remainder=True)
    if distribution is None:
        return train_ds, valid_ds

    def shard(ds, split):
        files = data.expand_files(schema.files_for(split, data_dir))
        return distribute.shard_input(ds, distribution, len(files))
    return shard(train_ds, "train"), shard(valid_ds, "valid")


def _ps_datasets(model, schema, data_dir, opts):
    """(DatasetCreator run on every worker, None). The model's lookup tables, created under
    the ParameterServerStrategy scope, are replicated to the workers; each worker shuffles
    its own endless stream (asynchronous training has no shared epoch to shard).
    Validation runs on the chief instead (ChiefValidation): Keras would have every worker
    read the whole validation set, or skip our test_step for exact evaluation."""
    common = dict(data_dir=data_dir, batch_size=opts.batch_size, bad_rows=opts.bad_rows,
                  transform=encoder_transform(model), cache=opts.cache_data)

    def train_fn(context):
        del context
        # Traced once, run on every worker: with no seed in the traced graph each worker's
        # shuffle draws its own order (identical orders would mean identical batches).
        if not tf.executing_eagerly():
            tf.random.set_seed(None)
        return data.make_dataset(schema, "train", training=True, repeat=True, seed=None,
                                 **common)

    return tf.keras.utils.experimental.DatasetCreator(train_fn), None


class MeanValidationAUC(tf.keras.callbacks.Callback):
    """Adds val_auc_mean (mean over tasks) to the epoch logs, for early stopping."""

    def __init__(self, task_names):
        super().__init__()
        self.keys = [f"val_{t}_auc" for t in task_names]

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and all(k in logs for k in self.keys):
            logs["val_auc_mean"] = sum(float(logs[k]) for k in self.keys) / len(self.keys)


class EpochCheckpoint(tf.keras.callbacks.Callback):
    """Saves model, optimizers and the finished epoch count after every epoch."""

    def __init__(self, manager, epoch_variable):
        super().__init__()
        self.manager, self.epoch = manager, epoch_variable

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.assign(epoch + 1)
        self.manager.save(checkpoint_number=epoch + 1)


class ChiefValidation(tf.keras.callbacks.Callback):
    """Parameter-server validation: after each epoch, writes the weights to
    <model_dir>/.validation, restores them into a local copy of the model on the chief and
    adds val_<task>_auc (over the whole split). (Not the epoch checkpoint: that one is
    written after early stopping has seen these AUCs, so that it holds its state.)"""

    def __init__(self, model_dir, schema, data_dir, bad_rows="error"):
        super().__init__()
        self.model_dir, self.schema, self.data_dir = model_dir, schema, data_dir
        self.bad_rows = bad_rows
        self.local = self.snapshot = None

    def on_epoch_end(self, epoch, logs=None):
        if self.snapshot is None:   # one object: each new one traces its save function again
            self.snapshot = tf.train.Checkpoint(model=self.model)
        path = self.snapshot.write(os.path.join(self.model_dir, ".validation", "weights"))
        if self.local is None:
            self.local = runs.restore_model(self.model_dir, path)[0]
        else:
            runs.checkpoint(self.local)[0].restore(path).expect_partial()
        result = evaluate.evaluate(self.local, self.schema, "valid", self.data_dir,
                                   bad_rows=self.bad_rows)
        for task, cell in result["overall"].items():
            logs[f"val_{task}_auc"] = cell["auc"]


class Progress(tf.keras.callbacks.Callback):
    """Within-epoch progress for logs that are not a terminal (Keras' bar needs one): every
    `every_s` seconds one line with step, examples/s, ETA and loss."""

    def __init__(self, steps_per_epoch, batch_size, every_s=15.0):
        super().__init__()
        self.total, self.batch_size, self.every_s = steps_per_epoch, batch_size, every_s

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        now = time.time()
        if batch == 0:   # rates from the second step on: the first one traces the graph
            self.start = self.last = now
            return
        if now - self.last < self.every_s:
            return
        self.last, rate = now, batch / (now - self.start)
        eta = f"  ETA {(self.total - batch - 1) / rate:.0f}s" if self.total else ""
        of = f"/{self.total}" if self.total else ""
        loss = f"  loss {float(logs['loss']):.4f}" if logs and "loss" in logs else ""
        print(f"  epoch {self.epoch} step {batch + 1}{of}  {rate * self.batch_size:,.0f} "
              f"examples/s{eta}{loss}", flush=True)
class NonFiniteLossError(ValueError):
    """The training loss became NaN or infinite: the weights are no longer usable."""


class StopOnNonFiniteLoss(tf.keras.callbacks.Callback):
    """Raises NonFiniteLossError when an epoch's loss is not finite, before the epoch is
    checkpointed (checked once per epoch: a per-batch check would sync every step)."""

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteLossError(
                f"the training loss is {loss} after epoch {epoch + 1}: the weights are no "
                "longer finite, so nothing is checkpointed or exported. Lower "
                "--learning_rate, check the input's dense values and --config, and train "
                "again in a new --model_dir")


class BadRowLimit(tf.keras.callbacks.Callback):
    """After every epoch: DataError when a split's skipped rows exceed --max_bad_fraction."""

    def __init__(self, counters, max_bad_fraction):
        super().__init__()
        self.counters, self.max_bad_fraction = counters, max_bad_fraction

    def on_epoch_end(self, epoch, logs=None):
        for split, counter in self.counters.items():
            counter.check(f"split '{split}'", self.max_bad_fraction)


def check_splits(schema, data_dir, opts):
    """DataError before training when a split it reads has no usable row."""
    for split in dict.fromkeys(["train", "valid", opts.eval_split]):
        data.check_usable(schema, split, data_dir, opts.bad_rows)


class StartStep(tf.keras.callbacks.Callback):
    """Prints the step training starts from (after BackupAndRestore has restored it)."""

    def on_train_begin(self, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if step:
            print(f"resuming training at step {step}", flush=True)


def count_rows(schema, split, data_dir) -> int | None:
    """Rows of a split (records for TFRecord); None when the files hold more than
    COUNT_LIMIT_BYTES (counting would take long, and such a split is not small)."""
    files = data.expand_files(schema.files_for(split, data_dir))
    if sum(os.path.getsize(f) for f in files) > COUNT_LIMIT_BYTES:
        return None
    if schema.format == "csv":
        total = 0
        for path in files:
            with (gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")) as fh:
                total += sum(1 for line in fh if line.strip()) - 1   # the header
        return total
    records = tf.data.TFRecordDataset(files, compression_type="GZIP" if files[0].endswith(
        ".gz") else "")
    return int(records.reduce(0, lambda n, _: n + 1))


def check_data_size(schema, data_dir, opts) -> int | None:
    """Training rows; a clear error below one batch, a warning below MIN_STEPS batches, and
    a note on the partial last batch each epoch drops."""
    rows = count_rows(schema, "train", data_dir)
    if rows is None or opts.steps > 0:
        return rows
    b = opts.batch_size
    if rows < b:
        raise ValueError(f"the train split has {rows} rows, fewer than one batch "
                         f"(--batch_size {b}); use --batch_size {suggested_batch_size(rows)} "
                         "or less")
    if rows < MIN_STEPS * b:
        print(f"warning: the train split has {rows} rows: {rows // b} step(s) per epoch at "
              f"--batch_size {b}, too few to learn from; try --batch_size "
              f"{suggested_batch_size(rows)}", flush=True)
    if rows % b:
        print(f"note: each epoch drops its last partial batch ({rows % b} of {rows} rows, "
              "different ones each epoch: the rows are shuffled)", flush=True)
    return rows


def check_token_width(config, schema):
    """RankMixer's token mixing needs d_model divisible by the number of feature tokens
    (the schema's groups): say which --config values work, instead of a Keras trace."""
    n = len(schema.groups)
    if getattr(config, "interaction", None) != "rankmixer" or config.d_model % n == 0:
        return
    valid = [n * k for k in range(1, 2 * config.d_model // n + 2)][:8]
    raise ValueError(f"d_model ({config.d_model}) must be divisible by the number of feature "
                     f"groups ({n}: {', '.join(schema.groups)}) in {schema.path or schema.name}: "
                     f"use --config d_model=N with N one of {', '.join(map(str, valid))}, ..., "
                     "or regroup the features, or --config interaction=self_attention")


def prepare_data(opts: TrainOptions):
    schema = datasets.load_schema(opts.dataset)
    data_dir = datasets.resolve(schema, opts.data_dir, os.path.join(opts.model_dir, "data"))
    return schema, data_dir


def epoch_plan(opts: TrainOptions, distribution=None):
    """(epochs, steps per epoch or None): with --steps an epoch is --steps_per_eval steps."""
    if opts.steps <= 0:
        if distribution is not None and distribution.name == "parameter_server":
            raise distribute.DistributionError(
                "--strategy parameter_server needs --steps: its workers read endless "
                "streams, so there are no epochs to count")
        return opts.epochs, None
    per_epoch = min(opts.steps_per_eval, opts.steps)
    if opts.steps % per_epoch:
        raise ValueError(f"--steps ({opts.steps}) must be a multiple of --steps_per_eval "
                         f"({per_epoch}) so that training ends exactly at --steps")
    return opts.steps // per_epoch, per_epoch


def train(opts: TrainOptions) -> dict:
    """Trains, evaluates and exports; returns {"metrics", "export_path", "history", "model"}
    (for a model_dir whose run already finished: nothing is done, see check_finished).

    Under a multi-worker strategy every task calls this; only the chief evaluates and
    exports (elsewhere "metrics" and "export_path" are None).
    """
    # MultiWorkerMirroredStrategy must exist before TensorFlow runs anything else.
    distribution = distribute.make_distribution(
        opts.strategy, jit_compile=opts.jit_compile, tpu=opts.tpu,
        ps_min_shard_bytes=opts.ps_min_shard_bytes)
    distribution.check_batch_size(opts.batch_size)
    epochs, steps_per_epoch = epoch_plan(opts, distribution)
    finished = check_finished(opts, distribution, epochs)
    if finished is not None:
        return finished
    tf.keras.utils.set_random_seed(opts.seed)
    schema, data_dir = prepare_data(opts)
    check_splits(schema, data_dir, opts)
    counters = ({split: data.BadRowCounter() for split in ("train", "valid")}
                if opts.bad_rows == "skip" else {})
    config = make_config(opts.model, opts.config)
    check_token_width(config, schema)
    train_rows = check_data_size(schema, data_dir, opts) if distribution.is_chief else None
    policy = distribute.mixed_precision_policy(distribution) if opts.mixed_precision else None
    with distribute.precision(policy):
        with distribution.strategy.scope():
            model = build_model(opts.model, schema, config).build_from_schema()
            compile_model(model, opts, distribution)
        if distribution.is_chief:
            runs.save_run(opts.model_dir, opts.model, config, schema, data_dir)
        history = fit(model, schema, data_dir, opts, distribution, epochs, steps_per_epoch,
                      train_rows, counters)
    if not distribution.is_chief:
        _remove_private_dir(opts.model_dir, distribution)
        return {"metrics": None, "export_path": None, "history": history, "model": model}
    # A float32, strategy-free copy of the final weights serves and evaluates.
    final = model if distribution.name == "default" and not policy else runs.restore_model(
        opts.model_dir)[0]
    if opts.bad_rows == "skip":
        counters[f"evaluation ({opts.eval_split})"] = data.BadRowCounter()
    counter = counters.get(f"evaluation ({opts.eval_split})")
    fitted, predictions = fit_calibration(final, schema, data_dir, opts, counter)
    result = evaluate.evaluate(final, schema, opts.eval_split, data_dir,
                               evaluate.metrics_path(opts.model_dir, opts.eval_split),
                               calibration=fitted, bad_rows=opts.bad_rows, counter=counter,
                               predictions=predictions)
    if counters:
        data.report_bad_rows(counters, opts.max_bad_fraction,
                             lambda reports: runs.record(opts.model_dir, bad_rows=reports))
    evaluate.print_tables(result, f"{schema.name} / {opts.model} / split={opts.eval_split}")
    export_path = None
    if opts.export:
        export_path = export.export_saved_model(final, os.path.join(opts.model_dir, "export"),
                                                calibration=fitted)
        print(f"exported SavedModel to {export_path}")
    resume.mark_finished(opts.model_dir, model, export_path)
    return {"metrics": result, "export_path": export_path, "history": history, "model": model}


def fit_calibration(model, schema, data_dir, opts, counter=None):
    """--calibrate: (the Calibration fitted on "valid", saved in model_dir; the validation
    predictions when opts.eval_split is "valid", for the evaluation to reuse, their bad
    rows counted in `counter`), else (None, None). A calibration.json left by an earlier
    run is removed: it belongs to other weights."""
    path = calibration.model_file(opts.model_dir)
    if opts.calibrate:
        reuse = opts.eval_split == "valid"
        fitted, predictions = evaluate.calibrate(
            model, schema, data_dir, opts.calibrate, opts.model_dir, bad_rows=opts.bad_rows,
            counter=counter if reuse else None)
        return fitted, predictions if reuse else None
    if os.path.exists(path):
        os.remove(path)
        print(f"removed {path}: fitted for earlier weights (use --calibrate to refit)")
    return None, None


def check_finished(opts, distribution, epochs) -> dict | None:
    """train()'s result for a model_dir whose run already finished (a no-op that says so;
    "export_path" is that run's export), or None: train. --force_retrain removes the run's
    training state instead."""
    finished = resume.finished_run(opts.model_dir, epochs)
    if finished is None:
        return None
    if not opts.force_retrain:
        print(resume.already_trained_message(opts.model_dir, finished), flush=True)
        return {"metrics": None, "export_path": finished["export_path"], "history": {},
                "model": None, "already_trained": finished}
    if distribution.is_chief:
        resume.start_over(opts.model_dir)
        print(f"--force_retrain: training {opts.model_dir} again from scratch", flush=True)
    return None


def fit(model, schema, data_dir, opts, distribution, epochs, steps_per_epoch,
        train_rows=None, counters=None) -> dict:
    """Restores the latest checkpoint, runs model.fit to `epochs`; returns the history.

    Every task reads the chief's checkpoints; tasks other than the chief write theirs to
    a private directory (synchronous workers must all take part in saving). Ends with the
    best epoch's weights when early stopping is on (see mdl_tf/resume.py).
    """
    state = resume.attach_state(model)
    ckpt, epoch_var = runs.checkpoint(model, state.epochs_done)
    read_dir = os.path.join(opts.model_dir, "checkpoints")
    # The best epoch's checkpoint must still be there when early stopping ends the run.
    manager = tf.train.CheckpointManager(
        ckpt, os.path.join(distribution.private_dir(opts.model_dir), "checkpoints"),
        max_to_keep=max(3, opts.early_stopping_patience + 2))
    latest = tf.train.latest_checkpoint(read_dir)
    if latest:
        ckpt.restore(latest)
        print(f"resuming from {latest} (epoch {int(epoch_var.numpy())})")
    initial_epoch = int(epoch_var.numpy())
    backup_dir = os.path.join(opts.model_dir, BACKUP_DIR)
    done = backed_up_steps(backup_dir) or initial_epoch * (steps_per_epoch or 0)
    start, history = time.time(), {}
    if bool(state.stopped.numpy()):
        print(f"early stopping ended this run at epoch {initial_epoch}; not training further")
    elif initial_epoch < epochs:
        train_ds, valid_ds = training_datasets(model, schema, data_dir, opts, distribution,
                                               skip_batches=done, counters=counters)
        train_files = data.expand_files(schema.files_for("train", data_dir))
        with data.raise_data_errors(schema, train_files):
            history = model.fit(
                train_ds, validation_data=valid_ds, epochs=epochs, initial_epoch=initial_epoch,
                steps_per_epoch=steps_per_epoch,
                callbacks=fit_callbacks(schema, data_dir, opts, distribution, manager, state,
                                        steps_per_epoch or (train_rows or 0) // opts.batch_size,
                                        counters),
                verbose=_verbosity(opts, distribution)).history
    print(f"training took {time.time() - start:.1f}s")
    _remove_empty_dirs(backup_dir)   # BackupAndRestore leaves them behind
    if opts.early_stopping_patience > 0 and resume.restore_best_weights(model, read_dir):
        manager.save(checkpoint_number=epochs + 1)  # keep the restored best weights
    return history


def backed_up_steps(backup_dir) -> int:
    """Training steps in the backup BackupAndRestore will resume from (0 if none).
    Reads tf_keras' backup layout: <backup_dir>/chief, with the model's train_counter."""
    latest = tf.train.latest_checkpoint(os.path.join(backup_dir, "chief"))
    if latest is None:
        return 0
    try:
        return int(tf.train.load_variable(latest, "train_counter/.ATTRIBUTES/VARIABLE_VALUE"))
    except (tf.errors.NotFoundError, ValueError):
        return 0


def fit_callbacks(schema, data_dir, opts, distribution, manager, state, steps_per_epoch=0,
                  counters=None):
    """In order: each callback sees the logs the earlier ones added."""
    ps = distribution.name == "parameter_server"   # no batch-level callbacks under PS
    # BackupAndRestore restores (the model and its TrainingState) in on_train_begin;
    # StartStep and early stopping read what it restored.
    backup = resume.BackupAfterEpochEnd(
        os.path.join(opts.model_dir, BACKUP_DIR),
        save_freq="epoch" if ps or opts.backup_every <= 0 else opts.backup_every)
    callbacks = [backup, StartStep(),
                 StopOnNonFiniteLoss(),          # before the checkpoint: never save NaN weights
                 BadRowLimit(counters or {}, opts.max_bad_fraction)]
    if ps:
        callbacks.append(ChiefValidation(opts.model_dir, schema, data_dir, opts.bad_rows))
    callbacks.append(MeanValidationAUC(schema.task_names))
    if distribution.is_chief:
        callbacks.append(tf.keras.callbacks.TensorBoard(os.path.join(opts.model_dir, "logs"),
                                                        profile_batch=0))
    if opts.early_stopping_patience > 0:
        callbacks.append(resume.ResumableEarlyStopping(state, opts.early_stopping_patience,
                                                       verbose=int(distribution.is_chief)))
    if not ps and _verbosity(opts, distribution) == 2:
        callbacks.append(Progress(steps_per_epoch, opts.batch_size))
    # The epoch's checkpoint and backup hold the early-stopping state of this epoch.
    callbacks += [EpochCheckpoint(manager, state.epochs_done), backup.after_epoch_end()]
    return callbacks + list(opts.callbacks)


def _verbosity(opts, distribution):
    if not distribution.is_chief:
        return 0
    return opts.verbose if opts.verbose is not None else (1 if sys.stdout.isatty() else 2)


def _remove_empty_dirs(path):
    for root, _, _ in os.walk(path, topdown=False):
        with contextlib.suppress(OSError):   # not empty, or another task removed it
            os.rmdir(root)


def _remove_private_dir(model_dir, distribution):
    private = distribution.private_dir(model_dir)
    shutil.rmtree(private, ignore_errors=True)
    _remove_empty_dirs(os.path.dirname(private))   # .workers, once every task is done


# --- CLI ---------------------------------------------------------------------------------
FLAGS = flags.FLAGS


def define_flags():
    """Command-line flags (defined only when run as a CLI, so importing stays side-effect free)."""
    cli.define_train_flags()


def parse_overrides(items):
    out = {}
    for item in items:
        if "=" not in item:
            raise app.UsageError(f"--config expects key=value, got '{item}'")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def options_from_flags() -> TrainOptions:
    name = os.path.splitext(os.path.basename(FLAGS.dataset))[0]
    return TrainOptions(
        dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, model=FLAGS.model,
        model_dir=FLAGS.model_dir or os.path.join("runs", f"{name}-{FLAGS.model}"),
        config=parse_overrides(FLAGS.config), epochs=FLAGS.epochs, steps=FLAGS.steps,
        steps_per_eval=FLAGS.steps_per_eval, batch_size=FLAGS.batch_size,
        learning_rate=FLAGS.learning_rate, optimizer=FLAGS.optimizer,
        embedding_optimizer=FLAGS.embedding_optimizer,
        embedding_learning_rate=FLAGS.embedding_learning_rate,
        embedding_weight_decay=FLAGS.embedding_weight_decay,
        adagrad_initial_accumulator=FLAGS.adagrad_initial_accumulator,
        jit_compile=FLAGS.jit_compile,
        seed=FLAGS.seed, early_stopping_patience=FLAGS.early_stopping_patience,
        eval_split=FLAGS.eval_split, bad_rows=FLAGS.bad_rows,
        max_bad_fraction=FLAGS.max_bad_fraction, cache_data=FLAGS.cache_data,
        export=FLAGS.export, calibrate=FLAGS.calibrate, strategy=FLAGS.strategy, tpu=FLAGS.tpu,
        mixed_precision=FLAGS.mixed_precision, backup_every=FLAGS.backup_every,
        ps_min_shard_bytes=FLAGS.ps_min_shard_bytes, force_retrain=FLAGS.force_retrain)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    if FLAGS.model not in model_names():
        raise app.UsageError(f"--model must be one of {', '.join(model_names())}")
    with cli.user_errors():
        if FLAGS.strategy == "parameter_server" and distribute.is_server_task():
            distribute.serve_forever()   # workers and ps tasks serve the chief until killed
        train(options_from_flags())


if __name__ == "__main__":
    define_flags()
    app.run(main)
