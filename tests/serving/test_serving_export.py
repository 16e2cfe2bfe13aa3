"""The SavedModel export: signatures, parity with eager Keras, warm-up file, cost, names,
and the TF1 Session-based tools (saved_model_cli) that TF Serving's loader family uses."""
import dataclasses
import os
import re
import subprocess
import sys

import mdl_tf  # noqa: F401
import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO, TINY_CONFIG
from mdl_tf import data, export
from mdl_tf.contract import signatures, warmup
from mdl_tf.models import build_model, make_config
from serving import cost

from serving_helpers import ATOL, call_signature, feature_inputs, validation_columns

CLI_ENV = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "PYTHONPATH": REPO}


@pytest.fixture(scope="module")
def loaded(tiny_run):
    return tf.saved_model.load(tiny_run["export_path"])


@pytest.fixture(scope="module")
def columns(tiny_run):
    return validation_columns(tiny_run)


def expected_signatures(schema):
    names = {signatures.DEFAULT, signatures.EXAMPLES}
    for s in schema.scenario_names:
        names.add(signatures.scenario_signature(s))
        names.update(signatures.task_signature(s, t) for t in schema.task_names)
    return names


def test_export_has_every_signature_with_serving_safe_names(tiny_run, tiny_schema, loaded):
    assert set(loaded.signatures) == expected_signatures(tiny_schema)
    assert all(re.fullmatch(r"[a-z0-9_]+", name) for name in loaded.signatures)
    base = os.path.dirname(tiny_run["export_path"])
    assert os.listdir(base) == [os.path.basename(tiny_run["export_path"])]  # no temp dirs


def test_serving_default_matches_eager_keras(tiny_run, tiny_schema, loaded, columns):
    inputs = {**feature_inputs(columns, tiny_schema), "scenario": columns["scenario"]}
    eager = tiny_run["model"].predict_raw({k: tf.constant(v) for k, v in inputs.items()})
    served = call_signature(loaded, signatures.DEFAULT, inputs)
    for n, task in enumerate(tiny_schema.task_names):
        np.testing.assert_allclose(served[task], eager[:, n].numpy(), atol=ATOL)


def test_scenario_and_task_signatures_equal_serving_default_columns(tiny_run, tiny_schema,
                                                                    loaded, columns):
    features = feature_inputs(columns, tiny_schema)
    for scenario in tiny_schema.scenario_names:
        default = call_signature(loaded, signatures.DEFAULT,
                                 feature_inputs(columns, tiny_schema, scenario))
        per_scenario = call_signature(loaded, signatures.scenario_signature(scenario), features)
        for task in tiny_schema.task_names:
            np.testing.assert_allclose(per_scenario[task], default[task], atol=ATOL)
            per_task = call_signature(loaded, signatures.task_signature(scenario, task), features)
            np.testing.assert_allclose(per_task[signatures.TASK_OUTPUT], default[task],
                                       atol=ATOL)


def test_per_task_graphs_compute_one_task_for_fewer_flops_and_equal_scores(
        tiny_run, tiny_schema, columns):
    scenario, task = tiny_schema.scenario_names[0], tiny_schema.task_names[1]
    name, parent = signatures.task_signature(scenario, task), signatures.scenario_signature(
        scenario)
    batch = len(columns["scenario"])
    shared = export.build_signatures(tiny_run["model"], batch_size=batch, only={name, parent})
    own = export.build_signatures(tiny_run["model"], batch_size=batch, only={name},
                                  per_task_graphs=True)
    # By default the per-task signature calls its scenario's graph (and costs what it
    # costs); with per_task_graphs it is a graph of the one task.
    assert cost.graph_flops(shared[name]) == cost.graph_flops(shared[parent]) > 0
    assert 0 < cost.graph_flops(own[name]) < cost.graph_flops(shared[parent])
    features = {k: tf.constant(v) for k, v in feature_inputs(columns, tiny_schema).items()}
    np.testing.assert_allclose(own[name](features)[signatures.TASK_OUTPUT].numpy(),
                               shared[name](features)[signatures.TASK_OUTPUT].numpy(),
                               atol=ATOL)


def _examples(columns, schema):
    rows = [{k: (v[i].decode() if isinstance(v[i], bytes) else v[i].item())
             for k, v in columns.items()} for i in range(len(columns["scenario"]))]
    for row in rows:  # raw feature names -> the source columns an Example carries
        for f in schema.features:
            row[f.source_column] = row.pop(f.name)
        row[schema.scenario.column] = row.pop(data.SCENARIO_KEY)
    return [data.example_from_row(schema, r).SerializeToString() for r in rows]


def test_predict_examples_matches_serving_default(tiny_schema, loaded, columns):
    served = call_signature(loaded, signatures.EXAMPLES,
                            {"examples": np.array(_examples(columns, tiny_schema), object)})
    default = call_signature(loaded, signatures.DEFAULT,
                             {**feature_inputs(columns, tiny_schema),
                              "scenario": columns["scenario"]})
    for task in tiny_schema.task_names:
        np.testing.assert_allclose(served[task], default[task], atol=ATOL)


def test_unknown_scenario_is_an_invalid_argument_naming_it(tiny_schema, loaded, columns):
    inputs = feature_inputs(columns, tiny_schema, scenario="nowhere")
    with pytest.raises(tf.errors.InvalidArgumentError, match="unknown scenario.*nowhere"):
        call_signature(loaded, signatures.DEFAULT, inputs)


def test_warmup_file_has_one_request_per_signature(tiny_run, tiny_schema):
    # Replaying them is tested where the gRPC server loads this export.
    records = warmup.read(tiny_run["export_path"])
    assert sorted(r.model_spec.signature_name for r in records) == sorted(
        expected_signatures(tiny_schema))


