"""The backbone MDL and every baseline share (MDL paper, Sec. 4: "same backbone").

    embeddings = FeatureEmbedding(x)                              {name: [B, e]}
    F = FeatureTokenizer(embeddings)                              [B, N_f, d]
    F = interaction_l(F) for l in 1..L   (RankMixerBlock or SelfAttentionBlock)
    logits = head(F, encoded)                                     [B, N_t]

The interaction blocks run token-major ([N_f, B, d], see layers/per_token_dense.py): the
feature tokens are transposed once before the first block and once after the last.

A baseline is a `BackboneModel` that implements `build_head()` and `head()`. MDL reuses
the embedding, tokenizer and interaction blocks but interleaves its domain tokens with
the blocks, so it overrides `call`.

Scenario as an ordinary feature (`scenario_feature=True`): the scenario multi-hot
becomes the multi-valued categorical feature "scenario" (mean of its scenarios'
embedding rows) and joins the feature group `scenario_group` (default: the last group).
Models that use the scenario their own way (STAR, HMoE, PEPNet, MDL) leave it off and
read `self.embedding(...)["scenario"]` or the membership instead.
"""
import dataclasses
from typing import ClassVar

import tensorflow as tf

from mdl_tf.layers import FeatureEmbedding, FeatureTokenizer, make_interaction
from mdl_tf.layers.encoding import SCENARIO_KEY
from mdl_tf.layers.per_token_dense import swap_token_batch
from mdl_tf.layers.towers import ParallelMLP
from mdl_tf.models.base import RankingModel
from mdl_tf.schema import Feature


@dataclasses.dataclass
class BackboneConfig:
    d_model: int = 64
    num_layers: int = 2
    num_heads: int = 4
    ffn_multiplier: int = 2
    dropout: float = 0.0
    interaction: str = "rankmixer"      # or "self_attention"
    scenario_feature: bool = True       # scenario multi-hot as an ordinary feature
    scenario_group: str = ""            # the group it joins ("" = the last group)
    scenario_embedding_dim: int = 8
    tower_units: int = 64               # hidden width of the task towers

    # The config field the benchmark scales to give every model the same parameter budget.
    size_field: ClassVar[str] = "tower_units"


def membership_weights(membership):
    """Multi-hot [B, N_s] -> weights [B, N_s] summing to 1 over the example's scenarios."""
    membership = tf.cast(membership, tf.float32)
    return membership / tf.maximum(tf.reduce_sum(membership, axis=1, keepdims=True), 1.0)


def membership_ids(membership):
    """Multi-hot [B, N_s] -> [B, N_s] int64 scenario indices, -1 where not a member
    (the padded id list FeatureEmbedding pools for a multi_categorical feature)."""
    positions = tf.range(tf.shape(membership)[1], dtype=tf.int64)[None, :]  # [1, N_s]
    return tf.where(membership > 0, positions, tf.constant(-1, tf.int64))


class BackboneModel(RankingModel):
    """Embedding + feature tokenizer + L interaction blocks; subclasses add the head."""

    config_class = BackboneConfig
    uses_scenario_embedding = False     # build the "scenario" embedding even if not a feature

    def build_network(self):
        s, c = self.schema, self.config
        features, groups = list(s.features), {k: list(v) for k, v in s.groups.items()}
        if c.scenario_feature or self.uses_scenario_embedding:
            features.append(Feature(name=SCENARIO_KEY, type="multi_categorical",
                                    vocab_size=s.num_scenarios, max_len=s.num_scenarios,
                                    embedding_dim=c.scenario_embedding_dim))
        if c.scenario_feature:
            group = c.scenario_group or list(groups)[-1]
            if group not in groups:
                raise ValueError(f"scenario_group '{group}' is not a feature group "
                                 f"({', '.join(groups)})")
            groups[group].append(SCENARIO_KEY)
        self.embedding = FeatureEmbedding(features, name="feature_embedding")
        self.feature_tokenizer = FeatureTokenizer(groups, c.d_model, name="feature_tokenizer")
        self.interactions = [make_interaction(c.interaction, c.num_heads, c.ffn_multiplier,
                                              c.dropout, f"interaction_{l}", token_major=True)
                             for l in range(c.num_layers)]
        self.build_head()

    def embed(self, encoded):
        """{name: [B, e]} embeddings, with the scenario as feature "scenario" if built."""
        ids = {**encoded, SCENARIO_KEY: membership_ids(encoded[SCENARIO_KEY])}
        return self.embedding(ids)

    def backbone(self, encoded, training=False):
        """(feature tokens after the L interaction blocks [B, N_f, d], embeddings)."""
        embeddings = self.embed(encoded)
        tokens = self.input_tokens(self.feature_tokenizer(embeddings), embeddings)
        tokens = swap_token_batch(tokens)                                        # [N_f, B, d]
        for block in self.interactions:
            tokens = block(tokens, training=training)
        return swap_token_batch(tokens), embeddings

    def call(self, encoded, training=False):
        tokens, embeddings = self.backbone(encoded, training=training)
        return self.head(tokens, embeddings, encoded, training=training)

    # --- subclass API ------------------------------------------------------------------
    def build_head(self):
        raise NotImplementedError

    def input_tokens(self, tokens, embeddings):
        """Hook on the feature tokens before the interaction blocks (PEPNet's EPNet)."""
        return tokens

    def head(self, tokens, embeddings, encoded, training=False):
        """tokens [B, N_f, d] -> logits [B, N_t]."""
        raise NotImplementedError


def flatten_tokens(tokens):
    """[B, N, d] -> [B, N * d]."""
    return tf.reshape(tokens, [-1, tokens.shape[1] * tokens.shape[2]])


def make_towers(num_towers, config, outputs=1, name="task_towers"):
    """The towers every model ends with: MLP [tower_units, tower_units // 2] -> `outputs`
    logits each. Input [B, d_in] or [B, num_towers, d_in] -> [B, num_towers, outputs]."""
    return ParallelMLP(num_towers, tower_hidden_units(config) + [outputs],
                       dropout=config.dropout, name=name)


def tower_hidden_units(config):
    """Hidden widths of the towers: [tower_units, tower_units // 2]."""
    return [config.tower_units, max(config.tower_units // 2, 1)]
