"""MMoE: Multi-gate Mixture-of-Experts (Ma et al., KDD 2018, "Modeling Task Relationships
in Multi-task Learning with Multi-gate Mixture-of-Experts"), on the shared backbone.

Experts and one softmax gate per task read the flattened feature tokens; each task's
tower reads its gate's mixture of the experts. The scenario is an ordinary feature.

    h = flatten(F_L)                                   [B, N_f * d]
    g_t = softmax(W_t h);  e_j = ReLU(MLP_j(h))         [B, E], [B, expert_units]
    logits[:, t] = tower_t(sum_j g_tj e_j)             [B, N_t]
"""
import dataclasses
from typing import ClassVar

from mdl_tf.layers.moe import MixtureOfExperts
from mdl_tf.models.backbone import BackboneConfig, BackboneModel, flatten_tokens, make_towers


@dataclasses.dataclass
class MMoEConfig(BackboneConfig):
    num_experts: int = 4
    expert_units: int = 128
    size_field: ClassVar[str] = "expert_units"


class MMoE(BackboneModel):
    config_class = MMoEConfig

    def build_head(self):
        c = self.config
        self.moe = MixtureOfExperts(c.num_experts, c.expert_units, self.schema.num_tasks,
                                    dropout=c.dropout, name="moe")
        self.towers = make_towers(self.schema.num_tasks, c)

    def head(self, tokens, embeddings, encoded, training=False):
        mixed = self.moe(flatten_tokens(tokens), training=training)          # [B, N_t, u]
        return self.towers(mixed, training=training)[..., 0]                 # [B, N_t]
