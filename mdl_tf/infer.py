"""Schema inference: a raw table + its column roles -> a complete schema and split files.

    python -m mdl_tf.infer data.csv --scenario segment --labels visit,conversion \
        --ids user_id --out_dir data/mine
    (same as: python -m mdl_tf.schema infer ...)

Reads a CSV (optionally .gz) or a TFRecord of tf.train.Example (optionally .gz) with pandas,
splits it (the md5 hash rule of mdl_tf/datasets/splits.py on --split_key, default the first
id column; or by --time_column: oldest 80 % train, next 10 % valid, newest 10 % test),
writes `<out_dir>/{train,valid,test}.csv` and `<out_dir>/schema.yaml`, and prints every
decision. Statistics come from the training split only:
  id columns            categorical: vocab_size (non-negative ints) or a vocabulary
                        (strings), hash buckets when there are more than --max_vocab values
  other numeric columns dense with mean/std (log1p first when skewed and non-negative),
                        or categorical when integer with at most --max_levels values
  other string columns  categorical (vocabulary or hash buckets); multi_categorical with
                        separator "|" when cells hold "|"-joined values
  scenario column       raw values kept; mapped to signature-safe names (scenario.values)
  groups                ids first, then the other features, cut into the largest number
                        of tokens (<= --max_groups) that divides --d_model
Errors (exit 2) name the column: a missing column, a label that is not 0/1/empty, a cell
holding the CSV delimiter, a split left empty.
"""
from __future__ import annotations

import argparse
import difflib
import os
import sys

import numpy as np
import pandas as pd

from mdl_tf import schema as schema_lib
from mdl_tf.datasets.splits import reference_split
from mdl_tf.options import suggested_batch_size

SPLITS = ("train", "valid", "test")
LABEL_VALUES = {"", "0", "1", "0.0", "1.0"}
SEPARATOR = "|"


class InferError(ValueError):
    """The table cannot be described as given; the message names the column."""


# --- reading -----------------------------------------------------------------------------
def read_table(path: str) -> pd.DataFrame:
    """All cells as strings ("" for empty): types are decided from the values."""
    if ".tfrecord" in os.path.basename(path):
        return _read_tfrecord(path)
    return pd.read_csv(path, dtype=str, keep_default_na=False, compression="infer")


def _read_tfrecord(path: str) -> pd.DataFrame:
    import mdl_tf  # noqa: F401  (TensorFlow only for TFRecord input)
    import tensorflow as tf
    rows = []
    compression = "GZIP" if path.endswith(".gz") else ""
    for raw in tf.data.TFRecordDataset(path, compression_type=compression).as_numpy_iterator():
        example = tf.train.Example.FromString(raw)
        row = {}
        for name, feature in example.features.feature.items():
            kind = feature.WhichOneof("kind")
            values = getattr(feature, kind).value if kind else []
            row[name] = SEPARATOR.join(v.decode() if isinstance(v, bytes) else _num(v)
                                       for v in values)
        rows.append(row)
    return pd.DataFrame(rows).fillna("")


def _num(v) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


# --- splitting ---------------------------------------------------------------------------
def assign_splits(df: pd.DataFrame, split_key: str | None, time_column: str | None) -> pd.Series:
    """Split name per row: by time (80/10/10 by rank), else reference_split(md5 of key)."""
    if time_column:
        times = pd.to_numeric(df[time_column], errors="coerce")
        if times.isna().any():
            times = pd.to_datetime(df[time_column], errors="raise")
        rank = times.rank(method="first").to_numpy() / len(df)
        return pd.Series(np.select([rank <= 0.8, rank <= 0.9], ["train", "valid"], "test"),
                         index=df.index)
    keys = df[split_key] if split_key else pd.Series(df.index.astype(str), index=df.index)
    return keys.map(reference_split)


