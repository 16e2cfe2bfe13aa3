"""MDL small-data options (shared_domain_tables, task_head, qkv_projection, domain optimizer):
each builds, trains, takes effect, and keeps serving's scenario_index and the scenario
tokens' gradient isolation."""
import dataclasses
import json

import mdl_tf  # noqa: F401
import numpy as np
import pytest
import tensorflow as tf

from benchmarks.quality import parse_spec
from conftest import TINY_CONFIG
from mdl_tf import data, train
from mdl_tf.layers import PerTokenFFN, TokenTowerHead
from mdl_tf.models import build_model, make_config
from test_mdl_model import one_batch

DOMAIN_OPTIMIZER = {"domain_learning_rate": 0.02, "domain_weight_decay": 0.5}
OPTIONS = {
    "shared_domain_tables": {"shared_domain_tables": True},
    "task_head_mlp": {"task_head": "mlp", "tower_units": 8},
    "qkv_mlp": {"qkv_projection": "mlp"},
    "domain_optimizer": DOMAIN_OPTIMIZER,
    "all": {"shared_domain_tables": True, "task_head": "mlp", "qkv_projection": "mlp",
            **DOMAIN_OPTIMIZER},
    "all_no_global_token": {"shared_domain_tables": True, "task_head": "mlp",
                            "qkv_projection": "mlp", "global_token": False},
}


@pytest.fixture(scope="module")
def rows(tiny_schema, tiny_dataset):
    """(encoded features, labels) of 256 training rows, parsed once."""
    model = build_model("mdl", tiny_schema, make_config("mdl", TINY_CONFIG))
    return one_batch(tiny_schema, tiny_dataset, model, size=256)


def tiny_mdl(schema, overrides, **config):
    tf.keras.utils.set_random_seed(0)
    return build_model("mdl", schema, make_config(
        "mdl", {**TINY_CONFIG, "num_layers": 2, **overrides, **config})).build_from_schema()


