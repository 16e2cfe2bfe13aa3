"""benchmarks.quality and benchmarks.learning_curve on tiny data: parameter budgets, seed
statistics, the results JSON, exact-AUC early stopping, tuning, the scikit-learn rows and
scenario merging. Small data and few steps: these check the protocol, not the numbers."""
import dataclasses
import json
import math
import os

import mdl_tf  # noqa: F401
import numpy as np
import pytest
import tensorflow as tf
from threadpoolctl import threadpool_limits

from benchmarks import learning_curve, quality
from conftest import TINY_CONFIG
from mdl_tf import metrics, train
from mdl_tf.models import build_model, make_config

ROWS = {"train": 800, "valid": 400, "test": 400}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    work_dir = str(tmp_path_factory.mktemp("bench_quality"))
    schema, data_dir = quality.prepare_dataset("synthetic", None, work_dir, ROWS)
    return quality.BenchData(schema, quality.load_splits(schema, data_dir))


def settings(**kw):
    return dataclasses.replace(quality.Settings(backbone=dict(TINY_CONFIG), lrs=[2e-3],
                                                weight_decays=[0.0]), **kw)


def fake_result(spec, bench, seeds, seed0=0):
    """A model result as run_model returns it, from random test predictions."""
    test = bench.splits["test"]
    probs = [np.random.default_rng(seed0 + s).random(test.labels.shape) for s in range(seeds)]
    return {**quality.final_result(spec, bench, probs, [0.6] * seeds),
            "config": {}, "params": {"dense": 10, "total": 30},
            "chosen": {"learning_rate": 2e-3, "weight_decay": 0.0}, "tuning": [],
            "train_seconds": 1.0, "best_steps": [4] * seeds}


# --- budgets and statistics ----------------------------------------------------------------
def test_dense_count_excludes_the_embedding_tables_and_drives_the_budget(bench):
    model = build_model("mdl", bench.schema, make_config("mdl", TINY_CONFIG)).build_from_schema()
    counts = quality.param_counts(model)
    tables, _ = model.variable_groups()
    frozen = model.non_trainable_weights
    assert counts["total"] == counts["dense"] + sum(int(np.prod(v.shape))
                                                    for v in [*tables, *frozen])
    assert 0 < counts["dense"] < counts["total"]
    target = quality.count_params("mdl", bench.schema, TINY_CONFIG, "dense")
    assert target == counts["dense"]
    sized = quality.sized_overrides("shared_bottom", bench.schema, dict(TINY_CONFIG), target,
                                    "dense")
    dense = quality.count_params("shared_bottom", bench.schema, sized, "dense")
    assert abs(dense - target) / target < 0.05, (sized, dense, target)


def test_seed_statistics_use_the_sample_std():
    stats = quality.seed_stats({"auc": [0.7, 0.8, 0.9]})
    assert stats["auc_mean"] == pytest.approx(0.8)
    assert stats["auc_std"] == pytest.approx(0.1)            # ddof=1; population: 0.0816
    assert stats["per_seed"] == {"auc": [0.7, 0.8, 0.9]}
    assert math.isnan(quality.seed_stats({"auc": [0.7]})["auc_std"])


def test_split_batches_are_the_rows_own_shuffle_and_one_ordered_pass():
    # Shuffling row numbers and gathering must give the batches that shuffling the rows
    # themselves gave (the committed results' order), across epoch boundaries too.
    rows = 10
    encoded = {"a": np.arange(rows, dtype=np.int64),
               "b": np.arange(2 * rows, dtype=np.float32).reshape(rows, 2)}
    split = quality.Split(encoded, np.arange(rows, dtype=np.float32)[:, None] / 10, None)
    reference = tf.data.Dataset.from_tensor_slices((encoded, split.labels)).shuffle(
        rows, seed=3, reshuffle_each_iteration=True).repeat().batch(4, drop_remainder=True)
    for got, want in zip(split.dataset(4, seed=3).take(7), reference.take(7)):
        for g, w in zip(tf.nest.flatten(got), tf.nest.flatten(want)):
            np.testing.assert_array_equal(g.numpy(), w.numpy())
    ordered = list(split.dataset(4))
    assert [len(x["a"]) for x, _ in ordered] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([x["b"] for x, _ in ordered]), encoded["b"])


