"""What a valid cell is: one rule for dense values, ids, labels and empty cells.

Every reader applies these rules, so the same cell means the same thing everywhere:
`mdl_tf.data` (CSV and TFRecord, vectorised in TensorFlow), `pipelines.validate` (the
dead letter), `serving.client` and the server's request checks (`mdl_tf.contract.requests`).

  dense value  decimal text (`_FLOAT_RE`: no `inf`/`nan` words, no hex, no `_`) whose
               float32 value is finite: |x| <= 3.4028235e38 after rounding to float32
               (`1e39` is refused: it would become inf and the model NaN). Under `log1p`
               it must be > -1.
  id           an integer that fits int64 (`-9223372036854775808` .. `9223372036854775807`).
  label        0, 1 (optionally written 0.0 / 1.0) or empty (= missing).
  empty cell   missing: a dense feature takes its schema `default`, an int64 id -1 (the OOV
               bucket), a string "" (OOV or its hash bucket), a label is missing. An empty
               scenario is an error.

Rows that break a rule are bad rows, counted under one of REASONS (the same names in the
trainer's accounting and the pipeline's report), and a run fails when the bad fraction of
the rows read exceeds `--max_bad_fraction` (`too_many_bad`).
"""
from __future__ import annotations

import math
import re

import numpy as np

FLOAT32_MAX = float(np.finfo(np.float32).max)
INT64_MIN, INT64_MAX = -2 ** 63, 2 ** 63 - 1
EMPTY_ID = -1          # an empty id cell: the OOV bucket
FLOAT_RE = r"\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*"
INT_RE = r"\s*[-+]?\d+\s*"
LABEL_RE = r"\s*(0|1|0\.0*|1\.0*)?\s*"
_NAN_RE = r"\s*[-+]?nan\s*"   # lower-cased text

# Messages: "<what>'<value>'", after "<file>:<line>: column '<name>': ".
NOT_A_NUMBER = "not a number: "
NAN = "NaN in dense feature "
NOT_FINITE = "not finite as float32 (|x| <= 3.4028235e+38): "
LOG1P = "log1p needs a value > -1, got "
NOT_INT64 = "not an int64 id: "
BAD_LABEL = "label must be 0, 1 or empty (missing), got "

REASONS = ("unparseable", "missing_column", "bad_value", "label_out_of_range",
           "unknown_scenario")


class DataError(ValueError):
    """Bad input data; the message names the file, the line or record, and the column."""


def too_many_bad(bad: int, read: int, max_fraction: float) -> bool:
    """The pipeline's and the trainer's limit: more than max_fraction of the rows read."""
    return read > 0 and bad / read > max_fraction


# --- one Python value ---------------------------------------------------------------------
def dense_problem(cell: str, log1p: bool = False) -> str | None:
    """None when `cell` (non-empty text) is a valid dense value, else the message."""
    if re.fullmatch(_NAN_RE, cell.lower()):
        return f"{NAN}'{cell}'"
    if not re.fullmatch(FLOAT_RE, cell):
        return f"{NOT_A_NUMBER}'{cell}'"
    return number_problem(float(cell), log1p, cell)


def number_problem(number: float, log1p: bool = False, text=None) -> str | None:
    """None when `number` is finite as float32 (and > -1 under log1p), else the message."""
    text = number if text is None else text
    if math.isnan(number):
        return f"{NAN}'{text}'"
    with np.errstate(over="ignore"):
        if not np.isfinite(np.float32(number)):
            return f"{NOT_FINITE}'{text}'"
    if log1p and number <= -1:
        return f"{LOG1P}'{text}'"
    return None


def id_problem(cell: str) -> str | None:
    """None when `cell` (non-empty text) is an int64 id, else the message."""
    if not re.fullmatch(INT_RE, cell) or not INT64_MIN <= int(cell) <= INT64_MAX:
        return f"{NOT_INT64}'{cell}'"
    return None


def label_problem(cell: str) -> str | None:
    """None when `cell` is 0, 1 or empty, else the message."""
    return None if re.fullmatch(LABEL_RE, cell) else f"{BAD_LABEL}'{cell}'"


def array_problem(array) -> str | None:
    """None when every value of a float array is finite as float32, else the message
    naming the first bad value and its flat index."""
    with np.errstate(over="ignore", invalid="ignore"):
        bad = ~np.isfinite(np.asarray(array, np.float64).astype(np.float32))
    if not bad.any():
        return None
    i = int(np.flatnonzero(bad)[0])
    return f"value {i}: {number_problem(float(np.ravel(array)[i]))}"


# --- vectorised in TensorFlow (mdl_tf.data) ----------------------------------------------
def dense_text_tf(raw, default: float, log1p: bool):
    """(values [B] float32, [(bad [B] bool, what)]) from dense cells [B] string; an empty
    cell is `default`. `what` is one of this module's messages."""
    import tensorflow as tf
    empty = tf.equal(raw, "")
    is_nan = tf.strings.regex_full_match(tf.strings.lower(raw), _NAN_RE)
    ok = tf.strings.regex_full_match(raw, FLOAT_RE) | empty
    values = tf.strings.to_number(tf.where(ok & ~empty, raw, str(default)), tf.float32)
    problems = [(is_nan, NAN), (~ok & ~is_nan, NOT_A_NUMBER)]
    return values, problems + [(ok & bad, what) for bad, what in dense_number_tf(values, log1p)]


def dense_number_tf(values, log1p: bool) -> list:
    """[(bad [B] bool, what)] of float32 values [B]: NaN, inf, and <= -1 under log1p."""
    import tensorflow as tf
    problems = [(tf.math.is_nan(values), NAN), (tf.math.is_inf(values), NOT_FINITE)]
    if log1p:
        problems.append((values <= -1, LOG1P))
    return problems


def id_text_tf(raw):
    """(ids [B] int64, bad [B] bool) from id cells [B] string; an empty cell is EMPTY_ID.

    Range check without overflow: at most 18 digits always fit; 19 digits fit when the
    first 18 are below 922337203685477580, or equal with a last digit <= 7 (8 if negative).
    """
    import tensorflow as tf
    text = tf.strings.strip(raw)
    empty = tf.equal(text, "")
    syntax = tf.strings.regex_full_match(text, INT_RE)
    negative = tf.strings.substr(text, 0, 1) == "-"
    digits = tf.strings.regex_replace(tf.strings.regex_replace(text, r"^[-+]", ""),
                                      r"^0+(\d)", r"\1")
    length = tf.strings.length(digits)
    d19 = tf.where(syntax & (length == 19), digits, "0" * 19)
    head = tf.strings.to_number(tf.strings.substr(d19, 0, 18), tf.int64)
    last = tf.strings.to_number(tf.strings.substr(d19, 18, 1), tf.int64)
    top = INT64_MAX // 10
    fits = (length < 19) | ((length == 19) & ((head < top) | (
        (head == top) & (last <= tf.where(negative, tf.constant(8, tf.int64), 7)))))
    ok = syntax & fits
    ids = tf.strings.to_number(tf.where(ok & ~empty, text, str(EMPTY_ID)), tf.int64)
    return ids, ~ok & ~empty


def label_text_tf(raw):
    """(labels [B] float32 with -1 for empty, bad [B] bool) from label cells [B] string."""
    import tensorflow as tf
    ok = tf.strings.regex_full_match(raw, LABEL_RE)
    text = tf.strings.strip(raw)
    return tf.strings.to_number(tf.where(ok & (text != ""), text, "-1"), tf.float32), ~ok
