"""STAR: Star Topology Adaptive Recommender (Sheng et al., CIKM 2021, "One Model to Serve
All: Star Topology Adaptive Recommender for Multi-Domain CTR Prediction",
arXiv 2101.11427), on the shared backbone.

The scenario enters as in the paper, not as a feature: partitioned normalization and a
star-topology MLP (every layer's weights = shared ⊙ scenario-specific) over the
flattened feature tokens, plus an auxiliary network on the scenario indicator's
embedding (and the pooled tokens) whose logits are added. [ours: multi-task by giving
the star MLP's last layer N_t outputs and the auxiliary network N_t outputs.]

    w = membership / |membership|                                  [B, N_s]
    h = PN(flatten(F_L), w)                                        [B, N_f * d]
    main = StarDense_N_t(... ReLU(StarDense_u(h, w)) ..., w)       [B, N_t]
    aux = MLP(concat(e_scenario, mean_n F_L[:, n]))                [B, N_t]
    logits = main + aux
"""
import dataclasses
from typing import ClassVar

import tensorflow as tf

from mdl_tf.layers.encoding import SCENARIO_KEY
from mdl_tf.layers.star import PartitionedNormalization, StarDense
from mdl_tf.layers.towers import ParallelMLP
from mdl_tf.models.backbone import (BackboneConfig, BackboneModel, flatten_tokens,
                                    membership_weights)


@dataclasses.dataclass
class STARConfig(BackboneConfig):
    scenario_feature: bool = False
    star_units: int = 128
    star_layers: int = 2
    aux_units: int = 32
    size_field: ClassVar[str] = "star_units"


class STAR(BackboneModel):
    config_class = STARConfig
    uses_scenario_embedding = True

    def build_head(self):
        c, s = self.config, self.schema
        self.partitioned_norm = PartitionedNormalization(s.num_scenarios, name="partitioned_norm")
        self.star_layers = [StarDense(s.num_scenarios, c.star_units, activation="relu",
                                      name=f"star_{l}") for l in range(c.star_layers)]
        self.star_output = StarDense(s.num_scenarios, s.num_tasks, name="star_output")
        self.auxiliary = ParallelMLP(1, [c.aux_units, s.num_tasks], name="auxiliary")
        self.drop = tf.keras.layers.Dropout(c.dropout)

    def head(self, tokens, embeddings, encoded, training=False):
        weights = membership_weights(encoded[SCENARIO_KEY])                  # [B, N_s]
        h = self.partitioned_norm([flatten_tokens(tokens), weights])        # [B, N_f * d]
        for layer in self.star_layers:
            h = self.drop(layer([h, weights]), training=training)          # [B, star_units]
        main = self.star_output([h, weights])                               # [B, N_t]
        aux_in = tf.concat([embeddings[SCENARIO_KEY], tf.reduce_mean(tokens, axis=1)], -1)
        return main + self.auxiliary(aux_in)[:, 0]                          # [B, N_t]
