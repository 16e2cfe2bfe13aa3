"""tf.data input: CSV (optionally gzip) and TFRecord of tf.train.Example, described by a Schema.

Every split becomes a dataset of `(features, labels)`:
  features: {feature name: [B] int64 | string | float32, "scenario": [B] string,
             "gauc_group": [B] string (only when the schema has a gauc_group)}
  labels:   [B, N_t] float32, 1/0, or LABEL_MISSING (-1) where the label is absent.

Raw values go to the model untouched (strings stay strings, ids stay ids): hashing,
vocabulary lookup and normalisation happen inside the model, so the exported SavedModel
takes the same raw values a client has.

Parsing is vectorised over blocks of lines and validates every row: a wrong field count,
a non-numeric or NaN dense value, a label outside {0, 1, empty} or an unknown scenario
stops the input with a `DataError` naming file, line and column. With
`bad_rows="skip"` such rows are dropped instead and counted in `BadRowCounter`.
"""
from __future__ import annotations

import contextlib
import glob as globlib
import gzip
import os
import re

import mdl_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf

from mdl_tf.schema import Schema, SchemaError, scenario_lookup_keys

LABEL_MISSING = -1.0
SCENARIO_KEY = "scenario"
GROUP_KEY = "gauc_group"
ERROR_MARK = "MDL_DATA_ERROR"
_FLOAT_RE = r"\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*"
_INT_RE = r"\s*[-+]?\d+\s*"
_LABEL_RE = r"\s*(0|1|0\.0*|1\.0*)?\s*"


class DataError(ValueError):
    """Bad input data; the message names the file, the line or record, and the column."""


class BadRowCounter:
    """Counts rows dropped under `bad_rows="skip"` (a variable, so tf.data can update it)."""

    def __init__(self):
        self.variable = tf.Variable(0, dtype=tf.int64, trainable=False, name="bad_rows")

    @property
    def count(self) -> int:
        return int(self.variable.numpy())


def expand_files(pattern: str) -> list:
    files = sorted(globlib.glob(pattern))
    if not files:
        raise DataError(f"no input files match '{pattern}'")
    return files


def make_dataset(schema: Schema, split: str, *, data_dir: str | None = None,
                 batch_size: int = 2048, training: bool = False, seed: int = 0,
                 repeat: bool = False, bad_rows: str = "error",
                 counter: BadRowCounter | None = None,
                 shuffle_buffer: int = 100_000, transform=None,
                 cache: bool = False) -> tf.data.Dataset:
    """The `(features, labels)` dataset of one split.

    training=True shuffles (files and rows, seeded) and drops the last partial batch so
    every batch has the same shape (XLA recompiles for each new shape).
    transform: applied to each parsed block of (features, labels), e.g. model encoding.
    cache=True keeps the parsed (and transformed) rows in memory after the first pass,
    for datasets that fit in RAM: later epochs skip parsing.
    """
    if bad_rows not in ("error", "skip"):
        raise ValueError(f"bad_rows must be 'error' or 'skip', got '{bad_rows}'")
    if bad_rows == "skip" and counter is None:
        counter = BadRowCounter()
    files = expand_files(schema.files_for(split, data_dir))
    if schema.format == "csv":
        records = _csv_lines(schema, files)
        parse = _CsvParser(schema, files, bad_rows, counter)
    else:
        records = _tfrecord_records(files)
        parse = _ExampleParser(schema, bad_rows, counter)
    def parse_blocks(ds, block, drop_remainder):
        # Parsing blocks of records is far cheaper than one record at a time.
        ds = ds.batch(block, drop_remainder=drop_remainder)
        ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if transform is not None:
            ds = ds.map(transform, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds

    if cache:
        rows = parse_blocks(records, 4096, False).unbatch().cache()
        if repeat:
            rows = rows.repeat()
        if training:
            rows = rows.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        return rows.batch(batch_size, drop_remainder=training).prefetch(tf.data.AUTOTUNE)
    if repeat:
        records = records.repeat()
    if training:
        records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    exact = bad_rows == "error"  # skipping rows changes block sizes: re-batch after parsing
    ds = parse_blocks(records, batch_size if exact else 1024, training and exact)
    if not exact:
        ds = ds.unbatch().batch(batch_size, drop_remainder=training)
    return ds.prefetch(tf.data.AUTOTUNE)


# --- CSV ---------------------------------------------------------------------------------
def _open_text(path: str):
    return gzip.open(path, "rt") if path.endswith(".gz") else open(path)


def read_csv_header(schema: Schema, path: str) -> list:
    try:
        with _open_text(path) as fh:
            first = fh.readline().rstrip("\r\n")
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e}") from None
    return [c.strip().strip('"') for c in first.split(schema.csv_delimiter)]


