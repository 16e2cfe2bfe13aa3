"""SavedModel export for TF Serving.

    python -m mdl_tf.export --model_dir runs/demo [--export_base runs/demo/export]

Writes `<export_base>/<version>/` atomically (a temporary directory, then a rename: TF
Serving loads any numeric directory it sees). Signatures (names in
mdl_tf/contract/signatures.py, [a-z0-9_] only):

  serving_default            raw features + the schema's scenario column (string: names,
                             raw values the schema's scenario.values maps, or 0-based ids,
                             '|'-joined for multi-scenario; the input is named `scenario`
                             when the column is not a valid input name)
                             -> {<task>: [B] probability}
  predict_examples           `examples`: serialized tf.train.Example -> {<task>: [B]}
  scenario_<s>               raw features, scenario fixed in the graph -> {<task>: [B]}
  scenario_<s>__<task>       raw features -> {"probability": [B]}

Signatures are not XLA-compiled (every new batch size would recompile). The multi-scenario
signatures share one inner tf.function, and each scenario's `scenario_<s>__<task>`
signatures read their task from `scenario_<s>`'s graph, so each graph is traced and stored
once. For models whose `call` takes `scenario_index` (MDL), a per-scenario graph computes
only its own scenario token and the global one (an export traces 2 + N_s graphs); other
models' `scenario_<s>` signatures call serving_default's graph with the scenario filled
in (2 graphs).
`--per_task_graphs` (models whose `call` takes `task_indices`: MDL) gives every
`scenario_<s>__<task>` signature its own graph computing only that task's token: fewer
FLOPs per one-task request (against `scenario_<s>` at batch 256: 1.10x faster at 3
scenarios, no faster at 15; benchmarks/results/train_throughput.md), for N_s x N_t more
traced graphs, so a longer export and load and a larger saved_model.pb.
An unknown scenario fails with INVALID_ARGUMENT naming it, and so does a dense value
that is NaN or inf (mdl_tf.values; checked in the graph, so real TF Serving refuses it too,
serialized Examples included).
With a post-hoc calibration (<model_dir>/calibration.json, mdl_tf/calibration.py) every
signature returns calibrated probabilities: each row's scenario x task map applied to the
model's output in the graph (a multi-scenario row: the mean over its scenarios); the
version then also gets `assets.extra/calibration.json`.

A model with a non-finite weight (NaN or inf) is refused: it would only serve NaN.
The version also gets `assets.extra/tf_serving_warmup_requests`: one PredictRequest per
signature, which TF Serving (and serving/server.py) replays before serving the version.
"""
import functools
import inspect
import os
import re
import shutil
import time

from mdl_tf import cli, quiet

# --help answers before TensorFlow loads (tens of seconds on a busy machine).
cli.help_without_tensorflow(__name__, __doc__, cli.define_export_flags)
quiet.load_tensorflow_quietly(__name__)  # without the CUDA-stub lines of CPU-only machines

import mdl_tf  # noqa: F401
import psutil
import tensorflow as tf
from absl import app, flags, logging

from mdl_tf import calibration as calibration_lib, data, runs
from mdl_tf.schema import NAME_RE
from mdl_tf.contract import requests, signatures as names, warmup
from mdl_tf.contract.versions import versions_on_disk

TMP_RE = re.compile(r"\.tmp-\d+-(\d+)")   # .tmp-<version>-<pid>: an export in progress
TF_DTYPES = {"int64": tf.int64, "float32": tf.float32, "string": tf.string}
# Every signature is traced without AutoGraph (see RankingModel.train_step): 14 signatures
# of the default MDL on the synthetic schema in 4.6 s instead of 8.1 s.
signature_function = functools.partial(tf.function, autograph=False)


def feature_specs(schema, batch_size=None):
    """{feature: TensorSpec([batch_size], dtype)} of the raw serving inputs (no scenario)."""
    return {f.name: tf.TensorSpec([batch_size], TF_DTYPES[f.dtype], name=f.name)
            for f in schema.features}


