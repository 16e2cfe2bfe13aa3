"""FeatureEmbedding: encoded features -> one vector per feature (MDL Sec. 3.1, step one).

Takes FeatureEncoder's output, so it is pure numeric work that XLA compiles:
  categorical        [B] index              -> [B, embedding_dim] row of its table
  multi_categorical  [B, max_len] (-1 pad)  -> mean or sum of the rows ([B, embedding_dim])
  dense              [B] normalised value   -> [B, 1]
Output: {name: vector}. MDL builds two of these: one for the feature tokens and one, with
separate tables, for the "important" features that feed the scenario and task tokens
(unless its config sets shared_domain_tables).
`embedding_variables` lists the tables so training can give them their own optimizer
(the paper: Adagrad for embeddings, RMSProp for dense weights).
"""
import dataclasses

import tensorflow as tf

from mdl_tf.layers.encoding import feature_from_config


class FeatureEmbedding(tf.keras.layers.Layer):
    def __init__(self, features, **kwargs):
        super().__init__(**kwargs)
        self.features = [feature_from_config(f) for f in features]

    def build(self, input_shape=None):
        self.tables = {f.name: self.add_weight(
            f"embedding_{f.name}", shape=[f.num_buckets, f.embedding_dim],
            initializer=tf.keras.initializers.RandomNormal(stddev=0.05))
            for f in self.features if f.type != "dense"}
        super().build(input_shape)

    @property
    def embedding_variables(self):
        return list(self.tables.values())

    def call(self, encoded):
        return {f.name: self._embed(f, encoded[f.name]) for f in self.features}

    def _embed(self, f, x):
        if f.type == "dense":
            return tf.cast(x, self.compute_dtype)[:, None]
        # Look up first, then cast: casting the table would convert (and, on parameter
        # servers, fetch) every row of it on every step.
        table = self.tables[f.name]
        if f.type == "categorical":
            return tf.cast(tf.nn.embedding_lookup(table, x), self.compute_dtype)
        valid = tf.cast(x >= 0, self.compute_dtype)[..., None]           # [B, max_len, 1]
        rows = tf.cast(tf.nn.embedding_lookup(table, tf.maximum(x, 0)),
                       self.compute_dtype) * valid                       # [B, max_len, dim]
        total = tf.reduce_sum(rows, axis=1)
        if f.combiner == "sum":
            return total
        return total / tf.maximum(tf.reduce_sum(valid, axis=1), 1.0)

    def get_config(self):
        return {**super().get_config(),
                "features": [dataclasses.asdict(f) for f in self.features]}
