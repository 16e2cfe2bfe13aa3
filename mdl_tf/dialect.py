"""The CSV dialect every reader shares: the trainer and evaluation (`mdl_tf.data`, in
TensorFlow), the pipeline (`pipelines.sources`) and the client (`serving.client`).

  records      one per line; `\\n` or `\\r\\n` ends a line (a quoted field cannot span lines).
               Blank (whitespace-only) lines are ignored; they are not rows.
  encoding     UTF-8. A UTF-8 byte-order mark before the header is ignored; a UTF-16/32
               byte-order mark is an error naming the file; a line that is not UTF-8 is a
               bad row (`unparseable`).
  delimiter    one ASCII character (the schema's `csv.delimiter`, default `,`).
  quoting      RFC 4180: a field enclosed in double quotes may hold the delimiter, and `""`
               inside it is one quote (`"c1,north"` is one field). The quote must open right
               after the delimiter and close right before the next; any other quote is a bad
               row (`unparseable`, "bad CSV quoting").
  whitespace   around a value is not part of it (` 12 ` is `12`, `" a "` is `a`).
  empty cell   missing: see `mdl_tf.values`.
  gzip         a name ending in `.gz` is gzip; the whole stream is verified (every member
               ends with its CRC trailer) before it is read, so a truncated or corrupt file
               is an error naming it, never a silently shorter file (TensorFlow's reader stops
               early without a word). TFRecord `.gz` files are verified the same way.
"""
from __future__ import annotations

import csv
import functools
import gzip
import os
import re
import zlib

from mdl_tf.values import DataError

QUOTE = '"'
BAD_QUOTING = 'bad CSV quoting (a quoted field must be the whole field, with "" for a quote): '
NOT_UTF8 = "not UTF-8: "
_OTHER_BOMS = {b"\xff\xfe\x00\x00": "UTF-32", b"\x00\x00\xfe\xff": "UTF-32",
               b"\xff\xfe": "UTF-16", b"\xfe\xff": "UTF-16"}
_CHUNK = 1 << 20


def check_delimiter(delimiter: str) -> None:
    """ValueError unless the delimiter is one ASCII character other than a quote or newline."""
    if len(delimiter) != 1 or not delimiter.isascii() or delimiter in '"\r\n':
        raise ValueError(f"the CSV delimiter must be one ASCII character other than a quote "
                         f"or a line break, got {delimiter!r}")


def line_pattern(delimiter: str) -> str:
    """The regex (Python re and RE2 alike) a well-quoted line matches in full."""
    d = f"\\x{ord(delimiter):02x}"
    field = f'(?:"(?:[^"]|"")*"|[^"{d}]*)'
    return f"{field}(?:{d}{field})*"


def quoted_pattern() -> str:
    """A quoted field (removed before counting delimiters)."""
    return r'"(?:[^"]|"")*"'


def split_line(line: str, delimiter: str) -> list:
    """The stripped fields of one line (line break removed); DataError on bad quoting."""
    line = line.rstrip("\r\n")
    if QUOTE not in line:
        return [f.strip() for f in line.split(delimiter)]
    if not re.fullmatch(line_pattern(delimiter), line):
        raise DataError(f"{BAD_QUOTING}'{line[:80]}'")
    return [f.strip() for f in next(csv.reader([line], delimiter=delimiter))]


def is_blank(line: str) -> bool:
    return not line.strip()


def decode(raw: bytes) -> str:
    """A line's text; DataError when it is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{NOT_UTF8}{e}") from None


def header_fields(first: bytes, path: str, delimiter: str) -> list:
    """The column names of a file from its first line's bytes (byte-order marks handled)."""
    for bom, name in _OTHER_BOMS.items():
        if first.startswith(bom):
            raise DataError(f"{path}: the file is {name} text; CSV input must be UTF-8")
    if first.startswith(b"\xef\xbb\xbf"):
        first = first[3:]
    try:
        return split_line(decode(first), delimiter)
    except DataError as e:
        raise DataError(f"{path}:1: {e}") from None


def open_binary(path: str):
    """A local file's bytes, decompressed when its name ends in .gz (verified first)."""
    if path.endswith(".gz"):
        check_compressed(path)
        return gzip.open(path, "rb")
    return open(path, "rb")


