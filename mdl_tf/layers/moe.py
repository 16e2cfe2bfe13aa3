"""MixtureOfExperts: E MLP experts mixed by G softmax gates (MMoE, PLE's CGC, HMoE).

MMoE (Ma et al., KDD 2018): one input, every gate over every expert.
PLE's Customized Gate Control (Tang et al., RecSys 2020): the input has one slot per
  task plus a shared slot; each expert reads the slot of its owner (`expert_slots`),
  each gate reads its own slot (`gate_slots`) and mixes only the experts it is allowed
  (`allowed`: its task's experts and the shared ones; the shared gate: all of them).
HMoE (Li et al., CIKM 2020): one input, one gate per scenario.

x [B, d_in] (one slot) or [B, S, d_in] (S slots) -> [B, G, units]
(and the gate weights [B, G, E] with return_weights=True).
"""
import tensorflow as tf

from mdl_tf.layers.gates import SoftmaxGate, mix_experts
from mdl_tf.layers.towers import ParallelMLP


class MixtureOfExperts(tf.keras.layers.Layer):
    def __init__(self, num_experts, units, num_gates, allowed=None, expert_slots=None,
                 gate_slots=None, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_experts, self.units, self.num_gates = int(num_experts), int(units), int(num_gates)
        self.allowed = allowed
        self.expert_slots = None if expert_slots is None else [int(s) for s in expert_slots]
        self.gate_slots = None if gate_slots is None else [int(s) for s in gate_slots]
        self.dropout = float(dropout)

    def build(self, input_shape):
        self.experts = ParallelMLP(self.num_experts, [self.units], activate_output=True,
                                   name="experts")
        self.gate = SoftmaxGate(self.num_gates, self.num_experts, self.allowed, name="gate")
        self.drop = tf.keras.layers.Dropout(self.dropout)
        super().build(input_shape)

    def call(self, x, training=False, return_weights=False):
        experts = self.experts(self._slots(x, self.expert_slots), training=training)  # [B, E, u]
        weights = self.gate(self._slots(x, self.gate_slots))                         # [B, G, E]
        out = self.drop(mix_experts(weights, experts), training=training)           # [B, G, u]
        return (out, weights) if return_weights else out

    @staticmethod
    def _slots(x, slots):
        """[B, S, d] -> [B, len(slots), d] (slot of each unit); [B, d], the same input
        in every slot, passes through."""
        return x if slots is None or x.shape.rank == 2 else tf.gather(x, slots, axis=1)

    def get_config(self):
        return {**super().get_config(), "num_experts": self.num_experts, "units": self.units,
                "num_gates": self.num_gates, "allowed": self.allowed,
                "expert_slots": self.expert_slots, "gate_slots": self.gate_slots,
                "dropout": self.dropout}
