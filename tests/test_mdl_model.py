"""MDL as a whole: masked loss, XLA parity, per-scenario and per-task token subsets,
checkpoint compatibility, attention maps."""
import json
import os

import mdl_tf  # noqa: F401
import numpy as np
import pytest
import tensorflow as tf

from conftest import TINY_CONFIG
from mdl_tf import data, datasets, schema as schema_lib
from mdl_tf.models import build_model, make_config
from mdl_tf.train import encoder_transform


def tiny_model(schema, **overrides):
    tf.keras.utils.set_random_seed(0)
    return build_model("mdl", schema, make_config("mdl", {**TINY_CONFIG, **overrides})
                       ).build_from_schema()


def one_batch(schema, data_dir, model, size=64):
    ds = data.make_dataset(schema, "train", data_dir=data_dir, batch_size=size, training=True,
                           transform=encoder_transform(model))
    return next(iter(ds))


def test_missing_labels_give_zero_loss_and_zero_gradient(tiny_schema, tiny_dataset):
    model = tiny_model(tiny_schema)
    encoded, labels = one_batch(tiny_schema, tiny_dataset, model)
    missing = tf.fill(tf.shape(labels), data.LABEL_MISSING)
    with tf.GradientTape() as tape:
        loss = model.compute_loss((encoded, missing), training=True)
    grads = tape.gradient(loss, model.trainable_variables)
    assert float(loss) == 0.0
    assert all(g is None or float(tf.reduce_sum(tf.abs(tf.convert_to_tensor(g)))) == 0.0
               for g in grads)


def test_missing_label_of_one_task_only_removes_that_task(tiny_schema, tiny_dataset):
    model = tiny_model(tiny_schema)
    encoded, labels = one_batch(tiny_schema, tiny_dataset, model)
    logits = model(encoded)
    masked = tf.concat([labels[:, :1], tf.fill(tf.shape(labels[:, 1:]), -1.0)], axis=1)
    bce = tf.keras.losses.BinaryCrossentropy(from_logits=True)
    expected = float(bce(labels[:, :1], logits[:, :1]))
    np.testing.assert_allclose(float(model.masked_loss(masked, logits)), expected, rtol=1e-5)


def test_xla_and_non_xla_losses_agree(tiny_schema, tiny_dataset):
    model = tiny_model(tiny_schema)
    batch = one_batch(tiny_schema, tiny_dataset, model)
    eager = model.compute_loss(batch)
    xla = tf.function(lambda b: model.compute_loss(b), jit_compile=True)(batch)
    np.testing.assert_allclose(float(xla), float(eager), atol=1e-5)


def test_scenario_subset_equals_full_model_for_that_scenario(tiny_schema, tiny_dataset):
    model = tiny_model(tiny_schema, num_layers=2)
    encoded, _ = one_batch(tiny_schema, tiny_dataset, model)
    for k in range(tiny_schema.num_scenarios):
        single = dict(encoded)
        single["scenario"] = tf.one_hot(tf.fill([64], k), tiny_schema.num_scenarios)
        np.testing.assert_allclose(model(encoded, scenario_index=k).numpy(),
                                   model(single).numpy(), atol=1e-5)


def test_multi_scenario_example_uses_mean_of_its_tokens(tiny_schema):
    model = tiny_model(tiny_schema)
    raw = model.dummy_raw_batch(3)
    raw["scenario"] = tf.constant(["feed|mall", "mall|feed", "0|2"])
    probs = model.predict_raw(raw).numpy()
    np.testing.assert_allclose(probs[0], probs[1], atol=1e-6)  # order does not matter
    np.testing.assert_allclose(probs[0], probs[2], atol=1e-6)  # names and ids agree
    single = dict(raw, scenario=tf.constant(["feed", "mall", "search"]))
    assert not np.allclose(model.predict_raw(single).numpy()[0], probs[0])


def test_self_attention_interaction_and_pre_ln_build(tiny_schema):
    for overrides in ({"interaction": "self_attention"}, {"domain_pre_ln": True}):
        model = tiny_model(tiny_schema, **overrides)
        probs = model.predict_raw(model.dummy_raw_batch(4)).numpy()
        assert probs.shape == (4, tiny_schema.num_tasks) and np.all((probs > 0) & (probs < 1))


def test_attention_maps_shapes(tiny_schema):
    model = tiny_model(tiny_schema, num_layers=2)
    _, maps = model(model.preprocess(model.dummy_raw_batch(5)), return_attention=True)
    n_f, heads = len(tiny_schema.groups), TINY_CONFIG["num_heads"]
    assert [tuple(m.shape) for m in maps["scenario"]] == \
        [(5, heads, tiny_schema.num_scenarios + 1, n_f)] * 2
    assert [tuple(m.shape) for m in maps["task"]] == [(5, heads, tiny_schema.num_tasks, n_f)] * 2


@pytest.mark.parametrize("xla", [False, True])
def test_task_subset_equals_the_full_models_columns(micro_schema, tiny_dataset, xla):
    """On conftest's micro_schema (2 tasks): 8 graphs to trace, and what is tested does not
    depend on the schema's size. Under XLA one scenario's two graphs stand for all (the
    same code with another index; each compiled graph costs seconds)."""
    schema = schema_lib.load(micro_schema)
    model = tiny_model(schema, num_layers=2)
    encoded, _ = one_batch(schema, tiny_dataset, model)
    call = tf.function(lambda e, **kw: model(e, **kw), jit_compile=xla)
    full = call(encoded).numpy()
    np.testing.assert_allclose(call(encoded, task_indices=[1, 0]).numpy(), full[:, [1, 0]],
                               atol=1e-5)
    for k in range(1 if xla else schema.num_scenarios):
        scenario = call(encoded, scenario_index=k).numpy()
        one = call(encoded, scenario_index=k, task_indices=[1]).numpy()
        np.testing.assert_allclose(one, scenario[:, [1]], atol=1e-5)


def test_checkpoint_variables_are_those_of_the_batch_major_layout(tmp_path):
    """tests/models/data/mdl_checkpoint_variables.json lists the checkpoint keys and shapes
    of the synthetic schema's MDL as written before the token-major layout (main branch,
    2026-11-30): old checkpoints restore into the current model."""
    with open(os.path.join(os.path.dirname(__file__), "models", "data",
                           "mdl_checkpoint_variables.json")) as fh:
        old = json.load(fh)
    synthetic = schema_lib.load(os.path.join(os.path.dirname(datasets.__file__),
                                             "synthetic.yaml"))
    tf.keras.utils.set_random_seed(0)
    model = build_model("mdl", synthetic, make_config("mdl", old["config"])).build_from_schema()
    path = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
    written = {k: s for k, s in tf.train.list_variables(path) if k.startswith("model/")}
    assert written == old["variables"]
    restored = build_model("mdl", synthetic, make_config("mdl", old["config"]))
    restored.build_from_schema()
    tf.train.Checkpoint(model=restored).read(path).assert_existing_objects_matched()
    batch = model.preprocess(model.dummy_raw_batch(4))
    np.testing.assert_array_equal(restored(batch).numpy(), model(batch).numpy())
