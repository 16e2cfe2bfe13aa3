"""Evaluation: per-scenario x per-task AUC, GAUC, logloss, count and positives.

    python -m mdl_tf.evaluate --model_dir runs/demo [--split test]

Writes <model_dir>/metrics_<split>.json (or --output; one file per split, so evaluating
the test split leaves training's validation metrics alone) shaped as
{"split": ..., "scenarios": {s: {t: {auc, gauc, logloss, count, positives}}},
 "overall": {t: {...}}} and prints the table.
"""
import json
import os

from mdl_tf import cli

# --help answers before TensorFlow loads (tens of seconds on a busy machine).
cli.help_without_tensorflow(__name__, __doc__, cli.define_evaluate_flags)

import mdl_tf  # noqa: F401
import numpy as np
import tensorflow as tf
from absl import app, flags, logging

from mdl_tf import data, metrics, runs


def predict_split(model, schema, split, data_dir, batch_size=4096):
    """(probs [N, N_t], labels [N, N_t], membership [N, N_s], groups [N] or None)."""
    ds = data.make_dataset(schema, split, data_dir=data_dir, batch_size=batch_size)

    @tf.function  # not XLA: the last batch has another shape
    def step(raw):
        encoded = model.preprocess(raw)
        return tf.sigmoid(tf.cast(model(encoded, training=False), tf.float32)), encoded[
            data.SCENARIO_KEY]

    probs, labels, membership, groups = [], [], [], []
    with data.raise_data_errors(schema, data.expand_files(schema.files_for(split, data_dir))):
        for raw, y in ds:
            p, m = step(raw)
            probs.append(p.numpy())
            membership.append(m.numpy())
            labels.append(y.numpy())
            if data.GROUP_KEY in raw:
                groups.append(raw[data.GROUP_KEY].numpy())
    cat = np.concatenate
    return cat(probs), cat(labels), cat(membership), (cat(groups) if groups else None)


def metrics_path(model_dir, split):
    return os.path.join(model_dir, f"metrics_{split}.json")


def evaluate(model, schema, split, data_dir, output=None, batch_size=4096):
    probs, labels, membership, groups = predict_split(model, schema, split, data_dir, batch_size)
    result = {"split": split, **metrics.scenario_task_metrics(
        probs, labels, membership, schema.scenario_names, schema.task_names, groups)}
    if output:
        with open(output, "w") as fh:
            json.dump(result, fh, indent=2)
    return result


FLAGS = flags.FLAGS


def define_flags():
    """Command-line flags (defined only when run as a CLI, so importing stays side-effect free)."""
    cli.define_evaluate_flags()


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    if not FLAGS.model_dir:
        raise app.UsageError("--model_dir is required")
    model, schema, info = runs.restore_model(FLAGS.model_dir)
    result = evaluate(model, schema, FLAGS.split, FLAGS.data_dir or info["data_dir"],
                      FLAGS.output or metrics_path(FLAGS.model_dir, FLAGS.split),
                      FLAGS.batch_size)
    print(metrics.format_table(result, f"{schema.name} / {info['model']} / split={FLAGS.split}"))


if __name__ == "__main__":
    define_flags()
    app.run(main)
