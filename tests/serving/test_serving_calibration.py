"""A calibrated model directory: metrics before and after in metrics_valid.json (AUC unchanged),
reliability diagrams, and an export whose signatures serve the calibrated probabilities,
in process and over gRPC."""
import json
import os
import shutil

import mdl_tf  # noqa: F401
import numpy as np
import pytest
import tensorflow as tf

from mdl_tf import calibration, evaluate, export, train, visualize
from mdl_tf.contract import signatures
from serving.client import ServingClient

from serving_helpers import (ATOL, call_signature, feature_inputs, start_server,
                             validation_columns)


@pytest.fixture(scope="module")
def calibrated(tiny_run, tmp_path_factory):
    """A copy of the tiny run's model directory, calibrated (isotonic) and exported."""
    model_dir = str(tmp_path_factory.mktemp("calibrated") / "run")
    shutil.copytree(tiny_run["model_dir"], model_dir, ignore=shutil.ignore_patterns("export"))
    model = tiny_run["model"]
    with open(os.path.join(model_dir, "run.json")) as fh:
        data_dir = json.load(fh)["data_dir"]
    opts = train.TrainOptions(model_dir=model_dir, calibrate="isotonic")
    fitted, predictions = train.fit_calibration(model, model.schema, data_dir, opts)
    assert predictions[0].shape == (2000, model.schema.num_tasks)   # reused: valid = eval
    result = evaluate.evaluate(model, model.schema, "valid", data_dir,
                               evaluate.metrics_path(model_dir, "valid"), calibration=fitted,
                               predictions=predictions)
    path = export.export_saved_model(model, os.path.join(model_dir, "export"),
                                     calibration=fitted)
    return {"model_dir": model_dir, "fitted": fitted, "metrics": result, "export_path": path,
            "data_dir": data_dir}


def test_metrics_json_has_calibrated_metrics_with_the_same_auc(calibrated, tiny_schema):
    with open(evaluate.metrics_path(calibrated["model_dir"], "valid")) as fh:
        saved = json.load(fh)
    after = saved["calibrated"]
    assert after["method"] == "isotonic" and after["fitted_on"] == "valid"
    for scenario in tiny_schema.scenario_names:
        for task in tiny_schema.task_names:
            raw, cal = saved["scenarios"][scenario][task], after["scenarios"][scenario][task]
            assert abs(raw["auc"] - cal["auc"]) < 1e-4, (scenario, task)
            # Fitted on this split: the calibrated mean matches the observed rate.
            assert abs(cal["mean_predicted"] - cal["observed_rate"]) < 0.01
            assert cal["ece"] <= raw["ece"] + 1e-3


def _expected(tiny_run, fitted, inputs, scenario_column):
    raw = {k: tf.constant(v) for k, v in inputs.items()}
    raw["scenario"] = tf.constant(scenario_column)
    model = tiny_run["model"]
    probs = model.predict_raw(raw)
    return fitted.apply(probs, model.encoder.scenario(raw["scenario"])).numpy()


def test_export_serves_calibrated_probabilities(tiny_run, tiny_schema, calibrated):
    fitted = calibrated["fitted"]
    loaded = tf.saved_model.load(calibrated["export_path"])
    columns = validation_columns(tiny_run)
    features = feature_inputs(columns, tiny_schema)
    expected = _expected(tiny_run, fitted, features, columns["scenario"])
    served = call_signature(loaded, signatures.DEFAULT, {**features,
                                                         "scenario": columns["scenario"]})
    scenario = tiny_schema.scenario_names[1]
    per_scenario = _expected(tiny_run, fitted, features, [scenario.encode()] * len(expected))
    server = start_server(os.path.dirname(calibrated["export_path"]), poll_seconds=0)
    try:
        with ServingClient(f"127.0.0.1:{server.port}", "mdl") as client:
            client.wait_until_ready(timeout_s=60)
            over_grpc = client.predict(columns, scenario=scenario)
    finally:
        server.stop()
    for n, task in enumerate(tiny_schema.task_names):
        np.testing.assert_allclose(served[task], expected[:, n], atol=ATOL)
        np.testing.assert_allclose(over_grpc[task], per_scenario[:, n], atol=ATOL)
    uncalibrated = tiny_run["model"].predict_raw({**{k: tf.constant(v) for k, v in
                                                    features.items()},
                                                 "scenario": tf.constant(columns["scenario"])})
    assert not np.allclose(served[tiny_schema.task_names[0]], uncalibrated[:, 0], atol=1e-3)
    saved = calibration.Calibration.load(os.path.join(
        calibrated["export_path"], "assets.extra", calibration.FILE))
    assert saved.spec == fitted.spec


def test_reliability_diagrams_show_model_and_calibrated_curves(calibrated, tiny_schema):
    png = visualize.reliability(calibrated["model_dir"], split="valid")
    with open(png, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(os.path.join(os.path.dirname(png), "reliability.json")) as fh:
        curves = json.load(fh)["curves"]
    assert set(curves) == {"model", "calibrated (isotonic)"}
    cell = curves["model"][tiny_schema.scenario_names[0]][tiny_schema.task_names[0]]
    assert len(cell["count"]) == 10 and cell["ece"] >= 0


def test_training_without_calibrate_removes_a_stale_calibration(calibrated, tmp_path):
    model_dir = str(tmp_path / "run")
    shutil.copytree(calibrated["model_dir"], model_dir, ignore=shutil.ignore_patterns("export"))
    assert os.path.exists(calibration.model_file(model_dir))
    opts = train.TrainOptions(model_dir=model_dir)
    assert train.fit_calibration(None, None, None, opts) == (None, None)
    assert not os.path.exists(calibration.model_file(model_dir))
