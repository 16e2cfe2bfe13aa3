"""ScenarioEncoder: the raw scenario value -> multi-hot membership.

A scenario cell holds one or more scenario names or 0-based indices joined by a
separator ("search", "1", "feed|search"); schema.scenario_lookup_keys says which strings
are keys (no indices when a name is a number). Input [B] string -> [B, N_s] float32 0/1.
Unknown parts encode to no scenario; input validation (data.py, serving) rejects them
before they get here, with a message that names them.
"""
import tensorflow as tf

from mdl_tf.schema import scenario_lookup_keys


class ScenarioEncoder(tf.keras.layers.Layer):
    def __init__(self, names, separator="|", **kwargs):
        super().__init__(**kwargs)
        self.names, self.separator = list(names), separator

    def build(self, input_shape=None):
        keys, values = scenario_lookup_keys(self.names)
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(keys, tf.constant(values, tf.int64)),
            default_value=-1)
        super().build(input_shape)

    def ids(self, scenario):
        """[B, None] ragged int64 ids; -1 for unknown parts."""
        parts = tf.strings.split(tf.strings.strip(scenario), self.separator)
        return tf.ragged.map_flat_values(self.table.lookup, tf.strings.strip(parts))

    def call(self, scenario):
        ids = self.ids(scenario)
        hot = tf.one_hot(ids, len(self.names), dtype=tf.float32)       # [B, None, N_s]
        return tf.reduce_max(hot, axis=1)                                # [B, N_s]

    def get_config(self):
        return {**super().get_config(), "names": self.names, "separator": self.separator}
