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

The L layers run token-major: F, S and T are [N, B, d] inside the loop (one batched
matmul per per-token layer, no transposes; layers/per_token_dense.py), converted once
before the loop and once after it. Shapes above are written batch-major.

`call(..., scenario_index=k)` computes only scenario token k and the global one, for
serving signatures whose scenario is fixed: every example then belongs to scenario k.
`call(..., task_indices=[n, ...])` computes only those task tokens and returns their
logits [B, len(task_indices)] (the per-task signatures of `export --per_task_graphs`);
task tokens never read each other, so this equals the same columns of the full call.
Where tokens cannot be subset (domain_attention=False mixes them with the features; the
ablations' towers read all of them) it computes all tasks and returns those columns.
`call(..., return_attention=True)` also returns {"scenario": [L x [B, H, N_s+1, N_f]],
"task": [L x [B, H, N_t, N_f]]}, the domain attention weights of every layer.

Ablations (the paper's Table 2), all on by default:
  task_tokens=False       no task tokens: per-task towers read concat(flatten(F_L), s_avg),
                          s_avg the fused (member + global) final scenario tokens.
  scenario_tokens=False   no scenario tokens and no fusion: one head per scenario x task
                          on the task tokens, averaged over the example's scenarios.
  global_token=False      N_s scenario tokens; fusion averages the member tokens only.
  domain_attention=False  the domain tokens are concatenated to the feature tokens and go
                          through the feature interaction with them (no domain attention,
                          no domain FFNs; fusion still links scenarios to tasks). With
                          interaction=rankmixer, d_model must divide by the token count.
  interaction             rankmixer | self_attention (the feature interaction block).

Small-data options, all off by default (defaults = the paper's architecture):
  shared_domain_tables=True  [ours] e_imp and the priors are read from the feature tokens'
                          tables (`self.embedding`) instead of separate `domain_embedding`
                          copies (the paper, Sec. 3.1: separate tables). The feature
                          embedding embeds every schema feature, so no domain_embedding
                          is built.
  task_head=mlp           [ours] each task token goes through LayerNorm and its own MLP
                          tower [tower_units, tower_units // 2, 1] (TokenTowerHead)
                          instead of one linear logit (PerTokenDense). Only where the heads
                          read fused task tokens; the ablations' towers are MLPs already.
  qkv_projection=mlp      Q, K, V projections of the domain attention are PerTokenFFNs
                          (hidden ffn_multiplier * d, GELU) instead of PerTokenDense: the
                          paper (Sec. 3.2.2) says they are "in the form of a PerToken FFN".
  domain_learning_rate, domain_weight_decay   [ours] a third optimizer (the dense one's
                          kind) for `domain_variables()`: scenario and task tokenizers,
                          domain attention, domain FFNs and heads; None = as the dense
                          group (its learning rate, no weight decay). Decay is decoupled
                          (the optimizers' `weight_decay`, AdamW-style). The domain
                          tables stay with the embedding optimizer.
"""
import dataclasses
from typing import Optional

import tensorflow as tf

from mdl_tf.layers import (DomainAwareAttention, DomainFusion, DomainTokenizer,
                           FeatureEmbedding, PerTokenDense, PerTokenFFN, TokenTowerHead)
from mdl_tf.layers.encoding import SCENARIO_KEY
from mdl_tf.layers.per_token_dense import swap_token_batch
from mdl_tf.models.backbone import (BackboneConfig, BackboneModel, flatten_tokens,
                                    make_towers, membership_weights, tower_hidden_units)

CHOICES = ("linear", "mlp")     # of task_head and qkv_projection


@dataclasses.dataclass
class MDLConfig(BackboneConfig):
    scenario_feature: bool = False      # the scenario enters as tokens
    domain_pre_ln: bool = False         # [ours] LayerNorm before domain attention
    task_tokens: bool = True
    scenario_tokens: bool = True
    global_token: bool = True
    domain_attention: bool = True
    shared_domain_tables: bool = False  # [ours] domain tokens read the feature tables
    task_head: str = "linear"           # linear | mlp ([ours] LayerNorm + MLP tower)
    qkv_projection: str = "linear"      # linear | mlp (the paper's "PerToken FFN" form)
    domain_learning_rate: Optional[float] = None    # None: the dense learning rate
    domain_weight_decay: Optional[float] = None     # None: no weight decay

    def __post_init__(self):
        for name in ("task_head", "qkv_projection"):
            if getattr(self, name) not in CHOICES:
                raise ValueError(f"config field '{name}' must be one of "
                                 f"{', '.join(CHOICES)}, got '{getattr(self, name)}'")


class MDL(BackboneModel):
    config_class = MDLConfig

    # --- building ----------------------------------------------------------------------
    @property
    def num_scenario_tokens(self):
        return self.schema.num_scenarios + int(self.config.global_token)

    def build_head(self):
        s, c = self.schema, self.config
        if (c.scenario_tokens or c.task_tokens) and not c.shared_domain_tables:
            self._build_domain_embedding()
        if c.scenario_tokens:
            self._build_domain_path("scenario", self.num_scenario_tokens,
                                    [s.scenario_priors.get(n, ()) for n in s.scenario_names]
                                    + [()] * int(c.global_token), last_ffn=False)
            self.fusion = DomainFusion(use_global=c.global_token, token_major=True,
                                       name="domain_fusion")
        if c.task_tokens:
            self._build_domain_path("task", s.num_tasks,
                                    [s.task_priors.get(n, ()) for n in s.task_names],
                                    last_ffn=True)
        self._build_output()
        self._check_concat_interaction()

    def _build_domain_embedding(self):
        """Separate tables for the important and prior features of the domain tokens."""
        s = self.schema
        names = list(dict.fromkeys(
            list(s.important_features)
            + [p for v in s.scenario_priors.values() for p in v]
            + [p for v in s.task_priors.values() for p in v]))
        self.domain_embedding = FeatureEmbedding([s.feature(n) for n in names],
                                                 name="domain_embedding")

    def _build_domain_path(self, kind, num_tokens, priors, last_ffn):
        """Tokenizer, per-layer domain attention and per-token FFNs of one token type."""
        c = self.config
        setattr(self, f"{kind}_tokenizer", DomainTokenizer(
            num_tokens, c.d_model, priors, c.ffn_multiplier, token_major=True,
            name=f"{kind}_tokenizer"))
        attention, ffn = [], []
        if c.domain_attention:
            for l in range(c.num_layers):
                attention.append(DomainAwareAttention(
                    num_tokens, c.num_heads, c.domain_pre_ln, projection=c.qkv_projection,
                    multiplier=c.ffn_multiplier, token_major=True,
                    name=f"{kind}_attention_{l}"))
                if last_ffn or l < c.num_layers - 1:
                    ffn.append(PerTokenFFN(num_tokens, c.d_model, c.ffn_multiplier,
                                           dropout=c.dropout, token_major=True,
                                           name=f"{kind}_ffn_{l}"))
        setattr(self, f"{kind}_attention", attention)
        setattr(self, f"{kind}_ffn", ffn)

    def _build_output(self):
        s, c = self.schema, self.config
        if c.task_tokens and c.scenario_tokens and c.task_head == "mlp":
            self.heads = TokenTowerHead(s.num_tasks, tower_hidden_units(c), dropout=c.dropout,
                                        name="task_heads")
        elif c.task_tokens and c.scenario_tokens:
            self.heads = PerTokenDense(s.num_tasks, 1, name="task_heads")
        elif c.task_tokens:        # scenario towers: one head per scenario x task token
            self.heads = make_towers(s.num_scenarios * s.num_tasks, c, name="scenario_towers")
        elif c.scenario_tokens:    # task towers on the features and the fused scenario
            self.heads = make_towers(s.num_tasks, c, name="task_towers")
        else:                      # scenario x task towers on the features
            self.heads = make_towers(s.num_scenarios, c, outputs=s.num_tasks,
                                     name="scenario_towers")

    def _check_concat_interaction(self):
        c, s = self.config, self.schema
        if c.domain_attention or c.interaction != "rankmixer":
            return
        n = (len(s.groups) + self.num_scenario_tokens * int(c.scenario_tokens)
             + s.num_tasks * int(c.task_tokens))
        if c.d_model % n:
            raise ValueError(
                f"domain_attention=false concatenates {n} tokens into the RankMixer "
                f"interaction, whose token mixing needs d_model ({c.d_model}) divisible by "
                f"{n}; pick another d_model or interaction=self_attention")

    def domain_variables(self):
        """The domain-token path's variables, trained by the domain optimizer when
        domain_learning_rate or domain_weight_decay is set: tokenizers, domain attention,
        domain FFNs and heads (the fusion has none; the domain tables are embeddings)."""
        layers = [self.heads]
        for kind in ("scenario", "task"):
            if hasattr(self, f"{kind}_tokenizer"):
                layers += [getattr(self, f"{kind}_tokenizer"),
                           *getattr(self, f"{kind}_attention"), *getattr(self, f"{kind}_ffn")]
        return [v for layer in layers for v in layer.trainable_variables]

    # --- forward -----------------------------------------------------------------------
    def call(self, encoded, training=False, scenario_index=None, task_indices=None,
             return_attention=False):
        c = self.config
        embeddings = self.embed(encoded)
        features = swap_token_batch(self.feature_tokenizer(embeddings))        # [N_f, B, d]
        token_indices, membership = self._scenario_selection(encoded, scenario_index)
        tasks = self._task_selection(task_indices)
        scen, task = self._domain_tokens(encoded, embeddings, token_indices, tasks)  # [N, B, d]
        maps = {"scenario": [], "task": []}
        for l in range(c.num_layers):
            if c.domain_attention:
                features = self.interactions[l](features, training=training)
                scen, task = self._attend(l, features, scen, task, token_indices, tasks, maps)
            else:
                features, scen, task = self._interact_jointly(l, features, scen, task, training)
            if scen is not None and task is not None:
                task = self.fusion([scen, task, membership])
            if c.domain_attention:
                scen, task = self._domain_ffn(l, scen, task, token_indices, tasks, training)
        features, scen, task = (None if x is None else swap_token_batch(x)   # [B, N, d]
                                for x in (features, scen, task))
        logits = self._output(features, scen, task, membership, tasks, training)
        if task_indices is not None and tasks is None:      # could not subset: all tasks ran
            logits = tf.gather(logits, task_indices, axis=1)
        return (logits, maps) if return_attention else logits                 # [B, N_t]

    def _scenario_selection(self, encoded, scenario_index):
        """(scenario token subset or None, membership) for the fusion and the heads.

        Serving (scenario_index=k) runs only token k (+ global) through the domain
        attention; membership is then [B, 1] ones over that subset. Where the tokens
        cannot be subset (joint interaction, scenario heads) it is one-hot [B, N_s].
        """
        s, c = self.schema, self.config
        membership = encoded[SCENARIO_KEY]                                       # [B, N_s]
        if scenario_index is None:
            return None, membership
        k = int(scenario_index)
        if c.scenario_tokens and c.domain_attention:
            return [k] + [s.num_scenarios] * int(c.global_token), tf.ones_like(membership[:, :1])
        return None, tf.one_hot(tf.fill(tf.shape(membership)[:1], k), s.num_scenarios,
                                dtype=membership.dtype)

    def _task_selection(self, task_indices):
        """The task token subset to compute, or None for all (or where it cannot be)."""
        c = self.config
        if task_indices is None or not (c.task_tokens and c.scenario_tokens
                                        and c.domain_attention):
            return None
        return [int(n) for n in task_indices]

    def _domain_tokens(self, encoded, embeddings, token_indices, tasks):
        """Initial scenario tokens [N_s(+1), B, d] and task tokens [N_t, B, d] (or None).
        `embeddings`: the feature tokens' {name: [B, e]}, read with shared_domain_tables."""
        s, c = self.schema, self.config
        if not (c.scenario_tokens or c.task_tokens):
            return None, None
        domain = embeddings if c.shared_domain_tables else self.domain_embedding(encoded)
        important = tf.concat([domain[n] for n in s.important_features], axis=-1)
        scen = task = None
        if c.scenario_tokens:
            scen = self.scenario_tokenizer(important, domain, token_indices=token_indices)
        if c.task_tokens:
            task = self.task_tokenizer(important, domain, token_indices=tasks)
        return scen, task

    def _attend(self, l, features, scen, task, token_indices, tasks, maps):
        """Domain-aware attention of layer l; appends the weights to maps."""
        if scen is not None:
            scen, weights = self.scenario_attention[l](
                [scen, features], token_indices=token_indices, return_attention=True)
            maps["scenario"].append(weights)                                   # [B, H, Q, N_f]
        if task is not None:
            task, weights = self.task_attention[l]([task, features], token_indices=tasks,
                                                   return_attention=True)
            maps["task"].append(weights)
        return scen, task

    def _domain_ffn(self, l, scen, task, token_indices, tasks, training):
        if scen is not None and l < len(self.scenario_ffn):
            scen = scen + self.scenario_ffn[l](scen, training=training,
                                               token_indices=token_indices)
        if task is not None:
            task = task + self.task_ffn[l](task, training=training, token_indices=tasks)
        return scen, task

    def _interact_jointly(self, l, features, scen, task, training):
        """Ablation: [F; S; T] through the interaction block, split back (token-major)."""
        parts = [features] + [x for x in (scen, task) if x is not None]
        sizes = [int(x.shape[0]) for x in parts]
        mixed = self.interactions[l](tf.concat(parts, axis=0), training=training)  # [ΣN, B, d]
        split = tf.split(mixed, sizes, axis=0)
        features, rest = split[0], split[1:]
        scen = rest.pop(0) if scen is not None else None
        task = rest.pop(0) if task is not None else None
        return features, scen, task

    def _output(self, features, scen, task, membership, tasks, training):
        """Logits [B, N_t] (or [B, len(tasks)]) from the final tokens [B, N, d]."""
        s, c = self.schema, self.config
        if c.task_tokens and c.scenario_tokens:
            return self.heads(task, training=training, token_indices=tasks)[..., 0]  # [B, N_t]
        if c.task_tokens:
            tiled = tf.tile(task, [1, s.num_scenarios, 1])          # [B, N_s * N_t, d]
            per_scenario = tf.reshape(self.heads(tiled, training=training),
                                      [-1, s.num_scenarios, s.num_tasks])     # [B, N_s, N_t]
        elif c.scenario_tokens:
            scen = swap_token_batch(scen)                                      # [N_s+1, B, d]
            s_avg = self.fusion([scen, tf.zeros_like(scen[:1]), membership])[0]  # [B, d]
            towers_in = tf.concat([flatten_tokens(features), s_avg], axis=-1)
            return self.heads(towers_in, training=training)[..., 0]            # [B, N_t]
        else:
            per_scenario = self.heads(flatten_tokens(features), training=training)
        weights = tf.cast(membership_weights(membership), per_scenario.dtype)   # [B, N_s]
        return tf.einsum("bs,bst->bt", weights, per_scenario)
