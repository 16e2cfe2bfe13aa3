"""Dataset schema: one YAML file per dataset describes features, groups, scenarios and tasks.

A schema is the single description of a dataset that every other part of the project reads:
`data.py` parses files with it, the tokenizer builds embeddings from it, evaluation slices
metrics by its scenarios and tasks, and the export builds its serving signatures from it.

Every key, its type, default and meaning: docs/schema.md. `python -m mdl_tf.infer` writes
a complete schema (statistics included) from a CSV or TFRecord file. A small example
(see `mdl_tf/datasets/*.yaml` for complete ones)::

    name: shop
    format: csv                # csv (optionally .gz) or tfrecord (tf.train.Example)
    files: {train: train.csv, valid: valid.csv, test: test.csv}   # globs, relative to data_dir
    features:
      - {name: user_id, type: categorical, dtype: int64, vocab_size: 944, embedding_dim: 16}
      - {name: item_id, type: categorical, hash_buckets: 1000}
      - {name: genres, type: multi_categorical, separator: "|", vocabulary: [action, drama]}
      - {name: age, type: dense, mean: 32.9, std: 11.6}
    groups: {user: [user_id, age], item: [item_id, genres]}
    scenario: {column: segment, values: {"Mens E-Mail": mens, "Womens E-Mail": womens}}
    tasks: [{name: click, column: click}, {name: buy, column: buy}]
    gauc_group: [user_id]
    important_features: [user_id, item_id]
    scenario_priors: {}        # scenario name -> extra feature names for its token
    task_priors: {}            # task name -> extra feature names for its token
    lineage: []                # written by mdl_tf.extend: the models this one extends
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import re
from typing import Any

import yaml

from mdl_tf import dialect

FEATURE_TYPES = ("categorical", "multi_categorical", "dense")
DTYPES = ("int64", "string", "float32")
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SERVING_NAME_RE = re.compile(r"^[a-z0-9_]+$")


class SchemaError(ValueError):
    """A schema file is inconsistent; the message names the file and the offending entry."""


@dataclasses.dataclass(frozen=True)
class Feature:
    """One raw input column and how it is embedded.

    categorical: one id per example. Index by exactly one of `vocab_size` (int ids in
      [0, vocab_size); anything else goes to one OOV bucket), `vocabulary` / `vocabulary_file`
      (lookup with one OOV bucket) or `hash_buckets` (hashing; never out of range).
    multi_categorical: several ids per example joined by `separator`, mean/sum pooled over
      the first `max_len`.
    dense: a float, normalised as ((log1p(x) if log1p else x) - mean) / std; `default` fills
      an empty cell, NaN is an error.
    """

    name: str
    type: str
    dtype: str = "string"
    column: str | None = None
    embedding_dim: int = 16
    vocab_size: int | None = None
    vocabulary: tuple | None = None
    vocabulary_file: str | None = None
    hash_buckets: int | None = None
    separator: str = "|"
    max_len: int = 8
    combiner: str = "mean"
    mean: float = 0.0
    std: float = 1.0
    log1p: bool = False
    default: float = 0.0

    @property
    def source_column(self) -> str:
        return self.column or self.name

    @property
    def num_buckets(self) -> int:
        """Embedding rows, OOV bucket included."""
        if self.vocab_size is not None:
            return self.vocab_size + 1
        if self.hash_buckets is not None:
            return self.hash_buckets
        return len(self.vocabulary) + 1


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    column: str
    weight: float = 1.0


@dataclasses.dataclass(frozen=True)
class Scenario:
    """`values` maps raw cell values (any string, e.g. "Mens E-Mail") to scenario names;
    the data reader and serving_default translate them before the names are looked up."""
    column: str
    names: tuple
    separator: str = "|"
    values: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Schema:
    name: str
    features: tuple
    groups: dict
    scenario: Scenario
    tasks: tuple
    important_features: tuple
    format: str = "csv"
    files: dict = dataclasses.field(default_factory=dict)
    csv_delimiter: str = ","
    csv_header: bool = True
    gauc_group: tuple = ()
    scenario_priors: dict = dataclasses.field(default_factory=dict)
    task_priors: dict = dataclasses.field(default_factory=dict)
    recipe: str | None = None
    recipe_options: dict = dataclasses.field(default_factory=dict)
    lineage: tuple = ()        # mdl_tf.extend: the models this one extends, oldest first
    path: str | None = None

    # --- lookups -------------------------------------------------------------------
    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    @property
    def feature_names(self) -> list:
        return [f.name for f in self.features]

    @property
    def scenario_names(self) -> list:
        return list(self.scenario.names)

    @property
    def task_names(self) -> list:
        return [t.name for t in self.tasks]

    @property
    def group_names(self) -> list:
        return list(self.groups)

    @property
    def num_scenarios(self) -> int:
        return len(self.scenario.names)

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    def files_for(self, split: str, data_dir: str | None = None) -> str:
        if split not in self.files:
            raise SchemaError(f"{self.path or self.name}: no files declared for split '{split}' "
                              f"(declared: {sorted(self.files)})")
        pattern = self.files[split]
        base = data_dir or (os.path.dirname(self.path) if self.path else "")
        return pattern if os.path.isabs(pattern) else os.path.join(base, pattern)

    def to_dict(self) -> dict:
        """The YAML-ready form; `from_dict(to_dict())` round-trips."""
        feats = []
        for f in self.features:
            d = {k: v for k, v in dataclasses.asdict(f).items()
                 if v is not None and v != _FEATURE_DEFAULTS.get(k)}
            if "vocabulary" in d:
                d["vocabulary"] = list(d["vocabulary"])
            d["name"], d["type"] = f.name, f.type
            feats.append(d)
        out = {
            "name": self.name, "format": self.format, "files": dict(self.files),
            "csv": {"delimiter": self.csv_delimiter, "header": self.csv_header},
            "features": feats, "groups": {k: list(v) for k, v in self.groups.items()},
            "scenario": {"column": self.scenario.column, "names": list(self.scenario.names),
                         "separator": self.scenario.separator,
                         **({"values": dict(self.scenario.values)} if self.scenario.values
                            else {})},
            "tasks": [dataclasses.asdict(t) for t in self.tasks],
            "important_features": list(self.important_features),
            "gauc_group": list(self.gauc_group),
            "scenario_priors": {k: list(v) for k, v in self.scenario_priors.items()},
            "task_priors": {k: list(v) for k, v in self.task_priors.items()},
        }
        if self.recipe:
            out["recipe"] = self.recipe
            out["recipe_options"] = dict(self.recipe_options)
        if self.lineage:
            out["lineage"] = [dict(entry) for entry in self.lineage]
        return out


def scenario_lookup_keys(names) -> tuple:
    """(keys, indices): the strings a scenario cell part may hold and the 0-based scenario
    index each one means. Every name maps to its position; the indices "0".."N-1" are keys
    too, unless a name is itself a number (Ali-CCP's raw values "1", "2", "3"): "1" would
    then mean both the name "1" and index 1, so such schemas take names only.

    The one table both the input validation (data.py) and the model's ScenarioEncoder use,
    so what the reader accepts is exactly what the model encodes.
    """
    names = [str(n) for n in names]
    keys, indices = list(names), list(range(len(names)))
    if not any(n.isdigit() for n in names):
        keys += [str(i) for i in range(len(names))]
        indices += list(range(len(names)))
    return keys, indices


_FEATURE_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Feature)
                     if f.default is not dataclasses.MISSING}


def load(path: str) -> Schema:
    """Reads and validates a schema YAML file; errors name the file and the entry."""
    try:
        with open(path) as fh:
            raw = yaml.safe_load(fh)
    except FileNotFoundError:
        raise SchemaError(f"schema file not found: {path}") from None
    except yaml.YAMLError as e:
        raise SchemaError(f"{path}: not valid YAML: {e}") from None
    return from_dict(raw, path=os.path.abspath(path))


def dump(schema: Schema, path: str) -> None:
    with open(path, "w") as fh:
        yaml.safe_dump(schema.to_dict(), fh, sort_keys=False)


def from_dict(raw: Any, path: str | None = None) -> Schema:
    where = path or "<schema>"
    if not isinstance(raw, dict):
        raise SchemaError(f"{where}: expected a mapping at the top level")

    def need(key):
        if key not in raw:
            raise SchemaError(f"{where}: missing required key '{key}'")
        return raw[key]

    _check_keys(raw, TOP_LEVEL_KEYS, where, "top-level key")
    features = tuple(_feature(f, where, i) for i, f in enumerate(need("features")))
    csv_opts = raw.get("csv", {}) or {}
    scen = need("scenario")
    if not isinstance(scen, dict) or "column" not in scen or not (
            scen.get("names") or scen.get("values")):
        raise SchemaError(f"{where}: 'scenario' needs 'column' and a non-empty 'names' list "
                          "(or a 'values' mapping raw values to names)")
    _check_keys(scen, SCENARIO_KEYS, where, "scenario key")
    tasks = tuple(_task(t, where) for t in need("tasks"))
    schema = Schema(
        name=str(raw.get("name", os.path.splitext(os.path.basename(where))[0])),
        features=features,
        groups={str(k): tuple(v) for k, v in need("groups").items()},
        scenario=_scenario(scen),
        tasks=tasks,
        important_features=tuple(need("important_features")),
        format=str(raw.get("format", "csv")),
        files=dict(raw.get("files", {}) or {}),
        csv_delimiter=str(csv_opts.get("delimiter", ",")),
        csv_header=bool(csv_opts.get("header", True)),
        gauc_group=tuple(raw.get("gauc_group", []) or []),
        scenario_priors={str(k): tuple(v) for k, v in (raw.get("scenario_priors") or {}).items()},
        task_priors={str(k): tuple(v) for k, v in (raw.get("task_priors") or {}).items()},
        recipe=raw.get("recipe"),
        recipe_options=dict(raw.get("recipe_options") or {}),
        lineage=_lineage(raw.get("lineage"), where),
        path=path,
    )
    validate(schema)
    return schema


TOP_LEVEL_KEYS = ("name", "recipe", "recipe_options", "format", "files", "csv", "features",
                  "groups", "scenario", "tasks", "gauc_group", "important_features",
                  "scenario_priors", "task_priors", "lineage")
SCENARIO_KEYS = ("column", "names", "separator", "values")


def _check_keys(raw: dict, known, where: str, what: str) -> None:
    """SchemaError naming the first unknown key and the closest known one (a typo such as
    `gauc_groups:` would otherwise be ignored silently)."""
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(known)}"
            raise SchemaError(f"{where}: unknown {what} '{key}'{hint} (see docs/schema.md)")


def _scenario(raw: dict) -> Scenario:
    """names default to the distinct targets of `values`, in order of appearance."""
    values = {str(k): str(v) for k, v in (raw.get("values") or {}).items()}
    names = raw.get("names") or list(dict.fromkeys(values.values()))
    return Scenario(column=str(raw["column"]), names=tuple(str(n) for n in names),
                    separator=str(raw.get("separator", "|")), values=values)


def safe_name(raw: str) -> str:
    """A signature-safe name ([a-z0-9_]+) for a raw value: "Mens E-Mail" -> "mens_e_mail"."""
    return re.sub(r"[^a-z0-9]+", "_", str(raw).lower()).strip("_") or "none"


def safe_names(raw_values) -> dict:
    """{raw value: distinct safe name}; collisions get _2, _3, ... suffixes."""
    out, used = {}, set()
    for raw in raw_values:
        base = name = safe_name(raw)
        n = 2
        while name in used:
            name, n = f"{base}_{n}", n + 1
        out[raw] = name
        used.add(name)
    return out


def _feature(raw: Any, where: str, index: int) -> Feature:
    if not isinstance(raw, dict) or "name" not in raw or "type" not in raw:
        raise SchemaError(f"{where}: features[{index}] needs 'name' and 'type'")
    known = {f.name for f in dataclasses.fields(Feature)}
    unknown = set(raw) - known
    if unknown:
        raise SchemaError(f"{where}: feature '{raw['name']}': unknown keys {sorted(unknown)}")
    kwargs = dict(raw)
    if kwargs.get("vocabulary_file") and kwargs.get("vocabulary") is None:
        kwargs["vocabulary"] = _read_vocabulary(kwargs["vocabulary_file"], where, raw["name"])
    if kwargs.get("vocabulary") is not None:
        kwargs["vocabulary"] = tuple(str(v) for v in kwargs["vocabulary"])
    if kwargs["type"] == "dense":
        kwargs.setdefault("dtype", "float32")
    return Feature(**kwargs)


def _read_vocabulary(vocab_path: str, where: str, feature: str) -> tuple:
    """One token per line; a relative path is relative to the schema file."""
    if not os.path.isabs(vocab_path) and os.path.isfile(where):
        vocab_path = os.path.join(os.path.dirname(where), vocab_path)
    try:
        with open(vocab_path) as fh:
            return tuple(line.rstrip("\n") for line in fh if line.rstrip("\n"))
    except OSError as e:
        raise SchemaError(f"{where}: feature '{feature}': cannot read vocabulary_file: {e}") from None


def _lineage(raw: Any, where: str) -> tuple:
    """mdl_tf.extend's record: a list of mappings (one per extension), oldest first."""
    entries = raw or []
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise SchemaError(f"{where}: 'lineage' must be a list of mappings (written by "
                          "mdl_tf.extend)")
    return tuple(dict(e) for e in entries)


def _task(raw: Any, where: str) -> Task:
    if isinstance(raw, str):
        return Task(name=raw, column=raw)
    if not isinstance(raw, dict) or "name" not in raw:
        raise SchemaError(f"{where}: every task needs a 'name'")
    return Task(name=str(raw["name"]), column=str(raw.get("column", raw["name"])),
                weight=float(raw.get("weight", 1.0)))


def validate(schema: Schema) -> None:
    """Cross-checks every reference in the schema; raises SchemaError naming the entry."""
    where = schema.path or schema.name
    names = schema.feature_names
    if len(set(names)) != len(names):
        raise SchemaError(f"{where}: duplicate feature names")
    for f in schema.features:
        _validate_feature(f, where)
    for group, members in schema.groups.items():
        if not members:
            raise SchemaError(f"{where}: group '{group}' is empty")
        for m in members:
            if m not in names:
                raise SchemaError(f"{where}: group '{group}' references unknown feature '{m}'")
    if not schema.groups:
        raise SchemaError(f"{where}: at least one feature group is needed")
    if not schema.important_features:
        raise SchemaError(f"{where}: 'important_features' must list at least one feature")
    for label, refs in [("important_features", schema.important_features),
                        *[(f"scenario_priors.{k}", v) for k, v in schema.scenario_priors.items()],
                        *[(f"task_priors.{k}", v) for k, v in schema.task_priors.items()]]:
        for m in refs:
            if m not in names:
                raise SchemaError(f"{where}: {label} references unknown feature '{m}'")
    for k in schema.scenario_priors:
        if k not in schema.scenario.names:
            raise SchemaError(f"{where}: scenario_priors names unknown scenario '{k}'")
    for raw_value, name in schema.scenario.values.items():
        if name not in schema.scenario.names:
            raise SchemaError(f"{where}: scenario.values maps '{raw_value}' to unknown scenario "
                              f"'{name}' (names: {', '.join(schema.scenario.names)})")
        if raw_value in schema.scenario.names and raw_value != name:
            raise SchemaError(f"{where}: scenario.values maps '{raw_value}', itself a scenario "
                              f"name, to another one ('{name}')")
        if schema.scenario.separator in raw_value:
            raise SchemaError(f"{where}: scenario.values key '{raw_value}' contains the "
                              f"scenario separator '{schema.scenario.separator}'")
    for k in schema.task_priors:
        if k not in schema.task_names:
            raise SchemaError(f"{where}: task_priors names unknown task '{k}'")
    for g in schema.gauc_group:
        # Raw column names may be anything (Ali-CCP's user column is "101"), but not blank.
        if not str(g).strip():
            raise SchemaError(f"{where}: gauc_group has an empty column name")
    for kind, values in [("scenario", schema.scenario.names), ("task", schema.task_names)]:
        for v in values:
            if not SERVING_NAME_RE.match(v):
                hint = (f"; keep the raw value and map it: scenario: {{values: {{'{v}': "
                        f"{safe_name(v)}}}}}" if kind == "scenario" else "")
                raise SchemaError(f"{where}: {kind} name '{v}' must match [a-z0-9_]+ "
                                  f"(it becomes part of serving signature names){hint}")
        if len(set(values)) != len(values):
            raise SchemaError(f"{where}: duplicate {kind} names")
    try:
        dialect.check_delimiter(schema.csv_delimiter)
    except ValueError as e:
        raise SchemaError(f"{where}: csv.delimiter: {e}") from None
    if schema.format not in ("csv", "tfrecord"):
        raise SchemaError(f"{where}: format must be 'csv' or 'tfrecord', got '{schema.format}'")


def _validate_feature(f: Feature, where: str) -> None:
    if not NAME_RE.match(f.name):
        raise SchemaError(f"{where}: feature name '{f.name}' must be a valid identifier")
    if f.type not in FEATURE_TYPES:
        raise SchemaError(f"{where}: feature '{f.name}': type must be one of {FEATURE_TYPES}")
    if f.dtype not in DTYPES:
        raise SchemaError(f"{where}: feature '{f.name}': dtype must be one of {DTYPES}")
    if f.type == "dense":
        if f.std <= 0:
            raise SchemaError(f"{where}: feature '{f.name}': std must be > 0")
        return
    indexers = [f.vocab_size, f.vocabulary, f.hash_buckets]
    if sum(x is not None for x in indexers) != 1:
        raise SchemaError(f"{where}: feature '{f.name}': give exactly one of vocab_size, "
                          "vocabulary, vocabulary_file or hash_buckets")
    if f.vocab_size is not None and f.dtype != "int64":
        raise SchemaError(f"{where}: feature '{f.name}': vocab_size needs dtype int64")
    if f.vocabulary is not None and len(set(f.vocabulary)) != len(f.vocabulary):
        seen, repeated = set(), []
        for v in f.vocabulary:
            if v in seen and v not in repeated:
                repeated.append(v)
            seen.add(v)
        raise SchemaError(f"{where}: feature '{f.name}': duplicate vocabulary entries "
                          f"{repeated[:5]} (each value needs one embedding row)")
    if f.type == "multi_categorical" and f.combiner not in ("mean", "sum"):
        raise SchemaError(f"{where}: feature '{f.name}': combiner must be mean or sum")
    if f.embedding_dim <= 0:
        raise SchemaError(f"{where}: feature '{f.name}': embedding_dim must be > 0")


if __name__ == "__main__":   # python -m mdl_tf.schema infer ...: see mdl_tf/infer.py
    import sys
    if sys.argv[1:2] != ["infer"]:
        sys.exit("usage: python -m mdl_tf.schema infer INPUT --scenario COL --labels A,B "
                 "--out_dir DIR ...  (--help for all flags)")
    from mdl_tf import infer
    sys.exit(infer.main(sys.argv[2:]))
