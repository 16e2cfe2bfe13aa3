"""Layers of the baselines' heads: shapes, get_config round-trips and defining properties."""
import mdl_tf  # noqa: F401
import numpy as np
import pytest
import tensorflow as tf

from mdl_tf.layers.gates import GateNU, SoftmaxGate, mix_experts
from mdl_tf.layers.moe import MixtureOfExperts
from mdl_tf.layers.star import PartitionedNormalization, StarDense
from mdl_tf.layers.towers import ParallelMLP
from mdl_tf.models.hmoe import HMoE

B, D, K = 5, 6, 3


def x(*shape, seed=1):
    return tf.random.stateless_normal(shape, seed=[seed, 2])


def weights():
    return tf.constant([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, 0], [1, 0, 0]], tf.float32)


@pytest.mark.parametrize("layer,inputs,expected", [
    (lambda: ParallelMLP(K, [8, 4]), lambda: x(B, D), (B, K, 4)),
    (lambda: ParallelMLP(K, [8, 1]), lambda: x(B, K, D), (B, K, 1)),
    (lambda: SoftmaxGate(2, 4), lambda: x(B, D), (B, 2, 4)),
    (lambda: GateNU(2, 7), lambda: x(B, D), (B, 2, 7)),
    (lambda: MixtureOfExperts(4, 8, 2), lambda: x(B, D), (B, 2, 8)),
    (lambda: StarDense(K, 4), lambda: [x(B, D), weights()], (B, 4)),
    (lambda: PartitionedNormalization(K), lambda: [x(B, D), weights()], (B, D)),
])
def test_shapes_and_config_roundtrip(layer, inputs, expected):
    layer = layer()
    assert tuple(layer(inputs()).shape) == expected
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def test_parallel_mlps_are_independent():
    """Changing tower 1's input leaves towers 0 and 2 unchanged."""
    layer = ParallelMLP(K, [8, 2])
    a = x(B, K, D)
    b = tf.concat([a[:, :1], a[:, 1:2] + 1.0, a[:, 2:]], axis=1)
    ya, yb = layer(a).numpy(), layer(b).numpy()
    np.testing.assert_allclose(ya[:, [0, 2]], yb[:, [0, 2]])
    assert not np.allclose(ya[:, 1], yb[:, 1])


def test_parallel_mlp_scales_multiply_hidden_units():
    layer = ParallelMLP(K, [8, 2], activation=None)
    h = x(B, D)
    zero = layer(h, scales=[tf.zeros([B, K, 8])]).numpy()
    np.testing.assert_allclose(zero, np.broadcast_to(layer.dense_layers[1].bias.numpy(),
                                                     zero.shape), atol=1e-6)


def reference_mlps(layer, inputs, scales=None, mlps=None):
    """numpy: MLP k (its own kernels) on its input [B, d_in] -> [B, len(mlps), units[-1]]."""
    out = []
    for j, k in enumerate(range(layer.num_mlps) if mlps is None else mlps):
        h = inputs if inputs.ndim == 2 else inputs[:, j]
        for i, dense in enumerate(layer.dense_layers):
            h = h @ dense.kernel.numpy()[k] + dense.bias.numpy()[k]
            if i < len(layer.dense_layers) - 1:
                h = np.maximum(h, 0) * (1 if scales is None else scales[i][:, j])
        out.append(h)
    return np.stack(out, axis=1)


@pytest.mark.parametrize("xla", [False, True])
@pytest.mark.parametrize("units", [[8, 2], [7]])
@pytest.mark.parametrize("shared", [True, False])
def test_parallel_mlp_equals_separate_mlps(shared, units, xla):
    """Token-major inside (or one plain matmul: a single layer on a shared input), the
    same as K separate MLPs: per-MLP inputs, hidden-unit scales and MLP subsets included."""
    layer = ParallelMLP(K, units)
    call = tf.function(lambda t, **kw: layer(t, **kw), jit_compile=xla)
    inputs = x(B, D) if shared else x(B, K, D)
    scales = [x(B, K, u, seed=4 + i) for i, u in enumerate(units[:-1])] or None
    np.testing.assert_allclose(call(inputs, scales=scales).numpy(),
                               reference_mlps(layer, inputs.numpy(), scales and [
                                   s.numpy() for s in scales]), atol=1e-5)
    subset = inputs if shared else tf.gather(inputs, [2, 0], axis=1)
    np.testing.assert_allclose(call(subset, token_indices=[2, 0]).numpy(),
                               reference_mlps(layer, subset.numpy(), mlps=[2, 0]), atol=1e-5)