# --- features ----------------------------------------------------------------------------
def _numeric(col: pd.Series) -> pd.Series | None:
    """Floats (NaN for empty cells) when every non-empty cell is a number, else None."""
    values = pd.to_numeric(col.replace("", np.nan), errors="coerce")
    return values if values.notna().sum() == (col != "").sum() else None


def _index(name, train: pd.Series, numbers: pd.Series | None, max_vocab: int) -> dict:
    """How a categorical column is indexed: vocab_size, vocabulary or hash_buckets."""
    present = train[train != ""]
    distinct = present.value_counts()
    if numbers is not None and (numbers.dropna() % 1 == 0).all() and numbers.min() >= 0 \
            and numbers.max() < 4 * max(len(distinct), 1) + 16:
        return {"dtype": "int64", "vocab_size": int(numbers.max()) + 1}
    if len(distinct) <= max_vocab:
        dtype = {"dtype": "int64"} if numbers is not None else {}
        # Most frequent first; ties by value, so reruns give the same file.
        vocab = sorted(distinct.index, key=lambda v: (-distinct[v], v))
        return {**dtype, "vocabulary": [str(v) for v in vocab]}
    buckets = 1 << int(np.ceil(np.log2(2 * len(distinct))))
    return {"dtype": "int64" if numbers is not None else "string", "hash_buckets": buckets}


def infer_feature(name: str, train: pd.Series, is_id: bool, opts) -> dict:
    """One feature entry from the training cells of its column (strings)."""
    numbers = _numeric(train)
    base = {"name": name, "embedding_dim": opts.embedding_dim}
    if numbers is not None and numbers.notna().any() and not is_id:
        integral = bool((numbers.dropna() % 1 == 0).all())
        if not (integral and numbers.nunique() <= opts.max_levels):
            return {"name": name, **_dense(numbers)}
    tokens_per_cell = train.str.count(r"\|") + (train != "")
    if not is_id and numbers is None and (tokens_per_cell > 1).mean() >= 0.05:
        tokens = train.str.split(SEPARATOR).explode()
        return {**base, "type": "multi_categorical", "separator": SEPARATOR,
                "max_len": int(min(32, tokens_per_cell.max())),
                **_index(name, tokens[tokens != ""], None, opts.max_vocab)}
    return {**base, "type": "categorical", **_index(name, train, numbers, opts.max_vocab)}


def _dense(numbers: pd.Series) -> dict:
    """mean/std of what the model sees; log1p when non-negative and right-skewed (> 2)."""
    values = numbers.dropna()
    out = {"type": "dense", "default": float(values.median()) if len(values) else 0.0}
    if len(values) and values.min() >= 0 and values.skew() > 2:
        values, out["log1p"] = np.log1p(values), True
    std = float(values.std(ddof=0)) if len(values) else 0.0
    out.update(mean=round(float(values.mean()) if len(values) else 0.0, 6),
               std=round(std, 6) if std > 0 else 1.0)
    return out


# --- groups ------------------------------------------------------------------------------
def default_groups(features: list, ids: list, d_model: int, max_groups: int) -> dict:
    """ids first, then the rest, cut into k contiguous groups: k the largest divisor of
    d_model that is <= min(#features, max_groups) (RankMixer's token mixing needs it)."""
    order = [f for f in ids if f in features] + [f for f in features if f not in ids]
    k = max(n for n in range(1, min(len(order), max_groups) + 1) if d_model % n == 0)
    cuts = np.array_split(np.array(order, dtype=object), k)
    return {f"g{i + 1}_{part[0]}": [str(x) for x in part] for i, part in enumerate(cuts)}


def parse_groups(text: str) -> dict:
    """"user=a,b;item=c" -> {"user": ["a", "b"], "item": ["c"]}."""
    out = {}
    for part in filter(None, text.split(";")):
        name, _, members = part.partition("=")
        out[name.strip()] = [m.strip() for m in members.split(",") if m.strip()]
    return out


