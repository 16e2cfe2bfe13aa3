"""Apache Beam preprocessing: raw logs -> sharded gzip TFRecords, vocabularies, statistics
and a schema that `python -m mdl_tf.train` reads directly.

`python -m pipelines.preprocess` is the command (see BUILD.md, "Preprocessing pipeline").
One concept per module:
  options     the pipeline's settings and their cross-checks
  sources     reading CSV / JSON lines / Parquet into (source, record text, cells)
  validate    one record's cells -> the typed row, or a BadRow with its reason
  split       deterministic train/valid/test assignment (hashed key or time)
  statistics  vocabularies, dense moments and quantiles, label counts (Beam transforms)
  pipeline    the Beam graph and `run()`: read, validate, split, write, then finalize
  finalize    the output schema, report.json / report.md and the bad-row guard
"""