def test_softmax_gate_respects_allowed_experts():
    gate = SoftmaxGate(2, 4, allowed=[[0, 3], [1, 2, 3]])
    w = gate(x(B, D)).numpy()
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-6)
    assert np.all(w[:, 0, [1, 2]] == 0) and np.all(w[:, 1, 0] == 0)


def test_mix_experts_is_the_gate_weighted_sum():
    w, e = tf.constant([[[0.25, 0.75]]]), tf.constant([[[1.0, 0.0], [0.0, 2.0]]])
    np.testing.assert_allclose(mix_experts(w, e).numpy(), [[[0.25, 1.5]]])


def test_gate_nu_is_in_zero_gamma_and_neutral_at_zero_logits():
    gate = GateNU(2, 5, gamma=2.0)
    g = gate(x(B, D) * 10).numpy()
    assert g.min() >= 0 and g.max() <= 2.0 and g.std() > 0.1
    out = gate.mlp.dense_layers[-1]
    out.kernel.assign(tf.zeros_like(out.kernel))
    np.testing.assert_allclose(gate(x(B, D)).numpy(), 1.0)


def test_moe_experts_read_their_slot():
    """PLE's CGC: expert 0 reads slot 0 only; changing slot 1 leaves gate 0 (which only
    sees expert 0 and reads slot 0) unchanged."""
    moe = MixtureOfExperts(2, 4, 2, allowed=[[0], [0, 1]], expert_slots=[0, 1],
                           gate_slots=[0, 1])
    a = x(B, 2, D)
    b = tf.concat([a[:, :1], a[:, 1:] + 1.0], axis=1)
    np.testing.assert_allclose(moe(a).numpy()[:, 0], moe(b).numpy()[:, 0])
    assert not np.allclose(moe(a).numpy()[:, 1], moe(b).numpy()[:, 1])


def test_star_dense_starts_as_the_shared_layer_and_partitions_by_scenario():
    layer = StarDense(K, 4)
    h, w = x(B, D), weights()
    y = layer([h, w]).numpy()
    np.testing.assert_allclose(y, (h @ layer.shared_kernel + layer.shared_bias).numpy(),
                               rtol=1e-5, atol=1e-6)
    layer.scenario_kernel.assign(tf.stack([tf.ones([D, 4]), 2 * tf.ones([D, 4]),
                                           tf.ones([D, 4])]))
    y = layer([h, w]).numpy()
    shared = (h @ layer.shared_kernel).numpy()
    np.testing.assert_allclose(y[1] - layer.shared_bias.numpy(), 2 * shared[1], rtol=1e-5)
    np.testing.assert_allclose(y[3] - layer.shared_bias.numpy(), 1.5 * shared[3], rtol=1e-5)


def test_partitioned_normalization_uses_the_member_scenarios_affine():
    layer = PartitionedNormalization(K)
    h, w = x(B, D), weights()
    layer([h, w])
    layer.scenario_beta.assign(tf.constant([[0.0] * D, [1.0] * D, [0.0] * D]))
    y = layer([h, w]).numpy()
    normalised = tf.keras.layers.LayerNormalization(center=False, scale=False,
                                                    epsilon=1e-5)(h).numpy()
    np.testing.assert_allclose(y[0], normalised[0], atol=1e-5)
    np.testing.assert_allclose(y[1], normalised[1] + 1.0, atol=1e-5)
    np.testing.assert_allclose(y[3], normalised[3] + 0.5, atol=1e-5)


def test_hmoe_label_space_mixture_stops_gradient_from_other_scenarios():
    gate = tf.constant([[[0.5, 0.5], [0.25, 0.75]]])                 # [1, N_s=2, N_s]
    preds = tf.Variable([[[1.0], [3.0]]])                              # [1, N_s, N_t=1]
    with tf.GradientTape() as tape:
        mixed = HMoE.label_space_mixture(gate, preds)
        target = mixed[:, 0, 0]                                        # scenario 0's output
    np.testing.assert_allclose(mixed.numpy()[0, :, 0], [2.0, 2.5])
    grad = tape.gradient(target, preds).numpy()
    np.testing.assert_allclose(grad[0, :, 0], [0.5, 0.0])             # only its own tower