def read_header(path: str, delimiter: str) -> list:
    try:
        with open_binary(path) as fh:
            return header_fields(fh.readline(), path, delimiter)
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e}") from None


def read_rows(path: str, delimiter: str = ",", limit: int | None = None):
    """Yields ("<file>:<line>", {column: stripped value}) for the data lines of a local CSV
    file with a header; DataError naming file and line for a line that breaks the dialect."""
    with open_binary(path) as fh:
        header = header_fields(fh.readline(), path, delimiter)
        n = 0
        for line_no, raw in enumerate(fh, start=2):
            if limit is not None and n >= limit:
                return
            where = f"{path}:{line_no}"
            try:
                line = decode(raw)
                if is_blank(line):
                    continue
                fields = split_line(line, delimiter)
            except DataError as e:
                raise DataError(f"{where}: {e}") from None
            if len(fields) != len(header):
                raise DataError(f"{where}: expected {len(header)} fields, got '{len(fields)}'")
            n += 1
            yield where, dict(zip(header, fields))


# --- compressed files --------------------------------------------------------------------
def verify_gzip(stream, name: str) -> None:
    """Reads a gzip stream (a binary file object, read in chunks) to its end: DataError
    naming `name` when it is truncated or corrupt. Memory stays bounded (output discarded)."""
    d, in_member = zlib.decompressobj(wbits=31), False
    for chunk in iter(lambda: stream.read(_CHUNK), b""):
        while chunk:
            if not in_member:
                chunk = chunk.lstrip(b"\0")   # zero padding between members is allowed
                if not chunk:
                    break
                d, in_member = zlib.decompressobj(wbits=31), True
            try:
                d.decompress(chunk, _CHUNK)
            except zlib.error as e:
                raise DataError(f"{name}: corrupt gzip file ({e})") from None
            if d.eof:
                chunk, in_member = d.unused_data, False
            else:
                chunk = d.unconsumed_tail
    if in_member:
        raise DataError(f"{name}: truncated gzip file (it ends before its last member's "
                        "trailer): copy or compress it again")


@functools.lru_cache(maxsize=4096)
def _verified(path: str, size: int, mtime_ns: int) -> bool:
    del size, mtime_ns   # part of the cache key: a rewritten file is verified again
    with open(path, "rb") as fh:
        verify_gzip(fh, path)
    return True


def check_compressed(path: str) -> None:
    """Verifies a local .gz file once per version of it (size, modification time)."""
    if path.endswith(".gz"):
        st = os.stat(path)
        _verified(path, st.st_size, st.st_mtime_ns)


# --- vectorised in TensorFlow (mdl_tf.data) ----------------------------------------------
def split_lines_tf(lines, delimiter: str, n_columns: int):
    """(fields [B, n_columns] string, stripped and unquoted; problems) of lines [B].

    problems: [(bad [B] bool, what, value [B] string)]: not UTF-8, bad quoting, and a field
    count other than n_columns. Bad lines get empty fields.
    """
    import tensorflow as tf   # only the vectorised reader needs TensorFlow
    utf8 = tf.equal(tf.strings.unicode_transcode(
        lines, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD), lines)
    quoting = tf.strings.regex_full_match(lines, line_pattern(delimiter))
    unquoted = tf.strings.regex_replace(lines, quoted_pattern(), "")
    n_fields = tf.cast(tf.strings.length(unquoted) - tf.strings.length(
        tf.strings.regex_replace(unquoted, f"\\x{ord(delimiter):02x}", "")), tf.int64) + 1
    count = tf.equal(n_fields, n_columns)
    ok = utf8 & quoting & count
    fields = tf.io.decode_csv(tf.where(ok, lines, delimiter * (n_columns - 1)),
                              [[""]] * n_columns, field_delim=delimiter, use_quote_delim=True)
    fields = tf.strings.strip(tf.stack(fields, axis=1))               # [B, n_columns]
    short = tf.strings.substr(lines, 0, 80)
    problems = [(~utf8, NOT_UTF8, tf.fill(tf.shape(lines), "invalid byte sequence")),
                (utf8 & ~quoting, BAD_QUOTING, short),
                (utf8 & quoting & ~count, f"expected {n_columns} fields, got ",
                 tf.strings.as_string(n_fields))]
    return fields, problems


def not_blank_tf(line):
    import tensorflow as tf
    return ~tf.strings.regex_full_match(line, r"\s*")
