"""Epinions product reviews as a 15-scenario, two-task ranking table (shared README protocol).

Reads the raw ratings, `epinions_rating_with_timestamp.csv.gz` / `.csv` (header + integer
rows) or the original MATLAB file `epinions_rating_with_timestamp.mat` (variable `rating`,
int N x 6), columns user_id, item_id, category_id, rating (1-5), helpfulness (1-5), time
(bin 1-11). Each row (one review) becomes
  scenario   "c<category_id>" for the 14 categories with >= 20,000 rows (c1 c2 c3 c4 c5
             c7 c8 c9 c10 c11 c15 c17 c18 c19), "other" for the 13 smaller ones merged
             (the README's scenario 0). Not bare numbers: a scenario cell may also hold a
             0-based scenario index, and "10" would then be ambiguous;
  like       rating >= 4;   helpful   helpfulness >= 3;
  features   see below; `rating` and `helpfulness` are written for reference only.
Split: the README's reference hash split, key str(i) for the 0-based data row i, md5
bucket 0-7 train, 8 valid, 9 test (737,118 / 92,037 / 93,112 rows).

Features. Everything derived from the data is computed from the training rows only, so
valid/test rows see exactly what a server would know at training time:
  user_id, item_id  compact ids 0..V-1 of the users / items with >= `user_min_count` /
                    `item_min_count` training rows (ascending raw id); -1 (the OOV bucket)
                    otherwise. Default item_min_count 2: 171k of the 255k training items
                    have one training row, whose embedding one update per epoch barely moves
                    from its random start; they share the OOV row ("rare item") instead, a
                    3x smaller table (84k rows). raw_user_id / raw_item_id keep the raw ids.
  category_id, time raw (27 categories, 11 time bins), as categorical ids;
  user_count, item_count   training rows of the user / item (0 if unseen; log1p in the
                    schema): the peer libraries' feature set in the README;
  user_count_<S>    the user's training rows in scenario S, one column per scenario;
  user_like_<S>     the user's like rate in scenario S;
  user_<task>_rate, item_<task>_rate   the user's / item's rate of each task.
Rates are smoothed, (positives + k p) / (rows + k) with k = `prior_strength` and p the
training rate of the task (of the scenario, for user_like_<S>). A rate computed over
rows that include the row itself leaks its label (within one user the rate is higher
when the row is positive), so on training rows they are out-of-fold, p included: a
training row in md5 bucket b (0-7) uses the training rows of the other 7 buckets, so no
feature of a training row depends on its own labels; valid/test rows use all training
rows. Counts carry no label, so they use all training rows. The CSVs round to 4 decimals.
The schema feeds user_count_<S> and user_like_<S> to scenario token S (scenario priors)
and the user/item rates of a task to that task's token (task priors); they are also
ordinary features in feature groups, so every baseline sees them too.
`prepare()` writes train.csv / valid.csv / test.csv and a recipe-free schema.yaml.

Terms: cite mTrust (WSDM 2012) and eTrust (KDD 2012); research use only, no
redistribution, so nothing derived from the raw file belongs in the repository.
"""
from __future__ import annotations

import argparse
import gzip
import io
import os

import numpy as np
import pandas as pd

from mdl_tf import datasets
from mdl_tf.datasets.splits import hash_bucket

HERE = os.path.dirname(os.path.abspath(__file__))
# The project's shared data sits beside the repository: <repo>/../shared/data.
DEFAULT_RAW_DIR = os.path.normpath(
    os.path.join(HERE, "..", "..", "..", "shared", "data", "epinions_mdmt"))
RAW_STEM = "epinions_rating_with_timestamp"
RAW_FILES = tuple(RAW_STEM + ext for ext in (".csv.gz", ".csv", ".mat", ".mat.gz"))
MAT_VARIABLE = "rating"
RAW_COLUMNS = ("user_id", "item_id", "category_id", "rating", "helpfulness", "time")
SCENARIO_CATEGORIES = (1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 15, 17, 18, 19)
OTHER = "other"
SCENARIOS = (OTHER,) + tuple(f"c{c}" for c in SCENARIO_CATEGORIES)
TASKS = {"like": ("rating", 4), "helpful": ("helpfulness", 3)}   # label: column >= threshold
SPLITS = ("train", "valid", "test")
TRAIN_BUCKETS = 8          # md5 buckets 0-7 are the training rows and the out-of-fold folds


# --- reading -----------------------------------------------------------------------------
def raw_path(raw_dir: str, raw_file: str | None = None) -> str:
    """raw_file inside raw_dir, or the first of RAW_FILES found there."""
    names = (raw_file,) if raw_file else RAW_FILES
    for name in names:
        if os.path.isfile(os.path.join(raw_dir, name)):
            return os.path.join(raw_dir, name)
    raise FileNotFoundError(
        f"Epinions ratings file missing: none of {', '.join(names)} in {raw_dir} (the "
        "recipe reads the original epinions_rating_with_timestamp.mat or its CSV; pass its "
        "folder as raw_dir / --raw_dir, or --data_dir to mdl_tf.train)")


