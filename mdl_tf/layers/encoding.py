"""FeatureEncoder: raw feature values -> numeric model inputs (indices and normalised floats).

This is the part of the model that touches strings (hashing, vocabulary lookup, splitting),
which XLA cannot compile. It runs inside the tf.data pipeline during training and inside
every serving signature, so a SavedModel takes raw values and unseen ones never fail:
  categorical, vocab_size V:   ids outside [0, V) -> OOV index V
  categorical, vocabulary:     StringLookup with one OOV index (0)
  categorical, hash_buckets N: fast string hash into [0, N)
  multi_categorical:           separator-split, indexed as above, first max_len kept,
                               padded with -1            -> [B, max_len] int64
  dense:                       ((log1p(x) if log1p else x) - mean) / std -> [B] float32
  scenario:                    names/indices joined by a separator -> [B, N_s] multi-hot

Input: {name: [B] raw tensor, "scenario": [B] string}; output: same keys, encoded.
"""
import dataclasses

import tensorflow as tf

from mdl_tf.layers.scenario import ScenarioEncoder
from mdl_tf.schema import Feature

SCENARIO_KEY = "scenario"


def feature_from_config(f):
    if isinstance(f, Feature):
        return f
    f = dict(f)
    if f.get("vocabulary") is not None:
        f["vocabulary"] = tuple(f["vocabulary"])
    return Feature(**f)


class FeatureEncoder(tf.keras.layers.Layer):
    def __init__(self, features, scenario_names, scenario_separator="|", **kwargs):
        super().__init__(**kwargs)
        self.features = [feature_from_config(f) for f in features]
        self.scenario_names, self.scenario_separator = list(scenario_names), scenario_separator

    def build(self, input_shape=None):
        self.lookups = {f.name: tf.keras.layers.StringLookup(
            vocabulary=list(f.vocabulary), num_oov_indices=1, name=f"lookup_{f.name}")
            for f in self.features if f.vocabulary is not None and f.type != "dense"}
        self.scenario = ScenarioEncoder(self.scenario_names, self.scenario_separator,
                                        name="scenario_encoder")
        super().build(input_shape)

    def index(self, f, values):
        """Indices in [0, f.num_buckets) for raw values of feature f (any shape)."""
        if f.vocab_size is not None:
            ids = tf.cast(values, tf.int64)
            return tf.where((ids >= 0) & (ids < f.vocab_size), ids, f.vocab_size)
        strings = values if values.dtype == tf.string else tf.strings.as_string(values)
        if f.hash_buckets is not None:
            return tf.strings.to_hash_bucket_fast(strings, f.hash_buckets)
        return tf.cast(self.lookups[f.name](strings), tf.int64)

    def call(self, inputs):
        out = {f.name: self._encode(f, inputs[f.name]) for f in self.features}
        out[SCENARIO_KEY] = self.scenario(inputs[SCENARIO_KEY])
        return out

    def _encode(self, f, values):
        if f.type == "dense":
            x = tf.cast(values, tf.float32)
            if f.log1p:
                x = tf.math.log1p(tf.maximum(x, 0.0))
            return (x - f.mean) / f.std
        if f.type == "categorical":
            return self.index(f, values)
        values = values if values.dtype == tf.string else tf.strings.as_string(values)
        parts = tf.strings.split(values, f.separator)                    # [B, None]
        parts = tf.ragged.boolean_mask(parts, parts != "")[:, :f.max_len]
        ids = tf.ragged.map_flat_values(lambda p: self.index(f, p), parts)
        return ids.to_tensor(default_value=-1, shape=[None, f.max_len])  # [B, max_len]

    def get_config(self):
        return {**super().get_config(),
                "features": [dataclasses.asdict(f) for f in self.features],
                "scenario_names": self.scenario_names,
                "scenario_separator": self.scenario_separator}
