"""Apache Beam preprocessing: raw logs -> sharded gzip TFRecords, vocabularies, statistics
and a schema that `python -m mdl_tf.train` reads directly.

`python -m pipelines.preprocess` is the command (see BUILD.md, "Preprocessing pipeline").
One concept per module:
  options     the pipeline's settings and their cross-checks
  sources     reading CSV / JSON lines / Parquet into (source, record text, cells)
  validate    one record's cells -> the typed row, or a BadRow with its reason
  split       deterministic train/valid/test assignment (hashed key or time)
  statistics  vocabularies, dense moments and quantiles, label counts (Beam transforms)
  output_schema  the schema written next to the TFRecords
  report      report.json / report.md
  files       small text files through Beam's FileSystems (local, gs://, s3://, hdfs://)
  pipeline    the Beam graph and `run()`: read, validate, split, write, then the schema,
              the reports and the bad-row guard
  preprocess  the command line
"""
