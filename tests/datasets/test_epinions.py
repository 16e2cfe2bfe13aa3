"""The Epinions recipe rebuilds the table ../shared/data/epinions_mdmt/README.md documents.

Counts and label rates are the README's; derived features must come from training rows
only. The full table is built once per module (a few seconds); the rest use a slice of
the raw file or tiny hand-written files. Tests skip when the shared data is absent.
"""
import os

import numpy as np
import pandas as pd
import pytest

from conftest import shared_data
from mdl_tf import data, datasets
from mdl_tf import schema as schema_lib
from mdl_tf.datasets import epinions

RAW = ("epinions_mdmt", "epinions_rating_with_timestamp.csv.gz")
# README "Test rows per scenario (hash split)": rows, like rate, helpful rate.
TEST_CELLS = {
    "other": (6_247, .717, .126), "c1": (4_201, .596, .135), "c2": (4_620, .743, .168),
    "c3": (16_901, .637, .113), "c4": (10_391, .809, .079), "c5": (8_602, .799, .122),
    "c7": (4_565, .765, .161), "c8": (4_512, .787, .090), "c9": (3_295, .763, .164),
    "c10": (6_214, .781, .088), "c11": (4_894, .709, .097), "c15": (2_259, .783, .172),
    "c17": (2_116, .801, .110), "c18": (5_623, .734, .087), "c19": (8_672, .771, .123)}
SLICE_ROWS = 20_000


def features_of(table):
    """The columns a model may read: everything but the labels and the raw targets."""
    return table.drop(columns=["like", "helpful", "rating", "helpfulness"])


@pytest.fixture(scope="module")
def raw():
    return epinions.read_raw(shared_data(*RAW))


@pytest.fixture(scope="module")
def table(raw):
    return epinions.build_table(raw)


@pytest.fixture(scope="module")
def raw_slice(raw):
    return raw.iloc[:SLICE_ROWS].copy()


def flip_labels(raw, rows):
    """A copy of raw with both labels of `rows` (a mask or index) flipped."""
    out = raw.copy()
    out.loc[rows, "rating"] = np.where(out.loc[rows, "rating"] >= 4, 1, 5)
    out.loc[rows, "helpfulness"] = np.where(out.loc[rows, "helpfulness"] >= 3, 1, 5)
    return out


def write_raw_csv(path, frame):
    frame.to_csv(path, index=False)
    return str(path)


# --- the README's table ------------------------------------------------------------------
def test_split_sizes_and_scenarios(table):
    sizes = table["split"].value_counts()
    assert [sizes[s] for s in ("train", "valid", "test")] == [737_118, 92_037, 93_112]
    assert set(table["scenario"]) == set(epinions.SCENARIOS) and len(epinions.SCENARIOS) == 15


def test_test_rows_and_label_rates_per_scenario(table):
    test = table[table["split"] == "test"]
    for scenario, (rows, like, helpful) in TEST_CELLS.items():
        cell = test[test["scenario"] == scenario]
        assert len(cell) == rows, scenario
        assert cell["like"].mean() == pytest.approx(like, abs=5e-4), scenario
        assert cell["helpful"].mean() == pytest.approx(helpful, abs=5e-4), scenario


def test_labels_follow_the_raw_targets(table, raw):
    assert (table["like"] == (raw["rating"] >= 4)).all()
    assert (table["helpful"] == (raw["helpfulness"] >= 3)).all()
    merged = ~raw["category_id"].isin(epinions.SCENARIO_CATEGORIES)
    assert (table.loc[merged, "scenario"] == "other").all() and merged.sum() == 61_787
    assert raw.loc[merged, "category_id"].nunique() == 13


def test_every_test_user_is_known_and_77pct_of_test_items(table):
    test = table[table["split"] == "test"]
    assert (test["user_id"] >= 0).all()
    assert (test["item_count"] > 0).mean() == pytest.approx(0.768, abs=5e-4)


