"""The local server over gRPC: parity with the SavedModel and eager Keras, status, metadata,
health, reflection, TLS, the client library, and bad requests (each gets TF Serving's status
code, and the server keeps answering)."""
import csv
import json
import logging
import os
import subprocess

import grpc
import mdl_tf  # noqa: F401
import numpy as np
import pytest
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     get_model_status_pb2, predict_pb2)

from mdl_tf.contract import requests, signatures, warmup
from serving.client import ServingClient

from serving_helpers import ATOL, feature_inputs, start_server, validation_columns

RECEIVE_LIMIT = 1 << 20   # the server's; the client may send more, to test the limit


@pytest.fixture(scope="module")
def server(tiny_run):
    running = start_server(os.path.dirname(tiny_run["export_path"]),
                           max_receive_message_bytes=RECEIVE_LIMIT, poll_seconds=0,
                           enable_health=True, enable_reflection=True)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server):
    with ServingClient(f"127.0.0.1:{server.port}", "mdl", max_message_bytes=8 << 20) as c:
        yield c


@pytest.fixture(scope="module")
def columns(tiny_run):
    return validation_columns(tiny_run)


def version_of(tiny_run):
    return int(os.path.basename(tiny_run["export_path"]))


# --- readiness, metadata, health, reflection ---------------------------------------------
def test_loaded_version_is_available_after_replaying_its_warmup(server, client, tiny_run):
    assert client.wait_until_ready(timeout_s=10) == version_of(tiny_run)
    assert client.status() == {version_of(tiny_run): "AVAILABLE"}
    spec = predict_pb2.PredictRequest().model_spec
    spec.name = "mdl"
    assert server.manager.servable(spec).warmup_count == len(
        warmup.read(tiny_run["export_path"]))


def test_metadata_lists_signatures_with_int64_inputs(client, tiny_schema):
    dtypes = client.input_dtypes(signatures.scenario_signature(tiny_schema.scenario_names[0]))
    assert dtypes["user_id"] == tf.int64 and dtypes["price"] == tf.float32
    assert signatures.EXAMPLES in client.signature_defs()


def test_health_and_reflection_behind_their_flags(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="tensorflow.serving.PredictionService"))
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        answers = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        services = {s.name for s in next(answers).list_services_response.service}
    assert {"tensorflow.serving.PredictionService", "tensorflow.serving.ModelService",
            "grpc.health.v1.Health"} <= services


def test_health_and_reflection_are_off_by_default_as_in_tf_serving(tmp_path):
    running = start_server(str(tmp_path), poll_seconds=0)    # no version: nothing to load
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            with pytest.raises(grpc.RpcError) as health:
                health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                          timeout=30)
            with pytest.raises(grpc.RpcError) as listing:
                next(reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                    timeout=30))
    finally:
        running.stop()
    assert health.value.code() == listing.value.code() == grpc.StatusCode.UNIMPLEMENTED


# --- parity ------------------------------------------------------------------------------
def test_grpc_matches_saved_model_and_eager_keras(server, client, tiny_run, tiny_schema,
                                                  columns):
    inputs = {**feature_inputs(columns, tiny_schema), "scenario": columns["scenario"]}
    served = client.predict(columns)
    request = requests.make_predict_request("mdl", signatures.DEFAULT, inputs,
                                            client.input_dtypes(signatures.DEFAULT))
    # The same loaded SavedModel the server answers with, called in-process.
    in_process = requests.response_arrays(
        server.manager.servable(request.model_spec).predict(request))
    eager = tiny_run["model"].predict_raw({k: tf.constant(v) for k, v in inputs.items()})
    for n, task in enumerate(tiny_schema.task_names):
        np.testing.assert_allclose(served[task], in_process[task], atol=ATOL)
        np.testing.assert_allclose(served[task], eager[:, n].numpy(), atol=ATOL)


def test_grpc_scenario_and_task_signatures_equal_serving_default(client, tiny_schema, columns):
    for scenario in tiny_schema.scenario_names:
        default = client.predict(feature_inputs(columns, tiny_schema, scenario))
        per_scenario = client.predict(columns, scenario=scenario)
        for task in tiny_schema.task_names:
            per_task = client.predict(columns, scenario=scenario, task=task)
            np.testing.assert_allclose(per_scenario[task], default[task], atol=ATOL)
            np.testing.assert_allclose(per_task[signatures.TASK_OUTPUT], default[task],
                                       atol=ATOL)


