"""PerTokenDense and PerTokenFFN: a separate dense layer (or 2-layer MLP) for every token.

From RankMixer (Zhu et al., 2025, arXiv 2507.15551) and MDL (arXiv 2602.07520, Sec. 3):
tokens of different meaning (feature groups, scenarios, tasks) live in different
subspaces, so each token position gets its own weights instead of one shared projection.

Shapes: x [B, T, d_in] -> [B, T, d_out]; kernel [T, d_in, d_out], bias [T, d_out].
x [B, d_in] is one input shared by every token (the experts and gates of MMoE read the
same features): one matmul computes all T outputs.
With token_major=True the activations are [T, B, d_in] -> [T, B, d_out]: the token axis is
the batch axis of one batched matmul, so no transposes surround it (in the [B, T, d]
layout the einsum copies its input and output into that layout on every call; measured
in benchmarks/results/train_throughput.md). The variables are the same in both layouts.
`token_indices` (a list of positions) runs only those tokens' weights on an input of
len(token_indices) tokens; serving uses it to compute one scenario's tokens only.
"""
import math

import tensorflow as tf


def swap_token_batch(tokens):
    """[B, N, d] (batch-major) -> [N, B, d] (token-major) and back."""
    return tf.transpose(tokens, [1, 0, 2])


class PerTokenDense(tf.keras.layers.Layer):
    """y[:, t] = x[:, t] @ W_t + b_t for every token t, with its own W_t and b_t."""

    def __init__(self, num_tokens, units, use_bias=True, activation=None, token_major=False,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_tokens, self.units, self.use_bias = int(num_tokens), int(units), use_bias
        self.activation = tf.keras.activations.get(activation)
        self.token_major = bool(token_major)

    def build(self, input_shape):
        d_in = int(input_shape[-1])
        limit = math.sqrt(6.0 / (d_in + self.units))  # Glorot per token, not over all tokens
        self.kernel = self.add_weight(
            "kernel", shape=[self.num_tokens, d_in, self.units],
            initializer=tf.keras.initializers.RandomUniform(-limit, limit))
        self.bias = (self.add_weight("bias", shape=[self.num_tokens, self.units],
                                     initializer="zeros") if self.use_bias else None)
        super().build(input_shape)

    def call(self, x, token_indices=None):
        kernel, bias = self.kernel, self.bias
        if token_indices is not None:
            kernel = tf.gather(kernel, token_indices)
            bias = None if bias is None else tf.gather(bias, token_indices)
        if x.shape.rank == 2:
            y = self._shared_input(x, kernel)
        elif self.token_major:
            y = tf.matmul(x, kernel)                  # [T, B, d_in] x [T, d_in, d_out]
        else:
            y = tf.einsum("btd,tdo->bto", x, kernel)  # [B, T, d_in] x [T, d_in, d_out]
        if bias is not None:
            y = y + (bias[:, None, :] if self.token_major else bias)     # [T, 1, d_out]
        return self.activation(y)

    def _shared_input(self, x, kernel):
        """One input x [B, d_in] read by every token: a single [B, d_in] x [d_in, T * d_out]
        matmul, rather than T copies of x through a batched one. Written as that matmul,
        not as einsum("bd,tdo->bto"): under XLA the einsum's gradient ran 3x its forward
        (MMoE's experts; forward + backward of MMoE 4-6 % faster, the same without XLA)."""
        t, d_in = int(kernel.shape[0]), int(kernel.shape[1])
        flat = tf.reshape(tf.transpose(kernel, [1, 0, 2]), [d_in, t * self.units])
        y = tf.reshape(tf.matmul(x, flat), [-1, t, self.units])          # [B, T, d_out]
        return tf.transpose(y, [1, 0, 2]) if self.token_major else y     # [T, B, d_out]

    def get_config(self):
        return {**super().get_config(), "num_tokens": self.num_tokens, "units": self.units,
                "use_bias": self.use_bias, "token_major": self.token_major,
                "activation": tf.keras.activations.serialize(self.activation)}


class PerTokenFFN(tf.keras.layers.Layer):
    """Per-token 2-layer MLP: PerTokenDense(hidden, GELU) -> dropout -> PerTokenDense(units).

    x [B, T, d_in] -> [B, T, units] ([T, B, ...] with token_major=True); hidden defaults
    to multiplier * d_in.
    """

    def __init__(self, num_tokens, units, multiplier=2, hidden_units=None, dropout=0.0,
                 activation="gelu", token_major=False, **kwargs):
        super().__init__(**kwargs)
        self.num_tokens, self.units, self.multiplier = int(num_tokens), int(units), multiplier
        self.hidden_units, self.dropout, self.activation = hidden_units, float(dropout), activation
        self.token_major = bool(token_major)

    def build(self, input_shape):
        hidden = self.hidden_units or int(self.multiplier * int(input_shape[-1]))
        self.inner = PerTokenDense(self.num_tokens, hidden, activation=self.activation,
                                   token_major=self.token_major, name="inner")
        self.outer = PerTokenDense(self.num_tokens, self.units, token_major=self.token_major,
                                   name="outer")
        self.drop = tf.keras.layers.Dropout(self.dropout)
        super().build(input_shape)

    def call(self, x, training=False, token_indices=None):
        h = self.inner(x, token_indices=token_indices)
        return self.outer(self.drop(h, training=training), token_indices=token_indices)

    def get_config(self):
        return {**super().get_config(), "num_tokens": self.num_tokens, "units": self.units,
                "multiplier": self.multiplier, "hidden_units": self.hidden_units,
                "dropout": self.dropout, "activation": self.activation,
                "token_major": self.token_major}
