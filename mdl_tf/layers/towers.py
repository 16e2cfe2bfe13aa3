"""ParallelMLP: K independent MLPs side by side (experts, task towers, scenario towers).

The multi-task baselines of MDL (arXiv 2602.07520, Sec. 4) are built from the same two
pieces: a set of parallel MLPs (the experts of MMoE/PLE/HMoE, the towers of every model)
and gates that mix them (gates.py). Every MLP has its own weights; they run as one
PerTokenDense per layer, so K towers cost one einsum, not K small matmuls.

Shapes: x [B, d_in] (one input shared by all K) or [B, K, d_in] (one input each)
-> [B, K, units[-1]]. Hidden layers use `activation` and dropout; the last layer is linear
unless `activate_output`. `scales` (PEPNet's PPNet) optionally multiplies hidden layer i's
output by scales[i] [B, K, units[i]].
"""
import tensorflow as tf

from mdl_tf.layers.per_token_dense import PerTokenDense


class ParallelMLP(tf.keras.layers.Layer):
    def __init__(self, num_mlps, units, activation="relu", activate_output=False, dropout=0.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_mlps, self.units = int(num_mlps), [int(u) for u in units]
        self.activation, self.activate_output = activation, activate_output
        self.dropout = float(dropout)

    def build(self, input_shape):
        last = len(self.units) - 1
        self.dense_layers = [PerTokenDense(
            self.num_mlps, u, activation=self.activation if i < last or self.activate_output
            else None, name=f"dense_{i}") for i, u in enumerate(self.units)]
        self.drop = tf.keras.layers.Dropout(self.dropout)
        super().build(input_shape)

    def call(self, x, training=False, scales=None, token_indices=None):
        """token_indices: run only those MLPs, on an x [B, len(token_indices), d_in] (or
        the [B, d_in] they all read)."""
        h = x                                              # [B, d_in] or [B, K, d_in]
        for i, layer in enumerate(self.dense_layers):
            h = layer(h, token_indices=token_indices)                    # [B, K, units[i]]
            if i < len(self.dense_layers) - 1:
                if scales is not None:
                    h = h * scales[i]
                h = self.drop(h, training=training)
        return h

    @property
    def hidden_units(self):
        return self.units[:-1]

    def get_config(self):
        return {**super().get_config(), "num_mlps": self.num_mlps, "units": self.units,
                "activation": self.activation, "activate_output": self.activate_output,
                "dropout": self.dropout}
