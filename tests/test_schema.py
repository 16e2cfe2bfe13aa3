"""Schema loading and validation: every inconsistency names the file and the entry."""
import os

import pytest
import yaml

from mdl_tf import datasets
from mdl_tf import schema as schema_lib
from mdl_tf.schema import SchemaError


def synthetic_raw():
    with open(datasets.schema_path("synthetic")) as fh:
        return yaml.safe_load(fh)


def write(tmp_path, raw):
    path = os.path.join(tmp_path, "schema.yaml")
    with open(path, "w") as fh:
        yaml.safe_dump(raw, fh)
    return path


def test_builtin_schema_loads_and_round_trips(tmp_path):
    schema = datasets.load_schema("synthetic")
    assert schema.scenario_names == ["feed", "search", "mall"]
    assert schema.task_names == ["click", "like", "favourite"]
    assert schema.group_names == ["user", "interest", "item", "context"]
    schema_lib.dump(schema, os.path.join(tmp_path, "copy.yaml"))
    again = schema_lib.load(os.path.join(tmp_path, "copy.yaml"))
    assert again.to_dict() == schema.to_dict()


@pytest.mark.parametrize("mutate,message", [
    (lambda r: r["groups"]["user"].append("no_such_feature"),
     "group 'user' references unknown feature 'no_such_feature'"),
    (lambda r: r["important_features"].append("ghost"),
     "important_features references unknown feature 'ghost'"),
    (lambda r: r["scenario_priors"].update({"feed": ["ghost"]}),
     "scenario_priors.feed references unknown feature 'ghost'"),
    (lambda r: r["scenario_priors"].update({"nowhere": ["act_feed"]}),
     "scenario_priors names unknown scenario 'nowhere'"),
    (lambda r: r["features"].append({"name": "x", "type": "categorical"}),
     "feature 'x': give exactly one of"),
    (lambda r: r["features"].append({"name": "y", "type": "blob"}),
     "feature 'y': type must be one of"),
    (lambda r: r["features"].append({"name": "z", "type": "dense", "colour": 1}),
     "feature 'z': unknown keys"),
    (lambda r: r.update({"scenario": {"column": "scenario", "names": ["Feed/Main"]},
                         "scenario_priors": {}}), "must match [a-z0-9_]+"),
    (lambda r: r.pop("tasks"), "missing required key 'tasks'"),
    (lambda r: r.update({"format": "parquet"}), "format must be 'csv' or 'tfrecord'"),
    (lambda r: r["features"][-1].update({"vocabulary": ["ios", "android", "ios"]}),
     "feature 'device': duplicate vocabulary entries ['ios']"),
])
def test_inconsistent_schema_is_rejected_with_its_location(tmp_path, mutate, message):
    raw = synthetic_raw()
    mutate(raw)
    path = write(tmp_path, raw)
    with pytest.raises(SchemaError) as err:
        schema_lib.load(path)
    assert message in str(err.value) and path in str(err.value)


def test_vocabulary_file_is_read_relative_to_the_schema(tmp_path):
    raw = synthetic_raw()
    with open(os.path.join(tmp_path, "devices.txt"), "w") as fh:
        fh.write("ios\nandroid\nweb\n")
    device = next(f for f in raw["features"] if f["name"] == "device")
    del device["vocabulary"]
    device["vocabulary_file"] = "devices.txt"
    schema = schema_lib.load(write(tmp_path, raw))
    assert schema.feature("device").vocabulary == ("ios", "android", "web")


def test_missing_vocabulary_file_and_missing_schema_are_clear(tmp_path):
    raw = synthetic_raw()
    device = next(f for f in raw["features"] if f["name"] == "device")
    del device["vocabulary"]
    device["vocabulary_file"] = "absent.txt"
    with pytest.raises(SchemaError, match="feature 'device': cannot read vocabulary_file"):
        schema_lib.load(write(tmp_path, raw))
    with pytest.raises(SchemaError, match="schema file not found"):
        schema_lib.load(os.path.join(tmp_path, "nope.yaml"))


def test_scenario_lookup_keys_never_collide():
    keys, indices = schema_lib.scenario_lookup_keys(["feed", "search"])
    assert dict(zip(keys, indices)) == {"feed": 0, "search": 1, "0": 0, "1": 1}
    # Numeric names (Ali-CCP's raw 301 values): names only, "1" is the first scenario.
    keys, indices = schema_lib.scenario_lookup_keys(["1", "2"])
    assert list(zip(keys, indices)) == [("1", 0), ("2", 1)]
