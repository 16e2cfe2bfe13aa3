"""DomainAwareAttention: scenario or task tokens read the feature tokens (MDL Sec. 3.2.2).

Multi-head cross-attention with per-token projections: every query token has its own W_Q,
every feature token its own W_K and W_V (PerTokenDense). Scaled dot product, softmax
over feature tokens, residual, no output projection, no LayerNorm unless `pre_ln`:

    S' = Attn(S, F) + S          (pre_ln: Attn(LN(S), F) + S)

projection="mlp": every W_Q, W_K, W_V is a per-token 2-layer MLP instead (PerTokenFFN,
hidden multiplier * d, GELU), the paper's "in the form of a PerToken FFN" (Sec. 3.2.2).

Inputs: queries [B, Q, d], features [B, N_f, d] -> [B, Q, d]
(and the attention weights [B, H, Q, N_f] when return_attention=True).
"""
import math

import tensorflow as tf

from mdl_tf.layers.per_token_dense import PerTokenDense, PerTokenFFN

PROJECTIONS = ("linear", "mlp")


class DomainAwareAttention(tf.keras.layers.Layer):
    def __init__(self, num_queries, num_heads=4, pre_ln=False, projection="linear",
                 multiplier=2, **kwargs):
        super().__init__(**kwargs)
        self.num_queries, self.num_heads, self.pre_ln = int(num_queries), int(num_heads), pre_ln
        if projection not in PROJECTIONS:
            raise ValueError(f"projection must be one of {', '.join(PROJECTIONS)}, "
                             f"got '{projection}'")
        self.projection, self.multiplier = projection, multiplier

    def build(self, input_shape):
        query_shape, feature_shape = input_shape
        d, n_f = int(query_shape[-1]), int(feature_shape[1])
        if d % self.num_heads:
            raise ValueError(f"d ({d}) must be divisible by num_heads ({self.num_heads})")
        self.query = self._projection(self.num_queries, d, "query")
        self.key = self._projection(n_f, d, "key")
        self.value = self._projection(n_f, d, "value")
        self.norm = tf.keras.layers.LayerNormalization(name="pre_ln") if self.pre_ln else None
        super().build(input_shape)

    def _projection(self, num_tokens, d, name):
        if self.projection == "mlp":
            return PerTokenFFN(num_tokens, d, self.multiplier, name=name)
        return PerTokenDense(num_tokens, d, name=name)

    def call(self, inputs, token_indices=None, return_attention=False):
        queries, features = inputs
        h = self.num_heads
        d = queries.shape[-1]
        q_in = self.norm(queries) if self.norm is not None else queries
        q = self.query(q_in, token_indices=token_indices)
        q = tf.reshape(q, [-1, tf.shape(q)[1], h, d // h])           # [B, Q, H, d/H]
        k = tf.reshape(self.key(features), [-1, features.shape[1], h, d // h])
        v = tf.reshape(self.value(features), [-1, features.shape[1], h, d // h])
        scores = tf.einsum("bqhe,bfhe->bhqf", q, k) / math.sqrt(d // h)  # [B, H, Q, N_f]
        weights = tf.nn.softmax(scores, axis=-1)
        out = tf.einsum("bhqf,bfhe->bqhe", weights, v)                # [B, Q, H, d/H]
        out = tf.reshape(out, [-1, tf.shape(queries)[1], d]) + queries
        return (out, weights) if return_attention else out

    def get_config(self):
        return {**super().get_config(), "num_queries": self.num_queries,
                "num_heads": self.num_heads, "pre_ln": self.pre_ln,
                "projection": self.projection, "multiplier": self.multiplier}
