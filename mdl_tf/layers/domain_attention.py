"""DomainAwareAttention: scenario or task tokens read the feature tokens (MDL Sec. 3.2.2).

Multi-head cross-attention with per-token projections: every query token has its own W_Q,
every feature token its own W_K and W_V (PerTokenDense). Scaled dot product, softmax
over feature tokens, residual, no output projection, no LayerNorm unless `pre_ln`:

    S' = Attn(S, F) + S          (pre_ln: Attn(LN(S), F) + S)

projection="mlp": every W_Q, W_K, W_V is a per-token 2-layer MLP instead (PerTokenFFN,
hidden multiplier * d, GELU), the paper's "in the form of a PerToken FFN" (Sec. 3.2.2).

Inputs: queries [B, Q, d], features [B, N_f, d] -> [B, Q, d]
(and the attention weights [B, H, Q, N_f] when return_attention=True).
With token_major=True: queries [Q, B, d], features [N_f, B, d] -> [Q, B, d]; the weights
keep the [B, H, Q, N_f] layout.

The heads are tiny (Q and N_f are a handful of tokens, d/H = 16), so the two
formulations of the same product differ in speed by 2-8x (2 CPU cores, batch 2048,
forward + backward, see BUILD.md): inside an XLA compilation the scores are a broadcast
multiply reduced over the head width, which XLA fuses into one loop without transposes
(with its gradient written out, see attention_broadcast); otherwise (TensorFlow's
kernels, which would materialise that broadcast) a batched matmul over B x H. The two
agree within float rounding, values and gradients (tests/layers/test_token_major.py).
"""
import math

import tensorflow as tf

from mdl_tf.layers.per_token_dense import PerTokenDense, PerTokenFFN
from mdl_tf.layers.xla import in_xla_compilation

PROJECTIONS = ("linear", "mlp")


def attention_broadcast(q, k, v, num_heads):
    """Token-major attention as broadcast products and reductions, with its gradient
    written out.

    q [Q, B, d], k and v [F, B, d] -> (out [Q, B, d], weights [Q, F, B, H]).
    Under XLA the derivative of the broadcast product `q * k` would be materialised as a
    [Q, F, B, d] tensor and reduced several times (for q, for k, for the projections'
    biases); written out, dq and dk are each one multiply-reduce of the score gradients.
    MDL's forward + backward under XLA, batch 2048, 2 cores: 77 -> 70 ms.
    """
    (n_q, n_f), d = (q.shape[0], k.shape[0]), q.shape[-1]
    e = d // num_heads
    scale = 1.0 / math.sqrt(e)

    def heads(x, axis):      # [N, B, d] -> [N, 1, B, H, e] (axis 1) or [1, N, B, H, e] (axis 0)
        return tf.expand_dims(tf.reshape(x, [x.shape[0], -1, num_heads, e]), axis)

    def flat(x):             # [N, B, H, e] -> [N, B, d]
        return tf.reshape(x, [x.shape[0], -1, d])

    @tf.custom_gradient
    def attend(q, k, v):
        qh, kh, vh = heads(q, 1), heads(k, 0), heads(v, 0)
        weights = tf.nn.softmax(tf.reduce_sum(qh * kh, -1) * scale, axis=1)   # [Q, F, B, H]
        out = tf.reduce_sum(weights[..., None] * vh, axis=1)                  # [Q, B, H, e]

        def grad(d_out, d_weights):
            d_out = heads(d_out, 1)                                           # [Q, 1, B, H, e]
            d_w = tf.reduce_sum(d_out * vh, -1)                               # [Q, F, B, H]
            if d_weights is not None:
                d_w += d_weights
            # softmax over F, then the scale: d_scores [Q, F, B, H]
            d_s = weights * (d_w - tf.reduce_sum(weights * d_w, 1, keepdims=True)) * scale
            d_q = tf.reduce_sum(d_s[..., None] * kh, axis=1)                 # [Q, B, H, e]
            d_k = tf.reduce_sum(d_s[..., None] * qh, axis=0)                 # [F, B, H, e]
            d_v = tf.reduce_sum(weights[..., None] * d_out, axis=0)          # [F, B, H, e]
            return flat(d_q), flat(d_k), flat(d_v)
        return (flat(out), weights), grad
    return attend(q, k, v)


