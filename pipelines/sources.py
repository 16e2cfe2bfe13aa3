"""Reading the raw input: CSV (optionally gzip), JSON lines or Parquet -> records.

A record is `(source, text, cells, error)`: the file it came from, its original text (the
CSV or JSON line; a Parquet row as JSON) for the dead-letter output, and either its cells
`{column: value}` or, when it cannot be parsed, `error`: a (reason, detail) pair (plain
data, so records pickle between workers). Files are matched and
opened through Beam's FileSystems, so the same globs work for local paths, gs://, s3://
and hdfs://.
"""
from __future__ import annotations

import json

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from mdl_tf import dialect
from mdl_tf.values import DataError
from pipelines.validate import BadRow

FORMATS = ("csv", "json", "parquet")
_EXTENSIONS = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".json": "json",
               ".jsonl": "json", ".ndjson": "json", ".parquet": "parquet", ".pq": "parquet"}


class InputError(ValueError):
    """The input cannot be read at all (no files, unknown format, bad or differing headers)."""


def detect_format(patterns) -> str:
    """The format named by the patterns' extension (a trailing .gz is ignored)."""
    found = set()
    for pattern in patterns:
        name = pattern[:-3] if pattern.endswith(".gz") else pattern
        ext = name[name.rfind("."):] if "." in name.rsplit("/", 1)[-1] else ""
        if ext not in _EXTENSIONS:
            raise InputError(f"cannot tell the format of '{pattern}' from its extension; "
                             f"give --input_format ({', '.join(FORMATS)})")
        found.add(_EXTENSIONS[ext])
    if len(found) != 1:
        raise InputError(f"the inputs mix formats {sorted(found)}; run them separately")
    return found.pop()


def match_files(patterns) -> list:
    """Every file the patterns match, sorted; InputError when a pattern matches none."""
    files = []
    for pattern, result in zip(patterns, FileSystems.match(list(patterns))):
        if not result.metadata_list:
            raise InputError(f"no input files match '{pattern}'")
        files += [m.path for m in result.metadata_list]
    return sorted(set(files))


def verify_compressed(files) -> None:
    """Reads every .gz file to its end first: InputError naming a truncated or corrupt one
    (Beam, like TensorFlow, would read it as a shorter file). See mdl_tf.dialect."""
    for path in files:
        if path.endswith(".gz"):
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
                try:
                    dialect.verify_gzip(fh, path)
                except DataError as e:
                    raise InputError(str(e)) from None


def read_csv_headers(files, delimiter: str) -> dict:
    """{file: column names} from each file's first line (gzip detected from the name;
    byte-order marks as in mdl_tf.dialect)."""
    headers = {}
    for path in files:
        with FileSystems.open(path, compression_type=CompressionTypes.AUTO) as fh:
            first = fh.readline()
        try:
            columns = dialect.header_fields(first, path, delimiter)
        except DataError as e:
            raise InputError(str(e)) from None
        if not any(columns):
            raise InputError(f"{path}: empty first line; CSV input needs a header line")
        headers[path] = columns
    return headers


def check_columns(headers: dict, required) -> None:
    """Fails fast when a CSV header lacks a required column (every row would be bad)."""
    for path, columns in headers.items():
        missing = [c for c in required if c not in columns]
        if missing:
            raise InputError(f"{path}: header lacks column(s) {missing}; it has {columns}")


# --- one line -> one record ---------------------------------------------------------------
def _decode(raw: bytes) -> tuple:
    """(text, error): lines that are not UTF-8 are kept, escaped, for the dead letter."""
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as e:
        return raw.decode("utf-8", "backslashreplace"), ("unparseable", f"not UTF-8: {e}")


class CsvLineParser:
    """(file, raw line) -> record, with the file's own header."""

    def __init__(self, headers: dict, delimiter: str):
        self.headers, self.delimiter = headers, delimiter

    def __call__(self, element):
        source, raw = element
        line, error = _decode(raw)
        if error is None:
            try:
                return source, line, self.cells(source, line), None
            except BadRow as e:
                error = e.reason, e.detail
        return source, line, None, error

    def cells(self, source, line) -> dict:
        header = self.headers[source]
        try:
            fields = dialect.split_line(line, self.delimiter)
        except DataError as e:
            raise BadRow("unparseable", str(e)) from None
        if len(fields) != len(header):
            raise BadRow("unparseable", f"expected {len(header)} fields, got {len(fields)}")
        return dict(zip(header, fields))


def parse_json_line(element):
    """(file, raw line) -> record; the line must hold one JSON object."""
    source, raw = element
    line, error = _decode(raw)
    if error is None:
        try:
            cells = json.loads(line)
        except ValueError as e:
            cells, error = None, ("unparseable", f"not JSON: {e}")
        if error is None and not isinstance(cells, dict):
            cells, error = None, ("unparseable", "a JSON line must hold an object")
    return source, line, cells, error


def parquet_record(element):
    """(file, row dict) -> record; the row's JSON is its text in the dead letter."""
    source, row = element
    return source, json.dumps(row, sort_keys=True, default=str), row, None


def _not_blank(element) -> bool:
    return bool(element[1].strip())


class ReadRecords(beam.PTransform):
    """PBegin -> records of every file the patterns match."""

    def __init__(self, patterns, fmt: str, headers: dict | None = None, delimiter: str = ","):
        super().__init__()
        self.patterns, self.fmt, self.headers, self.delimiter = patterns, fmt, headers, delimiter

    def expand(self, pbegin):
        if self.fmt == "parquet":
            rows = (pbegin | "Patterns" >> beam.Create(self.patterns)
                    | "ReadParquet" >> beam.io.ReadAllFromParquet(with_filename=True))
            return rows | "ToRecords" >> beam.Map(parquet_record)
        skip = 1 if self.fmt == "csv" else 0
        # Bytes, not str: a line that is not UTF-8 must reach the dead letter, not crash.
        lines = [pbegin | f"Read{i}" >> beam.io.ReadFromTextWithFilename(
                     pattern, coder=beam.coders.BytesCoder(), skip_header_lines=skip)
                 for i, pattern in enumerate(self.patterns)]
        lines = (lines | "Lines" >> beam.Flatten()
                 | "DropBlank" >> beam.Filter(_not_blank))
        parse = (CsvLineParser(self.headers, self.delimiter) if self.fmt == "csv"
                 else parse_json_line)
        return lines | "Parse" >> beam.Map(parse)
