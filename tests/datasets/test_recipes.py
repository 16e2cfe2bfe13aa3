"""The MovieLens and Census recipes rebuild the tables the shared data READMEs document.

Counts and label rates below are the READMEs' (../shared/data/*/README.md); the recipes
build from the raw files only. Tests skip when the shared data is absent.
"""
import csv
import gzip
import math
import os

import pytest

from conftest import shared_data
from mdl_tf import datasets
from mdl_tf import schema as schema_lib
from mdl_tf.datasets import census, movielens

ML_RAW = ("movielens_100k_mdmt", "raw")
CENSUS_RAW = ("census_income_kdd", "raw")
ML_SCENARIOS = ("age_lt25", "age_25_34", "age_ge35")


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def read_splits(out_dir):
    return {s: read_csv(os.path.join(out_dir, f"{s}.csv")) for s in ("train", "valid", "test")}


def rate(rows, column):
    return sum(int(r[column]) for r in rows) / len(rows)


def mean_std(values):
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def by_scenario(rows, name):
    return [r for r in rows if r["scenario"] == name]


@pytest.fixture(scope="module")
def ml_random(tmp_path_factory):
    out = movielens.prepare(str(tmp_path_factory.mktemp("ml_random")), shared_data(*ML_RAW))
    return read_splits(out)


@pytest.fixture(scope="module")
def ml_time(tmp_path_factory):
    out = movielens.prepare(str(tmp_path_factory.mktemp("ml_time")), shared_data(*ML_RAW),
                            split="time")
    return read_splits(out)


@pytest.fixture(scope="module")
def census_dir(tmp_path_factory):
    return census.prepare(str(tmp_path_factory.mktemp("census")), shared_data(*CENSUS_RAW))


@pytest.fixture(scope="module")
def census_splits(census_dir):
    return read_splits(census_dir)


# --- MovieLens ---------------------------------------------------------------------------
def test_movielens_random_split_sizes_and_test_rates(ml_random):
    assert [len(ml_random[s]) for s in ("train", "valid", "test")] == [79_945, 9_966, 10_089]
    test = ml_random["test"]
    assert [len(by_scenario(test, s)) for s in ML_SCENARIOS] == [2_702, 3_574, 3_813]
    for s, click, like in zip(ML_SCENARIOS, (.536, .542, .581), (.217, .195, .223)):
        assert rate(by_scenario(test, s), "click") == pytest.approx(click, abs=5e-4)
        assert rate(by_scenario(test, s), "like") == pytest.approx(like, abs=5e-4)


def test_movielens_label_rates_per_scenario(ml_random):
    rows = [r for part in ml_random.values() for r in part]
    expected = {"age_lt25": (26_551, 0.5362, 0.2118), "age_25_34": (35_444, 0.5414, 0.2001),
                "age_ge35": (38_005, 0.5775, 0.2233)}
    for s, (n, click, like) in expected.items():
        part = by_scenario(rows, s)
        assert len(part) == n
        assert rate(part, "click") == pytest.approx(click, abs=5e-5)
        assert rate(part, "like") == pytest.approx(like, abs=5e-5)
    assert all(int(r["click"]) == (int(r["rating"]) > 3) for r in rows)
    assert all(int(r["like"]) == (int(r["rating"]) > 4) for r in rows)
    assert len({r["user_id"] for r in rows}) == 943 and len({r["item_id"] for r in rows}) == 1682


def test_movielens_time_split_scenario_counts(ml_time):
    expected = {"age_lt25": (23_281, 1_853, 1_417), "age_25_34": (28_729, 2_445, 4_270),
                "age_ge35": (27_990, 5_702, 4_313)}
    for s, counts in expected.items():
        assert tuple(len(by_scenario(ml_time[p], s)) for p in ("train", "valid", "test")) == counts
    last_train = max(int(r["timestamp"]) for r in ml_time["train"])
    assert all(int(r["timestamp"]) >= last_train for r in ml_time["test"])


def test_movielens_cells_data_py_accepts(ml_random):
    rows = [r for part in ml_random.values() for r in part]
    years = [r["release_year"] for r in rows]
    assert years.count("") == 9                        # movie 267 has no date: empty, not nan
    assert all(y == "" or y.isdigit() for y in years)
    assert {r["scenario"] for r in rows} == set(ML_SCENARIOS)
    assert {r["genres"].split("|")[0] for r in rows} == {r["genre_first"] for r in rows}
    assert max(len(r["genres"].split("|")) for r in rows) == 6


