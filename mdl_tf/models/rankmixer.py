"""RankMixer with per-task towers: the backbone alone (Zhu et al., 2025, "RankMixer: Scaling
Up Ranking Models in Industrial Recommenders", arXiv 2507.15551).

The MDL paper's first baseline: the RankMixer backbone with plain task towers. As in
RankMixer, the final feature tokens are mean-pooled and every task has its own MLP tower
on the pooled vector. The scenario is an ordinary feature (the "scenario" multi-hot joins
a feature group), so the model can only tell scenarios apart through its features.

    h = mean_n F_L[:, n]                      [B, d]
    logits[:, t] = tower_t(h)                 [B, N_t]
"""
import dataclasses

import tensorflow as tf

from mdl_tf.models.backbone import BackboneConfig, BackboneModel, make_towers


@dataclasses.dataclass
class RankMixerConfig(BackboneConfig):
    tower_units: int = 256


class RankMixer(BackboneModel):
    config_class = RankMixerConfig

    def build_head(self):
        self.towers = make_towers(self.schema.num_tasks, self.config)

    def head(self, tokens, embeddings, encoded, training=False):
        pooled = tf.reduce_mean(tokens, axis=1)                              # [B, d]
        return self.towers(pooled, training=training)[..., 0]                # [B, N_t]