def test_results_json_keeps_every_seed_and_renders(bench, tmp_path):
    results = [fake_result("mdl", bench, 3), fake_result("shared_bottom", bench, 3, 10)]
    summary = quality.summarise("synthetic", "cmd", bench.schema, bench.splits["test"],
                                results, settings(seeds=3))
    base = quality.write_reports(summary, str(tmp_path), "tiny")
    with open(base + ".json") as fh:
        saved = json.load(fh)
    assert saved["params"]["mdl"] == {"dense": 10, "total": 30}
    first = saved["cells"][0]
    expected = [m["scenarios"][first["scenario"]][first["task"]]["auc"]
                for m in results[0]["test"]]
    mdl = first["results"]["mdl"]
    assert mdl["per_seed"]["auc"] == pytest.approx(expected)
    assert set(mdl["per_seed"]) == {"auc", "gauc", "logloss"}
    assert mdl["auc_std"] == pytest.approx(np.std(expected, ddof=1))
    assert {"auc_mean", "auc_std", "gauc_mean", "gauc_std", "logloss_mean"} <= set(mdl)
    assert first["best_baseline"] == "shared_bottom" and "bootstrap_p" in first
    assert len(saved["mean_over_cells"]["mdl"]["per_seed"]["auc"]) == 3
    assert set(saved["overall"]["mdl"]) == set(bench.schema.task_names)
    saved["params"]["shared_bottom"] = None       # as the scikit-learn rows store it
    with open(base + ".json", "w") as fh:
        json.dump(saved, fh)
    quality.main(["--render", base + ".json"])
    with open(base + ".md") as fh:
        text = fh.read()
    assert "Overall test AUC per task" in text and "sample std" in text
    assert "| shared_bottom | — | — |" in text
    assert os.path.getsize(base + ".png") > 0


# --- early stopping and tuning --------------------------------------------------------------
def crafted_scores(auc_percent):
    """10 negatives then 10 positives, every score in [0.00095, 0.002] (one bucket of
    Keras' 200-threshold AUC) and an exact AUC of auc_percent / 100."""
    negatives = 0.001 + 0.0001 * np.arange(10)
    above = [auc_percent // 10 + (j < auc_percent % 10) for j in range(10)]
    positives = 0.001 + 0.0001 * (np.asarray(above) - 1) + 0.00005
    return np.concatenate([negatives, positives])


def test_exact_auc_early_stopping_restores_the_best_evaluation():
    labels = np.array([0] * 10 + [1] * 10)
    sequence = [crafted_scores(p) for p in (55, 80, 70, 60, 90, 95)]
    assert [metrics.auc(labels, s) for s in sequence] == pytest.approx(
        [0.55, 0.8, 0.7, 0.6, 0.9, 0.95])
    keras_auc = tf.keras.metrics.AUC(num_thresholds=200)
    keras_auc.update_state(labels, sequence[1])
    assert float(keras_auc.result()) == pytest.approx(0.5)   # what Keras' AUC would see

    scores = iter(sequence)
    callbacks = quality.exact_early_stopping(lambda model: metrics.auc(labels, next(scores)),
                                             steps_per_eval=2, patience=2, periods=6)
    weights = []
    record = tf.keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: weights.append(model.get_weights()))
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.layers.Dense(1, input_shape=(2,))])
    model.compile(tf.keras.optimizers.SGD(0.1), "mse")
    x, y = np.random.default_rng(0).normal(size=(64, 2)), np.ones((64, 1))
    model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(8).repeat(), steps_per_epoch=2,
              epochs=6, callbacks=[*callbacks, record], verbose=0)
    score, stop = callbacks
    assert len(weights) == 4                      # stopped after 2 evaluations without gain
    assert stop.best_epoch == 1 and stop.best == pytest.approx(0.8)
    assert score.curve[1] == (4, 0.8)
    for restored, best in zip(model.get_weights(), weights[1]):
        np.testing.assert_array_equal(restored, best)


