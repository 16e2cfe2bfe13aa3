"""Every layer: output shapes and a get_config round-trip; plus the layers' defining properties."""
import mdl_tf  # noqa: F401
import numpy as np
import pytest
import tensorflow as tf

from mdl_tf import layers as L
from mdl_tf.schema import Feature

B, N, D = 3, 4, 8


def roundtrip(layer):
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    return clone


def x(*shape):
    return tf.random.stateless_normal(shape, seed=[1, 2])


@pytest.mark.parametrize("layer,inputs,expected", [
    (lambda: L.PerTokenDense(N, 5), lambda: x(B, N, D), (B, N, 5)),
    (lambda: L.PerTokenFFN(N, D, multiplier=2), lambda: x(B, N, D), (B, N, D)),
    (lambda: L.TokenMixing(), lambda: x(B, N, D), (B, N, D)),
    (lambda: L.RankMixerBlock(2), lambda: x(B, N, D), (B, N, D)),
    (lambda: L.SelfAttentionBlock(2, 2), lambda: x(B, N, D), (B, N, D)),
    (lambda: L.DomainAwareAttention(3, 2), lambda: [x(B, 3, D), x(B, N, D)], (B, 3, D)),
    (lambda: L.DomainAwareAttention(3, 2, pre_ln=True), lambda: [x(B, 3, D), x(B, N, D)],
     (B, 3, D)),
    (lambda: L.DomainFusion(), lambda: [x(B, 3, D), x(B, 2, D), tf.ones([B, 2])], (B, 2, D)),
    (lambda: L.FeatureTokenizer({"a": ["f1", "f2"], "b": ["f3"]}, D),
     lambda: {"f1": x(B, 2), "f2": x(B, 3), "f3": x(B, 1)}, (B, 2, D)),
])
def test_shapes_and_config(layer, inputs, expected):
    layer = layer()
    assert tuple(layer(inputs()).shape) == expected
    roundtrip(layer)


def test_domain_tokenizer_with_priors_shapes_and_subset():
    tok = L.DomainTokenizer(3, D, priors=[["p"], [], []])
    imp, emb = x(B, 5), {"p": x(B, 2)}
    full = tok(imp, emb)
    assert tuple(full.shape) == (B, 3, D)
    assert float(tf.reduce_min(full)) >= 0.0  # ReLU(FFN_k(.))
    # Computing tokens [2, 0] only gives exactly those rows of the full computation.
    subset = tok(imp, emb, token_indices=[2, 0])
    np.testing.assert_allclose(subset.numpy(), tf.gather(full, [2, 0], axis=1).numpy(),
                               atol=1e-6)
    roundtrip(tok)


def test_per_token_dense_uses_separate_weights_per_token():
    layer = L.PerTokenDense(2, 3, use_bias=False)
    inp = tf.ones([1, 2, 4])
    out = layer(inp).numpy()
    k = layer.kernel.numpy()
    np.testing.assert_allclose(out[0, 0], k[0].sum(axis=0), rtol=1e-5)
    np.testing.assert_allclose(out[0, 1], k[1].sum(axis=0), rtol=1e-5)


def test_token_mixing_is_the_chunk_transpose():
    n, d = 4, 8
    chunk = d // n
    inp = np.arange(n * d, dtype=np.float32).reshape(1, n, d)
    out = L.TokenMixing()(tf.constant(inp)).numpy()[0]
    for h in range(n):
        expected = np.concatenate([inp[0, t, h * chunk:(h + 1) * chunk] for t in range(n)])
        np.testing.assert_array_equal(out[h], expected)
    # A transpose: mixing twice is the identity.
    twice = L.TokenMixing()(L.TokenMixing()(tf.constant(inp))).numpy()
    np.testing.assert_array_equal(twice, inp)


def test_token_mixing_under_xla_is_the_same_permutation():
    """Token-major mixing is written as slices and concatenations inside XLA, as a
    transpose outside it: the same values, forward and backward."""
    layer = L.TokenMixing(token_major=True)
    inp = x(N, B, D)
    weights = x(N, B, D) + 1.0

    def forward_backward(v):
        with tf.GradientTape() as tape:
            tape.watch(v)
            out = layer(v)
            loss = tf.reduce_sum(out * weights)
        return out, tape.gradient(loss, v)

    for plain, compiled in zip(forward_backward(inp),
                               tf.function(forward_backward, jit_compile=True)(inp)):
        np.testing.assert_array_equal(compiled.numpy(), plain.numpy())


def test_token_mixing_rejects_indivisible_width():
    with pytest.raises(ValueError, match="divisible"):
        L.TokenMixing()(tf.zeros([1, 3, 8]))


