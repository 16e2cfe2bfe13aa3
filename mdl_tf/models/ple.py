"""PLE: Progressive Layered Extraction (Tang et al., RecSys 2020, "Progressive Layered
Extraction (PLE): A Novel Multi-Task Learning (MTL) Model for Personalized
Recommendations"), on the shared backbone.

`num_levels` Customized Gate Control levels. Every level has `task_experts` experts per
task and `shared_experts` shared ones. A task's gate mixes its own and the shared
experts; a shared gate (all levels but the last) mixes every expert and feeds the next
level's shared experts. The scenario is an ordinary feature.

    level input: slots [B, N_t + 1, d_in]  (task slots, then the shared slot; level 1: h
                 [B, d_in], the same input in every slot)
    level output: [B, N_t + 1, expert_units]  (last level: [B, N_t, expert_units])
    logits[:, t] = tower_t(output[:, t])      [B, N_t]
"""
import dataclasses
from typing import ClassVar

from mdl_tf.layers.moe import MixtureOfExperts
from mdl_tf.models.backbone import BackboneConfig, BackboneModel, flatten_tokens, make_towers


@dataclasses.dataclass
class PLEConfig(BackboneConfig):
    num_levels: int = 2
    task_experts: int = 2
    shared_experts: int = 2
    expert_units: int = 96
    size_field: ClassVar[str] = "expert_units"


class PLE(BackboneModel):
    config_class = PLEConfig

    def build_head(self):
        c, n_t = self.config, self.schema.num_tasks
        self.levels = [self._level(last=(l == c.num_levels - 1), name=f"cgc_{l}")
                       for l in range(c.num_levels)]
        self.towers = make_towers(n_t, c)

    def _level(self, last, name):
        """One CGC level; experts are grouped by owner: task 0, ..., task N_t-1, shared."""
        c, n_t = self.config, self.schema.num_tasks
        owners = [t for t in range(n_t) for _ in range(c.task_experts)]
        owners += [n_t] * c.shared_experts
        shared = [e for e, o in enumerate(owners) if o == n_t]
        allowed = [[e for e, o in enumerate(owners) if o == t] + shared for t in range(n_t)]
        if not last:
            allowed.append(list(range(len(owners))))
        return MixtureOfExperts(len(owners), c.expert_units, len(allowed), allowed=allowed,
                                expert_slots=owners, gate_slots=list(range(len(allowed))),
                                dropout=c.dropout, name=name)

    def head(self, tokens, embeddings, encoded, training=False):
        slots = flatten_tokens(tokens)              # [B, d_in]: the same in every slot
        for level in self.levels:
            slots = level(slots, training=training)          # [B, N_t (+1), expert_units]
        return self.towers(slots, training=training)[..., 0]                 # [B, N_t]
