"""tf.data input: CSV (optionally gzip) and TFRecord of tf.train.Example, described by a Schema.

Every split becomes a dataset of `(features, labels)`:
  features: {feature name: [B] int64 | string | float32, "scenario": [B] string,
             "gauc_group": [B] string (only when the schema has a gauc_group)}
  labels:   [B, N_t] float32, 1/0, or LABEL_MISSING (-1) where the label is absent.

Raw values go to the model untouched (strings stay strings, ids stay ids): hashing,
vocabulary lookup and normalisation happen inside the model, so the exported SavedModel
takes the same raw values a client has.

Parsing is vectorised over blocks of lines and validates every row with the shared rules
(`mdl_tf.dialect` for the CSV dialect and gzip, `mdl_tf.values` for values): a line that is
not UTF-8 or badly quoted, a wrong field count, a dense value that is not a finite float32,
an id that is not an int64, a label outside {0, 1, empty} or an unknown scenario stops the
input with a `DataError` naming file, line and column. With `bad_rows="skip"` such rows are
dropped instead and counted per file and reason in a `BadRowCounter`.
"""
from __future__ import annotations

import collections
import contextlib
import glob as globlib
import os
import re
import typing

import mdl_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf

from mdl_tf import dialect, values
from mdl_tf.schema import Schema, SchemaError, scenario_lookup_keys
from mdl_tf.values import DataError  # noqa: F401  (raised by readers; importers use data.DataError)

LABEL_MISSING = -1.0
SCENARIO_KEY = "scenario"
GROUP_KEY = "gauc_group"
ERROR_MARK = "MDL_DATA_ERROR"
NUMBERING_BLOCK = 1024   # records numbered at a time, per file (see _numbered)


class BadRowCounter:
    """Rows read and rows dropped under `bad_rows="skip"`, per file and per reason
    (`values.REASONS`). Variables, so tf.data updates them while it reads; a row is
    counted each time it is read (over 3 epochs, 3 times: the fraction is unchanged)."""

    def __init__(self):
        self.files = None
        self.read = self.bad = None     # [n_files] and [n_files, n_reasons] int64

    def bind(self, files: list) -> None:
        """Creates the counters for `files` (once; a counter belongs to one split)."""
        if self.files is None:
            self.files = list(files)
            self.read = tf.Variable(tf.zeros([len(files)], tf.int64), trainable=False)
            self.bad = tf.Variable(tf.zeros([len(files), len(values.REASONS)], tf.int64),
                                   trainable=False)
        elif self.files != list(files):
            raise ValueError("a BadRowCounter counts the files of one split only")

    def add(self, path, reasons, bad):
        """Counts a block: path [B] string, reasons [B] int (index in REASONS), bad [B]."""
        file_index = tf.argmax(tf.cast(tf.equal(path[:, None], tf.constant(self.files)[None]),
                                       tf.int32), axis=1, output_type=tf.int32)   # [B]
        n = len(self.files)
        read = tf.math.bincount(file_index, minlength=n, maxlength=n, dtype=tf.int64)
        cells = tf.boolean_mask(tf.stack([file_index, tf.cast(reasons, tf.int32)], 1), bad)
        bad_counts = tf.scatter_nd(cells, tf.ones([tf.shape(cells)[0]], tf.int64),
                                   [n, len(values.REASONS)])
        return tf.group(self.read.assign_add(read), self.bad.assign_add(bad_counts))

    @property
    def count(self) -> int:
        """Bad rows so far."""
        return 0 if self.bad is None else int(tf.reduce_sum(self.bad).numpy())

    def report(self) -> dict:
        """{"rows_read", "bad_rows", "bad_fraction", "by_file": {file: {"rows_read",
        "bad_rows", <reason>: n}}}: JSON-ready."""
        if self.files is None:
            return {"rows_read": 0, "bad_rows": 0, "bad_fraction": 0.0, "by_file": {}}
        read, bad = self.read.numpy(), self.bad.numpy()
        by_file = {path: {"rows_read": int(read[i]), "bad_rows": int(bad[i].sum()),
                          **{r: int(c) for r, c in zip(values.REASONS, bad[i]) if c}}
                   for i, path in enumerate(self.files)}
        total, dropped = int(read.sum()), int(bad.sum())
        return {"rows_read": total, "bad_rows": dropped,
                "bad_fraction": dropped / total if total else 0.0, "by_file": by_file}

    def summary(self) -> str:
        """One line: bad of read rows, then each file's reasons."""
        r = self.report()
        files = "; ".join(f"{path}: " + ", ".join(f"{k} {v}" for k, v in entry.items()
                                                  if k in values.REASONS)
                          for path, entry in r["by_file"].items() if entry["bad_rows"])
        return (f"{r['bad_rows']} of {r['rows_read']} rows read are bad "
                f"({r['bad_fraction']:.2%})" + (f" ({files})" if files else ""))

    def check(self, what: str, max_bad_fraction: float) -> None:
        """DataError when more than max_bad_fraction of the rows read are bad."""
        r = self.report()
        if values.too_many_bad(r["bad_rows"], r["rows_read"], max_bad_fraction):
            raise DataError(f"{what}: {self.summary()}, above --max_bad_fraction="
                            f"{max_bad_fraction}; fix the input or raise the limit")


