"""The TF Serving deployment files: models.config parses as TF Serving's config proto, and
docker-compose / Kubernetes point at config files that exist (one copy of each)."""
import os
import re

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


def test_server_batch_limit_default_is_the_batching_configs_max_batch_size():
    from serving import server
    with open(os.path.join(DEPLOY, "batching_parameters.txt")) as fh:
        value = re.search(r"^max_batch_size \{ value: (\d+) \}", fh.read(), re.M).group(1)
    assert server.DEFAULT_MAX_BATCH_SIZE == server.ServerOptions("", "").max_batch_size == int(
        value)
