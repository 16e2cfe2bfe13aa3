"""HMoE (Li et al., CIKM 2020, "Improving Multi-Scenario Learning to Rank in E-commerce by
Exploiting Task Relationships in the Label Space"), on the shared backbone.

Scenarios as the "tasks" of a mixture of experts, in two spaces:
- feature space (implicit): shared experts, one softmax gate per scenario, and one
  multi-task tower per scenario that predicts all N_t tasks for that scenario;
- label space (explicit): the prediction for scenario s is a gated mixture of every
  scenario tower's prediction, where the other scenarios' predictions pass through a
  stop-gradient so that each tower keeps learning its own scenario.
An example's final logits average its scenarios' mixtures. [ours: predictions are
mixed as logits.] The scenario enters through the gates, towers and membership, not as
a feature.

    h = flatten(F_L);  r_s = MoE_s(h)                               [B, N_s, expert_units]
    y_s = tower_s(r_s)                                              [B, N_s, N_t]
    a = softmax_gate(h)                                             [B, N_s, N_s]
    z_s = a_ss y_s + sum_{j != s} a_sj stop_gradient(y_j)
    logits = sum_s w_s z_s,  w = membership / |membership|          [B, N_t]
"""
import dataclasses
from typing import ClassVar

import tensorflow as tf

from mdl_tf.layers.encoding import SCENARIO_KEY
from mdl_tf.layers.gates import SoftmaxGate
from mdl_tf.layers.moe import MixtureOfExperts
from mdl_tf.models.backbone import (BackboneConfig, BackboneModel, flatten_tokens,
                                    make_towers, membership_weights)


@dataclasses.dataclass
class HMoEConfig(BackboneConfig):
    scenario_feature: bool = False
    num_experts: int = 4
    expert_units: int = 128
    size_field: ClassVar[str] = "expert_units"


class HMoE(BackboneModel):
    config_class = HMoEConfig

    def build_head(self):
        c, s = self.config, self.schema
        self.moe = MixtureOfExperts(c.num_experts, c.expert_units, s.num_scenarios,
                                    dropout=c.dropout, name="scenario_moe")
        self.towers = make_towers(s.num_scenarios, c, outputs=s.num_tasks,
                                  name="scenario_towers")
        self.label_gate = SoftmaxGate(s.num_scenarios, s.num_scenarios, name="label_gate")

    def head(self, tokens, embeddings, encoded, training=False):
        h = flatten_tokens(tokens)
        per_scenario = self.towers(self.moe(h, training=training), training=training)
        mixed = self.label_space_mixture(self.label_gate(h), per_scenario)  # [B, N_s, N_t]
        weights = membership_weights(encoded[SCENARIO_KEY])                  # [B, N_s]
        return tf.einsum("bs,bst->bt", tf.cast(weights, mixed.dtype), mixed)

    @staticmethod
    def label_space_mixture(gate, predictions):
        """gate [B, N_s, N_s], predictions [B, N_s, N_t] -> [B, N_s, N_t]: row s mixes
        every scenario's prediction, with gradient only through its own."""
        n_s = predictions.shape[1]
        own = tf.eye(n_s, dtype=gate.dtype)[None]                            # [1, N_s, N_s]
        live = tf.einsum("bsj,bjt->bst", gate * own, predictions)
        frozen = tf.einsum("bsj,bjt->bst", gate * (1 - own), tf.stop_gradient(predictions))
        return live + frozen