def scenario_input_name(schema):
    """serving_default's scenario input: the schema's scenario column, so rows of the
    dataset's own files can be sent as they are; "scenario" when the column is not a
    valid identifier or is also a feature's name."""
    column = schema.scenario.column
    if NAME_RE.match(column) and column not in schema.feature_names:
        return column
    return data.SCENARIO_KEY


def _check_scenarios(model, scenario):
    """An Assert naming the unknown scenario values and the known ones, each as one string
    (serving/errors.py shows TensorFlow's "assertion failed: [..] [..]" without the graph
    internals)."""
    schema = model.schema
    ids = model.encoder.scenario.ids(scenario)
    unknown = tf.boolean_mask(tf.strings.split(scenario, schema.scenario.separator)
                              .flat_values, ids.flat_values < 0)
    known = ", ".join(schema.scenario_names + [repr(v) for v in schema.scenario.values])
    return tf.debugging.Assert(
        tf.size(unknown) == 0,
        ["unknown scenario", tf.strings.reduce_join("'" + tf.unique(unknown).y + "'",
                                                   separator=", "),
         f"(input '{scenario_input_name(schema)}'); known scenarios: {known}"])


def _check_dense(schema, raw):
    """Asserts that every dense input is finite (NaN or inf would score NaN)."""
    dense = [f.name for f in schema.features if f.type == "dense"]
    if not dense:
        return tf.no_op()
    finite = tf.stack([tf.reduce_all(tf.math.is_finite(raw[n])) for n in dense])
    return tf.debugging.Assert(tf.reduce_all(finite), [
        "dense inputs must be finite (not NaN or inf); finite per input", tf.constant(dense),
        finite])


def _outputs(schema, probs):
    return {t: probs[:, n] for n, t in enumerate(schema.task_names)}


def _calibrated(calibration, probs, membership, task=None):
    """probs [B, N_t] (or [B, 1] of task number `task` alone) through the calibration."""
    if calibration is None:
        return probs
    if task is None:
        return calibration.apply(probs, membership)
    # Every task column holds this task's score; only column `task` is read back.
    tiled = tf.tile(probs, [1, calibration.num_tasks])                  # [B, N_t]
    return calibration.apply(tiled, membership)[:, task:task + 1]       # [B, 1]


def build_signatures(model, batch_size=None, calibration=None, only=None,
                     per_task_graphs=False):
    """{signature name: concrete function}. A fixed batch_size gives static shapes (for
    cost analysis, see serving/cost.py); exports use None. With a Calibration, every
    signature returns calibrated probabilities. `only` (names) traces just those
    signatures (benchmarks). per_task_graphs: each `scenario_<s>__<task>` signature
    computes only its task (its own graph) where the model can (`task_indices`)."""
    schema = model.schema
    specs = feature_specs(schema, batch_size)
    scenario_input = scenario_input_name(schema)
    scenario_spec = tf.TensorSpec([batch_size], tf.string, name=scenario_input)

    @signature_function(input_signature=[{**specs, scenario_input: scenario_spec}])
    def predict(raw):
        raw = dict(raw)
        raw[data.SCENARIO_KEY] = data.map_scenario_values(schema, raw.pop(scenario_input))
        with tf.control_dependencies([_check_scenarios(model, raw[data.SCENARIO_KEY]),
                                      _check_dense(schema, raw)]):
            probs = _calibrated(calibration, model.predict_raw(raw),
                                model.encoder.scenario(raw[data.SCENARIO_KEY]))
            return _outputs(schema, probs)

    @signature_function(input_signature=[tf.TensorSpec([batch_size], tf.string,
                                                      name=names.EXAMPLES_INPUT)])
    def predict_examples(serialized):
        spec = {**data.example_spec(schema),
                schema.scenario.column: tf.io.VarLenFeature(tf.string)}
        raw = data.raw_from_parsed(schema, tf.io.parse_example(serialized, spec))
        # Names map to themselves (schema.validate), so predict's mapping changes nothing.
        raw[scenario_input] = raw.pop(data.SCENARIO_KEY)
        return predict(raw)

    functions = {names.DEFAULT: predict, names.EXAMPLES: predict_examples}
    for k, scenario in enumerate(schema.scenario_names):
        per_scenario = (_scenario_function(model, specs, k, calibration)
                        if _supports(model, "scenario_index")
                        else _filled_scenario_function(predict, specs, scenario_input, scenario))
        functions[names.scenario_signature(scenario)] = per_scenario
        for n, task in enumerate(schema.task_names):
            name = names.task_signature(scenario, task)
            if name in functions:  # e.g. scenario "a__b" + task "c" vs scenario "a" + "b__c"
                raise ValueError(f"two signatures would be named '{name}'; rename a scenario "
                                 "or task")
            functions[name] = (_scenario_function(model, specs, k, calibration, task=n)
                               if per_task_graphs and _supports(model, "task_indices")
                               else _task_function(per_scenario, specs, task))
    return {name: fn.get_concrete_function() for name, fn in functions.items()
            if only is None or name in only}