class FakeRuns:
    """Runs.run with a fixed validation AUC per (learning rate, weight decay, seed)."""

    def __init__(self, table):
        self.table, self.calls = table, []

    def run(self, fraction, lr, weight_decay, seed, report):
        self.calls.append((fraction, lr, weight_decay, seed))
        return {"valid_auc": self.table(lr, weight_decay, seed)}


def test_tuning_chooses_the_best_mean_over_seeds_on_the_tuning_rows():
    # lr 1e-3 has the best single seed (0.9) but the lower mean.
    values = {(1e-3, 0.0): [0.9, 0.5], (4e-3, 0.0): [0.75, 0.75],
              (1e-3, 0.1): [0.6, 0.6], (4e-3, 0.1): [0.7, 0.7]}
    runs = FakeRuns(lambda lr, wd, seed: values[(lr, wd)][seed])
    chosen, trials = quality.tune(runs, settings(lrs=[1e-3, 4e-3], weight_decays=[0.0, 0.1],
                                                 tune_seeds=2, tune_train_fraction=0.3),
                                  report=None)
    assert chosen == {"learning_rate": 4e-3, "weight_decay": 0.0}
    assert len(trials) == 4 and trials[0]["valid_auc_per_seed"] == [0.9, 0.5]
    assert {c[0] for c in runs.calls} == {0.3}
    assert [c[2] for c in runs.calls] == [0.0] * 4 + [0.1] * 4   # decay outermost
    assert quality.tune(runs, settings(), None) == ({"learning_rate": 2e-3,
                                                      "weight_decay": 0.0}, [])


def test_optuna_trials_search_the_same_ranges():
    pytest.importorskip("optuna")
    runs = FakeRuns(lambda lr, wd, seed: 1.0 - abs(math.log10(lr) + 2.5) - wd)
    chosen, trials = quality.tune(runs, settings(lrs=[1e-3, 1e-2], weight_decays=[0.0, 0.1],
                                                 trials=6, tune_seeds=2), None)
    assert len(trials) == 6 and len(runs.calls) == 12
    assert 1e-3 <= chosen["learning_rate"] <= 1e-2 and chosen["weight_decay"] in (0.0, 0.1)
    assert max(t["valid_auc_mean"] for t in trials) == pytest.approx(
        runs.table(chosen["learning_rate"], chosen["weight_decay"], 0), abs=1e-5)


def test_optimizer_options_and_their_bad_combination(bench):
    opt = train.make_optimizer("adagrad", 0.05, weight_decay=0.5,
                               adagrad_initial_accumulator=1e-6)
    assert opt.weight_decay == 0.5 and opt.initial_accumulator_value == 1e-6
    assert train.make_optimizer("adam", 1e-3).weight_decay is None
    model = build_model("mdl", bench.schema, make_config("mdl", TINY_CONFIG)).build_from_schema()
    with pytest.raises(ValueError, match="embedding_weight_decay needs"):
        train.compile_model(model, train.TrainOptions(embedding_optimizer="same",
                                                      embedding_weight_decay=0.1,
                                                      jit_compile=False))
    with pytest.raises(SystemExit, match="optimizer_pair"):
        quality.parse_spec("mdl:optimizer_pair=sgd")
    assert quality.parse_spec("mdl:optimizer_pair=rmsprop_adagrad:task_tokens=false") == (
        "mdl", {"task_tokens": "false"}, {"optimizer_pair": "rmsprop_adagrad"})