def report_bad_rows(counters: dict, max_bad_fraction: float, record=None) -> None:
    """Prints each split's bad-row counts ({split: BadRowCounter}), hands their reports to
    `record` ({split: report}, e.g. into run.json), then raises DataError for the first
    split above max_bad_fraction (every split is printed first)."""
    for split, counter in counters.items():
        print(f"bad rows ({split}): {counter.summary()}")
    if record is not None:
        record({split: counter.report() for split, counter in counters.items()})
    for split, counter in counters.items():
        counter.check(f"split '{split}'", max_bad_fraction)


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
    _, records, parse = _reader(schema, split, data_dir, bad_rows, counter)

    def parse_block(path, number, record):
        features, labels = parse(path, number, record)
        if bad_rows == "error":   # no row is dropped: the block's static size carries over
            for t in [*features.values(), labels]:
                t.set_shape(record.shape[:1].concatenate(t.shape[1:]))
        return features, labels

    def parse_blocks(ds, block, drop_remainder):
        # Parsing blocks of records is far cheaper than one record at a time. The parsers'
        # Python branches and loops are over the schema, never over tensors: traced without
        # AutoGraph, whose conversion of them cost each process seconds before its first batch.
        ds = ds.batch(block, drop_remainder=drop_remainder)
        ds = ds.map(tf.autograph.experimental.do_not_convert(parse_block),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if transform is not None:
            ds = ds.map(tf.autograph.experimental.do_not_convert(transform),
                        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
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


class _ParserCache:
    """The block parsers of the last `size` (schema, bad_rows, counter, CSV header) keys:
    one tf.function each, traced once for every block size. A run reads up to six
    datasets of one schema (usable-row checks, train, valid, evaluation); each traced its own
    copy of the same parser graph before, about a second of CPU apiece. The schema is keyed
    by its contents (repr: every field, path included), so that runs one after another in
    one process (benchmarks, tests) share the parser of a schema loaded again. An entry
    holds its counter, so the counter's id in the key cannot be reused while it lives."""

    def __init__(self, size: int = 8):
        self.size, self.entries = size, collections.OrderedDict()

    def get(self, key: tuple, owner, make):
        if key not in self.entries:
            self.entries[key] = (owner, make())
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)
        self.entries.move_to_end(key)
        return self.entries[key][1]


_PARSERS = _ParserCache()
_BLOCK_SIGNATURE = [tf.TensorSpec([None], tf.string), tf.TensorSpec([None], tf.int64),
                    tf.TensorSpec([None], tf.string)]   # path, line/record number, record


def _block_parser(schema, files, bad_rows, counter):
    """parse(path [B], number [B], record [B]) -> (features, labels) for `files` (whose
    headers the CSV parser checks on every call), shared through _PARSERS."""
    if schema.format == "csv":
        parser = _CsvParser(schema, files, bad_rows, counter)
        header = tuple(parser.header)
    else:
        parser, header = _ExampleParser(schema, bad_rows, counter), None
    key = (repr(schema), bad_rows, id(counter), header)
    return _PARSERS.get(key, counter, lambda: tf.function(
        parser.__call__, input_signature=_BLOCK_SIGNATURE, autograph=False))


def check_usable(schema: Schema, split: str, data_dir: str | None = None,
                 bad_rows: str = "error") -> None:
    """DataError unless the split has at least one usable row (reads up to the first one;
    under bad_rows="error" a bad row before it is the error)."""
    counter = BadRowCounter() if bad_rows == "skip" else None
    files, records, parse = _reader(schema, split, data_dir, bad_rows, counter)
    # The parser is called here, not mapped over a dataset: optimising a dataset's map
    # function for its first iterator costs more CPU than reading a row. Under "error" the
    # first row decides (a later bad row is the training's to report).
    block = 1 if bad_rows == "error" else NUMBERING_BLOCK
    with raise_data_errors(schema, files):
        for path, number, record in records.batch(block):
            _, labels = parse(path, number, record)
            if labels.shape[0]:
                return
    read = f": {counter.summary()}" if counter is not None else ""
    raise DataError(f"split '{split}' ({schema.files_for(split, data_dir)}) has no usable "
                    f"rows{read}")


def _reader(schema, split, data_dir, bad_rows, counter):
    """(files, dataset of (path, number, record) triples, block parser) of a split, its
    .gz files verified and bound to the counter."""
    files = expand_files(schema.files_for(split, data_dir))
    for path in files:
        dialect.check_compressed(path)
    if counter is not None:
        counter.bind(files)
    records = _csv_lines(schema, files) if schema.format == "csv" else _tfrecord_records(files)
    return files, records, _block_parser(schema, files, bad_rows, counter)


# --- CSV ---------------------------------------------------------------------------------
def read_csv_header(schema: Schema, path: str) -> list:
    return dialect.read_header(path, schema.csv_delimiter)


def _required_columns(schema: Schema) -> list:
    cols = [f.source_column for f in schema.features]
    cols += [schema.scenario.column] + [t.column for t in schema.tasks] + list(schema.gauc_group)
    return list(dict.fromkeys(cols))


def _csv_lines(schema: Schema, files: list) -> tf.data.Dataset:
    """(file, line number, line) triples; line numbers are 1-based like an editor's."""
    if not schema.csv_header:
        raise SchemaError(f"{schema.path or schema.name}: CSV input needs a header line")

    return _numbered(files, lambda path, compression: tf.data.TextLineDataset(
        path, compression_type=compression).skip(1), start=2, keep=dialect.not_blank_tf)


def _numbered(files: list, reader, start: int, keep=None) -> tf.data.Dataset:
    """(file, record number, record) triples of all files, interleaved deterministically in
    blocks of NUMBERING_BLOCK records; keep(records [k]) -> [k] bool drops records after
    they are numbered (blank CSV lines).

    Numbering works on blocks: per-record interleave, filter and map cost about 100 us of
    CPU per record, more than parsing it (a 60,000-line CSV: 6.1 s against 0.5 s)."""
    def one_file(path):
        compression = tf.where(tf.strings.regex_full_match(path, r".*\.gz"), "GZIP", "")
        blocks = reader(path, compression).enumerate(start=start).batch(NUMBERING_BLOCK)

        def label(numbers, records):                 # [k], [k] -> the kept records' triples
            if keep is not None:
                kept = keep(records)
                numbers, records = tf.boolean_mask(numbers, kept), tf.boolean_mask(records, kept)
            return tf.fill(tf.shape(numbers), path), numbers, records
        return blocks.map(tf.autograph.experimental.do_not_convert(label))

    return tf.data.Dataset.from_tensor_slices(files).interleave(
        tf.autograph.experimental.do_not_convert(one_file), cycle_length=min(len(files), 4),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch()


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
        fields, line_problems = dialect.split_lines_tf(line, s.csv_delimiter, len(self.header))
        where = _location(path, ":", line_no)
        problems = [_problem("unparseable", bad, what, value)
                    for bad, what, value in line_problems]
        features = {}
        for f in s.features:
            raw = self._col(fields, f.source_column)
            col = f"column '{f.source_column}': "
            if f.type == "dense":
                features[f.name], checks = values.dense_text_tf(raw, f.default, f.log1p)
                problems += [_problem("bad_value", bad, col + what, raw)
                             for bad, what in checks]
            elif f.dtype == "int64" and f.type == "categorical":
                features[f.name], bad = values.id_text_tf(raw)
                problems.append(_problem("bad_value", bad, col + values.NOT_INT64, raw))
            else:
                features[f.name] = raw
        scen = map_scenario_values(s, self._col(fields, s.scenario.column))
        problems.append(_problem("unknown_scenario", ~_known_scenarios(s, scen),
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
            value, bad = values.label_text_tf(raw)
            problems.append(_problem("label_out_of_range", bad,
                                     f"column '{t.column}': {values.BAD_LABEL}", raw))
            labels.append(value)
        labels = tf.stack(labels, axis=1)
        return _apply_policy(path, where, features, labels, problems, self.bad_rows,
                             self.counter)


def _known_scenarios(schema: Schema, scen: tf.Tensor) -> tf.Tensor:
    """[B] bool: every separator-split part of the scenario cell is a lookup key (a known
    name or index, see schema.scenario_lookup_keys), stripped as ScenarioEncoder does."""
    keys, _ = scenario_lookup_keys(schema.scenario.names)
    parts = tf.strings.strip(tf.strings.split(scen, schema.scenario.separator))
    known = tf.reduce_any(tf.equal(parts.flat_values[:, None], tf.constant(keys)[None]), axis=1)
    per_row = tf.RaggedTensor.from_row_lengths(known, parts.row_lengths())
    return tf.reduce_all(per_row, axis=1) & (parts.row_lengths() > 0) & (scen != "")


class _Problem(typing.NamedTuple):
    """One check of a block: the rows it fails; their error reads
    `<file>:<line>: <what>'<value>'<suffix>`."""
    reason: int          # index in values.REASONS
    bad: tf.Tensor       # [B] bool
    what: str
    value: tf.Tensor     # [B], the cell's text (or number)
    suffix: str


def _problem(reason, bad, what, value, suffix=""):
    return _Problem(values.REASONS.index(reason), bad, what, value, suffix)


def _text(value):
    """A tensor as strings: itself when it holds strings, else tf.strings.as_string of it."""
    return value if value.dtype == tf.string else tf.strings.as_string(value)


def _location(path, separator, number):
    """row -> "<file><separator><number>: " of that row (path, number: [B])."""
    return lambda row: (tf.gather(path, row) + separator +
                        tf.strings.as_string(tf.gather(number, row)) + ": ")


def _apply_policy(path, where, features, labels, problems, bad_rows, counter):
    has = tf.stack([p.bad for p in problems], axis=1)           # [B, n_checks]
    bad = tf.reduce_any(has, axis=1)                            # [B]
    if bad_rows == "skip":
        first = tf.argmax(tf.cast(has, tf.int32), axis=1)       # [B] the first problem
        reasons = tf.gather(tf.constant([p.reason for p in problems]), first)
        with tf.control_dependencies([counter.add(path, reasons, bad)]):
            keep = tf.identity(~bad)
        features = {k: tf.boolean_mask(v, keep) for k, v in features.items()}
        return features, tf.boolean_mask(labels, keep)
    # The error names the first bad row's first problem. Its message is built for that
    # row alone: building every row's was ~40 % of the parser's CPU.
    row = tf.argmax(tf.cast(bad, tf.int32))
    check = tf.argmax(tf.cast(tf.gather(has, row), tf.int32))
    cells = tf.stack([_text(tf.gather(p.value, row)) for p in problems])   # [n_checks]
    first = (where(row) + tf.gather([p.what for p in problems], check) + "'" +
             tf.gather(cells, check) + "'" + tf.gather([p.suffix for p in problems], check))
    assertion = tf.debugging.Assert(~tf.reduce_any(bad), [ERROR_MARK, first, ERROR_MARK])
    with tf.control_dependencies([assertion]):
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
    raw[SCENARIO_KEY] = map_scenario_values(
        schema, join_sparse(parsed[schema.scenario.column], schema.scenario.separator))
    return raw


def map_scenario_values(schema: Schema, scenario: tf.Tensor) -> tf.Tensor:
    """[B] string: each separator-split part of a raw scenario cell that the schema's
    `scenario.values` maps ("Mens E-Mail") replaced by its name ("mens"); other parts kept.
    Constants only (no lookup table), so exported signatures need no extra resource."""
    if not schema.scenario.values:
        return scenario
    raw_values, names = zip(*schema.scenario.values.items())
    parts = tf.strings.split(scenario, schema.scenario.separator)            # [B, None]
    flat = tf.strings.strip(parts.flat_values)                               # [P]
    hits = tf.equal(flat[:, None], tf.constant(raw_values)[None])            # [P, K]
    mapped = tf.where(tf.reduce_any(hits, axis=1),
                      tf.gather(tf.constant(names), tf.argmax(tf.cast(hits, tf.int32), axis=1)),
                      flat)
    return tf.strings.reduce_join(parts.with_flat_values(mapped), axis=1,
                                  separator=schema.scenario.separator)


def join_sparse(v, separator):
    """[B] string from a parsed column: sparse values joined, dense values stringified."""
    if isinstance(v, tf.SparseTensor):
        return tf.strings.reduce_join(tf.RaggedTensor.from_sparse(v), axis=1, separator=separator)
    return _text(v)


class _ExampleParser:
    """Parses a block of serialized tf.train.Example records, validating every row."""

    def __init__(self, schema, bad_rows, counter):
        self.schema, self.bad_rows, self.counter = schema, bad_rows, counter
        self.spec = {**example_spec(schema), **label_spec(schema)}

    def __call__(self, path, index, serialized):
        s = self.schema
        parsed = tf.io.parse_example(serialized, self.spec)
        where = _location(path, ":record ", index)
        features = raw_from_parsed(s, parsed)
        scen = features[SCENARIO_KEY]
        problems = []
        for f in s.features:
            if f.type == "dense":
                problems += [_problem("bad_value", bad,
                                      f"feature '{f.source_column}': {what}",
                                      features[f.name])
                             for bad, what in values.dense_number_tf(features[f.name], f.log1p)]
        problems.append(_problem("unknown_scenario", ~_known_scenarios(s, scen),
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
            problems.append(_problem("label_out_of_range", bad,
                                     f"feature '{t.column}': label must be 0, 1 or "
                                     "missing, got ", v))
            labels.append(tf.cast(v, tf.float32))
        return _apply_policy(path, where, features, tf.stack(labels, axis=1), problems,
                             self.bad_rows, self.counter)


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
