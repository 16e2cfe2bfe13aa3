"""End to end on real data (DirectRunner): row counts, vocabularies, splits, statistics, and
the trainer on the output. Ali-CCP and AliExpress use the recipe schemas."""
import csv
import hashlib
import math
import os
import random

import pytest

from mdl_tf import schema as schema_lib
from pipeline_helpers import (ALI_CCP_SCENARIOS, HERE, RECIPES, ali_ccp_rows,  # noqa: F401
                              expected_vocabulary, movielens_slice, preprocess, read_examples,
                              read_vocabulary, train_tiny)
from conftest import shared_data

SPLITS = ("train", "valid", "test")


def test_ali_ccp(tmp_path):
    path, rows = ali_ccp_rows()
    out = tmp_path / "out"
    report = preprocess(os.path.join(RECIPES, "ali_ccp.yaml"), [path], out,
                        scenario_map=ALI_CCP_SCENARIOS)
    assert report["status"] == "ok" and report["rows"]["good"] == len(rows) == 100
    examples = {s: read_examples(out, s) for s in SPLITS}
    assert sum(map(len, examples.values())) == 100
    assert {s: len(e) for s, e in examples.items()} == report["split"]["rows"]
    # Scenario 301 = 1/2/3 becomes s1/s2/s3 (69/19/12 in the README).
    scen = [e["301"][0] for split in examples.values() for e in split]
    assert {s: scen.count(s) for s in ("s1", "s2", "s3")} == {"s1": 69, "s2": 19, "s3": 12}
    # Vocabulary of item id (column 205) from the train examples, by count then token.
    train_items = [e["205"][0] for e in examples["train"]]
    assert read_vocabulary(out, "item_id") == expected_vocabulary(train_items)
    schema = schema_lib.load(str(out / "schema.yaml"))
    assert schema.feature("item_id").vocabulary == tuple(expected_vocabulary(train_items))
    clicks = sum(e["click"][0] for e in examples["train"])
    rates = report["label_rates"]["train"]
    assert sum(r["click"]["positives"] for r in rates.values()) == clicks
    result = train_tiny(str(out / "schema.yaml"), tmp_path / "run")
    assert math.isfinite(result["history"]["loss"][0])


def test_aliexpress_country_from_path(tmp_path):
    train = shared_data("schema_fixtures", "aliexpress", "aliexpress_train_sample.csv")
    test = shared_data("schema_fixtures", "aliexpress", "aliexpress_test_sample.csv")
    # The full data has one directory per country; link the fixtures into that layout.
    for country, source in (("NL", train), ("US", test)):
        (tmp_path / f"AliExpress_{country}").mkdir()
        os.symlink(source, tmp_path / f"AliExpress_{country}" / "train.csv")
    out = tmp_path / "out"
    report = preprocess(os.path.join(RECIPES, "aliexpress.yaml"),
                        [str(tmp_path / "AliExpress_*" / "*.csv")], out,
                        scenario_from_path="AliExpress_([A-Za-z]+)", split_key=("search_id",))
    assert report["rows"] == {**report["rows"], "read": 120, "good": 120, "bad": 0}
    examples = [e for s in SPLITS for e in read_examples(out, s)]
    assert sorted(e["country"][0] for e in examples) == ["nl"] * 100 + ["us"] * 20
    # A search session never straddles splits (hash of search_id), and is the GAUC group.
    split_of = {}
    for s in SPLITS:
        for e in read_examples(out, s):
            assert split_of.setdefault(e["search_id"][0], s) == s
    with open(train) as fh:
        conversions = sum(int(r["conversion"]) for r in csv.DictReader(fh))
    nl = [report["label_rates"][s].get("nl", {}) for s in SPLITS]
    assert sum(r["conversion"]["positives"] for r in nl if r) == conversions
    train_c7 = [e["categorical_7"][0] for e in read_examples(out, "train")]
    assert read_vocabulary(out, "categorical_7") == expected_vocabulary(train_c7)
    result = train_tiny(str(out / "schema.yaml"), tmp_path / "run")
    assert math.isfinite(result["history"]["loss"][0])


