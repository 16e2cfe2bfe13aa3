"""Token-major layers ([T, B, d]) equal the batch-major ones and a reference einsum
formulation, with the same variables; both attention formulations (XLA and not) agree."""
import math

import mdl_tf  # noqa: F401
import numpy as np
import pytest
import tensorflow as tf

from mdl_tf import layers as L
from mdl_tf.layers.domain_attention import attention_broadcast, attention_matmul

B, N, Q, D, H = 5, 4, 3, 8, 2


def x(*shape, seed=1):
    return tf.random.stateless_normal(shape, seed=[seed, 2])


def swap(t):
    return tf.transpose(t, [1, 0, 2])


def reference_attention(queries, features, wq, bq, wk, bk, wv, bv, heads):
    """The layer's definition, batch-major: per-token projections, softmax(QK^T/sqrt(e))V
    per head, plus the residual. [B, Q, d], [B, F, d] -> [B, Q, d], [B, H, Q, F]."""
    def project(t, w, b):
        return np.einsum("btd,tdo->bto", t, w) + b
    q, k, v = project(queries, wq, bq), project(features, wk, bk), project(features, wv, bv)
    e = q.shape[-1] // heads
    split = lambda t: t.reshape(t.shape[0], t.shape[1], heads, e)  # noqa: E731
    scores = np.einsum("bqhe,bfhe->bhqf", split(q), split(k)) / math.sqrt(e)
    w = np.exp(scores - scores.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    out = np.einsum("bhqf,bfhe->bqhe", w, split(v)).reshape(q.shape) + queries
    return out, w


def copy_weights(src, dst):
    """Same variables (names below the layer's own, shapes) in both layouts; copies them."""
    def local(layer):
        return [(v.name.split("/", 1)[1], tuple(v.shape)) for v in layer.weights]
    assert local(src) == local(dst)
    for a, b in zip(src.weights, dst.weights):
        b.assign(a)


@pytest.mark.parametrize("make,inputs", [
    (lambda tm: L.PerTokenDense(N, 5, activation="relu", token_major=tm), lambda: x(B, N, D)),
    (lambda tm: L.PerTokenFFN(N, D, token_major=tm), lambda: x(B, N, D)),
    (lambda tm: L.RankMixerBlock(2, token_major=tm), lambda: x(B, N, D)),
    (lambda tm: L.SelfAttentionBlock(2, 2, token_major=tm), lambda: x(B, N, D)),
])
def test_token_major_equals_batch_major(make, inputs):
    batch_major, token_major = make(False), make(True)
    inp = inputs()
    expected = batch_major(inp)
    token_major(swap(inp))
    copy_weights(batch_major, token_major)
    np.testing.assert_allclose(swap(token_major(swap(inp))).numpy(), expected.numpy(),
                               atol=1e-5)
    clone = type(token_major).from_config(token_major.get_config())
    assert clone.get_config() == token_major.get_config()


def test_per_token_dense_token_major_is_the_reference_einsum_and_subsets():
    layer = L.PerTokenDense(N, 5, token_major=True)
    inp = x(N, B, D)
    out = layer(inp).numpy()
    kernel, bias = layer.kernel.numpy(), layer.bias.numpy()
    np.testing.assert_allclose(out, np.einsum("tbd,tdo->tbo", inp.numpy(), kernel)
                               + bias[:, None], atol=1e-5)
    assert tuple(layer.kernel.shape) == (N, D, 5)         # the checkpointed layout
    subset = layer(tf.gather(inp, [3, 1]), token_indices=[3, 1]).numpy()
    np.testing.assert_allclose(subset, out[[3, 1]], atol=1e-6)


@pytest.mark.parametrize("xla", [False, True])
@pytest.mark.parametrize("token_major", [False, True])
def test_per_token_dense_shared_input_equals_every_token_reading_it(token_major, xla):
    """x [B, d_in] (one input for all tokens, the experts' case) is one matmul; the same
    result as that input copied to every token, in both layouts, and token subsets."""
    layer = L.PerTokenDense(N, 5, activation="relu", token_major=token_major)
    call = tf.function(lambda t, **kw: layer(t, **kw), jit_compile=xla)
    inp = x(B, D)
    copied = tf.tile(inp[None] if token_major else inp[:, None], [N, 1, 1] if token_major
                     else [1, N, 1])                                      # [N, B, D] / [B, N, D]
    full = call(copied).numpy()
    np.testing.assert_allclose(call(inp).numpy(), full, atol=1e-5)
    subset = call(inp, token_indices=[3, 1]).numpy()
    np.testing.assert_allclose(subset, full[[3, 1]] if token_major else full[:, [3, 1]],
                               atol=1e-5)


@pytest.mark.parametrize("xla", [False, True])
@pytest.mark.parametrize("token_major", [False, True])
def test_domain_attention_matches_the_reference(xla, token_major):
    layer = L.DomainAwareAttention(Q, H, token_major=token_major)
    queries, features = x(B, Q, D), x(B, N, D, seed=3)
    layout = swap if token_major else (lambda t: t)
    call = tf.function(lambda q, f: layer([q, f], return_attention=True), jit_compile=xla)
    out, weights = call(layout(queries), layout(features))
    params = [w.numpy() for w in (layer.query.kernel, layer.query.bias, layer.key.kernel,
                                  layer.key.bias, layer.value.kernel, layer.value.bias)]
    ref_out, ref_weights = reference_attention(queries.numpy(), features.numpy(), *params, H)
    np.testing.assert_allclose(layout(out).numpy(), ref_out, atol=1e-5)
    np.testing.assert_allclose(weights.numpy(), ref_weights, atol=1e-6)   # [B, H, Q, F]


@pytest.mark.parametrize("xla", [False, True])
def test_domain_attention_query_subset_equals_full(xla):
    layer = L.DomainAwareAttention(Q, H, pre_ln=True, token_major=True)
    queries, features = x(Q, B, D), x(N, B, D, seed=3)
    call = tf.function(lambda q, f, idx: layer([q, f], token_indices=idx), jit_compile=xla)
    full = call(queries, features, None).numpy()
    subset = call(tf.gather(queries, [2, 0]), features, [2, 0]).numpy()
    np.testing.assert_allclose(subset, full[[2, 0]], atol=1e-5)


def test_domain_fusion_and_tokenizer_token_major_equal_batch_major():
    scen, task, member = x(B, Q, D), x(B, 2, D, seed=4), tf.constant([[1.0, 0.0]] * B)
    expected = L.DomainFusion()([scen, task, member])
    fused = L.DomainFusion(token_major=True)([swap(scen), swap(task), member])
    np.testing.assert_allclose(swap(fused).numpy(), expected.numpy(), atol=1e-6)

    imp, emb = x(B, 5), {"p": x(B, 2, seed=5)}
    batch_major = L.DomainTokenizer(3, D, priors=[["p"], [], []])
    token_major = L.DomainTokenizer(3, D, priors=[["p"], [], []], token_major=True)
    expected = batch_major(imp, emb)
    token_major(imp, emb)
    copy_weights(batch_major, token_major)
    np.testing.assert_allclose(swap(token_major(imp, emb)).numpy(), expected.numpy(),
                               atol=1e-5)


@pytest.mark.parametrize("xla", [False, True])
def test_attention_broadcast_gradient_equals_autodiff(xla):
    """attention_broadcast's written-out gradient (what XLA compiles) equals automatic
    differentiation of the matmul formulation, through the outputs and through the
    attention weights."""
    q, k, v = x(Q, B, D), x(N, B, D, seed=3), x(N, B, D, seed=4)

    def gradients(product, weights_to_batch_major):
        @tf.function(jit_compile=xla)
        def run(q, k, v):
            with tf.GradientTape() as tape:
                tape.watch([q, k, v])
                out, weights = product(q, k, v, H)
                weights = weights_to_batch_major(weights)                   # [B, H, Q, F]
                loss = tf.reduce_sum(out * tf.sin(out)) + tf.reduce_sum(weights * tf.cos(
                    tf.range(N, dtype=tf.float32)))
            return tape.gradient(loss, [q, k, v])
        return [g.numpy() for g in run(q, k, v)]

    written_out = gradients(attention_broadcast, lambda w: tf.transpose(w, [2, 3, 0, 1]))
    autodiff = gradients(attention_matmul, lambda w: w)
    for a, b in zip(written_out, autodiff):
        np.testing.assert_allclose(a, b, atol=1e-5)