def _required_columns(schema: Schema) -> list:
    cols = [f.source_column for f in schema.features]
    cols += [schema.scenario.column] + [t.column for t in schema.tasks] + list(schema.gauc_group)
    return list(dict.fromkeys(cols))


def _csv_lines(schema: Schema, files: list) -> tf.data.Dataset:
    """(file, line number, line) triples; line numbers are 1-based like an editor's."""
    if not schema.csv_header:
        raise SchemaError(f"{schema.path or schema.name}: CSV input needs a header line")

    return _numbered(files, lambda path, compression: tf.data.TextLineDataset(
        path, compression_type=compression).skip(1), start=2)


def _numbered(files: list, reader, start: int) -> tf.data.Dataset:
    """(file, record number, record) triples of all files, interleaved deterministically."""
    def one_file(path):
        compression = tf.where(tf.strings.regex_full_match(path, r".*\.gz"), "GZIP", "")
        return reader(path, compression).enumerate(start=start).map(lambda n, r: (path, n, r))

    return tf.data.Dataset.from_tensor_slices(files).interleave(
        one_file, cycle_length=min(len(files), 4), num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True)


class _CsvParser:
    """Parses a block of CSV lines into (features, labels), validating every row."""

    def __init__(self, schema, files, bad_rows, counter):
        self.schema, self.bad_rows, self.counter = schema, bad_rows, counter
        header = read_csv_header(schema, files[0])
        for path in files:
            cols = read_csv_header(schema, path)
            if cols != header:
                raise DataError(f"{path}:1: header differs from {files[0]}'s")
            missing = [c for c in _required_columns(schema) if c not in cols]
            if missing:
                raise DataError(f"{path}:1: missing column(s) {missing}; the file has {cols}")
        self.header = header

    def _col(self, fields, name):
        return fields[:, self.header.index(name)]

    def __call__(self, path, line_no, line):
        s = self.schema
        fields = tf.strings.split(line, s.csv_delimiter)
        n_fields = fields.row_lengths()
        fields = fields.to_tensor(default_value="", shape=[None, len(self.header)])
        fields = tf.strings.strip(tf.strings.regex_replace(fields, r'^\s*"|"\s*$', ""))
        where = path + tf.constant(":") + tf.strings.as_string(line_no) + ": "
        problems = [_problem(tf.not_equal(n_fields, len(self.header)), where,
                             f"expected {len(self.header)} fields, got ",
                             tf.strings.as_string(n_fields))]
        features = {}
        for f in s.features:
            raw = self._col(fields, f.source_column)
            col = f"column '{f.source_column}': "
            if f.type == "dense":
                is_nan = tf.equal(tf.strings.lower(raw), "nan")
                ok = tf.strings.regex_full_match(raw, _FLOAT_RE) | tf.equal(raw, "")
                problems += [_problem(is_nan, where, col + "NaN in dense feature ", raw),
                             _problem(~ok & ~is_nan, where, col + "not a number: ", raw)]
                safe = tf.where(ok & tf.not_equal(raw, ""), raw, str(f.default))
                features[f.name] = tf.strings.to_number(safe, tf.float32)
            elif f.dtype == "int64" and f.type == "categorical":
                ok = tf.strings.regex_full_match(raw, _INT_RE) | tf.equal(raw, "")
                problems.append(_problem(~ok, where, col + "not an integer id: ", raw))
                features[f.name] = tf.strings.to_number(tf.where(ok & (raw != ""), raw, "-1"),
                                                        tf.int64)
            else:
                features[f.name] = raw
        scen = self._col(fields, s.scenario.column)
        problems.append(_problem(~_known_scenarios(s, scen), where,
                                 f"column '{s.scenario.column}': unknown scenario ", scen,
                                 f" (known: {', '.join(s.scenario.names)})"))
        features[SCENARIO_KEY] = scen
        if s.gauc_group:
            features[GROUP_KEY] = tf.strings.reduce_join(
                tf.stack([self._col(fields, c) for c in s.gauc_group], axis=1), axis=1,
                separator="/")
        labels = []
        for t in s.tasks:
            raw = self._col(fields, t.column)
            ok = tf.strings.regex_full_match(raw, _LABEL_RE)
            problems.append(_problem(~ok, where, f"column '{t.column}': label must be 0, 1 or "
                                     "empty (missing), got ", raw))
            value = tf.strings.to_number(tf.where(ok & (raw != ""), raw, "-1"), tf.float32)
            labels.append(value)
        labels = tf.stack(labels, axis=1)
        return _apply_policy(features, labels, problems, self.bad_rows, self.counter)


