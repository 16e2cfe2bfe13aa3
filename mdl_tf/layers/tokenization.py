"""Unified tokenization (MDL Sec. 3.1): feature tokens, scenario tokens and task tokens.

FeatureTokenizer: each semantic feature group's concatenated embeddings go through the
  group's own dense layer to one token.  {name: [B, e]} -> F [B, N_f, d].
DomainTokenizer: token k = ReLU(FFN_k(concat(e_imp, e_prior_k))), FFN_k per token, where
  e_imp are the "important" features' embeddings (by default their own tables, not the
  feature tokens') and e_prior_k optional token-specific prior features. Used for the N_s + 1
  scenario tokens (global last, e_imp only) and the N_t task tokens.
  e_imp [B, E], priors {token: [B, P_k]} -> [B, K, d] ([K, B, d] with token_major=True).
"""
import tensorflow as tf

from mdl_tf.layers.per_token_dense import PerTokenFFN


class FeatureTokenizer(tf.keras.layers.Layer):
    def __init__(self, groups, d_model, **kwargs):
        super().__init__(**kwargs)
        self.groups = {k: list(v) for k, v in groups.items()}
        self.d_model = int(d_model)

    def build(self, input_shape=None):
        self.projections = [tf.keras.layers.Dense(self.d_model, name=f"group_{g}")
                            for g in self.groups]
        super().build(input_shape)

    def call(self, embeddings):
        tokens = [proj(tf.concat([embeddings[m] for m in members], axis=-1))
                  for proj, members in zip(self.projections, self.groups.values())]
        return tf.stack(tokens, axis=1)                                  # [B, N_f, d]

    def get_config(self):
        return {**super().get_config(), "groups": self.groups, "d_model": self.d_model}


class DomainTokenizer(tf.keras.layers.Layer):
    """K domain tokens from shared important embeddings plus per-token priors.

    `priors[k]` lists the feature names feeding token k (may be empty). Inputs of
    different widths are zero-padded to one width so one PerTokenFFN serves all tokens;
    zero inputs add nothing to a dense layer, so this equals K separate FFNs.
    """

    def __init__(self, num_tokens, d_model, priors=None, multiplier=2, token_major=False,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_tokens, self.d_model, self.multiplier = int(num_tokens), int(d_model), multiplier
        self.priors = [list(p) for p in (priors or [[]] * self.num_tokens)]
        self.token_major = bool(token_major)

    def build(self, input_shape=None):
        self.ffn = PerTokenFFN(self.num_tokens, self.d_model, multiplier=self.multiplier,
                               activation="relu", token_major=self.token_major,
                               name="token_ffn")
        super().build(input_shape)

    def call(self, important, embeddings, token_indices=None):
        positions = range(self.num_tokens) if token_indices is None else token_indices
        per_token = [tf.concat([important] + [embeddings[p] for p in self.priors[k]], axis=-1)
                     for k in positions]
        # Pad to the widest token over all K (not only `positions`), so a subset call sees
        # the same kernel shape as the full one.
        width = max(self._width(important, embeddings, k) for k in range(self.num_tokens))
        padded = [tf.pad(x, [[0, 0], [0, width - int(x.shape[-1])]]) for x in per_token]
        stacked = tf.stack(padded, axis=0 if self.token_major else 1)  # [K, B, w] or [B, K, w]
        return tf.nn.relu(self.ffn(stacked, token_indices=token_indices))

    def _width(self, important, embeddings, k):
        return int(important.shape[-1]) + sum(int(embeddings[p].shape[-1])
                                              for p in self.priors[k])

    def get_config(self):
        return {**super().get_config(), "num_tokens": self.num_tokens, "d_model": self.d_model,
                "priors": self.priors, "multiplier": self.multiplier,
                "token_major": self.token_major}
