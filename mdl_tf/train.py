"""Training: `python -m mdl_tf.train` (no flags: MDL on the built-in synthetic dataset).

    python -m mdl_tf.train --dataset movielens --data_dir ../shared/data/movielens_100k_mdmt/raw
    python -m mdl_tf.train --dataset path/to/schema.yaml --model_dir runs/x --steps 2000

Trains with XLA (`--jit_compile`), checkpoints every epoch and resumes from the latest
checkpoint in `--model_dir`, logs to TensorBoard, stops early on the mean validation AUC,
then evaluates (per scenario x task; writes metrics.json) and exports a SavedModel to
`<model_dir>/export/<version>/`. The CLI only parses flags into TrainOptions; `train()`
is the library entry point.
"""
from __future__ import annotations

import dataclasses
import math
import os
import sys
import time

import mdl_tf  # noqa: F401
import tensorflow as tf
from absl import app, flags, logging

from mdl_tf import data, datasets, evaluate, export, metrics, runs
from mdl_tf.models import build_model, make_config, model_names

OPTIMIZERS = ("adam", "adagrad", "rmsprop", "sgd")


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
    batch_size: int = 2048
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


def compile_model(model, opts: TrainOptions):
    if opts.embedding_optimizer != "same":
        model.embedding_optimizer = make_optimizer(
            opts.embedding_optimizer, opts.embedding_learning_rate or opts.learning_rate)
    model.compile(optimizer=make_optimizer(opts.optimizer, opts.learning_rate),
                  jit_compile=opts.jit_compile)


def encoder_transform(model):
    """Raw (features, labels) -> (encoded features, labels): string work stays in tf.data."""
    def encode(raw, labels):
        raw = {k: v for k, v in raw.items() if k != data.GROUP_KEY}
        return model.preprocess(raw), labels
    return encode


def training_datasets(model, schema, data_dir, opts):
    """(train, valid) datasets of encoded features for model.fit."""
    common = dict(data_dir=data_dir, batch_size=opts.batch_size, bad_rows=opts.bad_rows,
                  transform=encoder_transform(model), cache=opts.cache_data)
    train_ds = data.make_dataset(schema, "train", training=True, seed=opts.seed,
                                 repeat=opts.steps > 0, **common)
    return train_ds, data.make_dataset(schema, "valid", **common)


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


def prepare_data(opts: TrainOptions):
    schema = datasets.load_schema(opts.dataset)
    data_dir = datasets.resolve(schema, opts.data_dir, os.path.join(opts.model_dir, "data"))
    return schema, data_dir


def train(opts: TrainOptions) -> dict:
    """Trains, evaluates and exports; returns {"metrics", "export_path", "history"}."""
    tf.keras.utils.set_random_seed(opts.seed)
    schema, data_dir = prepare_data(opts)
    config = make_config(opts.model, opts.config)
    model = build_model(opts.model, schema, config).build_from_schema()
    compile_model(model, opts)
    runs.save_run(opts.model_dir, opts.model, config, schema, data_dir)

    ckpt, epoch_var = runs.checkpoint(model)
    manager = tf.train.CheckpointManager(ckpt, os.path.join(opts.model_dir, "checkpoints"),
                                         max_to_keep=3)
    if manager.latest_checkpoint:
        ckpt.restore(manager.latest_checkpoint)
        print(f"resuming from {manager.latest_checkpoint} (epoch {int(epoch_var.numpy())})")

    steps_mode = opts.steps > 0
    epochs = math.ceil(opts.steps / opts.steps_per_eval) if steps_mode else opts.epochs
    train_files = data.expand_files(schema.files_for("train", data_dir))
    train_ds, valid_ds = training_datasets(model, schema, data_dir, opts)
    callbacks = [
        MeanValidationAUC(schema.task_names),
        EpochCheckpoint(manager, epoch_var),
        tf.keras.callbacks.TensorBoard(os.path.join(opts.model_dir, "logs"), profile_batch=0),
    ]
    if opts.early_stopping_patience > 0:
        callbacks.append(tf.keras.callbacks.EarlyStopping(
            "val_auc_mean", mode="max", patience=opts.early_stopping_patience,
            restore_best_weights=True))
    verbose = opts.verbose if opts.verbose is not None else (1 if sys.stdout.isatty() else 2)
    history = {}
    start = time.time()
    initial_epoch = int(epoch_var.numpy())
    if initial_epoch < epochs:
        with data.raise_data_errors(schema, train_files):
            history = model.fit(train_ds, validation_data=valid_ds, epochs=epochs,
                                initial_epoch=initial_epoch,
                                steps_per_epoch=opts.steps_per_eval if steps_mode else None,
                                callbacks=callbacks, verbose=verbose).history
    print(f"training took {time.time() - start:.1f}s")
    if opts.early_stopping_patience > 0 and history:
        manager.save(checkpoint_number=epochs + 1)  # keep the restored best weights

    result = evaluate.evaluate(model, schema, opts.eval_split, data_dir,
                               os.path.join(opts.model_dir, "metrics.json"))
    print(metrics.format_table(result, f"{schema.name} / {opts.model} / split={opts.eval_split}"))
    export_path = None
    if opts.export:
        export_path = export.export_saved_model(model, os.path.join(opts.model_dir, "export"))
        print(f"exported SavedModel to {export_path}")
    return {"metrics": result, "export_path": export_path, "history": history, "model": model}


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
        export=FLAGS.export)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    if FLAGS.model not in model_names():
        raise app.UsageError(f"--model must be one of {', '.join(model_names())}")
    try:
        train(options_from_flags())
    except (data.DataError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    define_flags()
    app.run(main)