def compiled(model, learning_rate=1e-3):
    train.compile_model(model, train.TrainOptions(learning_rate=learning_rate,
                                                  jit_compile=False))
    model.run_eagerly = True     # a step or two: tracing would cost more than running
    return model


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_option_trains_and_every_variable_moves(option, tiny_schema, rows):
    model = compiled(tiny_mdl(tiny_schema, OPTIONS[option]))
    before = [v.numpy().copy() for v in model.trainable_variables]
    history = model.fit(tf.data.Dataset.from_tensor_slices(rows).batch(128), epochs=1,
                        verbose=0).history
    assert np.isfinite(history["loss"][0])
    frozen = [v.name for b, v in zip(before, model.trainable_variables)
              if np.array_equal(b, v.numpy())]
    assert not frozen, f"{option}: variables outside the training step: {frozen}"


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_scenario_index_equals_the_full_pass(option, tiny_schema, rows):
    model = tiny_mdl(tiny_schema, OPTIONS[option])
    encoded = rows[0]
    for k in range(tiny_schema.num_scenarios):
        only_k = {**encoded, data.SCENARIO_KEY: tf.one_hot(
            tf.fill([256], k), tiny_schema.num_scenarios)}
        np.testing.assert_allclose(model(encoded, scenario_index=k).numpy(),
                                   model(only_k).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_scenario_tokens_of_other_scenarios_get_no_gradient(option, tiny_schema, rows):
    """Rows of scenario 0 only: the per-scenario-token weights of scenarios 1.. get zero
    gradient; those of token 0 (and the global token) do not."""
    model = tiny_mdl(tiny_schema, OPTIONS[option])
    encoded, labels = rows
    only_0 = {**encoded, data.SCENARIO_KEY: tf.one_hot(tf.zeros([256], tf.int32),
                                                       tiny_schema.num_scenarios)}
    # Weights with one slice per scenario token (not the feature tokens' keys and values).
    layers = ([model.scenario_tokenizer] + [a.query for a in model.scenario_attention]
              + model.scenario_ffn)
    per_token = [v for layer in layers for v in layer.trainable_variables]
    with tf.GradientTape() as tape:
        loss = model.compute_loss((only_0, labels), training=True)
    grads = tape.gradient(loss, per_token)
    assert per_token
    for v, g in zip(per_token, grads):
        g = np.abs(tf.convert_to_tensor(g).numpy())
        assert g.shape[0] == model.num_scenario_tokens, v.name
        assert g[1:tiny_schema.num_scenarios].max() == 0.0, v.name
        assert g[0].max() > 0.0, v.name


def test_shared_domain_tables_build_no_domain_tables(tiny_schema, rows):
    default, shared = (tiny_mdl(tiny_schema, o) for o in ({}, OPTIONS["shared_domain_tables"]))
    assert any("domain_embedding" in v.name for v in default.trainable_variables)
    assert not any("domain_embedding" in v.name for v in shared.trainable_variables)
    assert shared.count_params() < default.count_params()
    # The scenario tokens now read the feature table of an important feature.
    table = shared.embedding.tables[tiny_schema.important_features[0]]
    with tf.GradientTape() as tape:
        tape.watch(table)
        tokens, _ = shared._domain_tokens(rows[0], shared.embed(rows[0]), None, None)
    assert float(tf.reduce_sum(tf.abs(tf.convert_to_tensor(
        tape.gradient(tokens, table))))) > 0.0


def test_task_head_mlp_is_a_normalised_tower_per_task(tiny_schema):
    model = tiny_mdl(tiny_schema, OPTIONS["task_head_mlp"])
    assert isinstance(model.heads, TokenTowerHead)
    names = {v.name.split("/", 1)[1] for v in model.heads.trainable_variables}
    assert {"task_heads/norm/gamma:0", "task_heads/towers/dense_0/kernel:0"} <= names
    kernel = model.heads.towers.dense_layers[0].kernel
    assert kernel.shape == (tiny_schema.num_tasks, TINY_CONFIG["d_model"], 8)


def test_qkv_mlp_projects_with_per_token_ffns(tiny_schema):
    model = tiny_mdl(tiny_schema, OPTIONS["qkv_mlp"])
    for attention in model.scenario_attention + model.task_attention:
        for projection in (attention.query, attention.key, attention.value):
            assert isinstance(projection, PerTokenFFN)
    assert any("task_attention_0/query/inner/kernel" in v.name
               for v in model.trainable_variables)


def test_domain_variables_move_by_the_domain_optimizer(tiny_schema, rows):
    """One Adam step: domain weights decay by lr_d * wd and move by lr_d; the rest by lr."""
    lr, lr_d, wd = 1e-3, DOMAIN_OPTIMIZER["domain_learning_rate"], 0.5
    model = compiled(tiny_mdl(tiny_schema, DOMAIN_OPTIMIZER), learning_rate=lr)
    domain_ids = {id(v) for v in model.domain_variables()}
    groups = model.optimizer_groups()
    assert [o for o, _ in groups] == [model.embedding_optimizer, model.domain_optimizer,
                                      model.optimizer]
    assert {id(v) for v in groups[1][1]} == domain_ids
    assert any("task_tokenizer" in v.name for v in groups[1][1])
    assert not any("interaction" in v.name or "feature_tokenizer" in v.name
                   for v in groups[1][1])
    variables = [v for _, group in groups for v in group]
    before = [v.numpy().copy() for v in variables]
    _, _, grads = model.loss_and_gradients(*rows)
    model.train_step(rows)
    beta_2, eps = 0.999, 1e-7     # Adam's defaults; first step: m_hat = g, v_hat = g^2
    for v, v0, g in zip(variables, before, grads):
        g = tf.convert_to_tensor(g).numpy()
        rate, decay = (lr_d, wd) if id(v) in domain_ids else (lr, 0.0)
        s = np.sqrt(1 - beta_2)
        expected = v0 * (1 - rate * decay) - rate * g * s / (s * np.abs(g) + eps)
        np.testing.assert_allclose(v.numpy(), expected, rtol=1e-4, atol=1e-6, err_msg=v.name)


def test_learning_rate_grid_keeps_the_domain_rate(tiny_schema):
    model = compiled(tiny_mdl(tiny_schema, DOMAIN_OPTIMIZER))
    train.set_learning_rates(model, 0.004, fraction=0.5)
    assert np.isclose(float(model.optimizer.learning_rate), 0.002)
    assert np.isclose(float(model.embedding_optimizer.learning_rate), 0.002)
    assert np.isclose(float(model.domain_optimizer.learning_rate), 0.01)
    plain = compiled(tiny_mdl(tiny_schema, {}))
    assert plain.domain_optimizer is None
    assert len(plain.optimizer_groups()) == 2


def test_options_parse_from_strings_specs_and_run_json():
    name, overrides, _ = parse_spec("mdl:shared_domain_tables=true:task_head=mlp:"
                                 "domain_learning_rate=5e-4:domain_weight_decay=none")
    config = make_config(name, overrides)
    assert (config.shared_domain_tables, config.task_head, config.domain_learning_rate,
            config.domain_weight_decay) == (True, "mlp", 5e-4, None)
    saved = json.loads(json.dumps(dataclasses.asdict(config)))   # run.json round trip
    assert make_config("mdl", saved) == config
    assert make_config("mdl", {"qkv_projection": "mlp"}).qkv_projection == "mlp"


@pytest.mark.parametrize("overrides,message", [
    ({"task_head": "deep"}, "task_head.*linear, mlp"),
    ({"qkv_projection": "conv"}, "qkv_projection.*linear, mlp"),
    ({"domain_learning_rate": "fast"}, "domain_learning_rate.*float"),
    ({"shared_domain_tables": "maybe"}, "shared_domain_tables.*bool"),
])
def test_bad_option_values_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        make_config("mdl", overrides)