def _supports(model, argument):
    return argument in inspect.signature(model.call).parameters


def _scenario_function(model, specs, k, calibration=None, task=None):
    """Scenario k's signature function of a model that computes one scenario's path
    (`scenario_index`): {<task>: [B]}, or {"probability": [B]} of task number `task` alone
    (the model computing only that task)."""
    call_kwargs = {"scenario_index": k}
    if task is not None:
        call_kwargs["task_indices"] = [task]

    @signature_function(input_signature=[specs])
    def predict_scenario(raw):
        raw = dict(raw)
        batch = tf.shape(next(iter(raw.values())))
        raw[data.SCENARIO_KEY] = tf.fill(batch, model.schema.scenario_names[k])
        with tf.control_dependencies([_check_dense(model.schema, raw)]):
            probs = _calibrated(calibration, model.predict_raw(raw, **call_kwargs),
                                tf.one_hot(tf.fill(batch, k), model.schema.num_scenarios), task)
        if task is not None:
            return {names.TASK_OUTPUT: probs[:, 0]}
        return _outputs(model.schema, probs)
    return predict_scenario


def _filled_scenario_function(predict, specs, scenario_input, scenario):
    """A scenario's signature function for models without `scenario_index`: serving_default's
    graph with every row in that scenario."""
    @signature_function(input_signature=[specs])
    def predict_scenario(raw):
        batch = tf.shape(next(iter(raw.values())))
        return predict({**raw, scenario_input: tf.fill(batch, scenario)})
    return predict_scenario


def _task_function(per_scenario, specs, task):
    @signature_function(input_signature=[specs])
    def predict_task(raw):
        return {names.TASK_OUTPUT: per_scenario(raw)[task]}
    return predict_task


def sample_inputs(schema):
    """One neutral example (0, 0.0 or "" per feature; the first scenario), as the raw
    inputs {name: [value]} plus the serialized tf.train.Example under "examples"."""
    neutral = {"int64": 0, "float32": 0.0, "string": ""}
    raw = {f.name: [neutral[f.dtype]] for f in schema.features}
    raw[data.SCENARIO_KEY] = raw[scenario_input_name(schema)] = [schema.scenario_names[0]]
    row = {f.source_column: raw[f.name][0] for f in schema.features}
    row[schema.scenario.column] = schema.scenario_names[0]
    raw[names.EXAMPLES_INPUT] = [data.example_from_row(schema, row).SerializeToString()]
    return raw


def input_dtypes(concrete_function):
    """{input name: tf.DType} of a signature function (one dict or one tensor argument)."""
    arg = concrete_function.structured_input_signature[0][0]
    specs = arg if isinstance(arg, dict) else {arg.name: arg}
    return {k: spec.dtype for k, spec in specs.items()}


def warmup_requests(schema, signatures):
    """One PredictRequest per signature, for TF Serving's warm-up file (model name unset:
    TF Serving ignores it in warm-up records)."""
    inputs = sample_inputs(schema)
    out = []
    for name, fn in signatures.items():
        dtypes = input_dtypes(fn)
        out.append(requests.make_predict_request("", name, {k: inputs[k] for k in dtypes},
                                                 dtypes))
    return out