# --- training rows only ------------------------------------------------------------------
def test_unseen_items_are_oov_with_zero_count_and_the_prior_rate(table):
    train = table[table["split"] == "train"]
    held_out = table[table["split"] != "train"]
    unseen = held_out[~held_out["raw_item_id"].isin(train["raw_item_id"])]
    assert len(unseen) > 20_000
    assert (unseen["item_id"] == -1).all() and (unseen["item_count"] == 0).all()
    for task in epinions.TASKS:
        assert unseen[f"item_{task}_rate"].to_numpy() == pytest.approx(train[task].mean())


def test_ids_and_counts_are_training_statistics(table):
    train = table[table["split"] == "train"]
    counts = train["raw_item_id"].value_counts()
    rows = table.sample(2_000, random_state=0)
    assert (rows["item_count"] == rows["raw_item_id"].map(counts).fillna(0)).all()
    assert ((rows["item_id"] >= 0) == (rows["item_count"] >= 2)).all()   # item_min_count 2
    assert train["item_id"].max() + 1 == (counts >= 2).sum() == 84_273
    assert train["user_id"].max() + 1 == train["raw_user_id"].nunique() == 22_164
    user_c3 = train[train["scenario"] == "c3"]["raw_user_id"].value_counts()
    assert (rows["user_count_c3"] == rows["raw_user_id"].map(user_c3).fillna(0)).all()


def test_held_out_labels_change_no_feature(raw_slice):
    """Flipping every valid/test label leaves every row's features as they were."""
    before = epinions.build_table(raw_slice)
    held_out = (before["split"] != "train").to_numpy()
    after = epinions.build_table(flip_labels(raw_slice, held_out))
    assert (after.loc[held_out, "like"] != before.loc[held_out, "like"]).all()
    pd.testing.assert_frame_equal(features_of(after), features_of(before))


def test_a_training_row_never_sees_its_own_label(raw_slice):
    """Rates are out-of-fold: flipping one training row's labels leaves its own features
    (and its fold's) unchanged, and moves the same user's rows in other folds."""
    before = epinions.build_table(raw_slice)
    train = before[before["split"] == "train"]
    row = train.index[train["raw_user_id"].duplicated(keep=False)][0]
    after = epinions.build_table(flip_labels(raw_slice, [row]))
    pd.testing.assert_series_equal(features_of(after).loc[row], features_of(before).loc[row])
    user = before["raw_user_id"] == before.at[row, "raw_user_id"]
    bucket = epinions.buckets(len(raw_slice))
    other_folds = user & (bucket != bucket[row])
    assert not np.allclose(after.loc[other_folds, "user_like_rate"],
                           before.loc[other_folds, "user_like_rate"])


# --- schema ------------------------------------------------------------------------------
def test_schema_stats_and_priors_match_the_table(table):
    s = datasets.load_schema("epinions")
    assert s.recipe == "epinions" and s.scenario.names == epinions.SCENARIOS
    assert not {"rating", "helpfulness", "raw_user_id", "raw_item_id", "like", "helpful",
                "scenario"} & {f.source_column for f in s.features}
    train = table[table["split"] == "train"]
    for f in s.features:
        x = train[f.source_column].to_numpy(float)
        if f.type == "dense":
            x = np.log1p(x) if f.log1p else x
            assert (f.mean, f.std) == (pytest.approx(x.mean(), abs=1e-4),
                                       pytest.approx(x.std(), abs=1e-4)), f.name
        else:
            assert x.max() < f.vocab_size, f.name
    for name in epinions.SCENARIOS:
        assert s.scenario_priors[name] == (f"user_count_{name}", f"user_like_{name}")
    assert set(s.task_priors) == set(epinions.TASKS)
    grouped = {m for members in s.groups.values() for m in members}
    assert grouped == set(s.feature_names) and 64 % len(s.groups) == 0