@pytest.mark.parametrize("name, split", [("movielens", "random"), ("movielens_time", "time")])
def test_movielens_schema_never_reads_rating_and_stats_match_train(name, split, request):
    parts = request.getfixturevalue("ml_random" if split == "random" else "ml_time")
    s = schema_lib.load(os.path.join(datasets.HERE, f"{name}.yaml"))
    assert s.recipe == "movielens" and s.recipe_options == {"split": split}
    assert "rating" not in {f.source_column for f in s.features}
    assert s.gauc_group == ("user_id",) and s.important_features == ("user_id", "item_id")
    assert 64 % len(s.groups) == 0
    train = parts["train"]
    for column in ("age", "release_year"):
        mean, std = mean_std([float(r[column]) for r in train if r[column]])
        f = s.feature(column)
        assert (f.mean, f.std) == (pytest.approx(mean, abs=1e-4), pytest.approx(std, abs=1e-4))
    assert s.feature("release_year").default == s.feature("release_year").mean


def test_movielens_missing_raw_file_is_named(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("u.user", "u.item", "u.genre"):
        (raw / name).write_text("")
    with pytest.raises(FileNotFoundError, match=r"raw/u\.data"):
        movielens.prepare(str(tmp_path / "out"), str(raw))


def test_movielens_unknown_split_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown MovieLens split 'weekly'"):
        movielens.split_rows([], "weekly")


def test_movielens_recipe_resolves_and_writes_a_loadable_schema(tmp_path):
    s = datasets.load_schema("movielens")
    out = datasets.resolve(s, shared_data(*ML_RAW), str(tmp_path / "work"))
    written = schema_lib.load(os.path.join(out, "schema.yaml"))
    assert written.recipe is None and written.feature_names == s.feature_names
    assert os.path.isfile(os.path.join(out, "train.csv"))


# --- Census ------------------------------------------------------------------------------
def test_census_split_sizes(census_splits):
    assert [len(census_splits[s]) for s in ("train", "valid", "test")] == [79_529, 10_071, 10_162]


def test_census_label_rates_per_scenario(census_splits):
    rows = [r for part in census_splits.values() for r in part]
    expected = {"male": (47_971, 0.1017, 0.4637), "female": (51_791, 0.0252, 0.4036)}
    for s, (n, income, never) in expected.items():
        part = by_scenario(rows, s)
        assert len(part) == n
        assert rate(part, "income_50k") == pytest.approx(income, abs=5e-5)
        assert rate(part, "never_married") == pytest.approx(never, abs=5e-5)
    assert sum(int(r["income_50k"]) for r in rows) == 6_186


def test_census_rows_follow_the_raw_file(census_splits):
    # Row 0 of the UCI file (see its README): a 38-year-old married woman, income < 50K.
    first = census_splits[census.reference_split("0")][0]
    assert first["age"] == "38" and first["scenario"] == "female"
    assert first["education"] == "1st 2nd 3rd or 4th grade"
    assert (first["income_50k"], first["never_married"]) == ("0", "0")


def test_census_column_order_matches_the_labeled_header():
    path = shared_data("census_income_kdd", "census_income_kdd_test_labeled.csv.gz")
    with gzip.open(path, "rt") as fh:
        header = fh.readline().strip().split(",")
    assert tuple(header[:len(census.RAW_COLUMNS)]) == census.RAW_COLUMNS


def test_census_never_uses_leaking_columns(census_dir):
    s = datasets.load_schema("census")
    sources = {f.source_column for f in s.features}
    leaking = {"income", "marital_stat", "instance_weight", "income_50k", "never_married",
               "scenario"}
    assert not sources & leaking
    header = read_csv(os.path.join(census_dir, "valid.csv"))[0].keys()
    assert not {"income", "marital_stat", "instance_weight"} & set(header)
    assert len(s.features) == 39 and 64 % len(s.groups) == 0


def test_census_schema_stats_and_vocabularies_match_train(census_splits):
    s = datasets.load_schema("census")
    train = census_splits["train"]
    for f in s.features:
        values = [r[f.source_column] for r in train]
        if f.type == "dense":
            x = [math.log1p(float(v)) if f.log1p else float(v) for v in values]
            mean, std = mean_std(x)
            assert (f.mean, f.std) == (pytest.approx(mean, abs=1e-4), pytest.approx(std, abs=1e-4))
            assert f.log1p == (f.name in census.LOG1P)
        elif f.vocab_size is not None:
            assert max(int(v) for v in values) < f.vocab_size
        else:
            assert set(f.vocabulary) == set(values), f.name


def test_census_missing_raw_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"census-income\.test\.gz"):
        census.prepare(str(tmp_path / "out"), str(tmp_path))


def test_census_malformed_raw_rows_are_named(tmp_path):
    good = ", ".join(["x"] * 12 + ["Male"] + ["x"] * 28 + ["50000+."])
    cases = [("short", "38, Private\n", "data row 0: expected 42 comma-separated fields"),
             ("sex", good.replace("Male", "Other") + "\n", "column 'sex'"),
             ("income", good.replace("50000+.", "maybe") + "\n", "column 'income'")]
    for name, line, message in cases:
        (tmp_path / f"{name}.txt").write_text(line)
        with pytest.raises(ValueError, match=message):
            census.prepare(str(tmp_path / "out"), str(tmp_path), raw_file=f"{name}.txt")
