"""Evaluation: per-scenario x per-task AUC, GAUC, logloss, count and positives.

    python -m mdl_tf.evaluate --model_dir runs/demo [--split test]

Writes <model_dir>/metrics.json (or --output) shaped as
{"split": ..., "scenarios": {s: {t: {auc, gauc, logloss, count, positives}}},
 "overall": {t: {...}}} (strict JSON: an undefined metric is null) and prints the table.
`--bad_rows skip` drops bad rows as training does, and reports them.
"""
import os
import sys

import mdl_tf  # noqa: F401
import numpy as np
import tensorflow as tf
from absl import app, flags, logging

from mdl_tf import data, metrics, runs


def predict_split(model, schema, split, data_dir, batch_size=4096, bad_rows="error",
                  counter=None):
    """(probs [N, N_t], labels [N, N_t], membership [N, N_s], groups [N] or None).

    Raises DataError when the split has no usable row."""
    ds = data.make_dataset(schema, split, data_dir=data_dir, batch_size=batch_size,
                           bad_rows=bad_rows, counter=counter)

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
    if not probs:
        raise data.DataError(f"split '{split}' ({schema.files_for(split, data_dir)}) has no "
                             "usable rows to evaluate")
    cat = np.concatenate
    return cat(probs), cat(labels), cat(membership), (cat(groups) if groups else None)


def evaluate(model, schema, split, data_dir, output=None, batch_size=4096, bad_rows="error",
             counter=None):
    """Metrics of `split`; bad_rows="skip" drops (and counts in `counter`) bad rows."""
    probs, labels, membership, groups = predict_split(model, schema, split, data_dir,
                                                      batch_size, bad_rows, counter)
    result = {"split": split, **metrics.scenario_task_metrics(
        probs, labels, membership, schema.scenario_names, schema.task_names, groups)}
    if output:
        with open(output, "w") as fh:
            metrics.to_json(result, fh)
    return result


FLAGS = flags.FLAGS


def define_flags():
    """Command-line flags (defined only when run as a CLI, so importing stays side-effect free)."""
    flags.DEFINE_string("model_dir", None, "Model directory written by mdl_tf.train.")
    flags.DEFINE_string("split", "valid", "Split to evaluate: train, valid or test.")
    flags.DEFINE_string("data_dir", None, "Override the data directory recorded at training.")
    flags.DEFINE_string("output", None, "Where to write the metrics (default <model_dir>/metrics.json).")
    flags.DEFINE_integer("batch_size", 4096, "Evaluation batch size.")
    flags.DEFINE_enum("bad_rows", "error", ["error", "skip"],
                      "Bad input rows: stop with an error naming file/line/column, or skip "
                      "and count.")
    flags.DEFINE_float("max_bad_fraction", 0.01,
                       "With --bad_rows skip: fail when more of the rows read are bad.")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    if not FLAGS.model_dir:
        raise app.UsageError("--model_dir is required")
    model, schema, info = runs.restore_model(FLAGS.model_dir)
    counter = data.BadRowCounter() if FLAGS.bad_rows == "skip" else None
    try:
        result = evaluate(model, schema, FLAGS.split, FLAGS.data_dir or info["data_dir"],
                          FLAGS.output or os.path.join(FLAGS.model_dir, "metrics.json"),
                          FLAGS.batch_size, FLAGS.bad_rows, counter)
        if counter is not None:
            print(f"bad rows ({FLAGS.split}): {counter.summary()}")
            counter.check(f"split '{FLAGS.split}'", FLAGS.max_bad_fraction)
    except data.DataError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(metrics.format_table(result, f"{schema.name} / {info['model']} / split={FLAGS.split}"))


if __name__ == "__main__":
    define_flags()
    app.run(main)
