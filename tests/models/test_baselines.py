"""Every baseline trains, evaluates and exports, and its parameter budget is adjustable."""

import mdl_tf  # noqa: F401
import numpy as np
import pytest
import tensorflow as tf

from conftest import TINY_CONFIG
from mdl_tf import data, evaluate, export, schema as schema_lib, train
from mdl_tf.models import build_model, make_config
from mdl_tf.models.registry import BASELINES, MODELS


def encoded_rows(schema, data_dir):
    """(encoded features, labels) of the first 1024 training rows."""
    model = build_model("rankmixer", schema, make_config("rankmixer", TINY_CONFIG))
    ds = data.make_dataset(schema, "train", data_dir=data_dir, batch_size=1024,
                           transform=train.encoder_transform(model))
    return next(iter(ds))


@pytest.fixture(scope="module")
def train_rows(tiny_schema, tiny_dataset):
    """encoded_rows of tiny_dataset, parsed once for all models."""
    return encoded_rows(tiny_schema, tiny_dataset)


@pytest.fixture(scope="module")
def micro(micro_schema, tiny_dataset):
    """(schema, encoded_rows) of tiny_dataset's files under the 5-feature, 2-task schema:
    every baseline trains, evaluates and exports on it (smaller graphs to trace)."""
    schema = schema_lib.load(micro_schema)
    return schema, encoded_rows(schema, tiny_dataset)


def tiny_model(name, schema, **overrides):
    tf.keras.utils.set_random_seed(0)
    return build_model(name, schema, make_config(name, {**TINY_CONFIG, **overrides})
                       ).build_from_schema()


@pytest.mark.parametrize("name", BASELINES)
def test_baseline_trains_evaluates_and_exports(name, micro, tiny_dataset, tmp_path):
    schema, rows = micro
    model = tiny_model(name, schema)
    train.compile_model(model, train.TrainOptions(learning_rate=3e-3, jit_compile=False))
    model.run_eagerly = True  # 4 steps: tracing would cost more than running them
    before = [v.numpy().copy() for v in model.trainable_variables]
    batches = tf.data.Dataset.from_tensor_slices(rows).batch(256)
    history = model.fit(batches, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])
    after = model.trainable_variables
    # Every variable of the network gets a gradient: nothing is silently disconnected.
    assert all(not np.array_equal(b, a.numpy()) for b, a in zip(before, after)), name

    result = evaluate.evaluate(model, schema, "test", tiny_dataset)
    for scenario in schema.scenario_names:
        assert set(result["scenarios"][scenario]) == set(schema.task_names)
    assert all(0.0 <= c["auc"] <= 1.0 for c in result["overall"].values())

    path = export.export_saved_model(model, str(tmp_path / "export"))
    served = tf.saved_model.load(path).signatures["serving_default"]
    raw = {k: v for k, v in next(iter(data.make_dataset(
        schema, "test", data_dir=tiny_dataset, batch_size=16)))[0].items()
        if k != data.GROUP_KEY}
    out = served(**raw)
    expected = model.predict_raw(raw).numpy()
    for n, task in enumerate(schema.task_names):
        np.testing.assert_allclose(out[task].numpy(), expected[:, n], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", BASELINES)
def test_size_field_changes_the_parameter_count(name, tiny_schema):
    field = MODELS[name].config_class.size_field
    small = tiny_model(name, tiny_schema, **{field: 8}).count_params()
    large = tiny_model(name, tiny_schema, **{field: 32}).count_params()
    assert large > small


@pytest.mark.parametrize("name", ["rankmixer", "shared_bottom", "mmoe", "ple"])
def test_scenario_is_an_ordinary_feature(name, tiny_schema, train_rows):
    """Changing only the scenario changes the prediction of a scenario-feature model."""
    model = tiny_model(name, tiny_schema)
    encoded = {k: v[:64] for k, v in train_rows[0].items()}
    other = {**encoded, data.SCENARIO_KEY: tf.roll(encoded[data.SCENARIO_KEY], 1, axis=1)}
    assert not np.allclose(model(encoded).numpy(), model(other).numpy())
    no_feature = tiny_model(name, tiny_schema, scenario_feature=False)
    np.testing.assert_allclose(no_feature(encoded).numpy(), no_feature(other).numpy())


@pytest.mark.parametrize("name", ["star", "hmoe", "pepnet"])
def test_scenario_aware_baselines_use_the_scenario(name, tiny_schema, train_rows):
    model = tiny_model(name, tiny_schema)
    encoded = {k: v[:64] for k, v in train_rows[0].items()}
    other = {**encoded, data.SCENARIO_KEY: tf.roll(encoded[data.SCENARIO_KEY], 1, axis=1)}
    # STAR's scenario weights start at the neutral value (ones / zeros): perturb them.
    for v in model.trainable_variables:
        if "scenario" in v.name and "embedding" not in v.name:
            v.assign_add(tf.random.stateless_normal(v.shape, seed=[0, 1]) * 0.5)
    assert not np.allclose(model(encoded).numpy(), model(other).numpy())


@pytest.mark.parametrize("embedding_optimizer", ["adam", "adagrad"])
def test_xla_train_step_equals_the_plain_one(embedding_optimizer, micro):
    """`--jit_compile` compiles the whole step with the tables' gradients dense
    (base.dense_gradient): the same updates as the step without XLA, whose table gradients
    stay sparse, for both kinds of table update (Adam's whole-table decay, Adagrad's rows)."""
    schema, rows = micro
    batches = tf.data.Dataset.from_tensor_slices(rows).batch(256)
    weights = []
    for xla in (False, True):
        model = tiny_model("mmoe", schema)
        train.compile_model(model, train.TrainOptions(
            learning_rate=3e-3, jit_compile=xla, embedding_optimizer=embedding_optimizer))
        step, batch = model.make_train_function(), iter(batches)
        for _ in range(3):
            step(batch)
        weights.append([v.numpy() for v in model.trainable_variables])
        tables = [v.numpy() for v in model.variable_groups()[0]]
    initial = [v.numpy() for v in tiny_model("mmoe", schema).variable_groups()[0]]
    assert all(not np.allclose(a, b) for a, b in zip(initial, tables))   # the tables trained
    for plain, xla in zip(*weights):
        np.testing.assert_allclose(xla, plain, rtol=1e-4, atol=1e-5)
