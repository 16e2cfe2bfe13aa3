"""Gates of the multi-task / multi-scenario baselines.

SoftmaxGate (MMoE, Ma et al., KDD 2018; PLE, Tang et al., RecSys 2020; HMoE, Li et al.,
  CIKM 2020): G gates, each a softmax over E experts computed from its own linear layer.
  x [B, d_in] or [B, G, d_in] -> weights [B, G, E]. `allowed[g]` optionally restricts
  gate g to a subset of experts (PLE: a task gate sees its own and the shared experts).
mix_experts: weights [B, G, E], experts [B, E, u] -> [B, G, u] (weighted sums).
GateNU (PEPNet, Chang et al., KDD 2023, "Gate Neural Unit"): G gates, each a 2-layer
  MLP  delta = gamma * sigmoid(W2 ReLU(W1 x + b1) + b2)  with values in (0, gamma);
  gamma = 2 makes 1 the neutral value. x [B, d_in] -> [B, G, units].
"""
import tensorflow as tf

from mdl_tf.layers.per_token_dense import PerTokenDense
from mdl_tf.layers.towers import ParallelMLP


def mix_experts(weights, experts):
    """weights [B, G, E], experts [B, E, u] -> [B, G, u]. A batched matmul: the einsum
    of the same product ran 1.3x slower without XLA (forward + backward at MMoE's shapes,
    batch 2048, 2 cores; the same under XLA)."""
    return tf.matmul(weights, experts)


class SoftmaxGate(tf.keras.layers.Layer):
    def __init__(self, num_gates, num_experts, allowed=None, **kwargs):
        super().__init__(**kwargs)
        self.num_gates, self.num_experts = int(num_gates), int(num_experts)
        self.allowed = None if allowed is None else [sorted(int(e) for e in a) for a in allowed]

    def build(self, input_shape):
        self.logits = PerTokenDense(self.num_gates, self.num_experts, name="logits")
        mask = [[0.0] * self.num_experts for _ in range(self.num_gates)]
        for g in range(self.num_gates):
            for e in (range(self.num_experts) if self.allowed is None else self.allowed[g]):
                mask[g][e] = 1.0
        self.mask = tf.constant(mask) > 0                                # [G, E] bool
        super().build(input_shape)

    def call(self, x):
        logits = self.logits(x)                                          # [B, G, E]
        logits = tf.where(self.mask, logits, logits.dtype.min)         # masked -> weight 0
        return tf.nn.softmax(logits, axis=-1)

    def get_config(self):
        return {**super().get_config(), "num_gates": self.num_gates,
                "num_experts": self.num_experts, "allowed": self.allowed}


class GateNU(tf.keras.layers.Layer):
    def __init__(self, num_gates, units, hidden_units=None, gamma=2.0, **kwargs):
        super().__init__(**kwargs)
        self.num_gates, self.units, self.gamma = int(num_gates), int(units), float(gamma)
        self.hidden_units = hidden_units

    def build(self, input_shape):
        hidden = self.hidden_units or self.units
        self.mlp = ParallelMLP(self.num_gates, [hidden, self.units], name="mlp")
        super().build(input_shape)

    def call(self, x):
        return self.gamma * tf.sigmoid(self.mlp(x))                      # [B, G, units]

    def get_config(self):
        return {**super().get_config(), "num_gates": self.num_gates, "units": self.units,
                "hidden_units": self.hidden_units, "gamma": self.gamma}
