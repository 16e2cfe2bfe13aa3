"""Shared-Bottom multi-task model (Caruana, 1997, "Multitask Learning", Machine Learning
28:41-75), on the shared backbone.

All tasks share the backbone and a bottom MLP on the flattened feature tokens; each task
has its own tower. The scenario is an ordinary feature.

    h = MLP_bottom(flatten(F_L))              [B, bottom_units]
    logits[:, t] = tower_t(h)                 [B, N_t]
"""
import dataclasses
from typing import ClassVar

from mdl_tf.layers.towers import ParallelMLP
from mdl_tf.models.backbone import BackboneConfig, BackboneModel, flatten_tokens, make_towers


@dataclasses.dataclass
class SharedBottomConfig(BackboneConfig):
    bottom_units: int = 256
    size_field: ClassVar[str] = "bottom_units"


class SharedBottom(BackboneModel):
    config_class = SharedBottomConfig

    def build_head(self):
        c = self.config
        self.bottom = ParallelMLP(1, [c.bottom_units, c.bottom_units], activate_output=True,
                                  dropout=c.dropout, name="bottom")
        self.towers = make_towers(self.schema.num_tasks, c)

    def head(self, tokens, embeddings, encoded, training=False):
        h = self.bottom(flatten_tokens(tokens), training=training)[:, 0]     # [B, bottom]
        return self.towers(h, training=training)[..., 0]                     # [B, N_t]
