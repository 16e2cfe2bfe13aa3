"""Layers of MDL's small-data options: TokenTowerHead, DomainAwareAttention(projection="mlp")."""
import mdl_tf  # noqa: F401
import numpy as np
import pytest
import tensorflow as tf

from mdl_tf import layers as L

B, N, D = 3, 4, 8


def x(*shape, seed=1):
    return tf.random.stateless_normal(shape, seed=[seed, 2])


def roundtrip(layer):
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


@pytest.mark.parametrize("layer,inputs,expected", [
    (lambda: L.TokenTowerHead(N, [6, 3], dropout=0.1), lambda: x(B, N, D), (B, N, 1)),
    (lambda: L.DomainAwareAttention(3, 2, projection="mlp", multiplier=3),
     lambda: [x(B, 3, D), x(B, N, D)], (B, 3, D)),
])
def test_shapes_and_config(layer, inputs, expected):
    layer = layer()
    assert tuple(layer(inputs()).shape) == expected
    roundtrip(layer)


def test_token_tower_head_normalises_and_keeps_towers_apart():
    head = L.TokenTowerHead(N, [6])
    a = x(B, N, D)
    # LayerNorm first: shifting a token by a constant does not change its logit.
    np.testing.assert_allclose(head(a).numpy(), head(a + 1.0).numpy(), atol=1e-5)
    b = tf.concat([a[:, :1], a[:, 1:2] * -2.0, a[:, 2:]], axis=1)
    ya, yb = head(a).numpy(), head(b).numpy()
    np.testing.assert_allclose(ya[:, [0, 2, 3]], yb[:, [0, 2, 3]])
    assert not np.allclose(ya[:, 1], yb[:, 1])


def test_mlp_projection_keeps_the_query_subset_exact():
    att = L.DomainAwareAttention(2, 2, projection="mlp")
    q, f = x(B, 2, D), x(B, N, D, seed=3)
    out = att([q, f])
    assert isinstance(att.query, L.PerTokenFFN) and att.query.inner.kernel.shape == (2, D, 2 * D)
    sub = att([tf.gather(q, [1], axis=1), f], token_indices=[1])
    np.testing.assert_allclose(sub.numpy(), out.numpy()[:, 1:2], atol=1e-5)


def test_unknown_projection_is_rejected():
    with pytest.raises(ValueError, match="projection must be one of linear, mlp"):
        L.DomainAwareAttention(2, 2, projection="conv")