def test_movielens_slice_reference_split(tmp_path, movielens_slice):  # noqa: F811
    out = tmp_path / "out"
    report = preprocess(os.path.join(HERE, "movielens_slice.yaml"), [movielens_slice], out,
                        split_key=("user_id", "item_id"), hash_buckets=10)
    with open(movielens_slice) as fh:
        rows = list(csv.DictReader(fh))
    want = {s: set() for s in SPLITS}
    for r in rows:   # the README's reference split
        key = f"{r['user_id']}-{r['item_id']}".encode()
        bucket = int.from_bytes(hashlib.md5(key).digest()[:8], "big") % 10
        want["train" if bucket < 8 else "valid" if bucket == 8 else "test"].add(
            (r["user_id"], int(r["item_id"])))
    got = {s: {(e["user_id"][0], e["item_id"][0]) for e in read_examples(out, s)} for s in SPLITS}
    assert got == want and report["rows"]["good"] == len(rows) == 1500
    train_rows = [r for r in rows if (r["user_id"], int(r["item_id"])) in want["train"]]
    for feature in ("user_id", "occupation", "zip3"):
        assert read_vocabulary(out, feature) == expected_vocabulary(r[feature] for r in train_rows)
    genres = [g for r in train_rows for g in r["genres"].split("|") if g]
    assert read_vocabulary(out, "genres") == expected_vocabulary(genres)
    schema = schema_lib.load(str(out / "schema.yaml"))
    ages = [float(r["age"]) for r in train_rows]
    mean = sum(ages) / len(ages)
    assert schema.feature("age").mean == pytest.approx(mean)
    assert schema.feature("age").std == pytest.approx(
        math.sqrt(sum((a - mean) ** 2 for a in ages) / len(ages)))
    assert schema.feature("item_id").vocab_size == 1683     # vocab_size features stay as is
    quantiles = report["dense"]["age"]["quantiles"]
    assert (quantiles[0], quantiles[-1]) == (min(ages), max(ages))
    result = train_tiny(str(out / "schema.yaml"), tmp_path / "run")
    assert math.isfinite(result["history"]["loss"][0])


def _kuairand_log(path, n=300):
    """A KuaiRand-format log with the columns kuairand.yaml reads (values are made up)."""
    rng = random.Random(0)
    columns = ["user_id", "video_id", "date", "hourmin", "time_ms", "is_click", "is_like",
               "long_view", "duration_ms", "is_rand", "tab"]
    times = rng.sample(range(1_649_000_000_000, 1_650_000_000_000), n)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for t in times:
            click = rng.random() < 0.4
            writer.writerow([rng.randrange(50), rng.randrange(80), 20220410, rng.randrange(24) * 100,
                             t, int(click), int(click and rng.random() < 0.2),
                             int(click and rng.random() < 0.5), rng.randrange(5000, 90000),
                             rng.randrange(2), rng.choice([0, 1, 1, 1, 2, 4, 6])])
    return sorted(times)


def test_kuairand_time_split(tmp_path):
    times = _kuairand_log(tmp_path / "log.csv")
    schema = os.path.join(RECIPES, "kuairand.yaml")
    report = preprocess(schema, [str(tmp_path / "log.csv")], tmp_path / "q", split="time",
                        time_column="time_ms")
    # Boundaries at the 80% and 90% quantiles of the times (approximate: within 1%).
    b1, b2 = report["split"]["boundaries"]
    assert abs(times.index(b1) - 240) <= 3 and abs(times.index(b2) - 270) <= 3
    assert report["split"]["rows"] == {"train": sum(t < b1 for t in times),
                                       "valid": sum(b1 <= t < b2 for t in times),
                                       "test": sum(t >= b2 for t in times)}
    # Given boundaries are used as they are.
    report = preprocess(schema, [str(tmp_path / "log.csv")], tmp_path / "b", split="time",
                        time_column="time_ms", time_boundaries=(times[100], times[200]))
    assert report["split"]["rows"] == {"train": 100, "valid": 100, "test": 100}
    tabs = {e["tab"][0] for s in SPLITS for e in read_examples(tmp_path / "b", s)}
    assert tabs == {"tab0", "tab1", "tab2", "tab4", "tab6"}