def test_csv_rows_are_cast_to_the_signature_dtypes(client, tiny_run, tiny_schema, columns):
    with open(os.path.join(tiny_run["model_dir"], "run.json")) as fh:
        data_dir = json.load(fh)["data_dir"]
    with open(os.path.join(data_dir, "valid.csv"), newline="") as fh:
        rows = [row for _, row in zip(range(len(columns["scenario"])), csv.DictReader(fh))]
    scenario = tiny_schema.scenario_names[1]
    from_csv = client.predict_rows(rows, scenario=scenario)
    from_arrays = client.predict(columns, scenario=scenario)
    for task in tiny_schema.task_names:
        np.testing.assert_allclose(from_csv[task], from_arrays[task], atol=ATOL)


def test_requests_send_python_ints_as_int64():
    request = requests.make_predict_request("mdl", "serving_default", {"user_id": [1, 2]})
    assert request.inputs["user_id"].dtype == tf.int64.as_datatype_enum
    with pytest.raises(ValueError, match="'user_id'.*int64"):
        requests.to_array(["x"], tf.int64, "user_id")
    with pytest.raises(ValueError, match="row 1 lacks"):
        requests.columns_from_rows([{"a": 1}, {"b": 2}], ["a"])


def test_client_reads_cells_by_the_trainers_rules():
    dtypes = {"user_id": tf.int64, "price": tf.float32, "city": tf.string}
    rows = [{"user_id": " 7 ", "price": "", "city": " c1 "}, {"user_id": "", "price": "2.5",
                                                             "city": ""}]
    columns = requests.columns_from_rows(rows, list(dtypes), dtypes, {"price": 3.0})
    assert columns == {"user_id": ["7", -1], "price": [3.0, "2.5"], "city": ["c1", ""]}
    np.testing.assert_array_equal(requests.to_array(columns["price"], tf.float32), [3.0, 2.5])
    bad = [("price", "1e39", "not finite as float32"),
            ("user_id", "99999999999999999999", "not an int64 id"),
            ("price", "", "empty dense cell: give the model's schema")]
    good = {"user_id": "7", "price": "1", "city": "c"}
    for column, cell, message in bad:
        with pytest.raises(ValueError, match=f"x.csv:3: column '{column}': {message}"):
            requests.columns_from_rows([good, {**good, column: cell}], list(dtypes),
                                       dtypes, {}, ["x.csv:2", "x.csv:3"])
    with pytest.raises(ValueError, match="input 'price': value 1: not finite as float32"):
        requests.to_array([1.0, 1e39], tf.float32, "price")


def test_client_checks_inputs_and_signature_before_sending(client, columns):
    with pytest.raises(ValueError, match="needs input"):
        client.predict({"user_id": columns["user_id"]}, scenario="feed")
    with pytest.raises(ValueError, match="no signature 'scenario_nowhere'"):
        client.predict(columns, scenario="nowhere")


# --- bad requests ------------------------------------------------------------------------
def _request(columns, schema, signature=signatures.DEFAULT, **spec):
    inputs = feature_inputs(columns, schema)
    if signature == signatures.DEFAULT:
        inputs["scenario"] = columns["scenario"]
    dtypes = {f.name: {"int64": tf.int64, "float32": tf.float32, "string": tf.string}[f.dtype]
              for f in schema.features}
    request = requests.make_predict_request("mdl", signature, inputs, dtypes)
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    return request


def _wrong_dtype(r):
    r.inputs["user_id"].CopyFrom(tf.make_tensor_proto(np.array([1] * 8, np.int32)))


def _wrong_shape(r):
    r.inputs["user_id"].CopyFrom(tf.make_tensor_proto(np.ones([8, 2], np.int64)))


def _short_input(r):
    r.inputs["user_id"].CopyFrom(tf.make_tensor_proto(np.ones([3], np.int64)))


def _corrupt_tensor(r):
    r.inputs["user_id"].tensor_content = b"\x01\x02\x03"


def _unknown_scenario(r):
    r.inputs["scenario"].CopyFrom(tf.make_tensor_proto(np.array([b"nowhere"] * 8, object)))


