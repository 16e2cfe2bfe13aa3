"""MovieLens-100K as a multi-scenario, multi-task ranking table (the M3oE protocol).

Builds, from the official ML-100K files `u.data`, `u.user`, `u.item` and `u.genre`, one row
per rating with
  scenario  the user's age group: age_lt25 (< 25), age_25_34, age_ge35 (>= 35);
  click     rating > 3;  like  rating > 4 (like implies click);
  user      user_id, age, gender, occupation, zip_code, zip3 (its first 3 chars);
  item      item_id, release_year (of u.item's release date; empty when there is none),
            genre_first (first genre flag set, in u.genre order; "none" if no flag),
            genres (the names of all flags set, '|'-joined);
  timestamp and rating, kept for reference: the schemas never read `rating` (nor
  zip_code, a near-copy of user_id).
Splits (`split=`):
  random  the reference hash split of the shared data README: key f"{user_id}-{item_id}",
          md5 bucket 0-7 train, 8 valid, 9 test (79,945 / 9,966 / 10,089 rows);
  time    global time order, first 80% train, next 10% valid, last 10% test; ties in
          timestamp keep u.data order (stable sort), so the split is deterministic.
`prepare()` writes train.csv / valid.csv / test.csv and a recipe-free schema.yaml
(movielens.yaml or movielens_time.yaml) describing them.

GroupLens terms: research use only and no redistribution, so the raw files are read from
wherever the user keeps them and nothing derived from them belongs in the repository.
"""
from __future__ import annotations

import argparse
import os

from mdl_tf import datasets
from mdl_tf.datasets.splits import reference_split

HERE = os.path.dirname(os.path.abspath(__file__))
# The project's shared data sits beside the repository: <repo>/../shared/data.
DEFAULT_RAW_DIR = os.path.normpath(
    os.path.join(HERE, "..", "..", "..", "shared", "data", "movielens_100k_mdmt", "raw"))
RAW_FILES = ("u.data", "u.user", "u.item", "u.genre")
SCENARIOS = ("age_lt25", "age_25_34", "age_ge35")
SPLITS = ("train", "valid", "test")
SCHEMAS = {"random": "movielens.yaml", "time": "movielens_time.yaml"}
COLUMNS = ("user_id", "item_id", "timestamp", "rating", "scenario", "click", "like", "age",
           "gender", "occupation", "zip_code", "zip3", "release_year", "genre_first", "genres")
RELEASE_DATE_FIELD, GENRE_FLAGS_START = 2, 5   # u.item field positions


def age_scenario(age: int) -> str:
    if age < 25:
        return SCENARIOS[0]
    return SCENARIOS[1] if age < 35 else SCENARIOS[2]


def check_raw_dir(raw_dir: str) -> None:
    """Fails before any work, naming every raw file that is not there."""
    missing = [os.path.join(raw_dir, f) for f in RAW_FILES
               if not os.path.isfile(os.path.join(raw_dir, f))]
    if missing:
        raise FileNotFoundError(
            f"MovieLens-100K file(s) missing: {', '.join(missing)} (the recipe needs "
            f"{', '.join(RAW_FILES)} from the official ml-100k download; pass that folder "
            "as raw_dir / --raw_dir, or --data_dir to mdl_tf.train)")


def _read_lines(raw_dir: str, name: str) -> list:
    # The official files are ISO-8859-1 (u.item has accented titles).
    with open(os.path.join(raw_dir, name), encoding="latin-1") as fh:
        return [line.rstrip("\r\n") for line in fh if line.strip()]


def read_users(raw_dir: str) -> dict:
    """user_id -> {age, gender, occupation, zip_code, zip3} (string values, age int)."""
    users = {}
    for line in _read_lines(raw_dir, "u.user"):
        user_id, age, gender, occupation, zip_code = line.split("|")
        users[user_id] = {"age": int(age), "gender": gender, "occupation": occupation,
                          "zip_code": zip_code, "zip3": zip_code[:3]}
    return users


def read_items(raw_dir: str) -> dict:
    """item_id -> {release_year ('' if unknown), genre_first, genres ('|'-joined)}."""
    genres = [line.split("|")[0] for line in _read_lines(raw_dir, "u.genre")]
    items = {}
    for line in _read_lines(raw_dir, "u.item"):
        fields = line.split("|")
        date = fields[RELEASE_DATE_FIELD]                               # e.g. 01-Jan-1995
        flags = fields[GENRE_FLAGS_START:GENRE_FLAGS_START + len(genres)]
        names = [g for g, flag in zip(genres, flags) if flag == "1"]
        items[fields[0]] = {"release_year": date[-4:] if date else "",
                            "genre_first": names[0] if names else "none",
                            "genres": "|".join(names)}
    return items


def build_rows(raw_dir: str) -> list:
    """All ratings as dicts of COLUMNS (string values), in u.data order."""
    check_raw_dir(raw_dir)
    users, items = read_users(raw_dir), read_items(raw_dir)
    rows = []
    for line in _read_lines(raw_dir, "u.data"):
        user_id, item_id, rating, timestamp = line.split("\t")
        user, r = users[user_id], int(rating)
        rows.append({"user_id": user_id, "item_id": item_id, "timestamp": timestamp,
                     "rating": rating, "scenario": age_scenario(user["age"]),
                     "click": str(int(r > 3)), "like": str(int(r > 4)),
                     **{k: str(v) for k, v in user.items()}, **items[item_id]})
    return rows


def split_rows(rows: list, split: str) -> dict:
    """{train|valid|test: rows} under the random (hash) or time split."""
    if split not in SCHEMAS:
        raise ValueError(f"unknown MovieLens split '{split}'; choose from {', '.join(SCHEMAS)}")
    if split == "random":
        out = {s: [] for s in SPLITS}
        for row in rows:
            out[reference_split(f"{row['user_id']}-{row['item_id']}")].append(row)
        return out
    ordered = sorted(rows, key=lambda row: int(row["timestamp"]))   # stable: ties keep order
    train_end, valid_end = int(0.8 * len(rows)), int(0.9 * len(rows))
    return {"train": ordered[:train_end], "valid": ordered[train_end:valid_end],
            "test": ordered[valid_end:]}


def write_csv(path: str, rows: list) -> None:
    with open(path, "w") as fh:
        fh.write(",".join(COLUMNS) + "\n")
        fh.writelines(",".join(row[c] for c in COLUMNS) + "\n" for row in rows)


def prepare(out_dir, raw_dir=None, split="random"):
    """Writes train.csv / valid.csv / test.csv and schema.yaml (no recipe) into out_dir."""
    raw_dir = raw_dir or DEFAULT_RAW_DIR
    parts = split_rows(build_rows(raw_dir), split)
    os.makedirs(out_dir, exist_ok=True)
    for name, rows in parts.items():
        write_csv(os.path.join(out_dir, f"{name}.csv"), rows)
    datasets.write_recipe_free_schema(os.path.join(HERE, SCHEMAS[split]), out_dir)
    return out_dir


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out_dir", required=True)
    p.add_argument("--raw_dir", default=DEFAULT_RAW_DIR,
                   help="folder with u.data, u.user, u.item, u.genre (default: %(default)s)")
    p.add_argument("--split", choices=sorted(SCHEMAS), default="random")
    a = p.parse_args(argv)
    try:
        prepare(a.out_dir, raw_dir=a.raw_dir, split=a.split)
    except FileNotFoundError as e:
        p.exit(2, f"error: {e}\n")
    print(f"wrote {a.out_dir}/{{train,valid,test}}.csv and schema.yaml")


if __name__ == "__main__":
    main()
