"""Feature self-interaction blocks over the feature tokens F [B, N_f, d].

RankMixerBlock (default; RankMixer, arXiv 2507.15551, used by MDL Sec. 3.2.1):
    F = LN(F + TokenMixing(F));  F = LN(F + PerTokenFFN(F))
SelfAttentionBlock (the alternative MDL's abstract names "feature token self-attention"):
    F = LN(F + MHA(F, F));       F = LN(F + PerTokenFFN(F))
Both map [B, N_f, d] -> [B, N_f, d], or [N_f, B, d] -> [N_f, B, d] with token_major=True
(the layout of the per-token layers' batched matmuls, see per_token_dense.py).
"""
import tensorflow as tf

from mdl_tf.layers.per_token_dense import PerTokenFFN
from mdl_tf.layers.xla import in_xla_compilation


class TokenMixing(tf.keras.layers.Layer):
    """Parameter-free token mixing: split every token into N chunks; output token h is the
    concatenation of chunk h of all N tokens (in token order). Needs d % N == 0.

    [B, N, d] -> [B, N, d] ([N, B, d] with token_major=True). Applying it twice returns
    the input (it is a transpose). Token-major inside an XLA compilation it is written as
    slices and concatenations (the same values; see call).
    """

    def __init__(self, token_major=False, **kwargs):
        super().__init__(**kwargs)
        self.token_major = bool(token_major)

    def build(self, input_shape):
        self.num_tokens = int(input_shape[0 if self.token_major else 1])
        self.width = int(input_shape[2])
        if self.width % self.num_tokens:
            raise ValueError(f"TokenMixing needs d ({self.width}) divisible by the number of "
                             f"feature tokens ({self.num_tokens})")
        super().build(input_shape)

    def call(self, x):
        n, chunk = self.num_tokens, self.width // self.num_tokens
        if self.token_major and in_xla_compilation():
            # The same permutation as slices and concatenations: XLA fuses the transpose
            # below into the LayerNorm that follows it as a slow strided reduction. Forward
            # + backward of LN(x + mixing(x)) at [8, 2048, 64], 2 cores, under XLA: 17.4 ms
            # with the transpose, 10.9 ms with slices; without XLA the transpose is faster
            # (12.6 ms against 17.0 ms).
            chunks = tf.split(x, n, axis=-1)           # chunk h: [token t, B, d/N]
            return tf.stack([tf.concat(tf.unstack(c), axis=-1) for c in chunks])  # [N, B, d]
        if self.token_major:
            x = tf.reshape(x, [n, -1, n, chunk])       # [token t, B, chunk h, d/N]
            x = tf.transpose(x, [2, 1, 0, 3])          # [chunk h, B, token t, d/N]
            return tf.reshape(x, [n, -1, self.width])  # [N, B, d]: token h = chunk h of all t
        x = tf.reshape(x, [-1, n, n, chunk])       # [B, token t, chunk h, d/N]
        x = tf.transpose(x, [0, 2, 1, 3])          # [B, chunk h, token t, d/N]
        return tf.reshape(x, [-1, n, self.width])  # [B, N, d]: token h = chunk h of all t

    def get_config(self):
        return {**super().get_config(), "token_major": self.token_major}


class RankMixerBlock(tf.keras.layers.Layer):
    """Token mixing + per-token FFN, each with residual and LayerNorm. [B, N, d] -> [B, N, d]
    ([N, B, d] with token_major=True)."""

    def __init__(self, ffn_multiplier=2, dropout=0.0, token_major=False, **kwargs):
        super().__init__(**kwargs)
        self.ffn_multiplier, self.dropout = ffn_multiplier, float(dropout)
        self.token_major = bool(token_major)

    def build(self, input_shape):
        n, d = int(input_shape[0 if self.token_major else 1]), int(input_shape[2])
        self.mixing = TokenMixing(self.token_major, name="token_mixing")
        self.norm1 = tf.keras.layers.LayerNormalization(name="norm_mixing")
        self.ffn = PerTokenFFN(n, d, multiplier=self.ffn_multiplier, dropout=self.dropout,
                               token_major=self.token_major, name="ffn")
        self.norm2 = tf.keras.layers.LayerNormalization(name="norm_ffn")
        self.drop = tf.keras.layers.Dropout(self.dropout)
        super().build(input_shape)

    def call(self, x, training=False):
        x = self.norm1(x + self.mixing(x))
        return self.norm2(x + self.drop(self.ffn(x, training=training), training=training))

    def get_config(self):
        return {**super().get_config(), "ffn_multiplier": self.ffn_multiplier,
                "dropout": self.dropout, "token_major": self.token_major}


class SelfAttentionBlock(tf.keras.layers.Layer):
    """Multi-head self-attention over feature tokens + per-token FFN (post-LN).

    With token_major=True ([N, B, d]) the attention (Keras MultiHeadAttention, batch-major)
    reads and writes [B, N, d]: one transpose each way; the FFN stays token-major.
    """

    def __init__(self, num_heads=4, ffn_multiplier=2, dropout=0.0, token_major=False,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_heads, self.ffn_multiplier, self.dropout = num_heads, ffn_multiplier, dropout
        self.token_major = bool(token_major)

    def build(self, input_shape):
        n, d = int(input_shape[0 if self.token_major else 1]), int(input_shape[2])
        if d % self.num_heads:
            raise ValueError(f"d ({d}) must be divisible by num_heads ({self.num_heads})")
        self.attention = tf.keras.layers.MultiHeadAttention(
            self.num_heads, d // self.num_heads, dropout=self.dropout, name="attention")
        self.norm1 = tf.keras.layers.LayerNormalization(name="norm_attention")
        self.ffn = PerTokenFFN(n, d, multiplier=self.ffn_multiplier, dropout=self.dropout,
                               token_major=self.token_major, name="ffn")
        self.norm2 = tf.keras.layers.LayerNormalization(name="norm_ffn")
        super().build(input_shape)

    def call(self, x, training=False):
        x = self.norm1(x + self._attend(x, training))
        return self.norm2(x + self.ffn(x, training=training))

    def _attend(self, x, training):
        if not self.token_major:
            return self.attention(x, x, training=training)
        x = tf.transpose(x, [1, 0, 2])                                    # [B, N, d]
        return tf.transpose(self.attention(x, x, training=training), [1, 0, 2])  # [N, B, d]

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads,
                "ffn_multiplier": self.ffn_multiplier, "dropout": self.dropout,
                "token_major": self.token_major}


def make_interaction(kind, num_heads, ffn_multiplier, dropout, name, token_major=False):
    """The feature-interaction block named by a config's `interaction` field."""
    if kind == "rankmixer":
        return RankMixerBlock(ffn_multiplier, dropout, token_major, name=name)
    if kind == "self_attention":
        return SelfAttentionBlock(num_heads, ffn_multiplier, dropout, token_major, name=name)
    raise ValueError(f"interaction must be 'rankmixer' or 'self_attention', got '{kind}'")
