"""SavedModel export for TF Serving.

    python -m mdl_tf.export --model_dir runs/demo [--export_base runs/demo/export]

Writes `<export_base>/<version>/` atomically (a temporary directory, then a rename: TF
Serving loads any numeric directory it sees). Signatures (names use [a-z0-9_] only):

  serving_default            raw features + `scenario` (string: names or 0-based ids,
                             '|'-joined for multi-scenario) -> {<task>: [B] probability}
  predict_examples           `examples`: serialized tf.train.Example -> {<task>: [B]}
  scenario_<s>               raw features, scenario fixed in the graph -> {<task>: [B]}
  scenario_<s>__<task>       raw features -> {"probability": [B]}

Signatures are not XLA-compiled (every new batch size would recompile). The multi-scenario
signatures share one inner tf.function and each scenario's signatures share one per
scenario, so each graph is stored once; a per-scenario graph computes only its own
scenario token and the global one (MDL.call(scenario_index=k)).
An unknown scenario fails with INVALID_ARGUMENT naming it.
"""
import os
import time

import mdl_tf  # noqa: F401
import tensorflow as tf
from absl import app, flags, logging

from mdl_tf import data, runs

TF_DTYPES = {"int64": tf.int64, "float32": tf.float32, "string": tf.string}


def feature_specs(schema):
    """{feature: TensorSpec([None], dtype)} of the raw serving inputs (scenario excluded)."""
    return {f.name: tf.TensorSpec([None], TF_DTYPES[f.dtype], name=f.name)
            for f in schema.features}


def _check_scenarios(model, scenario):
    ids = model.encoder.scenario.ids(scenario)
    unknown = tf.boolean_mask(tf.strings.split(scenario, model.schema.scenario.separator)
                              .flat_values, ids.flat_values < 0)
    return tf.debugging.Assert(
        tf.size(unknown) == 0,
        ["unknown scenario", unknown, "known scenarios:",
         tf.constant(model.schema.scenario_names)])


def _outputs(schema, probs):
    return {t: probs[:, n] for n, t in enumerate(schema.task_names)}


def build_signatures(model):
    schema = model.schema
    specs = feature_specs(schema)
    scenario_spec = tf.TensorSpec([None], tf.string, name=data.SCENARIO_KEY)

    @tf.function(input_signature=[{**specs, data.SCENARIO_KEY: scenario_spec}])
    def predict(raw):
        with tf.control_dependencies([_check_scenarios(model, raw[data.SCENARIO_KEY])]):
            return _outputs(schema, model.predict_raw(raw))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def predict_examples(serialized):
        spec = {**data.example_spec(schema),
                schema.scenario.column: tf.io.VarLenFeature(tf.string)}
        parsed = tf.io.parse_example(serialized, spec)
        raw = data.features_from_parsed(schema, parsed)
        raw[data.SCENARIO_KEY] = data.join_sparse(parsed[schema.scenario.column],
                                                   schema.scenario.separator)
        return predict(raw)

    signatures = {"serving_default": predict.get_concrete_function(),
                  "predict_examples": predict_examples.get_concrete_function()}
    for k, scenario in enumerate(schema.scenario_names):
        per_scenario = _scenario_function(model, specs, k)
        signatures[f"scenario_{scenario}"] = per_scenario.get_concrete_function()
        for n, task in enumerate(schema.task_names):
            signatures[f"scenario_{scenario}__{task}"] = _task_function(
                per_scenario, specs, task).get_concrete_function()
    return signatures


def _scenario_function(model, specs, k):
    @tf.function(input_signature=[specs])
    def predict_scenario(raw):
        raw = dict(raw)
        raw[data.SCENARIO_KEY] = tf.fill(tf.shape(next(iter(raw.values()))),
                                         model.schema.scenario_names[k])
        return _outputs(model.schema, model.predict_raw(raw, scenario_index=k))
    return predict_scenario


def _task_function(per_scenario, specs, task):
    @tf.function(input_signature=[specs])
    def predict_task(raw):
        return {"probability": per_scenario(raw)[task]}
    return predict_task


def next_version(export_base):
    existing = [int(d) for d in os.listdir(export_base) if d.isdigit()] \
        if os.path.isdir(export_base) else []
    return max([int(time.time())] + [v + 1 for v in existing])


def export_saved_model(model, export_base, version=None, extra_assets=None):
    """Exports to <export_base>/<version> atomically; returns the version directory.

    `extra_assets(tmp_dir, signatures)` may write into the version directory (e.g.
    assets.extra/tf_serving_warmup_requests) before it becomes visible.
    """
    os.makedirs(export_base, exist_ok=True)
    version = version or next_version(export_base)
    final = os.path.join(export_base, str(version))
    if os.path.exists(final):
        raise FileExistsError(f"{final} exists; versions are immutable")
    tmp = os.path.join(export_base, f".tmp-{version}-{os.getpid()}")
    signatures = build_signatures(model)
    tf.saved_model.save(model, tmp, signatures=signatures)
    if extra_assets is not None:
        extra_assets(tmp, signatures)
    os.rename(tmp, final)  # atomic on one filesystem: Serving never sees a half export
    return final


FLAGS = flags.FLAGS


def define_flags():
    """Command-line flags (defined only when run as a CLI, so importing stays side-effect free)."""
    flags.DEFINE_string("model_dir", None, "Model directory written by mdl_tf.train.")
    flags.DEFINE_string("export_base", None, "Export base path (default <model_dir>/export).")
    flags.DEFINE_integer("version", 0, "Version number (default: max(now, last + 1)).")

def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    if not FLAGS.model_dir:
        raise app.UsageError("--model_dir is required")
    model, _, _ = runs.restore_model(FLAGS.model_dir)
    path = export_saved_model(model, FLAGS.export_base or os.path.join(FLAGS.model_dir, "export"),
                              FLAGS.version or None)
    print(f"exported {path}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
