"""RankingModel: what MDL and every baseline share.

A model is `tfrs.models.Model` with one `tfrs.tasks.Ranking` per task. Subclasses build
their network in `build_network()` and implement `call(encoded) -> logits [B, N_t]`
on encoded inputs (FeatureEncoder output), so the training step compiles with XLA.
`preprocess` (raw -> encoded) runs outside it: in tf.data and in serving signatures.

Loss: sum over tasks of weight_n * BCE(label_n, logit_n), where an example whose label
is missing (-1) has sample weight 0 for that task: it adds no loss and no gradient.
Embedding tables can have their own optimizer (`embedding_optimizer`); every other
trainable variable uses the compiled optimizer.
"""
import tensorflow as tf
import tensorflow_recommenders as tfrs

from mdl_tf.layers import FeatureEmbedding, FeatureEncoder


class RankingModel(tfrs.models.Model):
    def __init__(self, schema, config, **kwargs):
        super().__init__(**kwargs)
        self.schema, self.config = schema, config
        self.encoder = FeatureEncoder(schema.features, schema.scenario_names,
                                      schema.scenario.separator, name="encoder")
        self.ranking_tasks = [
            tfrs.tasks.Ranking(
                loss=tf.keras.losses.BinaryCrossentropy(from_logits=True),
                metrics=[tf.keras.metrics.AUC(from_logits=True, name=f"{t.name}_auc")],
                name=f"task_{t.name}")
            for t in schema.tasks]
        self.embedding_optimizer = None
        self.build_network()

    # --- subclass API ------------------------------------------------------------------
    def build_network(self):
        raise NotImplementedError

    def call(self, encoded, training=False):
        raise NotImplementedError

    # --- shared behaviour --------------------------------------------------------------
    def preprocess(self, raw):
        """Raw feature dict -> encoded dict (string ops; never XLA-compiled)."""
        return self.encoder(raw)

    def predict_raw(self, raw, **call_kwargs):
        """Probabilities [B, N_t] from raw features."""
        logits = self(self.preprocess(raw), training=False, **call_kwargs)
        return tf.sigmoid(tf.cast(logits, tf.float32))

    def compute_loss(self, inputs, training=False):
        encoded, labels = inputs
        logits = tf.cast(self(encoded, training=training), tf.float32)
        return self.masked_loss(labels, logits)

    def masked_loss(self, labels, logits):
        total = 0.0
        for n, (task, ranking) in enumerate(zip(self.schema.tasks, self.ranking_tasks)):
            y = labels[:, n:n + 1]                                         # [B, 1]
            mask = tf.cast(y >= 0, tf.float32)
            total += task.weight * ranking(labels=tf.maximum(y, 0.0),
                                           predictions=logits[:, n:n + 1], sample_weight=mask)
        return total

    def variable_groups(self):
        """(embedding tables, every other trainable variable)."""
        tables = [v for layer in self._flatten_layers() if isinstance(layer, FeatureEmbedding)
                  for v in layer.embedding_variables]
        table_ids = {id(v) for v in tables}
        return tables, [v for v in self.trainable_variables if id(v) not in table_ids]

    def train_step(self, data):
        with tf.GradientTape() as tape:
            loss = self.compute_loss(data, training=True)
            regularization = tf.add_n(self.losses) if self.losses else 0.0
            total = loss + regularization
        tables, dense = self.variable_groups()
        grads = tape.gradient(total, tables + dense)
        if self.embedding_optimizer is None:
            self.optimizer.apply_gradients(zip(grads, tables + dense))
        else:
            self.embedding_optimizer.apply_gradients(zip(grads[:len(tables)], tables))
            self.optimizer.apply_gradients(zip(grads[len(tables):], dense))
        metrics = {m.name: m.result() for m in self.metrics}
        metrics["loss"] = loss
        return metrics

    def dummy_raw_batch(self, batch_size=2):
        """A raw input batch of the right dtypes, to build variables before restoring."""
        raw = {}
        for f in self.schema.features:
            dtype = {"int64": tf.int64, "float32": tf.float32, "string": tf.string}[f.dtype]
            raw[f.name] = tf.zeros([batch_size], dtype) if dtype != tf.string else tf.fill(
                [batch_size], "")
        raw["scenario"] = tf.fill([batch_size], self.schema.scenario_names[0])
        return raw

    def build_from_schema(self):
        self(self.preprocess(self.dummy_raw_batch()))
        return self
