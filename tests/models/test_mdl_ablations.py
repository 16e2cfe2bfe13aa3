"""MDL ablation flags (paper Table 2): each builds, runs, and keeps serving's scenario_index."""
import mdl_tf  # noqa: F401
import numpy as np
import pytest
import tensorflow as tf

from conftest import TINY_CONFIG
from mdl_tf import data, train
from mdl_tf.models import build_model, make_config

ABLATIONS = {
    "default": {},
    "no_task_tokens": {"task_tokens": False},
    "no_scenario_tokens": {"scenario_tokens": False},
    "no_global_token": {"global_token": False},
    "concat_interaction": {"domain_attention": False, "interaction": "self_attention"},
    "concat_rankmixer": {"domain_attention": False, "d_model": 22},  # 4 + 4 + 3 = 11 tokens
    "self_attention": {"interaction": "self_attention"},
    "no_domain_tokens": {"task_tokens": False, "scenario_tokens": False},
}


@pytest.fixture(scope="module")
def batch(tiny_schema, tiny_dataset):
    model = build_model("mdl", tiny_schema, make_config("mdl", TINY_CONFIG))
    ds = data.make_dataset(tiny_schema, "valid", data_dir=tiny_dataset, batch_size=256,
                           transform=train.encoder_transform(model))
    return next(iter(ds))[0]


def tiny_mdl(schema, overrides):
    tf.keras.utils.set_random_seed(0)
    return build_model("mdl", schema, make_config("mdl", {**TINY_CONFIG, **overrides})
                       ).build_from_schema()


@pytest.mark.parametrize("ablation", sorted(ABLATIONS))
def test_ablation_forward_shapes_and_gradients(ablation, tiny_schema, batch):
    model = tiny_mdl(tiny_schema, ABLATIONS[ablation])
    with tf.GradientTape() as tape:
        logits = model(batch, training=True)
    assert logits.shape == (256, tiny_schema.num_tasks)
    grads = tape.gradient(logits, model.trainable_variables)
    unused = [v.name for v, g in zip(model.trainable_variables, grads) if g is None]
    assert not unused, f"{ablation}: variables outside the forward pass: {unused}"


@pytest.mark.parametrize("ablation", sorted(ABLATIONS))
def test_scenario_index_matches_the_full_call_on_single_scenario_rows(ablation, tiny_schema,
                                                                      batch):
    model = tiny_mdl(tiny_schema, ABLATIONS[ablation])
    membership = batch[data.SCENARIO_KEY].numpy()
    full = model(batch).numpy()
    for k in range(tiny_schema.num_scenarios):
        only_k = (membership[:, k] == 1) & (membership.sum(axis=1) == 1)
        served = model(batch, scenario_index=k).numpy()
        np.testing.assert_allclose(served[only_k], full[only_k], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("ablation,scenario_maps,task_maps", [
    ("default", True, True), ("no_task_tokens", True, False),
    ("no_scenario_tokens", False, True), ("concat_interaction", False, False)])
def test_attention_maps_follow_the_domain_tokens(ablation, scenario_maps, task_maps,
                                                 tiny_schema, batch):
    c = {**TINY_CONFIG, **ABLATIONS[ablation]}
    model = tiny_mdl(tiny_schema, ABLATIONS[ablation])
    _, maps = model(batch, return_attention=True)
    n_f = len(tiny_schema.groups)
    tokens = tiny_schema.num_scenarios + 1
    assert len(maps["scenario"]) == (c["num_layers"] if scenario_maps else 0)
    assert len(maps["task"]) == (c["num_layers"] if task_maps else 0)
    for weights in maps["scenario"]:
        assert weights.shape == (256, c["num_heads"], tokens, n_f)
    for weights in maps["task"]:
        assert weights.shape == (256, c["num_heads"], tiny_schema.num_tasks, n_f)
        np.testing.assert_allclose(tf.reduce_sum(weights, -1).numpy(), 1.0, rtol=1e-5)


def test_no_global_token_has_one_scenario_token_per_scenario(tiny_schema, batch):
    model = tiny_mdl(tiny_schema, {"global_token": False})
    _, maps = model(batch, return_attention=True)
    assert maps["scenario"][0].shape[2] == tiny_schema.num_scenarios


def test_ablations_change_the_parameter_count(tiny_schema):
    counts = {a: tiny_mdl(tiny_schema, o).count_params() for a, o in ABLATIONS.items()
              if a in ("default", "no_task_tokens", "no_scenario_tokens", "no_global_token")}
    assert len(set(counts.values())) == len(counts)


def test_concat_rankmixer_needs_a_divisible_width(tiny_schema):
    with pytest.raises(ValueError, match="divisible"):
        tiny_mdl(tiny_schema, {"domain_attention": False})  # d_model 16, 11 tokens