def _serving_module(model):
    """The object the SavedModel stores: the variables and lookup tables the signatures read.

    Saving the Keras model itself also traces and stores every layer's call functions,
    which TF Serving never uses: measured on the default MDL, export took 9.0 s instead
    of 2.4 s, loading 5.3 s instead of 2.4 s, and saved_model.pb was 2.3 MB, not 1.5 MB.
    """
    module = tf.Module()
    module.model_variables = list(model.variables)
    module.encoder = model.encoder  # owns the vocabulary and scenario lookup tables
    return module


def check_finite_weights(model):
    """ValueError naming the variables that hold NaN or inf (a diverged model)."""
    bad = [v.name for v in model.variables
           if v.dtype.is_floating and not bool(tf.reduce_all(tf.math.is_finite(v)))]
    if bad:
        raise ValueError(f"refusing to export: {len(bad)} of {len(model.variables)} variables "
                         f"hold NaN or inf (e.g. {', '.join(bad[:3])}); the model diverged")


def next_version(export_base):
    """max(now in seconds, newest version + 1): increasing, and readable as a time."""
    return max([int(time.time())] + [v + 1 for v in versions_on_disk(export_base)])


def remove_stale_temporaries(export_base):
    """Removes `.tmp-<version>-<pid>` directories of exports whose process is gone (killed
    mid-export); returns their paths. Pids are this host's: exports into one base path
    from several hosts would need their own base paths."""
    removed = []
    for name in os.listdir(export_base):
        match = TMP_RE.fullmatch(name)
        if match and not psutil.pid_exists(int(match.group(1))):
            shutil.rmtree(os.path.join(export_base, name), ignore_errors=True)
            removed.append(os.path.join(export_base, name))
    return removed


def export_saved_model(model, export_base, version=None, extra_assets=None,
                       calibration=None, per_task_graphs=False):
    """Exports to <export_base>/<version> atomically; returns the version directory.

    The warm-up file is written before the rename. `extra_assets(tmp_dir, signatures)`
    may write more into the version directory before it becomes visible. `calibration`
    (a mdl_tf.calibration.Calibration) is applied inside every signature. per_task_graphs:
    see build_signatures and the module docstring. Temporary
    directories that killed exports left behind are removed first.
    """
    check_finite_weights(model)
    os.makedirs(export_base, exist_ok=True)
    for path in remove_stale_temporaries(export_base):
        logging.warning("removed %s, left by an export that did not finish", path)
    version = version or next_version(export_base)
    final = os.path.join(export_base, str(version))
    if os.path.exists(final):
        raise FileExistsError(f"{final} exists; versions are immutable")
    tmp = os.path.join(export_base, f".tmp-{version}-{os.getpid()}")
    signatures = build_signatures(model, calibration=calibration,
                                  per_task_graphs=per_task_graphs)
    tf.saved_model.save(_serving_module(model), tmp, signatures=signatures)
    warmup.write(tmp, warmup_requests(model.schema, signatures))
    if calibration is not None:
        calibration.save(os.path.join(tmp, "assets.extra", calibration_lib.FILE))
    if extra_assets is not None:
        extra_assets(tmp, signatures)
    os.rename(tmp, final)  # atomic on one filesystem: Serving never sees a half export
    return final


FLAGS = flags.FLAGS


def define_flags():
    """Command-line flags (defined only when run as a CLI, so importing stays side-effect free)."""
    cli.define_export_flags()


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    if not FLAGS.model_dir:
        raise app.UsageError("--model_dir is required")
    with cli.user_errors():
        model, schema, _ = runs.restore_model(FLAGS.model_dir)
        path = export_saved_model(
            model, FLAGS.export_base or os.path.join(FLAGS.model_dir, "export"),
            FLAGS.version or None, calibration=calibration_lib.load_for(FLAGS.model_dir, schema),
            per_task_graphs=FLAGS.per_task_graphs)
    print(f"exported {path}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
