"""Row validation: one record's cells -> the typed row `mdl_tf.data.example_from_row` takes.

Pure Python (no Beam, no TensorFlow), so every rule is unit-testable and cheap per row.
A record that breaks a rule raises `BadRow(reason, detail)`; the pipeline sends it to the
dead-letter output. The rules match what `mdl_tf.data` accepts when it reads CSV, so a
row that passes here never stops training:

  unparseable         the record itself cannot be read (wrong CSV field count, bad JSON,
                      not UTF-8)
  missing_column      a column the schema (or the split) needs is absent from the record
  bad_value           a dense value that is not finite as float32 (or <= -1 under log1p),
                      an integer id that is not an int64 (rules: mdl_tf.values), a time
                      that is not a number or ISO date
  label_out_of_range  a label other than 0, 1 or empty (empty = missing label)
  unknown_scenario    an empty scenario, or a part that is neither a scenario name nor a
                      0-based index (after --scenario_map)

Empty feature cells are allowed: dense features then take their `default`, ids their
OOV bucket, exactly as when training on CSV.
"""
from __future__ import annotations

import datetime
import math
import re

from mdl_tf import values
from mdl_tf.schema import Schema, scenario_lookup_keys
from mdl_tf.values import REASONS  # noqa: F401  (the dead letter's reasons)


class BadRow(ValueError):
    """A record that cannot become an example; `reason` is one of REASONS."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def text(value) -> str:
    """A cell as stripped text; None is empty, integral floats lose their '.0' (JSON, Parquet)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


class RowValidator:
    """Checks and converts records for one schema.

    extra_columns: further columns the record must have (the split key); their text is
      returned in `extras`.
    time_column: a column read as a time (number, or ISO-8601 date -> unix seconds),
      returned in `extras` as a float.
    scenario_map: raw scenario value -> scenario name, applied before the name lookup.
    scenario_from_path: a regex whose first group, lowercased, is the scenario of every
      record of a file (e.g. AliExpress, one file per country); the column is then not read.
    """

    def __init__(self, schema: Schema, *, extra_columns=(), time_column=None,
                 scenario_map=None, scenario_from_path=None):
        self.schema = schema
        self.extra_columns = tuple(extra_columns)
        self.time_column = time_column
        self.scenario_map = dict(scenario_map or {})
        self.scenario_path_re = re.compile(scenario_from_path) if scenario_from_path else None
        names = schema.scenario_names
        # The keys the model's ScenarioEncoder and data.py accept (no indices when a name
        # is a number), each mapped to its scenario name.
        self.scenario_lookup = {key: names[i] for key, i in zip(*scenario_lookup_keys(names))}
        feature_columns = {f.source_column for f in schema.features}
        self.group_columns = tuple(c for c in schema.gauc_group if c not in feature_columns)
        self.required_columns = self._required_columns()

    def _required_columns(self) -> tuple:
        """Every column a record must have, in a stable order."""
        cols = [f.source_column for f in self.schema.features]
        if self.scenario_path_re is None:
            cols.append(self.schema.scenario.column)
        cols += [t.column for t in self.schema.tasks]
        cols += list(self.group_columns) + list(self.extra_columns)
        if self.time_column:
            cols.append(self.time_column)
        return tuple(dict.fromkeys(cols))

    def __call__(self, cells: dict, source: str = "") -> tuple:
        """(row for example_from_row, extras); raises BadRow."""
        missing = [c for c in self.required_columns if c not in cells]
        if missing:
            raise BadRow("missing_column", f"column(s) {missing} missing from the record")
        row = {f.source_column: self._feature(f, cells[f.source_column])
               for f in self.schema.features}
        for c in self.group_columns:
            row[c] = text(cells[c])
        for t in self.schema.tasks:
            row[t.column] = self._label(t.column, cells[t.column])
        row[self.schema.scenario.column] = self._scenarios(cells, source)
        extras = {c: text(cells[c]) for c in self.extra_columns}
        if self.time_column:
            extras[self.time_column] = _time(self.time_column, cells[self.time_column])
        return row, extras

    # --- one value each ----------------------------------------------------------------
    def _feature(self, f, value):
        if f.type == "multi_categorical":
            return _tokens(value, f.separator)
        cell = text(value)
        if cell == "":
            return None
        if f.type == "dense":
            return _dense(f, cell)
        if f.dtype == "int64":
            return _int64(f.source_column, cell)
        return cell

    def _label(self, column, value):
        cell = text(value)
        problem = values.label_problem(cell)
        if problem:
            raise BadRow("label_out_of_range", f"column '{column}': {problem}")
        return None if cell == "" else int(float(cell))

    def _scenarios(self, cells, source):
        """The row's scenario names (several when the cell joins them with the separator)."""
        s = self.schema.scenario
        if self.scenario_path_re is not None:
            match = self.scenario_path_re.search(source)
            if not match:
                raise BadRow("unknown_scenario", f"path '{source}' does not match "
                             f"--scenario_from_path '{self.scenario_path_re.pattern}'")
            raw, where = match.group(1).lower(), f"path '{source}'"
        else:
            raw, where = text(cells[s.column]), f"column '{s.column}'"
        parts = [p.strip() for p in raw.split(s.separator)]
        if not raw or "" in parts:
            raise BadRow("unknown_scenario", f"{where}: empty scenario in '{raw}'")
        names = []
        for part in parts:
            name = self.scenario_lookup.get(self.scenario_map.get(part, part))
            if name is None:
                raise BadRow("unknown_scenario", f"{where}: unknown scenario '{part}' "
                             f"(known: {', '.join(s.names)})")
            names.append(name)
        return names


def _tokens(value, separator) -> list:
    """A multi-valued cell (a list, or text joined by the separator) as non-empty tokens."""
    parts = value if isinstance(value, (list, tuple)) else text(value).split(separator)
    return [t for t in (text(p) for p in parts) if t]


def _dense(f, cell) -> float:
    problem = values.dense_problem(cell, f.log1p)
    if problem:
        raise BadRow("bad_value", f"column '{f.source_column}': {problem}")
    return float(cell)


def _int64(column, cell) -> int:
    problem = values.id_problem(cell)
    if problem:
        raise BadRow("bad_value", f"column '{column}': {problem}")
    return int(cell)


def _time(column, value) -> float:
    """A number as is, or an ISO-8601 date/time as unix seconds (naive = UTC)."""
    cell = text(value)
    try:
        number = float(cell)
    except ValueError:
        number = _iso_seconds(cell)
    if number is None or not math.isfinite(number):
        raise BadRow("bad_value", f"column '{column}': not a time (a number or an ISO-8601 "
                     f"date): '{cell}'")
    return number


def _iso_seconds(cell):
    try:
        stamp = datetime.datetime.fromisoformat(cell)
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.timezone.utc)
    return stamp.timestamp()
