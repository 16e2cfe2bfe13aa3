"""TokenTowerHead: a normalised MLP tower per token, e.g. one logit per MDL task token.

    y[:, t] = MLP_t(LayerNorm(x[:, t]))        x [B, T, d] -> y [B, T, units[-1]]

MLP_t has its own weights per token (ParallelMLP: hidden layers ReLU + dropout, last layer
linear); the LayerNorm normalises each token over d with one learned scale and offset.
[ours] MDL's paper reads each task token with one logit head (Sec. 3.3); this head is the
small-data option `task_head=mlp` of mdl_tf/models/mdl.py.
"""
import tensorflow as tf

from mdl_tf.layers.towers import ParallelMLP


class TokenTowerHead(tf.keras.layers.Layer):
    def __init__(self, num_tokens, hidden_units, units=1, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_tokens, self.units, self.dropout = int(num_tokens), int(units), float(dropout)
        self.hidden_units = [int(u) for u in hidden_units]

    def build(self, input_shape):
        self.norm = tf.keras.layers.LayerNormalization(name="norm")
        self.towers = ParallelMLP(self.num_tokens, self.hidden_units + [self.units],
                                  dropout=self.dropout, name="towers")
        super().build(input_shape)

    def call(self, x, training=False, token_indices=None):
        """token_indices: only those tokens' towers, on an x [B, len(token_indices), d]."""
        return self.towers(self.norm(x), training=training,
                           token_indices=token_indices)               # [B, T, units]

    def get_config(self):
        return {**super().get_config(), "num_tokens": self.num_tokens,
                "hidden_units": self.hidden_units, "units": self.units, "dropout": self.dropout}
