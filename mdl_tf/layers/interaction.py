"""Feature self-interaction blocks over the feature tokens F [B, N_f, d].

RankMixerBlock (default; RankMixer, arXiv 2507.15551, used by MDL Sec. 3.2.1):
    F = LN(F + TokenMixing(F));  F = LN(F + PerTokenFFN(F))
SelfAttentionBlock (the alternative MDL's abstract names "feature token self-attention"):
    F = LN(F + MHA(F, F));       F = LN(F + PerTokenFFN(F))
Both map [B, N_f, d] -> [B, N_f, d].
"""
import tensorflow as tf

from mdl_tf.layers.per_token_dense import PerTokenFFN


class TokenMixing(tf.keras.layers.Layer):
    """Parameter-free token mixing: split every token into N chunks; output token h is the
    concatenation of chunk h of all N tokens (in token order). Needs d % N == 0.

    [B, N, d] -> [B, N, d]. Applying it twice returns the input (it is a transpose).
    """

    def build(self, input_shape):
        self.num_tokens, self.width = int(input_shape[1]), int(input_shape[2])
        if self.width % self.num_tokens:
            raise ValueError(f"TokenMixing needs d ({self.width}) divisible by the number of "
                             f"feature tokens ({self.num_tokens})")
        super().build(input_shape)

    def call(self, x):
        n, chunk = self.num_tokens, self.width // self.num_tokens
        x = tf.reshape(x, [-1, n, n, chunk])       # [B, token t, chunk h, d/N]
        x = tf.transpose(x, [0, 2, 1, 3])          # [B, chunk h, token t, d/N]
        return tf.reshape(x, [-1, n, self.width])  # [B, N, d]: token h = chunk h of all t


class RankMixerBlock(tf.keras.layers.Layer):
    """Token mixing + per-token FFN, each with residual and LayerNorm. [B, N, d] -> [B, N, d]."""

    def __init__(self, ffn_multiplier=2, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.ffn_multiplier, self.dropout = ffn_multiplier, float(dropout)

    def build(self, input_shape):
        n, d = int(input_shape[1]), int(input_shape[2])
        self.mixing = TokenMixing(name="token_mixing")
        self.norm1 = tf.keras.layers.LayerNormalization(name="norm_mixing")
        self.ffn = PerTokenFFN(n, d, multiplier=self.ffn_multiplier, dropout=self.dropout,
                               name="ffn")
        self.norm2 = tf.keras.layers.LayerNormalization(name="norm_ffn")
        self.drop = tf.keras.layers.Dropout(self.dropout)
        super().build(input_shape)

    def call(self, x, training=False):
        x = self.norm1(x + self.mixing(x))
        return self.norm2(x + self.drop(self.ffn(x, training=training), training=training))

    def get_config(self):
        return {**super().get_config(), "ffn_multiplier": self.ffn_multiplier,
                "dropout": self.dropout}


class SelfAttentionBlock(tf.keras.layers.Layer):
    """Multi-head self-attention over feature tokens + per-token FFN (post-LN)."""

    def __init__(self, num_heads=4, ffn_multiplier=2, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_heads, self.ffn_multiplier, self.dropout = num_heads, ffn_multiplier, dropout

    def build(self, input_shape):
        n, d = int(input_shape[1]), int(input_shape[2])
        if d % self.num_heads:
            raise ValueError(f"d ({d}) must be divisible by num_heads ({self.num_heads})")
        self.attention = tf.keras.layers.MultiHeadAttention(
            self.num_heads, d // self.num_heads, dropout=self.dropout, name="attention")
        self.norm1 = tf.keras.layers.LayerNormalization(name="norm_attention")
        self.ffn = PerTokenFFN(n, d, multiplier=self.ffn_multiplier, dropout=self.dropout,
                               name="ffn")
        self.norm2 = tf.keras.layers.LayerNormalization(name="norm_ffn")
        super().build(input_shape)

    def call(self, x, training=False):
        x = self.norm1(x + self.attention(x, x, training=training))
        return self.norm2(x + self.ffn(x, training=training))

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads,
                "ffn_multiplier": self.ffn_multiplier, "dropout": self.dropout}


def make_interaction(kind, num_heads, ffn_multiplier, dropout, name):
    """The feature-interaction block named by a config's `interaction` field."""
    if kind == "rankmixer":
        return RankMixerBlock(ffn_multiplier, dropout, name=name)
    if kind == "self_attention":
        return SelfAttentionBlock(num_heads, ffn_multiplier, dropout, name=name)
    raise ValueError(f"interaction must be 'rankmixer' or 'self_attention', got '{kind}'")