def _garbage_examples(r):
    r.model_spec.signature_name = signatures.EXAMPLES
    r.inputs.clear()
    r.inputs["examples"].CopyFrom(tf.make_tensor_proto(np.array([b"\xff\x00garbage"], object)))


def _huge_unknown_scenario(r):
    r.inputs["scenario"].CopyFrom(tf.make_tensor_proto(np.array([b"s" * 4096] * 8, object)))


def _over_batch_limit(r):
    r.inputs["user_id"].CopyFrom(tf.make_tensor_proto(np.ones([600], np.int64)))


def _negative_dimension(r):
    r.inputs["user_id"].tensor_shape.dim[0].size = -1


def _too_few_values(r):
    r.inputs["price"].CopyFrom(tf.make_tensor_proto([1.5], tf.float32, shape=[8]))


def _oversized(r):
    r.inputs["city"].CopyFrom(tf.make_tensor_proto(np.array([b"x" * (2 * RECEIVE_LIMIT)] * 8,
                                                            object)))


def _inf_dense(r):
    r.inputs["price"].CopyFrom(tf.make_tensor_proto(np.array([1.0] * 7 + [np.inf], np.float32)))


def _inf_example(r):
    r.model_spec.signature_name = signatures.EXAMPLES
    r.inputs.clear()
    example = tf.train.Example()
    example.features.feature["price"].float_list.value.append(float("inf"))
    example.features.feature["scenario"].bytes_list.value.append(b"feed")
    r.inputs["examples"].CopyFrom(tf.make_tensor_proto(
        np.array([example.SerializeToString()], object)))