def read_raw(path: str) -> pd.DataFrame:
    """The six RAW_COLUMNS as int64, one row per data row (CSV blank lines skipped)."""
    raw = _read_mat(path) if path.endswith((".mat", ".mat.gz")) else _read_csv(path)
    if raw.empty:
        raise ValueError(f"{path}: no data rows")
    return raw


def _read_csv(path: str) -> pd.DataFrame:
    df = _pandas_csv(path)
    if all(pd.api.types.is_integer_dtype(t) for t in df.dtypes):
        return df
    # Slow path, only for a bad file: re-read as text to name the first bad cell's line.
    df = _pandas_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=False)
    df.index = df.index + 2                      # 1-based file lines; line 1 is the header
    df = df[(df != "").any(axis=1)]              # blank lines are not data rows
    if df.empty:
        return df
    values = df.apply(pd.to_numeric, errors="coerce")
    for column in RAW_COLUMNS:                   # empty (short row), text or fraction
        bad = values[column].isna() | (values[column] % 1 != 0)
        if bad.any():
            line = bad.idxmax()
            raise ValueError(f"{path}: line {line}: column '{column}': expected an integer, "
                             f"got '{df.at[line, column]}'")
    return values.astype("int64").reset_index(drop=True)


def _pandas_csv(path: str, **options) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, **options)
    except pd.errors.ParserError as e:          # too many fields; pandas names the line
        raise ValueError(f"{path}: {e}") from None
    if tuple(df.columns) != RAW_COLUMNS:
        raise ValueError(f"{path}: line 1: expected the header {','.join(RAW_COLUMNS)}, "
                         f"got {','.join(map(str, df.columns))}")
    return df


def _read_mat(path: str) -> pd.DataFrame:
    from scipy import io as sio                 # only the .mat path needs scipy
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as fh:
        try:
            mat = sio.loadmat(io.BytesIO(fh.read()), variable_names=[MAT_VARIABLE])
        except (ValueError, NotImplementedError) as e:
            raise ValueError(f"{path}: not a readable MATLAB file: {e}") from None
    if MAT_VARIABLE not in mat:
        raise ValueError(f"{path}: no variable '{MAT_VARIABLE}' (the ratings matrix)")
    array = np.asarray(mat[MAT_VARIABLE])
    if array.ndim != 2 or array.shape[1] != len(RAW_COLUMNS):
        raise ValueError(f"{path}: variable '{MAT_VARIABLE}' has shape {array.shape}, "
                         f"expected (N, {len(RAW_COLUMNS)}): {', '.join(RAW_COLUMNS)}")
    bad = ~np.isfinite(array) | (array % 1 != 0)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(f"{path}: row {row}, column '{RAW_COLUMNS[col]}': expected an "
                         f"integer, got {array[row, col]}")
    return pd.DataFrame(array.astype(np.int64), columns=list(RAW_COLUMNS))


# --- the table ---------------------------------------------------------------------------
def buckets(num_rows: int) -> np.ndarray:
    """md5 bucket 0-9 of the key str(i) of each data row (the README's split)."""
    return np.fromiter((hash_bucket(str(i), 10) for i in range(num_rows)), np.int64, num_rows)


def scenario_of(category: np.ndarray) -> np.ndarray:
    named = np.char.add("c", category.astype(str))
    return np.where(np.isin(category, SCENARIO_CATEGORIES), named, OTHER)


def training_ids(ids: np.ndarray, train: np.ndarray, min_count: int) -> np.ndarray:
    """0..V-1 for the ids with >= min_count training rows (ascending), -1 for the rest."""
    counts = pd.Series(ids[train]).value_counts()
    kept = np.sort(counts.index[counts >= min_count].to_numpy())
    return pd.Index(kept).get_indexer(ids)


def fold_sums(keys, values, fold, train, num_keys) -> np.ndarray:
    """[TRAIN_BUCKETS, num_keys]: sum of `values` over the training rows of each fold/key."""
    flat = fold[train] * num_keys + keys[train]
    return np.bincount(flat, weights=values[train],
                       minlength=TRAIN_BUCKETS * num_keys).reshape(TRAIN_BUCKETS, num_keys)


def leave_fold_out(sums, keys, fold, train) -> np.ndarray:
    """Per row (keys [n] or [n, S]): the key's training sum, minus the row's own fold's
    share when the row is a training row."""
    shape = (-1,) + (1,) * (keys.ndim - 1)
    own = sums[np.where(train, fold, 0).reshape(shape), keys]
    return sums.sum(axis=0)[keys] - np.where(train.reshape(shape), own, 0.0)


def smoothed_rate(keys, label, fold, train, num_keys, prior=0.0, strength=0.0, lookup=None):
    """(positives + strength * prior) / (rows + strength) of each row's key, out-of-fold on
    training rows. `lookup` ([n] or [n, S], default `keys`) names the keys to read; `prior`
    is a scalar or broadcasts to lookup's shape."""
    lookup = keys if lookup is None else lookup
    positives = leave_fold_out(fold_sums(keys, label, fold, train, num_keys), lookup, fold,
                               train)
    rows = leave_fold_out(fold_sums(keys, np.ones(len(label)), fold, train, num_keys),
                          lookup, fold, train)
    weight = rows + strength                     # 0 only for keys without training rows
    return np.where(weight > 0, (positives + strength * prior) / np.maximum(weight, 1e-12),
                    prior)