def _known_scenarios(schema: Schema, scen: tf.Tensor) -> tf.Tensor:
    """[B] bool: every separator-split part of the scenario cell is a lookup key (a known
    name or index, see schema.scenario_lookup_keys), stripped as ScenarioEncoder does."""
    keys, _ = scenario_lookup_keys(schema.scenario.names)
    parts = tf.strings.strip(tf.strings.split(scen, schema.scenario.separator))
    known = tf.reduce_any(tf.equal(parts.flat_values[:, None], tf.constant(keys)[None]), axis=1)
    per_row = tf.RaggedTensor.from_row_lengths(known, parts.row_lengths())
    return tf.reduce_all(per_row, axis=1) & (parts.row_lengths() > 0) & (scen != "")


def _problem(bad, where, what, value, suffix=""):
    """[B] string: the error message for rows where `bad`, '' elsewhere."""
    return tf.where(bad, where + what + "'" + value + "'" + suffix, "")


def _apply_policy(features, labels, problems, bad_rows, counter):
    msgs = tf.stack(problems, axis=1)                           # [B, n_checks]
    has = tf.not_equal(msgs, "")
    bad = tf.reduce_any(has, axis=1)                            # [B]
    if bad_rows == "skip":
        counter.variable.assign_add(tf.reduce_sum(tf.cast(bad, tf.int64)))
        keep = ~bad
        features = {k: tf.boolean_mask(v, keep) for k, v in features.items()}
        return features, tf.boolean_mask(labels, keep)
    row = tf.argmax(tf.cast(bad, tf.int32))
    first = tf.gather(msgs[row], tf.argmax(tf.cast(has[row], tf.int32)))
    check = tf.debugging.Assert(~tf.reduce_any(bad), [ERROR_MARK, first, ERROR_MARK])
    with tf.control_dependencies([check]):
        labels = tf.identity(labels)
    return features, labels


# --- TFRecord ----------------------------------------------------------------------------
def _tfrecord_records(files: list) -> tf.data.Dataset:
    return _numbered(files, lambda path, compression: tf.data.TFRecordDataset(
        path, compression_type=compression), start=0)


def example_spec(schema: Schema) -> dict:
    """The tf.io.parse_example spec of the schema's columns (tf.train.Example layout)."""
    spec = {}
    for f in schema.features:
        if f.type == "dense":
            spec[f.source_column] = tf.io.FixedLenFeature([], tf.float32, default_value=f.default)
        elif f.type == "multi_categorical":
            spec[f.source_column] = tf.io.VarLenFeature(tf.string)
        elif f.dtype == "int64":
            spec[f.source_column] = tf.io.FixedLenFeature([], tf.int64, default_value=-1)
        else:
            spec[f.source_column] = tf.io.FixedLenFeature([], tf.string, default_value="")
    return spec


def label_spec(schema: Schema) -> dict:
    """Spec of the non-feature columns: labels, scenario, and group columns not yet parsed."""
    spec = {t.column: tf.io.FixedLenFeature([], tf.int64, default_value=-1)
            for t in schema.tasks}
    spec[schema.scenario.column] = tf.io.VarLenFeature(tf.string)
    feature_columns = {f.source_column for f in schema.features}
    for c in schema.gauc_group:
        if c not in feature_columns:
            spec[c] = tf.io.VarLenFeature(tf.string)
    return spec


def raw_from_parsed(schema: Schema, parsed: dict) -> dict:
    """parse_example output -> the model's raw inputs: features (multi-valued joined by their
    separator) and the scenario (its values joined by the scenario separator)."""
    raw = {f.name: join_sparse(parsed[f.source_column], f.separator)
           if f.type == "multi_categorical" else parsed[f.source_column]
           for f in schema.features}
    raw[SCENARIO_KEY] = join_sparse(parsed[schema.scenario.column], schema.scenario.separator)
    return raw


def join_sparse(v, separator):
    """[B] string from a parsed column: sparse values joined, dense values stringified."""
    if isinstance(v, tf.SparseTensor):
        return tf.strings.reduce_join(tf.RaggedTensor.from_sparse(v), axis=1, separator=separator)
    return v if v.dtype == tf.string else tf.strings.as_string(v)