BAD_PREDICTS = {
    "inf dense value": (_inf_dense, grpc.StatusCode.INVALID_ARGUMENT,
                        "input 'price': value 7: not finite as float32"),
    "inf dense value in an Example": (_inf_example, grpc.StatusCode.INVALID_ARGUMENT,
                                      "dense inputs must be finite"),
    "wrong dtype": (_wrong_dtype, grpc.StatusCode.INVALID_ARGUMENT,
                    "Expects arg[user_id] to be int64 but int32 is provided"),
    "missing input": (lambda r: r.inputs.pop("user_id"), grpc.StatusCode.INVALID_ARGUMENT,
                      "Missing but required: {user_id}"),
    "extra input": (lambda r: r.inputs["bogus"].CopyFrom(tf.make_tensor_proto([1.0])),
                    grpc.StatusCode.INVALID_ARGUMENT, "Sent extra: {bogus}"),
    "wrong shape": (_wrong_shape, grpc.StatusCode.INVALID_ARGUMENT, "incompatible"),
    "inputs of different lengths": (_short_input, grpc.StatusCode.INVALID_ARGUMENT, ""),
    "corrupt tensor": (_corrupt_tensor, grpc.StatusCode.INVALID_ARGUMENT,
                       "tensor parsing error: user_id"),
    "unknown signature": (lambda r: setattr(r.model_spec, "signature_name", "nope"),
                          grpc.StatusCode.FAILED_PRECONDITION,
                          'Serving signature key "nope" not found.'),
    "unknown scenario": (_unknown_scenario, grpc.StatusCode.INVALID_ARGUMENT,
                         "unknown scenario 'nowhere' (input 'scenario'); known scenarios: "
                         "feed, search, mall"),
    "garbage example bytes": (_garbage_examples, grpc.StatusCode.INVALID_ARGUMENT, ""),
    "oversized message": (_oversized, grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
    "huge unknown scenario x 8 rows": (_huge_unknown_scenario, grpc.StatusCode.INVALID_ARGUMENT,
                                       "...TRUNCATED"),
    "more rows than max_batch_size": (
        _over_batch_limit, grpc.StatusCode.INVALID_ARGUMENT,
        "Task size 600 is larger than maximum input batch size 512"),
    "negative dimension": (_negative_dimension, grpc.StatusCode.INVALID_ARGUMENT,
                           "tensor parsing error: user_id: shape [-1] has a negative"),
    "too many values": (lambda r: r.inputs["city"].string_val.append(b"x"),
                        grpc.StatusCode.INVALID_ARGUMENT,
                        "tensor parsing error: city: 9 values for shape [8]"),
    "too few values": (_too_few_values, grpc.StatusCode.INVALID_ARGUMENT,
                       "tensor parsing error: price: 1 values for shape [8]"),
    "unknown model": (lambda r: setattr(r.model_spec, "name", "nope"),
                      grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)"),
    "unknown version": (lambda r: r.model_spec.version.__setattr__("value", 7),
                        grpc.StatusCode.NOT_FOUND, "Specific(mdl, 7)"),
    "version label": (lambda r: setattr(r.model_spec, "version_label", "stable"),
                      grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label"),
    "missing model spec": (lambda r: r.ClearField("model_spec"),
                           grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec"),
    "unknown output": (lambda r: r.output_filter.append("nope"),
                       grpc.StatusCode.INVALID_ARGUMENT,
                       "output tensor alias not found in signature: nope"),
}


@pytest.mark.parametrize("case", sorted(BAD_PREDICTS))
def test_bad_predict_gets_tf_serving_status_and_server_keeps_answering(
        case, client, tiny_schema, columns):
    mutate, code, message = BAD_PREDICTS[case]
    request = _request(columns, tiny_schema)
    mutate(request)
    with pytest.raises(grpc.RpcError) as error:
        client.predictions.Predict(request, timeout=30)
    assert error.value.code() == code, error.value.details()
    assert message in error.value.details()
    assert "node" not in error.value.details()    # no graph internals
    assert len(error.value.details().encode()) <= 1024 + len("...TRUNCATED")
    assert client.predict(columns)  # still answering


def test_every_rejected_request_logs_one_bounded_line(server, client, tiny_schema, columns,
                                                      caplog):
    request = _request(columns, tiny_schema)
    _huge_unknown_scenario(request)
    garbage = b"\x0a\xff\xff\xff\xffnot a PredictRequest"
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        raw_predict = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
        for send in (lambda: client.predictions.Predict(request, timeout=30),
                     lambda: raw_predict(garbage, timeout=30)):
            caplog.clear()
            with pytest.raises(grpc.RpcError):
                send()
            lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
            assert len(lines) == 1, [r.getMessage()[:200] for r in lines]
            text = lines[0].getMessage()
            assert lines[0].exc_info is None and "\n" not in text and len(text) < 500, text
            assert "sss" * 100 not in text and "\xff" not in text and "rejected" in text


def _status_request(name="mdl", version=None):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    return request


@pytest.mark.parametrize("request_, message", [
    (_status_request("nope"), "Could not find any versions of model nope"),
    (_status_request(version=7), "Could not find version 7 of model mdl"),
])
def test_status_of_unknown_model_or_version_is_not_found(client, request_, message):
    with pytest.raises(grpc.RpcError) as error:
        client.models.GetModelStatus(request_, timeout=30)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert error.value.details() == message


def test_metadata_without_fields_and_classify_are_refused(client):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "mdl"
    with pytest.raises(grpc.RpcError) as error:
        client.predictions.GetModelMetadata(request, timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as error:
        client.predictions.Classify(classification_pb2.ClassificationRequest(), timeout=30)
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED


# --- TLS ---------------------------------------------------------------------------------
def _self_signed(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    try:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days",
                        "1", "-subj", "/CN=localhost", "-addext",
                        "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key),
                        "-out", str(cert)], check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"cannot make a test certificate with openssl: {e}")
    return str(cert), str(key)


def test_tls_server_answers_tls_clients_only(tiny_run, tiny_schema, columns, tmp_path):
    cert, key = _self_signed(tmp_path)
    running = start_server(os.path.dirname(tiny_run["export_path"]), poll_seconds=0,
                           enable_warmup=False, ssl_cert_file=cert, ssl_key_file=key)
    try:
        with open(cert, "rb") as fh:
            root = fh.read()
        with ServingClient(f"127.0.0.1:{running.port}", root_certificates=root) as secure:
            scenario = tiny_schema.scenario_names[0]
            assert set(secure.predict(columns, scenario=scenario)) == set(
                tiny_schema.task_names)
        with ServingClient(f"127.0.0.1:{running.port}", timeout_s=5) as plain:
            with pytest.raises(grpc.RpcError):
                plain.status()
    finally:
        running.stop()
