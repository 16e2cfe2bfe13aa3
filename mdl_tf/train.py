"""Training: `python -m mdl_tf.train` (no flags: MDL on the built-in synthetic dataset).

    python -m mdl_tf.train --dataset movielens --data_dir ../shared/data/movielens_100k_mdmt/raw
    python -m mdl_tf.train --dataset path/to/schema.yaml --model_dir runs/x --steps 2000
    TF_CONFIG=... python -m mdl_tf.train --strategy multi_worker --model_dir /shared/runs/x

Trains with XLA (`--jit_compile`), checkpoints every epoch and resumes from the latest
checkpoint in `--model_dir`; a killed run restarted with the same command resumes from its
last backup (every `--backup_every` steps, BackupAndRestore) and ends where it would have
ended, early stopping included (mdl_tf/resume.py); a finished run is not trained again
unless `--force_retrain`. Logs to TensorBoard, stops
early on the mean validation AUC, then evaluates (per scenario x task; writes metrics.json)
and exports a SavedModel to `<model_dir>/export/<version>/`. `--strategy` and
`--mixed_precision` choose the tf.distribute strategy and dtype policy (mdl_tf/distribute.py);
only the chief writes the run's files, evaluates and exports. The CLI only parses flags into
TrainOptions; `train()` is the library entry point.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import sys
import time

import mdl_tf  # noqa: F401
import tensorflow as tf
from absl import app, flags, logging

from mdl_tf import data, datasets, distribute, evaluate, export, metrics, resume, runs
from mdl_tf.models import build_model, make_config, model_names
from mdl_tf.models.base import make_encoder

OPTIMIZERS = ("adam", "adagrad", "rmsprop", "sgd")
BACKUP_DIR = "backup"    # under model_dir: BackupAndRestore's fault-tolerance backups


@dataclasses.dataclass
class TrainOptions:
    dataset: str = "synthetic"
    data_dir: str | None = None
    model: str = "mdl"
    model_dir: str = "runs/default"
    config: dict = dataclasses.field(default_factory=dict)
    epochs: int = 3
    steps: int = 0                   # > 0: train this many steps (overrides epochs)
    steps_per_eval: int = 100        # with steps: evaluate/checkpoint every this many steps
    batch_size: int = 2048           # global: split over the replicas of the strategy
    learning_rate: float = 2e-3
    optimizer: str = "adam"
    embedding_optimizer: str = "adam"   # "same": one optimizer for all weights
    embedding_learning_rate: float | None = None
    jit_compile: bool = True
    seed: int = 0
    early_stopping_patience: int = 2
    eval_split: str = "valid"
    bad_rows: str = "error"
    cache_data: bool = False         # keep parsed rows in memory (datasets that fit in RAM)
    export: bool = True
    verbose: int | None = None
    strategy: str = "default"        # see distribute.STRATEGIES
    tpu: str | None = None           # --strategy tpu: TPU name or address ("" = local)
    mixed_precision: bool = False    # mixed_float16 on GPU, mixed_bfloat16 on TPU and CPU
    backup_every: int = 100          # steps between fault-tolerance backups (0: every epoch)
    ps_min_shard_bytes: int = distribute.DEFAULT_PS_MIN_SHARD_BYTES
    callbacks: list = dataclasses.field(default_factory=list)   # extra Keras callbacks
    force_retrain: bool = False      # a finished model_dir: start over instead of a no-op


def make_optimizer(name, learning_rate):
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer '{name}'; choose from {', '.join(OPTIMIZERS)}")
    if name == "adagrad":
        return tf.keras.optimizers.Adagrad(learning_rate, initial_accumulator_value=0.1)
    if name == "rmsprop":
        return tf.keras.optimizers.RMSprop(learning_rate)
    if name == "sgd":
        return tf.keras.optimizers.SGD(learning_rate, momentum=0.9)
    return tf.keras.optimizers.Adam(learning_rate)


def compile_model(model, opts: TrainOptions, distribution=None):
    """Optimizers and the XLA policy of the strategy (call inside its scope)."""
    distribution = distribution or distribute.make_distribution(jit_compile=opts.jit_compile)
    if opts.embedding_optimizer != "same":
        model.embedding_optimizer = make_optimizer(
            opts.embedding_optimizer, opts.embedding_learning_rate or opts.learning_rate)
    model.xla_gradients = distribution.xla_gradients
    # Under mixed_float16 Keras wraps the optimizer in a LossScaleOptimizer.
    model.compile(optimizer=make_optimizer(opts.optimizer, opts.learning_rate),
                  jit_compile=distribution.jit_compile)
    build_optimizers(model)


def build_optimizers(model):
    """Creates each optimizer's slots for its own variable group now: BackupAndRestore
    would otherwise build the dense optimizer over every variable, tables included, and
    the first train step would be traced twice (once to create the slots)."""
    tables, dense = model.variable_groups()
    if model.embedding_optimizer is None:
        model.optimizer.build(tables + dense)
    else:
        model.embedding_optimizer.build(tables)
        model.optimizer.build(dense)


def encoder_transform(model):
    """Raw (features, labels) -> (encoded features, labels): string work stays in tf.data.

    `model`: a RankingModel (its preprocess) or a raw -> encoded layer such as FeatureEncoder.
    """
    encode = getattr(model, "preprocess", model)

    def transform(raw, labels):
        raw = {k: v for k, v in raw.items() if k != data.GROUP_KEY}
        return encode(raw), labels
    return transform


def training_datasets(model, schema, data_dir, opts, distribution=None, skip_batches=0):
    """(train, valid) inputs of encoded features for model.fit under the strategy.

    skip_batches: with --steps, batches of the endless training stream already trained on
    (a resumed run continues where the interrupted one stopped).
    """
    name = distribution.name if distribution else "default"
    if name == "parameter_server":
        return _ps_datasets(model, schema, data_dir, opts)
    # Synchronous strategies: encode with a layer built outside the strategy scope, so its
    # lookup tables live with the input pipeline on the host, not on the replicas' devices.
    encoder = model if name == "default" else make_encoder(schema, "input_encoder")
    common = dict(data_dir=data_dir, batch_size=opts.batch_size, bad_rows=opts.bad_rows,
                  transform=encoder_transform(encoder), cache=opts.cache_data)
    train_ds = data.make_dataset(schema, "train", training=True, seed=opts.seed,
                                 repeat=opts.steps > 0, **common)
    if opts.steps > 0 and skip_batches:
        train_ds = train_ds.skip(skip_batches)
    valid_ds = data.make_dataset(schema, "valid", **common)
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

    def __init__(self, model_dir, schema, data_dir):
        super().__init__()
        self.model_dir, self.schema, self.data_dir = model_dir, schema, data_dir
        self.local = self.snapshot = None

    def on_epoch_end(self, epoch, logs=None):
        if self.snapshot is None:   # one object: each new one traces its save function again
            self.snapshot = tf.train.Checkpoint(model=self.model)
        path = self.snapshot.write(os.path.join(self.model_dir, ".validation", "weights"))
        if self.local is None:
            self.local = runs.restore_model(self.model_dir, path)[0]
        else:
            runs.checkpoint(self.local)[0].restore(path).expect_partial()
        result = evaluate.evaluate(self.local, self.schema, "valid", self.data_dir)
        for task, cell in result["overall"].items():
            logs[f"val_{task}_auc"] = cell["auc"]


class StartStep(tf.keras.callbacks.Callback):
    """Prints the step training starts from (after BackupAndRestore has restored it)."""

    def on_train_begin(self, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if step:
            print(f"resuming training at step {step}", flush=True)


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
    config = make_config(opts.model, opts.config)
    policy = distribute.mixed_precision_policy(distribution) if opts.mixed_precision else None
    with distribute.precision(policy):
        with distribution.strategy.scope():
            model = build_model(opts.model, schema, config).build_from_schema()
            compile_model(model, opts, distribution)
        if distribution.is_chief:
            runs.save_run(opts.model_dir, opts.model, config, schema, data_dir)
        history = fit(model, schema, data_dir, opts, distribution, epochs, steps_per_epoch)
    if not distribution.is_chief:
        _remove_private_dir(opts.model_dir, distribution)
        return {"metrics": None, "export_path": None, "history": history, "model": model}
    # A float32, strategy-free copy of the final weights serves and evaluates.
    final = model if distribution.name == "default" and not policy else runs.restore_model(
        opts.model_dir)[0]
    result = evaluate.evaluate(final, schema, opts.eval_split, data_dir,
                               os.path.join(opts.model_dir, "metrics.json"))
    print(metrics.format_table(result, f"{schema.name} / {opts.model} / split={opts.eval_split}"))
    export_path = None
    if opts.export:
        export_path = export.export_saved_model(final, os.path.join(opts.model_dir, "export"))
        print(f"exported SavedModel to {export_path}")
    resume.mark_finished(opts.model_dir, model, export_path)
    return {"metrics": result, "export_path": export_path, "history": history, "model": model}


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


def fit(model, schema, data_dir, opts, distribution, epochs, steps_per_epoch) -> dict:
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
                                               skip_batches=done)
        train_files = data.expand_files(schema.files_for("train", data_dir))
        with data.raise_data_errors(schema, train_files):
            history = model.fit(
                train_ds, validation_data=valid_ds, epochs=epochs, initial_epoch=initial_epoch,
                steps_per_epoch=steps_per_epoch,
                callbacks=fit_callbacks(schema, data_dir, opts, distribution, manager, state),
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


def fit_callbacks(schema, data_dir, opts, distribution, manager, state):
    """In order: each callback sees the logs the earlier ones added."""
    ps = distribution.name == "parameter_server"   # no batch-level callbacks under PS
    # BackupAndRestore restores (the model and its TrainingState) in on_train_begin;
    # StartStep and early stopping read what it restored.
    backup = resume.BackupAfterEpochEnd(
        os.path.join(opts.model_dir, BACKUP_DIR),
        save_freq="epoch" if ps or opts.backup_every <= 0 else opts.backup_every)
    callbacks = [backup, StartStep()]
    if ps:
        callbacks.append(ChiefValidation(opts.model_dir, schema, data_dir))
    callbacks.append(MeanValidationAUC(schema.task_names))
    if distribution.is_chief:
        callbacks.append(tf.keras.callbacks.TensorBoard(os.path.join(opts.model_dir, "logs"),
                                                        profile_batch=0))
    if opts.early_stopping_patience > 0:
        callbacks.append(resume.ResumableEarlyStopping(state, opts.early_stopping_patience))
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
_D = TrainOptions()


def define_flags():
    """Command-line flags (defined only when run as a CLI, so importing stays side-effect free)."""
    flags.DEFINE_string("dataset", _D.dataset,
                        f"A built-in dataset ({', '.join(datasets.BUILTIN)}) or a schema YAML path.")
    flags.DEFINE_string("data_dir", None, "Where the schema's files are (for recipe datasets: "
                        "the raw files the recipe reads).")
    flags.DEFINE_string("model", _D.model, "Model name.")
    flags.DEFINE_string("model_dir", None, "Output directory (default runs/<dataset>-<model>).")
    flags.DEFINE_multi_string("config", [], "Model config override key=value (repeatable), "
                              "e.g. --config d_model=128 --config num_layers=3.")
    flags.DEFINE_integer("epochs", _D.epochs, "Passes over the training data (ignored with --steps).")
    flags.DEFINE_integer("steps", _D.steps, "Train this many steps instead of --epochs.")
    flags.DEFINE_integer("steps_per_eval", _D.steps_per_eval,
                         "With --steps: validate and checkpoint every this many steps.")
    flags.DEFINE_integer("batch_size", _D.batch_size, "Global batch size (the paper uses 2048).")
    flags.DEFINE_float("learning_rate", _D.learning_rate, "Learning rate of the dense weights.")
    flags.DEFINE_enum("optimizer", _D.optimizer, OPTIMIZERS, "Optimizer of the dense weights.")
    flags.DEFINE_enum("embedding_optimizer", _D.embedding_optimizer, OPTIMIZERS + ("same",),
                      "Optimizer of the embedding tables ('same': share --optimizer).")
    flags.DEFINE_float("embedding_learning_rate", None, "Default: --learning_rate.")
    flags.DEFINE_bool("jit_compile", _D.jit_compile, "Compile the training step with XLA.")
    flags.DEFINE_integer("seed", _D.seed, "Random seed.")
    flags.DEFINE_integer("early_stopping_patience", _D.early_stopping_patience,
                         "Epochs without a better val_auc_mean before stopping (0: off).")
    flags.DEFINE_string("eval_split", _D.eval_split, "Split evaluated at the end.")
    flags.DEFINE_enum("bad_rows", _D.bad_rows, ["error", "skip"],
                      "Bad input rows: stop with an error naming file/line/column, or skip and count.")
    flags.DEFINE_bool("cache_data", _D.cache_data,
                      "Keep parsed training/validation rows in memory after the first epoch.")
    flags.DEFINE_bool("export", _D.export, "Export a SavedModel at the end.")
    flags.DEFINE_enum("strategy", _D.strategy, distribute.STRATEGIES,
                      "tf.distribute strategy; multi_worker and parameter_server read the "
                      "cluster from TF_CONFIG (see BUILD.md, 'Training at scale').")
    flags.DEFINE_string("tpu", None, "--strategy tpu: TPU name or grpc address ('' = local).")
    flags.DEFINE_bool("mixed_precision", _D.mixed_precision,
                      "mixed_float16 with loss scaling on GPU, mixed_bfloat16 on TPU and CPU; "
                      "logits and loss stay float32.")
    flags.DEFINE_integer("backup_every", _D.backup_every,
                         "Steps between fault-tolerance backups (0: every epoch); a killed run "
                         "restarted with the same command resumes from the last one.")
    flags.DEFINE_bool("force_retrain", _D.force_retrain,
                      "Train a --model_dir whose run already finished again from scratch "
                      "(its checkpoints are removed; exports are kept). Without it, such a "
                      "run is a no-op that says so.")
    flags.DEFINE_integer("ps_min_shard_bytes", _D.ps_min_shard_bytes,
                         "--strategy parameter_server: variables are split over the ps tasks "
                         "in shards of at least this many bytes.")


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
        embedding_learning_rate=FLAGS.embedding_learning_rate, jit_compile=FLAGS.jit_compile,
        seed=FLAGS.seed, early_stopping_patience=FLAGS.early_stopping_patience,
        eval_split=FLAGS.eval_split, bad_rows=FLAGS.bad_rows, cache_data=FLAGS.cache_data,
        export=FLAGS.export, strategy=FLAGS.strategy, tpu=FLAGS.tpu,
        mixed_precision=FLAGS.mixed_precision, backup_every=FLAGS.backup_every,
        ps_min_shard_bytes=FLAGS.ps_min_shard_bytes, force_retrain=FLAGS.force_retrain)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    if FLAGS.model not in model_names():
        raise app.UsageError(f"--model must be one of {', '.join(model_names())}")
    try:
        if FLAGS.strategy == "parameter_server" and distribute.is_server_task():
            distribute.serve_forever()   # workers and ps tasks serve the chief until killed
        train(options_from_flags())
    except (data.DataError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    define_flags()
    app.run(main)
