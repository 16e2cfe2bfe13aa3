"""mdl_tf.extend: a scenario and a task added to a trained MDL. Old signatures' outputs stay
the same, the new signatures serve over gRPC, the lineage is recorded, bad requests fail
clearly. One base MDL (tiny synthetic data without scenario 'mall' and task 'favourite')
is trained per module and extended twice, on 8 of the data's features (conftest's
small_schema: smaller graphs to train and export)."""
import dataclasses
import json
import os

import mdl_tf  # noqa: F401
import numpy as np
import pytest
import tensorflow as tf

from benchmarks import extend as bench
from conftest import TINY_CONFIG
from mdl_tf import extend, schema as schema_lib, train
from mdl_tf.contract import signatures
from mdl_tf.models import build_model, make_config
from serving.client import ServingClient

from serving_helpers import (ATOL, call_signature, feature_inputs, start_server,
                                     validation_columns)

NEW_SCENARIO, NEW_TASK = "mall", "favourite"


def _without_task(schema):
    return dataclasses.replace(schema, tasks=tuple(t for t in schema.tasks
                                                   if t.name != NEW_TASK))


@pytest.fixture(scope="module")
def work(tiny_dataset, small_schema, tmp_path_factory):
    """Schemas: base (no 'mall', no 'favourite') and with_mall (no 'favourite')."""
    root = tmp_path_factory.mktemp("extend")
    schema = schema_lib.load(small_schema)
    base_path = bench.hold_out(schema, tiny_dataset, NEW_SCENARIO, str(root / "base_data"))
    schema_lib.dump(_without_task(schema_lib.load(base_path)), base_path)
    with_mall = str(root / "with_mall.yaml")
    schema_lib.dump(_without_task(schema), with_mall)
    return {"root": root, "base_schema": base_path, "with_mall": with_mall,
            "data_dir": tiny_dataset}


@pytest.fixture(scope="module")
def base(work):
    model_dir = str(work["root"] / "base")
    result = train.train(train.TrainOptions(
        dataset=work["base_schema"], model_dir=model_dir, config=dict(TINY_CONFIG), epochs=1,
        batch_size=256, jit_compile=False, early_stopping_patience=0, verbose=0))
    return {**result, "model_dir": model_dir}


def _extend(base, work, name, **kwargs):
    return extend.extend(extend.ExtendOptions(
        model_dir=base["model_dir"], model_dir_out=str(work["root"] / name), epochs=1,
        batch_size=256, early_stopping_patience=0, **kwargs))


@pytest.fixture(scope="module")
def with_scenario(base, work):
    return _extend(base, work, "with_mall", add_scenario=NEW_SCENARIO,
                   dataset=work["with_mall"], data_dir=work["data_dir"])


@pytest.fixture(scope="module")
def with_task(base, work):
    return _extend(base, work, "with_favourite", add_task=NEW_TASK, label_column="favourite")


def _old_signature_inputs(base_schema, columns):
    """{signature: inputs} of every signature of the base export."""
    features = feature_inputs(columns, base_schema)
    out = {signatures.DEFAULT: {**features, "scenario": columns["scenario"]}}
    for s in base_schema.scenario_names:
        out[signatures.scenario_signature(s)] = features
        out.update({signatures.task_signature(s, t): features for t in base_schema.task_names})
    return out


def _assert_old_outputs_unchanged(base, extended):
    base_schema = base["model"].schema
    old = tf.saved_model.load(base["export_path"])
    new = tf.saved_model.load(extended["export_path"])
    columns = validation_columns(base)
    for name, inputs in _old_signature_inputs(base_schema, columns).items():
        before, after = call_signature(old, name, inputs), call_signature(new, name, inputs)
        for key, value in before.items():
            np.testing.assert_allclose(after[key], value, atol=1e-6, err_msg=f"{name}/{key}")


def test_adding_a_scenario_leaves_every_old_signature_unchanged(base, with_scenario):
    _assert_old_outputs_unchanged(base, with_scenario)


def test_new_scenario_token_trained_from_the_global_token(base, with_scenario):
    old = base["model"].scenario_attention[0].query.kernel.numpy()       # [2 + global, ...]
    new = with_scenario["model"].scenario_attention[0].query.kernel.numpy()  # [3 + global]
    k = with_scenario["model"].schema.scenario_names.index(NEW_SCENARIO)
    np.testing.assert_array_equal(new[[0, 1, 3]], old)        # old tokens, global: frozen
    assert not np.allclose(new[k], old[2])                     # the new one moved


