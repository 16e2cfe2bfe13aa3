"""The TF Serving deployment files: models.config parses as TF Serving's config proto, and
docker-compose / Kubernetes point at config files that exist (one copy of each)."""
import os
import re

import pytest
import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

DEPLOY = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "serving", "deploy")


def _yaml(name):
    with open(os.path.join(DEPLOY, name)) as fh:
        return list(yaml.safe_load_all(fh))


def test_models_config_is_a_model_server_config_with_a_version_policy():
    with open(os.path.join(DEPLOY, "models.config")) as fh:
        config = text_format.Parse(fh.read(), model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert (model.name, model.base_path, model.model_platform) == ("mdl", "/models/mdl",
                                                                   "tensorflow")
    assert model.model_version_policy.latest.num_versions == 2


def test_compose_and_kubernetes_use_the_same_config_files():
    (compose,) = _yaml("docker-compose.yml")
    service = compose["services"]["mdl-serving"]
    mounted = [v.split(":")[0] for v in service["volumes"] if v.startswith("./")]
    (kustomization,) = _yaml("kustomization.yaml")
    generated = kustomization["configMapGenerator"][0]["files"]
    assert sorted(os.path.basename(m) for m in mounted) == sorted(generated)
    assert all(os.path.exists(os.path.join(DEPLOY, f)) for f in generated)
    deployment = next(d for d in _yaml("kubernetes.yaml") if d["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert sorted(args) == sorted(service["command"])


def _batching_parameters_class():
    """BatchingParameters of tensorflow_serving/servables/tensorflow/session_bundle_config.proto,
    built from its field names and types: the tensorflow-serving-api wheel ships
    ModelServerConfig but not this message. Text format is checked by name and type."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2
    fields = [("max_batch_size", "Int64Value"), ("batch_timeout_micros", "Int64Value"),
              ("max_enqueued_batches", "Int64Value"), ("num_batch_threads", "Int64Value"),
              ("thread_pool_name", "StringValue"), ("allowed_batch_sizes", "repeated int64"),
              ("pad_variable_length_inputs", "bool"),
              ("enable_large_batch_splitting", "BoolValue"),
              ("max_execution_batch_size", "Int64Value")]
    f = descriptor_pb2.FileDescriptorProto(name="mdl_batching_check.proto",
                                           package="mdl_check", syntax="proto3",
                                           dependency=["google/protobuf/wrappers.proto"])
    message = f.message_type.add(name="BatchingParameters")
    T = descriptor_pb2.FieldDescriptorProto
    for number, (name, kind) in enumerate(fields, start=1):
        field = message.field.add(name=name, number=number)
        if kind == "repeated int64":
            field.type, field.label = T.TYPE_INT64, T.LABEL_REPEATED
        elif kind == "bool":
            field.type, field.label = T.TYPE_BOOL, T.LABEL_OPTIONAL
        else:
            field.type, field.label = T.TYPE_MESSAGE, T.LABEL_OPTIONAL
            field.type_name = f".google.protobuf.{kind}"
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(
        "mdl_check.BatchingParameters"))


def test_batching_parameters_parse_as_tf_serving_batching_parameters():
    with open(os.path.join(DEPLOY, "batching_parameters.txt")) as fh:
        params = text_format.Parse(fh.read(), _batching_parameters_class()())
    assert params.max_batch_size.value == 512 and params.num_batch_threads.value > 0
    assert params.batch_timeout_micros.value > 0
    with pytest.raises(text_format.ParseError):     # the check does catch a typo
        text_format.Parse("max_batch_sise { value: 1 }", _batching_parameters_class()())


def test_kubernetes_manifest_has_a_way_to_put_versions_on_the_volume():
    docs = _yaml("kubernetes.yaml")
    claim = next(d for d in docs if d["kind"] == "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    loader = next(d for d in docs if d["metadata"]["name"] == "mdl-models-loader")
    mounts = loader["spec"]["containers"][0]["volumeMounts"]
    assert mounts[0]["mountPath"] == "/models/mdl" and not mounts[0].get("readOnly")
    with open(os.path.join(DEPLOY, "kubernetes.yaml")) as fh:
        assert "kubectl cp" in fh.read()


FAKE_CURL = r'''#!/usr/bin/env bash
# Answers like TF Serving's REST API; a POST prints the body it was given.
for a in "$@"; do last=$a; done
case "$*" in
  *"-X POST"*) while [ "$1" != "-d" ]; do shift; done; echo "$2" >> "$POSTS" ;;
  *metadata) cat "$METADATA" ;;
  *prometheus*) echo "# metrics" ;;
  *) echo '{"model_version_status": [{"version": "7", "state": "AVAILABLE"},
                                     {"version": "9", "state": "LOADING"}]}' ;;
esac
'''


def test_rest_example_reads_version_and_inputs_from_the_server(tmp_path):
    import json
    import subprocess
    features = {"user_id": {"dtype": "DT_INT64"}, "price": {"dtype": "DT_FLOAT"}}
    defs = {"serving_default": {"inputs": {**features, "segment": {"dtype": "DT_STRING"}}},
            "scenario_mens": {"inputs": features}, "scenario_mens__visit": {"inputs": features}}
    (tmp_path / "metadata.json").write_text(json.dumps(
        {"metadata": {"signature_def": {"signature_def": defs}}}))
    (tmp_path / "curl").write_text(FAKE_CURL)
    (tmp_path / "curl").chmod(0o755)
    (tmp_path / "rows.csv").write_text("user_id,price,segment,visit\n12,9.5,Mens E-Mail,1\n")
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}",
           "METADATA": str(tmp_path / "metadata.json"), "POSTS": str(tmp_path / "posts")}
    script = os.path.join(DEPLOY, "rest_example.sh")
    for args, expected in [([], {"user_id": 0, "price": 0.0, "segment": "mens"}),
                           ([str(tmp_path / "rows.csv")],
                            {"user_id": 12, "price": 9.5, "segment": "Mens E-Mail"})]:
        (tmp_path / "posts").write_text("")
        run = subprocess.run(["bash", script, "h:1", *args], env=env, capture_output=True,
                             text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        scenario, default = [json.loads(x) for x in (tmp_path / "posts").read_text().split("\n")
                             if x.strip()]
        assert scenario["signature_name"] == "scenario_mens"
        assert default == {"signature_name": "serving_default", "instances": [expected]}
    with open(script) as fh:
        text = fh.read()
    assert "curl -s " not in text and "/versions/1" not in text
def test_server_batch_limit_default_is_the_batching_configs_max_batch_size():
    from serving import server
    with open(os.path.join(DEPLOY, "batching_parameters.txt")) as fh:
        value = re.search(r"^max_batch_size \{ value: (\d+) \}", fh.read(), re.M).group(1)
    assert server.DEFAULT_MAX_BATCH_SIZE == server.ServerOptions("", "").max_batch_size == int(
        value)