def test_warmup_file_rejects_non_predict_records(tmp_path):
    from tensorflow_serving.apis import prediction_log_pb2
    path = tmp_path / warmup.WARMUP_PATH
    path.parent.mkdir(parents=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(prediction_log_pb2.PredictionLog(
            classify_log=prediction_log_pb2.ClassifyLog()).SerializeToString())
    with pytest.raises(ValueError, match="classify_log"):
        warmup.read(str(tmp_path))


def test_per_scenario_signature_costs_fewer_flops(tiny_run, tiny_schema):
    flops = cost.signature_flops(tiny_run["model"], batch_size=16)
    default = flops[signatures.DEFAULT]
    for scenario in tiny_schema.scenario_names:
        assert 0 < flops[signatures.scenario_signature(scenario)] < default


def test_signature_names_must_be_serving_safe():
    assert signatures.signature_for() == "serving_default"
    assert signatures.signature_for("feed", "click") == "scenario_feed__click"
    for bad in ("Feed", "a/b", "a-b", "f\u00e9ed"):
        with pytest.raises(ValueError, match=r"\[a-z0-9_\]"):
            signatures.scenario_signature(bad)
    with pytest.raises(ValueError, match="needs a scenario"):
        signatures.signature_for(task="click")


def test_models_without_scenario_subsets_fill_the_scenario_in(tiny_schema):
    model = build_model("shared_bottom", tiny_schema,
                        make_config("shared_bottom", dict(TINY_CONFIG))).build_from_schema()
    scenario, task = tiny_schema.scenario_names[-1], tiny_schema.task_names[-1]
    names = {signatures.scenario_signature(scenario), signatures.task_signature(scenario, task)}
    # Only these signatures (and serving_default's graph they call): tracing all would
    # take seconds.
    functions = export.build_signatures(model, only=names)
    raw = model.dummy_raw_batch(3)
    features = {n: v for n, v in raw.items() if n != data.SCENARIO_KEY}
    served = functions[signatures.scenario_signature(scenario)](features)
    eager = model.predict_raw({**raw, data.SCENARIO_KEY: tf.fill([3], scenario)})
    for n, name in enumerate(tiny_schema.task_names):
        np.testing.assert_allclose(served[name], eager[:, n], atol=ATOL)
    one = functions[signatures.task_signature(scenario, task)](features)
    np.testing.assert_allclose(one[signatures.TASK_OUTPUT], served[task])


def test_colliding_signature_names_are_refused(tiny_schema):
    schema = dataclasses.replace(
        tiny_schema, scenario=dataclasses.replace(tiny_schema.scenario, names=("a", "a__b")),
        tasks=(dataclasses.replace(tiny_schema.tasks[0], name="b__c"),
               dataclasses.replace(tiny_schema.tasks[1], name="c")),
        scenario_priors={})
    model = build_model("mdl", schema, make_config("mdl", dict(TINY_CONFIG))).build_from_schema()
    with pytest.raises(ValueError, match="scenario_a__b__c"):
        export.build_signatures(model)


def _start_cli(*args):
    return subprocess.Popen([sys.executable, "-m", "tensorflow.python.tools.saved_model_cli",
                             *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=CLI_ENV)


def _finish(process):
    stdout, stderr = process.communicate(timeout=300)
    return process.returncode, stdout, stderr


def _example_literal(serialized_examples):
    """saved_model_cli's --input_examples value: a Python literal [{feature: [values]}]."""
    rows = []
    for serialized in serialized_examples:
        features = tf.train.Example.FromString(serialized).features.feature
        rows.append({k: [x.decode() if isinstance(x, bytes) else x
                         for x in getattr(v, v.WhichOneof("kind")).value]
                     for k, v in features.items()})
    return repr(rows)


@pytest.fixture(scope="module")
def cli_results(tiny_run, tiny_schema, columns, tmp_path_factory):
    """saved_model_cli `show --all` and `run --input_examples`, started together (each
    subprocess spends seconds importing TensorFlow)."""
    outdir = str(tmp_path_factory.mktemp("saved_model_cli_out"))
    examples = _examples(columns, tiny_schema)[:3]
    show = _start_cli("show", "--dir", tiny_run["export_path"], "--all")
    run = _start_cli("run", "--dir", tiny_run["export_path"], "--tag_set", "serve",
                     "--signature_def", signatures.EXAMPLES,
                     "--input_examples", f"examples={_example_literal(examples)}",
                     "--outdir", outdir)
    return {"show": _finish(show), "run": _finish(run), "outdir": outdir, "examples": examples}


def test_saved_model_cli_show_lists_every_signature(tiny_schema, cli_results):
    code, stdout, stderr = cli_results["show"]
    assert code == 0, stderr[-2000:]
    for name in expected_signatures(tiny_schema):
        assert f"signature_def['{name}']" in stdout


def test_saved_model_cli_run_with_input_examples(tiny_schema, loaded, cli_results):
    code, _, stderr = cli_results["run"]
    assert code == 0, stderr[-2000:]
    expected = call_signature(loaded, signatures.EXAMPLES,
                              {"examples": np.array(cli_results["examples"], object)})
    for task in tiny_schema.task_names:
        np.testing.assert_allclose(np.load(os.path.join(cli_results["outdir"], f"{task}.npy")),
                                   expected[task], atol=ATOL)


def test_stale_temporary_export_directories_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    for name in (f".tmp-5-{dead}", f".tmp-6-{os.getpid()}", "7"):
        os.makedirs(tmp_path / name / "variables")
    assert export.remove_stale_temporaries(str(tmp_path)) == [str(tmp_path / f".tmp-5-{dead}")]
    assert sorted(os.listdir(tmp_path)) == [f".tmp-6-{os.getpid()}", "7"]  # still exporting