def test_new_scenario_signature_serves_over_grpc(base, with_scenario):
    columns = validation_columns(base)
    schema = with_scenario["model"].schema
    loaded = tf.saved_model.load(with_scenario["export_path"])
    expected = call_signature(loaded, signatures.scenario_signature(NEW_SCENARIO),
                              feature_inputs(columns, schema))
    server = start_server(os.path.dirname(with_scenario["export_path"]), poll_seconds=0)
    try:
        with ServingClient(f"127.0.0.1:{server.port}", "mdl") as client:
            client.wait_until_ready(timeout_s=60)
            served = client.predict(columns, scenario=NEW_SCENARIO)
            per_task = client.predict(columns, scenario=NEW_SCENARIO, task="click")
    finally:
        server.stop()
    for task in schema.task_names:
        np.testing.assert_allclose(served[task], expected[task], atol=ATOL)
    np.testing.assert_allclose(per_task[signatures.TASK_OUTPUT], expected["click"], atol=ATOL)


def test_lineage_in_schema_run_json_and_export(base, with_scenario, work):
    out_dir = str(work["root"] / "with_mall")
    with open(os.path.join(out_dir, "run.json")) as fh:
        run_lineage = json.load(fh)["lineage"]
    schema_lineage = schema_lib.load(os.path.join(out_dir, "schema.yaml")).lineage
    export_lineage = extend.read_lineage(with_scenario["export_path"])
    assert run_lineage == [dict(e) for e in schema_lineage] == export_lineage
    (entry,) = run_lineage
    assert entry["extends"] == os.path.abspath(base["model_dir"])
    assert entry["added"] == {"scenario": NEW_SCENARIO}
    assert entry["export_version"] == int(os.path.basename(base["export_path"]))
    assert entry["epoch"] == 1 and entry["finetune"] == "new" and entry["step"] > 0
    assert extend.read_lineage(base["export_path"]) == []


def test_adding_a_task_leaves_old_tasks_unchanged(base, with_task):
    _assert_old_outputs_unchanged(base, with_task)
    loaded = tf.saved_model.load(with_task["export_path"])
    schema = with_task["model"].schema
    name = signatures.task_signature(schema.scenario_names[0], NEW_TASK)
    out = call_signature(loaded, name, feature_inputs(validation_columns(base), schema))
    assert np.all((out[signatures.TASK_OUTPUT] > 0) & (out[signatures.TASK_OUTPUT] < 1))
    assert not np.isnan(with_task["metrics"]["overall"][NEW_TASK]["auc"])


def test_finetune_all_trains_the_old_weights_too(base, work):
    """--finetune all: every variable trains (at the small default rate), the feature tables
    included, so old scenarios' outputs may change; the new scenario is scored."""
    tuned = _extend(base, work, "with_mall_all", add_scenario=NEW_SCENARIO,
                    dataset=work["with_mall"], data_dir=work["data_dir"], finetune="all",
                    export=False)
    pairs = list(zip(base["model"].embedding.trainable_variables,
                     tuned["model"].embedding.trainable_variables))
    assert pairs and all(a.shape == b.shape for a, b in pairs)
    assert all(not np.array_equal(a.numpy(), b.numpy()) for a, b in pairs)
    assert not np.isnan(tuned["metrics"]["scenarios"][NEW_SCENARIO]["click"]["auc"])
    assert dict(tuned["model"].schema.lineage[-1])["finetune"] == "all"


# --- units: initialisation, masks, bad requests -------------------------------------------
def _opts(**kwargs):
    return extend.ExtendOptions(model_dir="unused", model_dir_out="unused", **kwargs)


def test_token_mixing_copies_global_or_averages_tasks(tiny_schema):
    base = _without_task(tiny_schema)
    with_task = tiny_schema
    mixing, new_rows = extend.token_mixing(base, with_task, _opts(add_task=NEW_TASK))
    np.testing.assert_allclose(mixing, [[1, 0], [0, 1], [0.5, 0.5]])
    assert new_rows.tolist() == [False, False, True]
    mixing, _ = extend.token_mixing(base, with_task,
                                    _opts(add_task=NEW_TASK, init_from_task="like"))
    np.testing.assert_allclose(mixing[2], [0, 1])
    names = tuple(n for n in tiny_schema.scenario_names if n != NEW_SCENARIO)
    without = dataclasses.replace(
        tiny_schema, scenario=dataclasses.replace(tiny_schema.scenario, names=names))
    mixing, new_rows = extend.token_mixing(without, tiny_schema, _opts(add_scenario="mall"))
    np.testing.assert_allclose(mixing, [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]])
    assert new_rows.tolist() == [False, False, True, False]


