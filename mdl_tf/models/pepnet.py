"""PEPNet: Parameter and Embedding Personalized Network (Chang et al., KDD 2023, "PEPNet:
Parameter and Embedding Personalized Network for Infusing with Personalized Prior
Information", arXiv 2302.01115), on the shared backbone.

- EPNet (scenario -> embeddings): a Gate NU on the scenario embedding and the
  stop-gradient feature tokens rescales every element of the feature tokens before the
  interaction blocks. [ours: it gates the group tokens, i.e. the backbone's input,
  rather than the raw feature embeddings.]
- PPNet (user/item prior -> parameters): a Gate NU per tower layer, on the important
  features' embeddings (their own tables, like MDL's e_imp) and the stop-gradient
  backbone output, rescales each task tower's hidden units, per task.
The scenario enters through EPNet, not as a feature.

    F_0 = F_0 * GateNU_ep(concat(e_scenario, sg(flatten(F_0))))          [B, N_f, d]
    p = concat(e_imp, sg(flatten(F_L)))
    logits[:, t] = tower_t(flatten(F_L); hidden_i *= GateNU_i(p)[:, t])  [B, N_t]
"""
import dataclasses

import tensorflow as tf

from mdl_tf.layers import FeatureEmbedding
from mdl_tf.layers.encoding import SCENARIO_KEY
from mdl_tf.layers.gates import GateNU
from mdl_tf.models.backbone import BackboneConfig, BackboneModel, flatten_tokens, make_towers


@dataclasses.dataclass
class PEPNetConfig(BackboneConfig):
    scenario_feature: bool = False
    tower_units: int = 192
    gate_hidden_units: int = 64


class PEPNet(BackboneModel):
    config_class = PEPNetConfig
    uses_scenario_embedding = True

    def build_head(self):
        c, s = self.config, self.schema
        self.prior_embedding = FeatureEmbedding(
            [s.feature(n) for n in s.important_features], name="prior_embedding")
        self.towers = make_towers(s.num_tasks, c)
        self.ep_gate = GateNU(1, len(s.groups) * c.d_model, c.gate_hidden_units, name="ep_gate")
        self.pp_gates = [GateNU(s.num_tasks, units, c.gate_hidden_units, name=f"pp_gate_{i}")
                         for i, units in enumerate(self.towers.hidden_units)]

    def input_tokens(self, tokens, embeddings):
        flat = flatten_tokens(tokens)                                       # [B, N_f * d]
        gate_in = tf.concat([embeddings[SCENARIO_KEY], tf.stop_gradient(flat)], axis=-1)
        return tokens * tf.reshape(self.ep_gate(gate_in), tf.shape(tokens))

    def head(self, tokens, embeddings, encoded, training=False):
        flat = flatten_tokens(tokens)                                       # [B, N_f * d]
        prior = self.prior_embedding(encoded)
        gate_in = tf.concat([prior[n] for n in self.schema.important_features]
                            + [tf.stop_gradient(flat)], axis=-1)
        scales = [gate(gate_in) for gate in self.pp_gates]                  # [B, N_t, u_i]
        return self.towers(flat, training=training, scales=scales)[..., 0]  # [B, N_t]
