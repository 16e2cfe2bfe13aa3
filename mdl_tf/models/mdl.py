"""MDL: Multi-Distribution Learner (arXiv 2602.07520), see shared/docs/MDL_SPEC.md.

Scenarios and tasks are tokens that attend to the feature tokens in every layer:

  F = FeatureTokenizer(FeatureEmbedding(x))                 [B, N_f, d]
  S = DomainTokenizer_s(e_imp, scenario priors)            [B, N_s + 1, d]  (global last)
  T = DomainTokenizer_t(e_imp, task priors)                [B, N_t, d]
  repeat L times:
    F   = RankMixerBlock(F)      (or SelfAttentionBlock)
    S'  = DomainAwareAttention_s(S, F);  T' = DomainAwareAttention_t(T, F)
    T'' = DomainFusion(S', T', scenario membership)       (mean of member + global tokens)
    S   = S' + PerTokenFFN_s(S')  (skipped in the last layer: it feeds nothing)
    T   = T'' + PerTokenFFN_t(T'')
  logits[:, n] = PerTokenDense head_n(T_n)                  [B, N_t]

`call(..., scenario_index=k)` computes only scenario token k and the global one, for
serving signatures whose scenario is fixed: every example then belongs to scenario k.
"""
import dataclasses

import tensorflow as tf

from mdl_tf.layers import (DomainAwareAttention, DomainFusion, DomainTokenizer,
                           FeatureEmbedding, FeatureTokenizer, PerTokenDense, PerTokenFFN,
                           make_interaction)
from mdl_tf.layers.encoding import SCENARIO_KEY
from mdl_tf.models.base import RankingModel


@dataclasses.dataclass
class MDLConfig:
    d_model: int = 64
    num_layers: int = 2
    num_heads: int = 4
    ffn_multiplier: int = 2
    dropout: float = 0.0
    interaction: str = "rankmixer"      # or "self_attention"
    domain_pre_ln: bool = False         # [ours] LayerNorm before domain attention


class MDL(RankingModel):
    config_class = MDLConfig

    def build_network(self):
        s, c = self.schema, self.config
        domain_features = list(dict.fromkeys(
            list(s.important_features)
            + [p for v in s.scenario_priors.values() for p in v]
            + [p for v in s.task_priors.values() for p in v]))
        self.embedding = FeatureEmbedding(s.features, name="feature_embedding")
        self.domain_embedding = FeatureEmbedding([s.feature(n) for n in domain_features],
                                                 name="domain_embedding")
        self.feature_tokenizer = FeatureTokenizer(s.groups, c.d_model, name="feature_tokenizer")
        scenario_priors = [s.scenario_priors.get(n, ()) for n in s.scenario_names] + [()]
        self.scenario_tokenizer = DomainTokenizer(
            s.num_scenarios + 1, c.d_model, scenario_priors, c.ffn_multiplier,
            name="scenario_tokenizer")
        self.task_tokenizer = DomainTokenizer(
            s.num_tasks, c.d_model, [s.task_priors.get(n, ()) for n in s.task_names],
            c.ffn_multiplier, name="task_tokenizer")
        self.interactions, self.scenario_attention, self.task_attention = [], [], []
        self.scenario_ffn, self.task_ffn = [], []
        for l in range(c.num_layers):
            self.interactions.append(make_interaction(
                c.interaction, c.num_heads, c.ffn_multiplier, c.dropout, f"interaction_{l}"))
            self.scenario_attention.append(DomainAwareAttention(
                s.num_scenarios + 1, c.num_heads, c.domain_pre_ln, name=f"scenario_attention_{l}"))
            self.task_attention.append(DomainAwareAttention(
                s.num_tasks, c.num_heads, c.domain_pre_ln, name=f"task_attention_{l}"))
            if l < c.num_layers - 1:
                self.scenario_ffn.append(PerTokenFFN(
                    s.num_scenarios + 1, c.d_model, c.ffn_multiplier, dropout=c.dropout,
                    name=f"scenario_ffn_{l}"))
            self.task_ffn.append(PerTokenFFN(s.num_tasks, c.d_model, c.ffn_multiplier,
                                             dropout=c.dropout, name=f"task_ffn_{l}"))
        self.fusion = DomainFusion(name="domain_fusion")
        self.heads = PerTokenDense(s.num_tasks, 1, name="task_heads")

    def call(self, encoded, training=False, scenario_index=None, return_attention=False):
        s = self.schema
        features = self.feature_tokenizer(self.embedding(encoded))             # [B, N_f, d]
        domain = self.domain_embedding(encoded)
        important = tf.concat([domain[n] for n in s.important_features], axis=-1)
        if scenario_index is None:
            token_indices, membership = None, encoded[SCENARIO_KEY]            # [B, N_s]
        else:
            token_indices = [int(scenario_index), s.num_scenarios]
            membership = tf.ones_like(features[:, :1, 0])                       # [B, 1]
        scen = self.scenario_tokenizer(important, domain, token_indices=token_indices)
        task = self.task_tokenizer(important, domain)
        maps = {"scenario": [], "task": []}
        for l in range(self.config.num_layers):
            features = self.interactions[l](features, training=training)
            scen, scen_att = self.scenario_attention[l](
                [scen, features], token_indices=token_indices, return_attention=True)
            task, task_att = self.task_attention[l]([task, features], return_attention=True)
            task = self.fusion([scen, task, membership])
            if l < self.config.num_layers - 1:
                scen = scen + self.scenario_ffn[l](scen, training=training,
                                                   token_indices=token_indices)
            task = task + self.task_ffn[l](task, training=training)
            maps["scenario"].append(scen_att)
            maps["task"].append(task_att)
        logits = self.heads(task)[..., 0]                                       # [B, N_t]
        return (logits, maps) if return_attention else logits
