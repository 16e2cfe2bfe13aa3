"""Schema inference: raw CSV with arbitrary scenario values -> schema + splits -> train -> serve."""
import os

import numpy as np
import pandas as pd
import pytest
import yaml

from mdl_tf import infer
from mdl_tf import schema as schema_lib

SEGMENTS = ["Mens E-Mail", "Womens E-Mail", "No E-Mail"]


def shop_csv(path, n=600, seed=0):
    """A Hillstrom-like table: raw segment values, a skewed spend, a multi-valued column."""
    rng = np.random.default_rng(seed)
    seg = rng.choice(SEGMENTS, n)
    channel = rng.choice(["Web", "Phone", "Multichannel"], n)
    visit = (rng.random(n) < 0.1 + 0.3 * (seg != "No E-Mail") + 0.2 * (channel == "Web"))
    conversion = np.where(visit, (rng.random(n) < 0.4).astype(int), 0).astype(str)
    conversion[::17] = ""                                     # missing labels
    pd.DataFrame({"user_id": rng.integers(0, 120, n), "recency": rng.integers(1, 13, n),
                  "spend": rng.lognormal(4, 1, n).round(2), "channel": channel,
                  "tags": ["a|b" if i % 3 else "c" for i in range(n)], "segment": seg,
                  "visit": visit.astype(int), "conversion": conversion}).to_csv(path, index=False)
    return str(path)


def run_infer(tmp_path, *extra):
    return infer.main([shop_csv(tmp_path / "shop.csv"), "--scenario", "segment", "--labels",
                       "visit,conversion", "--ids", "user_id", "--out_dir",
                       str(tmp_path / "data"), *extra])


def test_infer_writes_a_complete_schema_from_the_training_split(tmp_path, capsys):
    assert run_infer(tmp_path) == 0
    out = capsys.readouterr().out
    assert "'Mens E-Mail' -> mens_e_mail" in out and "python -m mdl_tf.train" in out
    schema = schema_lib.load(str(tmp_path / "data" / "schema.yaml"))
    assert schema.scenario.values["Mens E-Mail"] == "mens_e_mail"
    train = pd.read_csv(tmp_path / "data" / "train.csv")
    spend = schema.feature("spend")
    assert spend.log1p and spend.mean == pytest.approx(np.log1p(train.spend).mean(), rel=1e-5)
    assert spend.std == pytest.approx(np.log1p(train.spend).std(ddof=0), rel=1e-5)
    assert schema.feature("tags").type == "multi_categorical"
    assert schema.feature("channel").vocabulary is not None
    assert 64 % len(schema.groups) == 0
    assert schema.gauc_group == ("user_id",) and "user_id" in schema.important_features
    sizes = {s: len(pd.read_csv(tmp_path / "data" / f"{s}.csv")) for s in infer.SPLITS}
    assert sum(sizes.values()) == 600 and min(sizes.values()) > 0
    # The md5 rule on the user id: no user in two splits.
    users = {s: set(pd.read_csv(tmp_path / "data" / f"{s}.csv").user_id) for s in infer.SPLITS}
    assert not users["train"] & users["test"]


def test_infer_time_split_keeps_the_newest_rows_for_test(tmp_path):
    path = shop_csv(tmp_path / "shop.csv")
    df = pd.read_csv(path)
    df["ts"] = np.arange(len(df))[::-1]
    df.to_csv(path, index=False)
    assert infer.main([path, "--scenario", "segment", "--labels", "visit", "--time_column",
                       "ts", "--out_dir", str(tmp_path / "d")]) == 0
    test = pd.read_csv(tmp_path / "d" / "test.csv")
    train = pd.read_csv(tmp_path / "d" / "train.csv")
    assert test.ts.min() > train.ts.max() and len(test) == 60
    assert "ts" not in schema_lib.load(str(tmp_path / "d" / "schema.yaml")).feature_names


@pytest.mark.parametrize("args,message", [
    (["--scenario", "segmnt", "--labels", "visit"], "column 'segmnt' is not in the input; "
                                                    "did you mean 'segment'?"),
    (["--scenario", "segment", "--labels", "spend"], "label column 'spend' holds"),
])
def test_infer_errors_name_the_column(tmp_path, capsys, args, message):
    path = shop_csv(tmp_path / "shop.csv", n=50)
    assert infer.main([path, *args, "--out_dir", str(tmp_path / "d")]) == 2
    assert message in capsys.readouterr().err


def test_infer_then_train_then_serve_raw_scenario_values(tmp_path):
    """The three-command path with no hand-computed number; serving_default takes the
    schema's own scenario column with its raw values."""
    import tensorflow as tf

    from mdl_tf import train
    assert run_infer(tmp_path) == 0
    opts = train.TrainOptions(dataset=str(tmp_path / "data" / "schema.yaml"),
                              model_dir=str(tmp_path / "run"), epochs=1, batch_size=32,
                              jit_compile=False, early_stopping_patience=0, verbose=0,
                              config={"d_model": 16, "num_layers": 1, "num_heads": 2})
    result = train.train(opts)
    assert set(result["metrics"]["scenarios"]) == {"mens_e_mail", "womens_e_mail", "no_e_mail"}
    loaded = tf.saved_model.load(result["export_path"])
    default = loaded.signatures["serving_default"]
    assert "segment" in default.structured_input_signature[1]
    valid = pd.read_csv(tmp_path / "data" / "valid.csv", dtype=str, keep_default_na=False)[:4]
    schema = result["model"].schema
    inputs = {f.name: tf.constant(valid[f.name].to_numpy().astype(
        {"int64": np.int64, "float32": np.float32, "string": str}[f.dtype]))
        for f in schema.features}
    raw = default(**inputs, segment=tf.constant(["Mens E-Mail"] * 4))
    named = loaded.signatures["scenario_mens_e_mail"](**inputs)
    np.testing.assert_allclose(raw["visit"].numpy(), named["visit"].numpy(), rtol=1e-5)
