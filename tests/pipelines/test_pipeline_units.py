"""Splitting, statistics combiners, the output schema and the settings' checks (no runner)."""
import hashlib
import math
import os

import numpy as np
import pytest

from pipeline_helpers import RECIPES  # first: puts the repository on sys.path
from mdl_tf import schema as schema_lib
from pipelines import files, output_schema, split
from pipelines.options import OptionsError, PreprocessOptions, check, vocab_features
from pipelines.statistics import MomentsFn, assemble


def test_hash_split_is_the_movielens_reference_split():
    splitter = split.HashSplitter((0.8, 0.1, 0.1), 10)
    for user, item in [(196, 242), (186, 302), (22, 377), (244, 51), (166, 346)]:
        key = f"{user}-{item}"
        bucket = int.from_bytes(hashlib.md5(key.encode("utf-8")).digest()[:8], "big") % 10
        want = "train" if bucket < 8 else "valid" if bucket == 8 else "test"
        assert splitter(split.split_key({"u": str(user), "i": str(item)}, ("u", "i"), "")) == want


def test_hash_split_fractions_must_fit_the_buckets():
    assert split.bucket_thresholds((0.7, 0.2, 0.1), 10) == (7, 9)
    with pytest.raises(ValueError, match="--hash_buckets"):
        split.bucket_thresholds((0.75, 0.15, 0.1), 10)
    assert split.bucket_thresholds((0.75, 0.15, 0.1), 100) == (75, 90)


def test_time_split_boundaries():
    quantiles = list(range(11))                       # times 0..10, deciles
    assert split.boundaries_from_quantiles(quantiles, (0.8, 0.1, 0.1)) == (8.0, 9.0)
    assert split.boundaries_from_quantiles(quantiles, (0.9, 0.1, 0.0)) == (9.0, math.inf)
    assert split.boundaries_from_quantiles([], (0.8, 0.1, 0.1)) == (math.inf, math.inf)
    assert [split.time_split(t, (8, 9)) for t in (7.9, 8, 8.5, 9, 12)] == [
        "train", "valid", "valid", "test", "test"]


def test_moments_merge_matches_numpy():
    rng = np.random.default_rng(0)
    parts = [rng.normal(3, 2, n) for n in (5, 0, 17, 1)]
    fn = MomentsFn()
    accs = []
    for part in parts:
        acc = fn.create_accumulator()
        for x in part:
            acc = fn.add_input(acc, float(x))
        accs.append(fn.add_input(acc, None))          # one missing value per part
    out = fn.extract_output(fn.merge_accumulators(accs))
    every = np.concatenate(parts)
    assert out["count"] == len(every) and out["missing"] == 4
    assert out["mean"] == pytest.approx(every.mean()) and out["std"] == pytest.approx(every.std())
    assert (out["min"], out["max"]) == (every.min(), every.max())
    assert fn.extract_output(fn.create_accumulator()) == {"count": 0, "missing": 0}


def test_output_schema_uses_statistics():
    schema = schema_lib.load(os.path.join(RECIPES, "kuairand.yaml"))
    stats = assemble([("split_rows", "train", 8), ("split_rows", "valid", 2),
                      ("dense", "duration_ms", {"count": 8, "missing": 0, "mean": 9.5, "std": 0.0}),
                      ("vocabularies", "user_id", {"size": 3, "tokens": ["a", "b", "c"]}),
                      ("vocabularies", "hourmin", {"size": 0, "tokens": []})])
    out = output_schema.build(schema, stats, ["user_id", "hourmin", "video_id"])
    feats = {f["name"]: f for f in out["features"]}
    assert out["format"] == "tfrecord" and "recipe" not in out
    assert out["files"] == {"train": "train-*.tfrecord.gz", "valid": "valid-*.tfrecord.gz"}
    assert feats["user_id"]["vocabulary_file"] == "vocab/user_id.txt"
    assert "hash_buckets" not in feats["user_id"]
    assert feats["hourmin"]["hash_buckets"] == 100      # empty vocabulary: input index kept
    # std 0 (a constant column) becomes 1, the default, which the YAML leaves out.
    assert feats["duration_ms"]["mean"] == 9.5 and feats["duration_ms"].get("std", 1.0) == 1.0
    assert feats["is_rand"]["vocab_size"] == 2


def opts(**kw):
    return PreprocessOptions(schema="s.yaml", inputs=["x.csv"], output_dir="out", **kw)


@pytest.mark.parametrize("kw, message", [
    ({"split_fractions": (0.8, 0.1)}, "three non-negative fractions"),
    ({"split_fractions": (0.8, 0.3, 0.1)}, "summing to 1"),
    ({"split_fractions": (0.9, 0.0, 0.1)}, "train and valid must be > 0"),
    ({"split_fractions": (0.85, 0.1, 0.05)}, "--hash_buckets"),
    ({"split": "random"}, "--split must be hash or time"),
    ({"split": "time"}, "--split time needs --time_column"),
    ({"split": "time", "time_column": "t", "split_key": ("a",)}, "--split_key is only used"),
    ({"split": "time", "time_column": "t", "time_boundaries": (5.0, 1.0)}, "ascending"),
    ({"time_boundaries": (1.0, 2.0)}, "--time_boundaries needs --split time"),
    ({"max_bad_fraction": 1.5}, "--max_bad_fraction"),
    ({"vocab_min_count": 0}, "--vocab_min_count"),
    ({"skip_vocab": ("duration_ms",)}, "--skip_vocab"),
    ({"scenario_map": {"1": "tab99"}}, "--scenario_map"),
])
def test_inconsistent_options_are_refused(kw, message):
    schema = schema_lib.load(os.path.join(RECIPES, "kuairand.yaml"))
    with pytest.raises(OptionsError, match=message):
        check(opts(**kw), schema)


def test_vocab_features_skip_vocab_size_and_skip_list():
    schema = schema_lib.load(os.path.join(RECIPES, "kuairand.yaml"))
    names = [f.name for f in vocab_features(opts(skip_vocab=("video_id",)), schema)]
    assert names == ["user_id", "hourmin"]


def test_output_dir_must_be_empty(tmp_path):
    assert files.is_empty_dir(str(tmp_path / "new"))
    (tmp_path / "old" / "sub").mkdir(parents=True)
    assert files.is_empty_dir(str(tmp_path / "old"))
    (tmp_path / "old" / "sub" / "train-00000-of-00001.tfrecord.gz").write_bytes(b"")
    assert not files.is_empty_dir(str(tmp_path / "old"))


@pytest.mark.parametrize("name, groups", [("ali_ccp", 4), ("aliexpress", 4), ("kuairand", 2)])
def test_recipe_schemas_load(name, groups):
    schema = schema_lib.load(os.path.join(RECIPES, f"{name}.yaml"))
    assert len(schema.groups) == groups and 64 % groups == 0
    assert schema.recipe is None and not schema.files