def attention_matmul(q, k, v, num_heads):
    """Token-major attention as batched matmuls over B x H.

    q [Q, B, d], k and v [F, B, d] -> (out [Q, B, d], weights [B, H, Q, F])."""
    d = q.shape[-1]
    e = d // num_heads

    def heads(x):                                       # [N, B, d] -> [B, H, N, e]
        return tf.transpose(tf.reshape(x, [x.shape[0], -1, num_heads, e]), [1, 2, 0, 3])

    scores = tf.matmul(heads(q), heads(k), transpose_b=True) / math.sqrt(e)  # [B, H, Q, F]
    weights = tf.nn.softmax(scores, axis=-1)
    out = tf.transpose(tf.matmul(weights, heads(v)), [2, 0, 1, 3])           # [Q, B, H, e]
    return tf.reshape(out, [q.shape[0], -1, d]), weights


class DomainAwareAttention(tf.keras.layers.Layer):
    def __init__(self, num_queries, num_heads=4, pre_ln=False, projection="linear",
                 multiplier=2, token_major=False, **kwargs):
        super().__init__(**kwargs)
        self.num_queries, self.num_heads, self.pre_ln = int(num_queries), int(num_heads), pre_ln
        if projection not in PROJECTIONS:
            raise ValueError(f"projection must be one of {', '.join(PROJECTIONS)}, "
                             f"got '{projection}'")
        self.projection, self.multiplier = projection, multiplier
        self.token_major = bool(token_major)

    def build(self, input_shape):
        query_shape, feature_shape = input_shape
        d, n_f = int(query_shape[-1]), int(feature_shape[0 if self.token_major else 1])
        if d % self.num_heads:
            raise ValueError(f"d ({d}) must be divisible by num_heads ({self.num_heads})")
        self.query = self._projection(self.num_queries, d, "query")
        self.key = self._projection(n_f, d, "key")
        self.value = self._projection(n_f, d, "value")
        self.norm = tf.keras.layers.LayerNormalization(name="pre_ln") if self.pre_ln else None
        super().build(input_shape)

    def _projection(self, num_tokens, d, name):
        # The projections run token-major ([T, B, d]): call() computes in that layout.
        if self.projection == "mlp":
            return PerTokenFFN(num_tokens, d, self.multiplier, token_major=True, name=name)
        return PerTokenDense(num_tokens, d, token_major=True, name=name)

    def call(self, inputs, token_indices=None, return_attention=False):
        queries, features = inputs
        if not self.token_major:            # the computation is token-major either way
            queries, features = tf.transpose(queries, [1, 0, 2]), tf.transpose(features, [1, 0, 2])
        q_in = self.norm(queries) if self.norm is not None else queries
        q = self.query(q_in, token_indices=token_indices)                    # [Q, B, d]
        k, v = self.key(features), self.value(features)                      # [N_f, B, d]
        if in_xla_compilation():
            out, weights = attention_broadcast(q, k, v, self.num_heads)
            weights = tf.transpose(weights, [2, 3, 0, 1])                    # [B, H, Q, N_f]
        else:
            out, weights = attention_matmul(q, k, v, self.num_heads)
        out = out + queries                                                  # [Q, B, d]
        if not self.token_major:
            out = tf.transpose(out, [1, 0, 2])                               # [B, Q, d]
        return (out, weights) if return_attention else out

    def get_config(self):
        return {**super().get_config(), "num_queries": self.num_queries,
                "num_heads": self.num_heads, "pre_ln": self.pre_ln,
                "projection": self.projection, "multiplier": self.multiplier,
                "token_major": self.token_major}