# --- the whole schema ----------------------------------------------------------------------
def _check_columns(df: pd.DataFrame, wanted: list) -> None:
    for col in wanted:
        if col not in df.columns:
            close = difflib.get_close_matches(col, list(df.columns), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise InferError(f"column '{col}' is not in the input{hint} "
                             f"(columns: {', '.join(df.columns)})")


def _check_labels(df: pd.DataFrame, labels: list) -> None:
    for col in labels:
        bad = df[col][~df[col].str.strip().isin(LABEL_VALUES)]
        if len(bad):
            raise InferError(f"label column '{col}' holds {bad.iloc[0]!r} (row {bad.index[0] + 2}"
                             f"); labels must be 0, 1 or empty (missing): binarise it first")


def _check_cells(df: pd.DataFrame, delimiter: str) -> None:
    for col in df.columns:
        hit = df[col].str.contains(delimiter, regex=False)
        if hit.any():
            raise InferError(f"column '{col}' row {int(np.argmax(hit.to_numpy())) + 2}: a cell "
                             f"holds the CSV delimiter {delimiter!r}, which the reader splits on")


def scenario_section(df: pd.DataFrame, column: str) -> dict:
    """names (and values when some raw values are not signature-safe), from every split so
    that no validation or test row has an unknown scenario."""
    parts = df[column].str.split(SEPARATOR).explode().str.strip()
    raw = sorted(set(parts[parts != ""]))
    if all(schema_lib.SERVING_NAME_RE.match(v) for v in raw):
        return {"column": column, "names": raw, "separator": SEPARATOR}
    mapping = schema_lib.safe_names(raw)
    return {"column": column, "names": list(mapping.values()), "separator": SEPARATOR,
            "values": mapping}


def infer(df: pd.DataFrame, opts) -> tuple:
    """(schema dict, {split: DataFrame}) for the table and the roles in `opts`."""
    labels, ids, ignore = _list(opts.labels), _list(opts.ids), _list(opts.ignore)
    roles = [opts.scenario, *labels, *ids, *ignore] + [opts.time_column] * bool(opts.time_column)
    _check_columns(df, roles + ([opts.split_key] if opts.split_key else []))
    if not labels:
        raise InferError("--labels: give at least one label column")
    _check_labels(df, labels)
    _check_cells(df, ",")
    split = assign_splits(df, opts.split_key or (ids[0] if ids else None), opts.time_column)
    parts = {s: df[split == s] for s in SPLITS}
    for s, part in parts.items():
        if part.empty:
            raise InferError(f"the {s} split is empty ({len(df)} rows in all): give more rows")
    train = parts["train"]
    names = [c for c in df.columns if c not in
             {opts.scenario, *labels, *ignore, opts.time_column}]
    features = [infer_feature(c, train[c], c in ids, opts) for c in names]
    groups = parse_groups(opts.groups) if opts.groups else default_groups(
        names, ids, opts.d_model, opts.max_groups)
    important = [c for c in ids if c in names] or [
        f["name"] for f in features if f["type"] != "dense"][:2] or names[:1]
    raw = {"name": opts.name or os.path.basename(os.path.abspath(opts.out_dir)),
           "format": "csv", "files": {s: f"{s}.csv" for s in SPLITS},
           "features": features, "groups": groups,
           "scenario": scenario_section(df, opts.scenario),
           "tasks": [{"name": schema_lib.safe_name(c), "column": c} for c in labels],
           "important_features": important,
           "gauc_group": [opts.gauc_group] if opts.gauc_group else ids[:1]}
    return raw, parts


def _list(text) -> list:
    return [x.strip() for x in (text or "").split(",") if x.strip()]


def write(raw: dict, parts: dict, out_dir: str) -> schema_lib.Schema:
    """Validates the schema (SchemaError names the entry), writes it and the split files."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "schema.yaml")
    schema = schema_lib.from_dict(raw, path=os.path.abspath(path))
    for s, part in parts.items():
        part.to_csv(os.path.join(out_dir, f"{s}.csv"), index=False)
    schema_lib.dump(schema, path)
    return schema


def describe(schema: schema_lib.Schema, parts: dict, out_dir: str) -> str:
    lines = [f"rows: " + ", ".join(f"{s} {len(p)}" for s, p in parts.items())]
    for f in schema.features:
        how = (f"dense mean={f.mean:g} std={f.std:g}" + (" log1p" if f.log1p else "")
               if f.type == "dense" else
               f"{f.type} " + (f"vocab_size={f.vocab_size}" if f.vocab_size is not None else
                               f"hash_buckets={f.hash_buckets}" if f.hash_buckets else
                               f"vocabulary of {len(f.vocabulary)}"))
        lines.append(f"  {f.name:<24} {how}")
    lines.append(f"groups ({len(schema.groups)} tokens): " + "; ".join(
        f"{g}={','.join(m)}" for g, m in schema.groups.items()))
    mapping = schema.scenario.values or {n: n for n in schema.scenario.names}
    lines.append(f"scenarios (column '{schema.scenario.column}'): " + ", ".join(
        f"{k!r} -> {v}" for k, v in mapping.items()))
    lines.append(f"tasks: {', '.join(f'{t.name} <- {t.column}' for t in schema.tasks)}")
    lines.append(f"important_features: {', '.join(schema.important_features)}; "
                 f"gauc_group: {', '.join(schema.gauc_group) or '(none)'}")
    path = os.path.join(out_dir, "schema.yaml")
    lines.append(f"wrote {path} and {', '.join(f'{s}.csv' for s in SPLITS)}\nnext:\n"
                 f"  python -m mdl_tf.train --dataset {path} --model_dir runs/{schema.name} "
                 f"--batch_size {suggested_batch_size(len(parts['train']))}")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mdl_tf.infer", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("input", help="CSV (.csv, .csv.gz) or TFRecord (.tfrecord, .tfrecord.gz) file")
    p.add_argument("--scenario", required=True, help="scenario column (any values; "
                   "'|'-joined for rows in several scenarios)")
    p.add_argument("--labels", required=True, help="comma-separated label columns (0/1/empty)")
    p.add_argument("--ids", default="", help="comma-separated id columns (user first: the "
                   "default GAUC group and split key)")
    p.add_argument("--ignore", default="", help="comma-separated columns left out")
    p.add_argument("--groups", default="", help="feature groups 'name=a,b;name2=c' "
                   "(default: see --max_groups)")
    p.add_argument("--gauc_group", default="", help="GAUC group column (default: first id)")
    p.add_argument("--time_column", default="", help="split by time on this column instead "
                   "of the hash rule (numbers or dates; left out of the features)")
    p.add_argument("--split_key", default="", help="hash split key column (default: first "
                   "id; no ids: the row number)")
    p.add_argument("--out_dir", required=True, help="where schema.yaml and the splits go")
    p.add_argument("--name", default="", help="dataset name (default: out_dir's name)")
    p.add_argument("--d_model", type=int, default=64, help="model width the groups must "
                   "divide (train's --config d_model)")
    p.add_argument("--max_groups", type=int, default=4, help="most feature tokens")
    p.add_argument("--max_vocab", type=int, default=10000, help="more distinct values "
                   "(in train) than this: hash buckets instead of a vocabulary")
    p.add_argument("--max_levels", type=int, default=20, help="integer columns with at most "
                   "this many values are categorical, others dense")
    p.add_argument("--embedding_dim", type=int, default=16, help="embedding width per "
                   "categorical feature")
    return p


def main(argv=None) -> int:
    opts = parser().parse_args(argv)
    try:
        raw, parts = infer(read_table(opts.input), opts)
        schema = write(raw, parts, opts.out_dir)
    except (InferError, schema_lib.SchemaError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(describe(schema, parts, opts.out_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