def test_prepare_writes_csvs_data_py_reads(raw_slice, tmp_path):
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    write_raw_csv(raw_dir / epinions.RAW_FILES[1], raw_slice)           # the plain .csv
    s = datasets.load_schema("epinions")
    out = datasets.resolve(s, str(raw_dir), str(tmp_path / "work"))
    written = schema_lib.load(os.path.join(out, "schema.yaml"))
    assert written.recipe is None and written.feature_names == s.feature_names
    features, labels = next(iter(data.make_dataset(written, "valid", data_dir=out,
                                                   batch_size=64)))
    assert labels.shape == (64, 2) and features["item_id"].dtype.name == "int64"
    valid = pd.read_csv(os.path.join(out, "valid.csv"))
    assert len(valid) == (epinions.buckets(SLICE_ROWS) == 8).sum()


# --- raw formats and bad input -----------------------------------------------------------
def test_mat_and_csv_give_identical_tables(raw_slice, tmp_path):
    from scipy import io as sio
    mat = tmp_path / epinions.RAW_FILES[2]
    sio.savemat(mat, {"rating": raw_slice.to_numpy(np.int32)})
    csv = write_raw_csv(tmp_path / "ratings.csv", raw_slice)
    from_mat = epinions.read_raw(epinions.raw_path(str(tmp_path)))      # finds the .mat
    pd.testing.assert_frame_equal(from_mat, epinions.read_raw(csv))
    pd.testing.assert_frame_equal(epinions.build_table(from_mat), epinions.build_table(raw_slice))


GOOD = "user_id,item_id,category_id,rating,helpfulness,time\n1,1,3,2,2,1\n1,2,2,5,3,1\n"


@pytest.mark.parametrize("text, message", [
    (GOOD + "1,3,3,4,2,1,9\n", r"bad\.csv: .*line 4"),                       # 7 fields
    (GOOD + "1,3,3,4,2\n", r"bad\.csv: line 4: column 'time': expected an integer, got ''"),
    (GOOD + "1,3,3,four,2,1\n", r"line 4: column 'rating': expected an integer, got 'four'"),
    (GOOD + "\n1,3,3,4.5,2,1\n", r"line 5: column 'rating': expected an integer, got '4\.5'"),
    ("user,item,category_id,rating,helpfulness,time\n1,1,3,2,2,1\n", r"line 1: expected the "
     "header user_id,item_id,category_id,rating,helpfulness,time"),
    (GOOD.splitlines()[0] + "\n", "no data rows"),
])
def test_bad_csv_is_named(tmp_path, text, message):
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(ValueError, match=message):
        epinions.prepare(str(tmp_path / "out"), str(tmp_path), raw_file="bad.csv")


def test_blank_lines_are_skipped_not_counted(tmp_path):
    (tmp_path / "a.csv").write_text(GOOD.replace("\n1,2", "\n\n1,2"))
    assert len(epinions.read_raw(str(tmp_path / "a.csv"))) == 2


@pytest.mark.parametrize("variables, message", [
    ({"ratings": np.ones((2, 6), np.int32)}, "no variable 'rating'"),
    ({"rating": np.ones((2, 5), np.int32)},
     r"variable 'rating' has shape \(2, 5\), expected \(N, 6\)"),
    ({"rating": np.array([[1, 1, 3, 2, 2, 1], [1, 2, 2, 4.5, 3, 1]])},
     "row 1, column 'rating': expected an integer, got 4.5"),
])
def test_bad_mat_is_named(tmp_path, variables, message):
    from scipy import io as sio
    sio.savemat(tmp_path / "bad.mat", variables)
    with pytest.raises(ValueError, match=rf"bad\.mat: {message}"):
        epinions.read_raw(str(tmp_path / "bad.mat"))


def test_missing_raw_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="epinions_rating_with_timestamp.mat"):
        epinions.prepare(str(tmp_path / "out"), str(tmp_path))
