"""Evaluation: per-scenario x per-task AUC, GAUC, logloss, count, positives and calibration.

    python -m mdl_tf.evaluate --model_dir runs/demo [--split test] [--calibrate platt]

Writes <model_dir>/metrics_<split>.json (or --output; one file per split, so evaluating
the test split leaves training's validation metrics alone) shaped as
{"split": ..., "scenarios": {s: {t: {auc, gauc, logloss, count, positives, ece,
 mean_predicted, observed_rate}}}, "overall": {t: {...}}} (strict JSON: an undefined
metric is null) and prints the table. `--bad_rows skip` drops bad rows as training does,
and reports them.
`--calibrate platt|isotonic` fits a post-hoc calibration per scenario x task on the
validation split (mdl_tf/calibration.py) and saves it as <model_dir>/calibration.json,
which exports then apply inside their signatures. When the model directory has one,
the metrics file also holds the calibrated scores' metrics under "calibrated"
({"method", "fitted_on", "scenarios", "overall"}); the top-level ones are the raw model's.
A calibrated cell (s, t) scores its rows with s's map (what scenario_<s> serves; AUC is
unchanged); the overall rows with serving_default's scores (a row in several scenarios:
the mean of their maps).
"""
import os

from mdl_tf import cli, quiet

# --help answers before TensorFlow loads (tens of seconds on a busy machine).
cli.help_without_tensorflow(__name__, __doc__, cli.define_evaluate_flags)
quiet.load_tensorflow_quietly(__name__)  # without the CUDA-stub lines of CPU-only machines

import mdl_tf  # noqa: F401
import numpy as np
import tensorflow as tf
from absl import app, flags, logging

from mdl_tf import calibration as calibration_lib, data, metrics, runs


def predict_split(model, schema, split, data_dir, batch_size=4096, bad_rows="error",
                  counter=None):
    """(probs [N, N_t], labels [N, N_t], membership [N, N_s], groups [N] or None).

    Raises DataError when the split has no usable row."""
    ds = data.make_dataset(schema, split, data_dir=data_dir, batch_size=batch_size,
                           bad_rows=bad_rows, counter=counter)

    # Not XLA: the last batch has another shape. Not AutoGraph: see RankingModel.train_step.
    @tf.function(autograph=False, reduce_retracing=True)
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


def metrics_path(model_dir, split):
    return os.path.join(model_dir, f"metrics_{split}.json")


def evaluate(model, schema, split, data_dir, output=None, batch_size=4096, calibration=None,
             bad_rows="error", counter=None, predictions=None):
    """Metrics of `split`; with a Calibration, also those of the calibrated scores;
    bad_rows="skip" drops (and counts in `counter`) bad rows. `predictions`: predict_split's
    result for this split when the caller has it already (calibrate's), else computed."""
    probs, labels, membership, groups = predictions or predict_split(
        model, schema, split, data_dir, batch_size, bad_rows, counter)
    result = {"split": split, **metrics.scenario_task_metrics(
        probs, labels, membership, schema.scenario_names, schema.task_names, groups)}
    if calibration is not None:
        result["calibrated"] = calibrated_metrics(calibration, probs, labels, membership,
                                                  schema, groups)
    if output:
        with open(output, "w") as fh:
            metrics.to_json(result, fh)
    return result


def calibrated_metrics(calibration, probs, labels, membership, schema, groups=None):
    """The metrics of the calibrated scores: cell (s, t) with scenario s's map on its rows,
    "overall" with each row's serving_default score."""
    served = calibration.apply(probs, membership).numpy()
    out = {"method": calibration.method, "fitted_on": calibration.spec["fitted_on"],
           **metrics.scenario_task_metrics(served, labels, membership, [], schema.task_names,
                                           groups)}
    per_scenario = calibration.per_scenario(probs).numpy()                 # [N, N_s, N_t]
    for k, scenario in enumerate(schema.scenario_names):
        cells = metrics.scenario_task_metrics(per_scenario[:, k], labels, membership[:, k:k + 1],
                                              [scenario], schema.task_names, groups)
        out["scenarios"][scenario] = cells["scenarios"][scenario]
    return out


def calibrate(model, schema, data_dir, method, model_dir, split="valid", batch_size=4096,
              bad_rows="error", counter=None):
    """Fits the calibration of every scenario x task on `split` and saves it as
    <model_dir>/calibration.json. Returns (the Calibration, the split's predictions: for
    evaluate() to reuse instead of predicting the split again)."""
    predictions = predict_split(model, schema, split, data_dir, batch_size, bad_rows, counter)
    probs, labels, membership, _ = predictions
    fitted = calibration_lib.fit(method, probs, labels, membership, schema.scenario_names,
                                 schema.task_names, fitted_on=split)
    fitted.save(calibration_lib.model_file(model_dir))
    return fitted, predictions


def print_tables(result, title):
    """Prints the metrics table, then the calibrated one if the result has it."""
    print(metrics.format_table(result, title))
    if "calibrated" in result:
        print(metrics.format_table(result["calibrated"],
                                   f"{title} / calibrated ({result['calibrated']['method']})"))


FLAGS = flags.FLAGS


def define_flags():
    """Command-line flags (defined only when run as a CLI, so importing stays side-effect free)."""
    cli.define_evaluate_flags()


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    if not FLAGS.model_dir:
        raise app.UsageError("--model_dir is required")
    # One counter per split read (--calibrate reads the validation split too).
    splits = dict.fromkeys((["valid"] if FLAGS.calibrate else []) + [FLAGS.split])
    counters = ({split: data.BadRowCounter() for split in splits}
                if FLAGS.bad_rows == "skip" else {})
    with cli.user_errors():
        model, schema, info = runs.restore_model(FLAGS.model_dir)
        data_dir = FLAGS.data_dir or info["data_dir"]
        predictions = None
        if FLAGS.calibrate:
            fitted, valid = calibrate(model, schema, data_dir, FLAGS.calibrate,
                                      FLAGS.model_dir, batch_size=FLAGS.batch_size,
                                      bad_rows=FLAGS.bad_rows, counter=counters.get("valid"))
            predictions = valid if FLAGS.split == "valid" else None
        else:
            fitted = calibration_lib.load_for(FLAGS.model_dir, schema)
        result = evaluate(model, schema, FLAGS.split, data_dir,
                          FLAGS.output or metrics_path(FLAGS.model_dir, FLAGS.split),
                          FLAGS.batch_size, fitted, FLAGS.bad_rows, counters.get(FLAGS.split),
                          predictions)
        data.report_bad_rows(counters, FLAGS.max_bad_fraction)
    print_tables(result, f"{schema.name} / {info['model']} / split={FLAGS.split}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