def test_zero_shot_new_scenario_predicts_with_the_global_token(tiny_schema):
    """Untrained, a new scenario's rows get what the global token alone gives."""
    names = tuple(n for n in tiny_schema.scenario_names if n != NEW_SCENARIO)
    old_schema = dataclasses.replace(
        tiny_schema, scenario=dataclasses.replace(tiny_schema.scenario, names=names),
        scenario_priors={k: v for k, v in tiny_schema.scenario_priors.items()
                         if k != NEW_SCENARIO})
    config = make_config("mdl", dict(TINY_CONFIG))
    old = build_model("mdl", old_schema, config).build_from_schema()
    new = build_model("mdl", tiny_schema, config).build_from_schema()
    opts = _opts(add_scenario=NEW_SCENARIO)
    mixing, new_rows = extend.token_mixing(old_schema, tiny_schema, opts)
    grown, added = extend.transfer_weights(old, new, mixing)
    extend.clear_prior_rows(new, tiny_schema, "scenario", new_rows)
    assert grown and not added
    raw = new.dummy_raw_batch(4)
    raw["act_mall"] = tf.constant([0.5, -1.0, 2.0, 0.0])     # its prior: no effect yet
    # Scenario token k and the global token, both equal to the global one: their mean is it.
    new_probs = new.predict_raw(dict(raw, scenario=tf.fill([4], NEW_SCENARIO)),
                                scenario_index=2)
    tokens = new.scenario_tokenizer(*_tokenizer_inputs(new, raw), token_indices=[2, 3])
    np.testing.assert_allclose(tokens[:, 0], tokens[:, 1], atol=1e-6)
    assert new_probs.shape == (4, tiny_schema.num_tasks)


def _tokenizer_inputs(model, raw):
    domain = model.domain_embedding(model.preprocess(raw))
    important = tf.concat([domain[n] for n in model.schema.important_features], axis=-1)
    return important, domain


def test_gradient_mask_keeps_only_new_slices():
    grown = tf.Variable(tf.ones([3, 2, 2]))
    frozen = tf.Variable(tf.ones([4]))
    transform = extend.new_slices_only([grown], np.array([False, True, False]))
    grads = transform([tf.ones([3, 2, 2]), tf.ones([4])], [grown, frozen])
    np.testing.assert_array_equal(grads[0].numpy()[:, 0, 0], [0, 1, 0])
    np.testing.assert_array_equal(grads[1].numpy(), np.zeros(4))


@pytest.mark.parametrize("kwargs, message", [
    (dict(add_scenario="feed"), "already in the model"),
    (dict(add_scenario="other"), "has no scenario 'other'"),
    (dict(add_task="favourite", init_from_task="nope"), "not a task of the model"),
])
def test_schema_mismatches_are_named(tiny_schema, kwargs, message):
    with pytest.raises(ValueError, match=message):
        extend.extended_schema(_without_task(tiny_schema), _opts(**kwargs),
                               None if "add_task" in kwargs else tiny_schema)


def test_a_schema_that_changes_more_than_the_addition_is_refused(tiny_schema):
    names = tuple(n for n in tiny_schema.scenario_names if n != NEW_SCENARIO)
    old = dataclasses.replace(
        tiny_schema, scenario=dataclasses.replace(tiny_schema.scenario, names=names))
    changed = dataclasses.replace(tiny_schema, important_features=("user_id",))
    with pytest.raises(schema_lib.SchemaError, match="'important_features' differs"):
        extend.extended_schema(old, _opts(add_scenario=NEW_SCENARIO), changed)
    fewer_tasks = _without_task(tiny_schema)
    with pytest.raises(schema_lib.SchemaError, match="tasks differ"):
        extend.extended_schema(old, _opts(add_scenario=NEW_SCENARIO), fewer_tasks)


@pytest.mark.parametrize("kwargs, message", [
    (dict(), "exactly one of"),
    (dict(add_scenario="a", add_task="b"), "exactly one of"),
    (dict(add_scenario="a", finetune="some"), "--finetune"),
    (dict(add_scenario="a", train_fraction=1.5), "--train_fraction"),
])
def test_bad_options_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        extend.check_options(_opts(**kwargs))


def test_no_rows_of_the_new_scenario_is_an_error(base, work, tiny_schema):
    """The base data has no 'mall' rows: extending on it has nothing to learn from."""
    schema = dataclasses.replace(schema_lib.load(work["base_schema"]))
    path = str(work["root"] / "mall_without_rows.yaml")
    schema_lib.dump(dataclasses.replace(schema, scenario=dataclasses.replace(
        schema.scenario, names=tuple(schema.scenario_names) + (NEW_SCENARIO,))), path)
    with pytest.raises(ValueError, match="no training rows for scenario 'mall'"):
        _extend(base, work, "no_rows", add_scenario=NEW_SCENARIO, dataset=path,
                data_dir=os.path.dirname(work["base_schema"]))
