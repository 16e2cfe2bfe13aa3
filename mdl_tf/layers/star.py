"""Star topology layers of STAR (Sheng et al., CIKM 2021, "One Model to Serve All: Star
Topology Adaptive Recommender for Multi-Domain CTR Prediction", arXiv 2101.11427).

Every scenario k has its own parameters, combined with shared (centre) ones:

StarDense:  y = x (W ⊙ W_k) + b + b_k      (W_k initialised to ones, b_k to zeros)
PartitionedNormalization:  y = (gamma * gamma_k) * norm(x) + (beta + beta_k)
  [ours: norm is a per-example LayerNorm rather than STAR's per-scenario batch
  statistics, so it runs unchanged in XLA and in serving; the scale/shift are partitioned
  as in the paper.]

An example that belongs to several scenarios gets the average of its scenarios' outputs.
Inputs: [x [B, d_in], weights [B, K]] where weights is the membership normalised to sum
to 1 (see backbone.membership_weights) -> [B, units] (StarDense) or [B, d_in] (PN).
"""
import tensorflow as tf


class StarDense(tf.keras.layers.Layer):
    def __init__(self, num_scenarios, units, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.num_scenarios, self.units = int(num_scenarios), int(units)
        self.activation = tf.keras.activations.get(activation)

    def build(self, input_shape):
        d_in, k = int(input_shape[0][-1]), self.num_scenarios
        self.shared_kernel = self.add_weight("shared_kernel", shape=[d_in, self.units],
                                             initializer="glorot_uniform")
        self.shared_bias = self.add_weight("shared_bias", shape=[self.units], initializer="zeros")
        self.scenario_kernel = self.add_weight("scenario_kernel", shape=[k, d_in, self.units],
                                               initializer="ones")
        self.scenario_bias = self.add_weight("scenario_bias", shape=[k, self.units],
                                             initializer="zeros")
        super().build(input_shape)

    def call(self, inputs):
        x, weights = inputs
        kernel = self.shared_kernel[None] * self.scenario_kernel            # [K, d_in, u]
        per_scenario = tf.einsum("bd,kdu->bku", x, kernel) + self.scenario_bias  # [B, K, u]
        y = tf.einsum("bk,bku->bu", weights, per_scenario) + self.shared_bias
        return self.activation(y)

    def get_config(self):
        return {**super().get_config(), "num_scenarios": self.num_scenarios,
                "units": self.units,
                "activation": tf.keras.activations.serialize(self.activation)}


class PartitionedNormalization(tf.keras.layers.Layer):
    def __init__(self, num_scenarios, epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.num_scenarios, self.epsilon = int(num_scenarios), float(epsilon)

    def build(self, input_shape):
        d, k = int(input_shape[0][-1]), self.num_scenarios
        self.norm = tf.keras.layers.LayerNormalization(epsilon=self.epsilon, center=False,
                                                       scale=False, name="norm")
        self.gamma = self.add_weight("gamma", shape=[d], initializer="ones")
        self.beta = self.add_weight("beta", shape=[d], initializer="zeros")
        self.scenario_gamma = self.add_weight("scenario_gamma", shape=[k, d], initializer="ones")
        self.scenario_beta = self.add_weight("scenario_beta", shape=[k, d], initializer="zeros")
        super().build(input_shape)

    def call(self, inputs):
        x, weights = inputs
        gamma = self.gamma * tf.matmul(weights, self.scenario_gamma)        # [B, d]
        beta = self.beta + tf.matmul(weights, self.scenario_beta)           # [B, d]
        return gamma * self.norm(x) + beta

    def get_config(self):
        return {**super().get_config(), "num_scenarios": self.num_scenarios,
                "epsilon": self.epsilon}