def test_benchmark_end_to_end_reuses_tuning_runs_as_final_seeds(tmp_path, capsys):
    argv = ["--dataset", "synthetic", "--synthetic_rows", "300,200,200",
            "--models", "mdl:optimizer_pair=rmsprop_adagrad", "--seeds", "2",
            "--tune_seeds", "1", "--lrs", "2e-3,4e-3", "--weight_decays", "0.1",
            "--epochs", "1", "--batch_size", "64", "--steps_per_eval", "2",
            "--d_model", "16", "--num_layers", "1", "--num_heads", "2",
            "--name", "tiny", "--out_dir", str(tmp_path), "--work_dir", str(tmp_path / "work")]
    quality.main(argv)
    runs = [line for line in capsys.readouterr().out.splitlines() if line.endswith("left")]
    assert len(runs) == 3           # 2 points x seed 0, then seed 1 at the chosen point
    with open(tmp_path / "tiny.json") as fh:
        saved = json.load(fh)
    spec = "mdl:optimizer_pair=rmsprop_adagrad"
    trials = saved["tuning"][spec]
    assert [t["learning_rate"] for t in trials] == [2e-3, 4e-3]
    chosen = saved["chosen"][spec]
    assert chosen["optimizer_pair"] == "rmsprop_adagrad" and chosen["weight_decay"] == 0.1
    best = max(trials, key=lambda t: t["valid_auc_mean"])
    assert chosen["learning_rate"] == best["learning_rate"]
    assert saved["valid_auc"][spec][0] == best["valid_auc_per_seed"][0]   # reused run
    assert saved["settings"]["budget"] == "dense" and saved["settings"]["patience"] == 2
    assert len(saved["cells"][0]["results"][spec]["per_seed"]["auc"]) == 2
    assert all(1 <= s <= 4 for s in saved["best_steps"][spec])
    # The same command again resumes: the finished model is reused, nothing retrains.
    quality.main(argv)
    out = capsys.readouterr().out
    assert "finished result reused" in out and not any(l.endswith("left") for l in out.splitlines())
    with open(tmp_path / "tiny.json") as fh:
        assert json.load(fh)["cells"] == saved["cells"]


def test_result_cache_is_keyed_by_the_models_config_defaults_included(tmp_path, monkeypatch):
    cache = quality.ResultCache(str(tmp_path), settings(), train_rows=800)
    before = cache._path("mdl")
    assert cache._path("mdl:task_head=mlp") != before
    # A new default in the registry (no spec changed) is a new result, not the cached one.
    real = quality.make_config
    monkeypatch.setattr(quality, "make_config", lambda name, overrides: dataclasses.replace(
        real(name, overrides), task_head="mlp"))
    assert cache._path("mdl") != before


# --- reference rows ----------------------------------------------------------------------
@pytest.mark.parametrize("name,fits", [("sk_logreg", 1), ("sk_hgb", 2)])
def test_reference_rows_produce_test_aucs(bench, name, fits):
    with threadpool_limits(1):       # OpenMP threads on a shared, loaded CPU spin
        result = quality.run_model(name, bench, settings(seeds=2), None,
                                   quality.Progress(10))
    assert len(result["test"]) == fits
    aucs = quality.cell_values(result["test"][0])
    assert sum(np.isfinite(aucs)) >= 4
    assert all(0.0 <= a <= 1.0 for a in aucs if np.isfinite(a))
    assert np.isfinite(result["valid_auc"]).all() and result["params"] is None


# --- learning curve ------------------------------------------------------------------------
def test_merging_keeps_the_largest_scenarios(bench):
    membership = np.array([[1, 0, 0], [1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 1],
                           [0, 0, 1]], np.float32)                   # rows: 3, 2, 2
    split = quality.Split({"scenario": membership}, np.zeros((6, 3)), None)
    small = quality.BenchData(bench.schema, {"train": split, "valid": split, "test": split})
    merged, mapping = learning_curve.merge_scenarios(small, 2)
    names = bench.schema.scenario_names                              # feed, search, mall
    assert merged.schema.scenario_names == [names[0], "merged"]
    assert mapping == {names[0]: [names[0]], "merged": names[1:]}
    np.testing.assert_array_equal(merged.splits["valid"].encoded["scenario"],
                                  [[1, 0], [1, 0], [1, 0], [0, 1], [0, 1], [0, 1]])
    assert learning_curve.merge_scenarios(small, 3)[0] is small
    with pytest.raises(ValueError, match="k >= 2"):
        learning_curve.merge_scenarios(small, 1)