class _ExampleParser:
    """Parses a block of serialized tf.train.Example records, validating every row."""

    def __init__(self, schema, bad_rows, counter):
        self.schema, self.bad_rows, self.counter = schema, bad_rows, counter
        self.spec = {**example_spec(schema), **label_spec(schema)}

    def __call__(self, path, index, serialized):
        s = self.schema
        parsed = tf.io.parse_example(serialized, self.spec)
        where = path + tf.constant(":record ") + tf.strings.as_string(index) + ": "
        features = raw_from_parsed(s, parsed)
        scen = features[SCENARIO_KEY]
        problems = []
        for f in s.features:
            if f.type == "dense":
                problems.append(_problem(tf.math.is_nan(features[f.name]), where,
                                         f"feature '{f.source_column}': NaN in dense feature ",
                                         tf.strings.as_string(features[f.name])))
        problems.append(_problem(~_known_scenarios(s, scen), where,
                                 f"feature '{s.scenario.column}': unknown scenario ", scen,
                                 f" (known: {', '.join(s.scenario.names)})"))
        if s.gauc_group:
            features[GROUP_KEY] = tf.strings.reduce_join(
                tf.stack([join_sparse(parsed[c], "|") for c in s.gauc_group], axis=1),
                axis=1, separator="/")
        labels = []
        for t in s.tasks:
            v = parsed[t.column]
            bad = (v != -1) & (v != 0) & (v != 1)
            problems.append(_problem(bad, where, f"feature '{t.column}': label must be 0, 1 or "
                                     "missing, got ", tf.strings.as_string(v)))
            labels.append(tf.cast(v, tf.float32))
        return _apply_policy(features, tf.stack(labels, axis=1), problems, self.bad_rows,
                             self.counter)


def locate_bad_record(files: list) -> str | None:
    """The first corrupt record or non-Example record (TensorFlow's errors don't say which)."""
    for path in files:
        compression = "GZIP" if path.endswith(".gz") else ""
        records = iter(tf.data.TFRecordDataset(path, compression_type=compression))
        i = 0
        while True:
            try:
                raw = next(records)
            except StopIteration:
                break
            except tf.errors.DataLossError as e:
                return f"{path}:record {i}: corrupt or truncated TFRecord ({e.message})"
            try:
                tf.train.Example.FromString(raw.numpy())
            except Exception as e:  # protobuf's DecodeError type is private
                return f"{path}:record {i}: not a serialized tf.train.Example ({e})"
            i += 1
    return None


@contextlib.contextmanager
def raise_data_errors(schema: Schema, files: list | None = None):
    """Turns TensorFlow's input errors into a DataError naming file, line/record and column."""
    try:
        yield
    except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as e:
        text = str(e.message if hasattr(e, "message") else e)
        # tf.debugging.Assert prints each data tensor as "[value]", with quotes escaped.
        match = re.search(r"\[" + ERROR_MARK + r"\]\s*\[(.*?)\]\s*\[" + ERROR_MARK + r"\]",
                          text, re.S)
        if match:
            raise DataError(match.group(1).replace("\\'", "'").replace('\\"', '"')) from None
        if schema.format == "tfrecord" and files:
            located = locate_bad_record(files)
            if located:
                raise DataError(located) from None
        raise


def example_from_row(schema: Schema, row: dict) -> tf.train.Example:
    """A tf.train.Example in the layout `make_dataset` reads for TFRecord input.

    `row` maps column names to Python values; multi-valued features may be lists or
    separator-joined strings; a missing label is None or absent.
    """
    feats = {}

    def put(column, kind, values):
        if kind == "float":
            feats[column] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
        elif kind == "int":
            feats[column] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
        else:
            feats[column] = tf.train.Feature(bytes_list=tf.train.BytesList(
                value=[str(v).encode() for v in values]))

    for f in schema.features:
        v = row.get(f.source_column)
        if v is None or v == "":
            continue
        if f.type == "dense":
            put(f.source_column, "float", [float(v)])
        elif f.type == "multi_categorical":
            put(f.source_column, "bytes", v if isinstance(v, (list, tuple)) else
                [p for p in str(v).split(f.separator) if p])
        elif f.dtype == "int64":
            put(f.source_column, "int", [int(v)])
        else:
            put(f.source_column, "bytes", [v])
    scen = row[schema.scenario.column]
    put(schema.scenario.column, "bytes",
        scen if isinstance(scen, (list, tuple)) else str(scen).split(schema.scenario.separator))
    for c in schema.gauc_group:
        if c not in feats and row.get(c) is not None:
            put(c, "bytes", [row[c]])
    for t in schema.tasks:
        v = row.get(t.column)
        if v is not None and v != "":
            put(t.column, "int", [int(float(v))])
    return tf.train.Example(features=tf.train.Features(feature=feats))


def write_tfrecord(path: str, examples) -> None:
    options = tf.io.TFRecordOptions(compression_type="GZIP" if path.endswith(".gz") else "")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with tf.io.TFRecordWriter(path, options) as w:
        for ex in examples:
            w.write(ex.SerializeToString())
