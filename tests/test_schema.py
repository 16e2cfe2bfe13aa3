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
    extended = schema_lib.from_dict({**schema.to_dict(), "lineage": [{"extends": "runs/x"}]})
    schema_lib.dump(extended, os.path.join(tmp_path, "extended.yaml"))
    assert schema_lib.load(os.path.join(tmp_path, "extended.yaml")).lineage == (
        {"extends": "runs/x"},)


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
    (lambda r: r.update({"lineage": ["runs/x"]}), "'lineage' must be a list of mappings"),
    (lambda r: r.update({"csv": {"delimiter": "::"}}), "csv.delimiter: the CSV delimiter must "
     "be one ASCII character"),
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


def _doc_example():
    with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "docs", "schema.md")) as fh:
        text = fh.read()
    block = text.split("<!-- schema-example")[1]
    return block.split("```yaml\n")[1].split("```")[0]


def test_schema_reference_example_and_docstring_example_load():
    schema = schema_lib.from_dict(yaml.safe_load(_doc_example()))
    assert schema.scenario.values["Mens E-Mail"] == "mens"
    assert schema.scenario_names == ["mens", "womens", "none"]
    doc = schema_lib.__doc__
    assert schema_lib.from_dict(yaml.safe_load(doc[doc.index("::") + 2:])).name == "shop"


def test_every_schema_key_is_documented():
    with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "docs", "schema.md")) as fh:
        text = fh.read()
    import dataclasses
    keys = (list(schema_lib.TOP_LEVEL_KEYS) + list(schema_lib.SCENARIO_KEYS)
            + [f.name for f in dataclasses.fields(schema_lib.Feature)])
    assert [k for k in keys if f"`{k}`" not in text] == []


def test_unknown_top_level_key_names_the_closest_valid_one(tmp_path):
    raw = synthetic_raw()
    raw["gauc_groups"] = raw.pop("gauc_group")
    path = write(tmp_path, raw)
    with pytest.raises(SchemaError, match="unknown top-level key 'gauc_groups'; did you mean "
                                          "'gauc_group'") as err:
        schema_lib.load(path)
    assert path in str(err.value)


def test_scenario_values_map_raw_values_to_names(tmp_path):
    raw = synthetic_raw()
    raw["scenario"] = {"column": "scenario", "values": {"Feed/Main": "feed", "Search": "search",
                                                        "Mall": "mall"}}
    schema = schema_lib.load(write(tmp_path, raw))
    assert sorted(schema.scenario_names) == ["feed", "mall", "search"]  # write() sorts keys
    again = schema_lib.from_dict(schema.to_dict())
    assert again.scenario == schema.scenario
    raw["scenario"]["values"]["Other"] = "elsewhere"
    raw["scenario"]["names"] = ["feed", "search", "mall"]
    with pytest.raises(SchemaError, match="maps 'Other' to unknown scenario 'elsewhere'"):
        schema_lib.load(write(tmp_path, raw))
    raw["scenario"] = {"column": "scenario", "names": ["Feed Main"]}
    raw["scenario_priors"] = {}
    with pytest.raises(SchemaError, match="values: {'Feed Main': feed_main}"):
        schema_lib.load(write(tmp_path, raw))


def test_safe_names_are_signature_safe_and_distinct():
    names = schema_lib.safe_names(["Mens E-Mail", "mens e-mail", "No E-Mail", "%%"])
    assert names == {"Mens E-Mail": "mens_e_mail", "mens e-mail": "mens_e_mail_2",
                     "No E-Mail": "no_e_mail", "%%": "none"}


def test_scenario_values_may_not_remap_a_scenario_name(tmp_path):
    raw = synthetic_raw()
    raw["scenario"] = {"column": "scenario", "names": ["feed", "search", "mall"],
                       "values": {"feed": "search"}}
    with pytest.raises(SchemaError, match="maps 'feed', itself a scenario name"):
        schema_lib.load(write(tmp_path, raw))
def test_scenario_lookup_keys_never_collide():
    keys, indices = schema_lib.scenario_lookup_keys(["feed", "search"])
    assert dict(zip(keys, indices)) == {"feed": 0, "search": 1, "0": 0, "1": 1}
    # Numeric names (Ali-CCP's raw 301 values): names only, "1" is the first scenario.
    keys, indices = schema_lib.scenario_lookup_keys(["1", "2"])
    assert list(zip(keys, indices)) == [("1", 0), ("2", 1)]