def test_learning_curve_json(bench, tmp_path, monkeypatch):
    calls = []

    def fake_run_model(spec, data, s, target, progress):
        calls.append((spec, data.schema.num_scenarios, s.train_fraction, tuple(s.lrs)))
        return fake_result(spec, data, s.seeds, seed0=len(calls))
    monkeypatch.setattr(quality, "load_data", lambda args: bench)
    monkeypatch.setattr(quality, "budget_target", lambda schema, s: 1)
    monkeypatch.setattr(quality, "run_model", fake_run_model)
    argv = ["--dataset", "synthetic", "--baselines", "shared_bottom", "mmoe",
            "--train_fractions", "0.5,1", "--num_scenarios", "2,3", "--seeds", "2",
            "--lrs", "1e-3,2e-3", "--out_dir", str(tmp_path), "--work_dir", str(tmp_path)]
    learning_curve.main(argv)
    with open(tmp_path / "synthetic_learning_curve.json") as fh:
        saved = json.load(fh)
    assert saved["command"].startswith("python -m benchmarks.learning_curve")
    points = saved["points"]
    assert len(points) == 9                                      # 3 points x 3 models
    for p in points:
        assert {"train_fraction", "num_scenarios", "model", "auc_mean", "auc_std",
                "per_seed"} <= set(p)
        assert len(p["per_seed"]) == 2
        assert p["auc_std"] == pytest.approx(np.std(p["per_seed"], ddof=1))
    assert {(p["train_fraction"], p["num_scenarios"]) for p in points} == {
        (1.0, 3), (0.5, 3), (1.0, 2)}
    assert len(saved["gaps"]) == 3 and all(len(g["per_seed"]) == 2 for g in saved["gaps"])
    # Tuned once (the grid) at the full point, then the chosen rate everywhere.
    assert calls[0] == ("mdl", 3, 1.0, (1e-3, 2e-3)) and calls[3][3] == (2e-3,)
    assert ("mdl", 2, 1.0, (2e-3,)) in calls and ("mmoe", 3, 0.5, (2e-3,)) in calls
    assert os.path.getsize(tmp_path / "synthetic_learning_curve.png") > 0
    with open(tmp_path / "synthetic_learning_curve.md") as fh:
        assert ("per model: tuned once, with the most rows and scenarios on validation (lr "
                "[0.001, 0.002]") in fh.read()

    # Run again: every point comes from the cache, nothing trains.
    runs = len(calls)
    learning_curve.main(argv)
    assert len(calls) == runs


def test_learning_curve_reuses_the_quality_runs_of_the_full_point(bench, tmp_path, monkeypatch):
    argv = ["--dataset", "synthetic", "--seeds", "2", "--lrs", "2e-3",
            "--out_dir", str(tmp_path), "--work_dir", str(tmp_path)]
    specs = ["mdl", "shared_bottom", "mmoe"]
    settings = quality.settings_from_args(quality.parse_args(argv + ["--models", *specs]))
    results = [fake_result(spec, bench, 2, seed0=i) for i, spec in enumerate(specs)]
    for result in results:
        result["chosen"] = {"learning_rate": 1e-3, "weight_decay": 0.1}
    summary = quality.summarise("synthetic", "python -m benchmarks.quality", bench.schema,
                                bench.splits["test"], results, settings)
    quality.write_json(summary, str(tmp_path / "synthetic.json"))
    calls = []

    def fake_run_model(spec, data, s, target, progress):
        calls.append((spec, data.schema.num_scenarios, s.train_fraction))
        assert (s.lrs, s.weight_decays) == ([1e-3], [0.1])          # quality's choice
        return fake_result(spec, data, s.seeds)
    monkeypatch.setattr(quality, "load_data", lambda args: bench)
    monkeypatch.setattr(quality, "budget_target", lambda schema, s: 1)
    monkeypatch.setattr(quality, "run_model", fake_run_model)
    learning_curve.main(argv + ["--baselines", "shared_bottom", "mmoe", "--train_fractions",
                                "0.5,1", "--num_scenarios", "3", "--from_results",
                                str(tmp_path / "synthetic.json")])
    assert sorted(calls) == [(spec, 3, 0.5) for spec in sorted(specs)]   # 1.0 x 3: reused
    with open(tmp_path / "synthetic_learning_curve.json") as fh:
        points = json.load(fh)["points"]
    full = {p["model"]: p for p in points if p["train_fraction"] == 1.0}
    for spec in specs:
        assert full[spec]["per_seed"] == pytest.approx(
            summary["mean_over_cells"][spec]["per_seed"]["auc"])