def test_fusion_gradient_reaches_only_member_and_global_tokens():
    k_scen, n_tasks = 3, 2
    scen = tf.Variable(x(2, k_scen + 1, D))
    tasks = x(2, n_tasks, D)
    membership = tf.constant([[0.0, 1.0, 0.0],    # example 0: scenario 1
                              [1.0, 0.0, 1.0]])   # example 1: scenarios 0 and 2
    with tf.GradientTape() as tape:
        out = L.DomainFusion()([scen, tasks, membership])
        loss = tf.reduce_sum(out[0])                # example 0 only
    grad = tape.gradient(loss, scen).numpy()
    touched = [k for k in range(k_scen + 1) if np.abs(grad[0, k]).sum() > 0]
    assert touched == [1, k_scen]                   # its scenario token and the global one
    assert np.abs(grad[1]).sum() == 0               # nothing flows to another example


def test_fusion_averages_member_tokens_and_global():
    scen = tf.constant([[[1.0], [3.0], [5.0], [7.0]]])   # tokens s0, s1, s2, global
    tasks = tf.zeros([1, 2, 1])
    out = L.DomainFusion()([scen, tasks, tf.constant([[1.0, 0.0, 1.0]])]).numpy()
    np.testing.assert_allclose(out[0, :, 0], [(1 + 5 + 7) / 3] * 2)
    out = L.DomainFusion(use_global=False)([scen[:, :3], tasks,
                                            tf.constant([[0.0, 1.0, 1.0]])]).numpy()
    np.testing.assert_allclose(out[0, :, 0], [4.0, 4.0])


def test_domain_attention_returns_normalised_weights_and_residual():
    att = L.DomainAwareAttention(2, 2)
    q, f = x(B, 2, D), x(B, N, D)
    out, weights = att([q, f], return_attention=True)
    assert tuple(weights.shape) == (B, 2, 2, N)
    np.testing.assert_allclose(tf.reduce_sum(weights, -1).numpy(), 1.0, atol=1e-5)
    # Per-token queries: a subset call equals the same rows of the full call.
    sub = att([tf.gather(q, [1], axis=1), f], token_indices=[1])
    np.testing.assert_allclose(sub.numpy(), out.numpy()[:, 1:2], atol=1e-5)


def test_scenario_encoder_multi_hot_names_and_ids():
    enc = L.ScenarioEncoder(["feed", "search", "mall"])
    out = enc(tf.constant(["feed", "2", "search|mall", "feed|feed", "nope"])).numpy()
    np.testing.assert_array_equal(out, [[1, 0, 0], [0, 0, 1], [0, 1, 1], [1, 0, 0], [0, 0, 0]])
    roundtrip(enc)


FEATURES = [
    Feature("uid", "categorical", dtype="int64", vocab_size=10, embedding_dim=4),
    Feature("city", "categorical", dtype="string", hash_buckets=7, embedding_dim=3),
    Feature("dev", "categorical", dtype="string", vocabulary=("ios", "web"), embedding_dim=2),
    Feature("tags", "multi_categorical", vocabulary=("a", "b", "c"), max_len=3, embedding_dim=2),
    Feature("price", "dense", dtype="float32", log1p=True, mean=1.0, std=2.0),
]


def test_encoder_maps_unseen_values_to_oov_and_never_fails():
    enc = L.FeatureEncoder(FEATURES, ["s0", "s1"])
    out = enc({"uid": tf.constant([3, 10, -5, 2**40], tf.int64),
               "city": tf.constant(["x", "never-seen", "", "y"]),
               "dev": tf.constant(["ios", "android", "", "web"]),
               "tags": tf.constant(["a|c", "zzz|b", "", "a|b|c|a|b"]),
               "price": tf.constant([0.0, np.e - 1, -3.0, 1.0]),
               "scenario": tf.constant(["s0", "s1", "0|1", "1"])})
    np.testing.assert_array_equal(out["uid"].numpy(), [3, 10, 10, 10])   # OOV row = vocab_size
    assert np.all((out["city"].numpy() >= 0) & (out["city"].numpy() < 7))
    np.testing.assert_array_equal(out["dev"].numpy(), [1, 0, 0, 2])      # StringLookup: 0 = OOV
    np.testing.assert_array_equal(out["tags"].numpy(),
                                  [[1, 3, -1], [0, 2, -1], [-1, -1, -1], [1, 2, 3]])
    np.testing.assert_allclose(out["price"].numpy(), [-0.5, 0.0, -0.5, (np.log(2) - 1) / 2],
                               atol=1e-6)
    emb = L.FeatureEmbedding(FEATURES)(out)
    assert {k: tuple(v.shape) for k, v in emb.items()} == {
        "uid": (4, 4), "city": (4, 3), "dev": (4, 2), "tags": (4, 2), "price": (4, 1)}
    np.testing.assert_array_equal(emb["tags"].numpy()[2], [0, 0])        # empty -> zeros
    roundtrip(enc)
    roundtrip(L.FeatureEmbedding(FEATURES))


def test_multi_valued_mean_pooling():
    emb = L.FeatureEmbedding([FEATURES[3]])
    vec = emb({"tags": tf.constant([[1, 3, -1]], tf.int64)})["tags"].numpy()[0]
    table = emb.tables["tags"].numpy()
    np.testing.assert_allclose(vec, (table[1] + table[3]) / 2, rtol=1e-6)