def training_counts(keys, train, num_keys) -> np.ndarray:
    return np.bincount(keys[train], minlength=num_keys)[keys]


def build_table(raw: pd.DataFrame, user_min_count=1, item_min_count=2,
                prior_strength=5.0) -> pd.DataFrame:
    """The full table (all rows, data order) with a `split` column; see the docstring."""
    bucket = buckets(len(raw))
    train, fold = bucket < TRAIN_BUCKETS, bucket
    scenario = scenario_of(raw["category_id"].to_numpy())
    labels = {t: (raw[c].to_numpy() >= cut).astype(np.int64) for t, (c, cut) in TASKS.items()}
    user, num_users = _codes(raw["user_id"])
    item, num_items = _codes(raw["item_id"])
    scen = pd.Index(SCENARIOS).get_indexer(scenario)
    out = {"split": np.array(SPLITS)[np.clip(bucket - TRAIN_BUCKETS + 1, 0, 2)],
           "raw_user_id": raw["user_id"], "raw_item_id": raw["item_id"],
           "rating": raw["rating"], "helpfulness": raw["helpfulness"],
           "user_id": training_ids(raw["user_id"].to_numpy(), train, user_min_count),
           "item_id": training_ids(raw["item_id"].to_numpy(), train, item_min_count),
           "category_id": raw["category_id"], "time": raw["time"], "scenario": scenario,
           **labels,
           "user_count": training_counts(user, train, num_users),
           "item_count": training_counts(item, train, num_items)}
    for task, y in labels.items():
        p = smoothed_rate(np.zeros_like(user), y, fold, train, 1)      # [n] the training rate
        for name, keys, n in (("user", user, num_users), ("item", item, num_items)):
            out[f"{name}_{task}_rate"] = smoothed_rate(keys, y, fold, train, n, p,
                                                       prior_strength)
    out.update(_scenario_priors(user, num_users, scen, labels["like"], fold, train,
                                prior_strength))
    return pd.DataFrame(out)


def _codes(ids: pd.Series):
    codes, uniques = pd.factorize(ids)
    return codes, len(uniques)


def _scenario_priors(user, num_users, scen, like, fold, train, strength) -> dict:
    """user_count_<S> and user_like_<S> for every scenario S (every row gets all S)."""
    num = len(SCENARIOS)
    pair = user * num + scen                                          # [n] (user, scenario)
    all_pairs = user[:, None] * num + np.arange(num)[None, :]         # [n, S]
    counts = np.bincount(pair[train], minlength=num_users * num)[all_pairs]
    prior = smoothed_rate(scen, like, fold, train, num,              # [n, S] like rate of S
                          lookup=np.broadcast_to(np.arange(num), all_pairs.shape))
    rate = smoothed_rate(pair, like, fold, train, num_users * num, prior, strength, all_pairs)
    out = {}
    for j, s in enumerate(SCENARIOS):
        out[f"user_count_{s}"], out[f"user_like_{s}"] = counts[:, j], rate[:, j]
    return out


# --- writing -----------------------------------------------------------------------------
def prepare(out_dir, raw_dir=None, raw_file=None, user_min_count=1, item_min_count=2,
            prior_strength=5.0):
    """Writes train.csv / valid.csv / test.csv and schema.yaml (no recipe) into out_dir."""
    raw = read_raw(raw_path(raw_dir or DEFAULT_RAW_DIR, raw_file))
    # 4 decimals are plenty for a rate, and rounding first lets pandas skip a slow
    # per-value float_format (the write is most of the build time).
    table = build_table(raw, user_min_count, item_min_count, prior_strength).round(4)
    os.makedirs(out_dir, exist_ok=True)
    for name, rows in table.groupby("split", sort=False):
        rows.drop(columns="split").to_csv(os.path.join(out_dir, f"{name}.csv"), index=False)
    datasets.write_recipe_free_schema("epinions", out_dir)
    return out_dir


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out_dir", required=True)
    p.add_argument("--raw_dir", default=DEFAULT_RAW_DIR, help="default: %(default)s")
    p.add_argument("--raw_file", help=f"file name inside --raw_dir (default: the first of "
                                      f"{', '.join(RAW_FILES)} found)")
    p.add_argument("--item_min_count", type=int, default=2,
                   help="training rows an item needs for its own id (default: %(default)s)")
    p.add_argument("--prior_strength", type=float, default=5.0,
                   help="smoothing of the rate features, in rows (default: %(default)s)")
    a = p.parse_args(argv)
    try:
        prepare(a.out_dir, raw_dir=a.raw_dir, raw_file=a.raw_file,
                item_min_count=a.item_min_count, prior_strength=a.prior_strength)
    except (FileNotFoundError, ValueError) as e:
        p.exit(2, f"error: {e}\n")
    print(f"wrote {a.out_dir}/{{train,valid,test}}.csv and schema.yaml")


if __name__ == "__main__":
    main()
