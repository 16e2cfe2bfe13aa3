"""benchmarks/extend.py on tiny synthetic data: the arms it runs and the files it writes."""
import json
import os

import mdl_tf  # noqa: F401
import numpy as np

from benchmarks import extend as bench


def test_extend_benchmark_writes_every_arm_and_resumes_after_its_last_seed(tmp_path):
    argv = [
        "--dataset", "synthetic", "--synthetic_rows", "2000", "--holdout", "mall",
        "--seeds", "1", "--epochs", "1", "--extend_epochs", "2", "--fractions", "1",
        "--d_model", "8", "--num_layers", "1", "--num_heads", "2", "--batch_size", "256",
        "--work_dir", str(tmp_path / "work"), "--out_dir", str(tmp_path / "out"),
        "--name", "extend_tiny"]
    summary = bench.main(argv)
    with open(tmp_path / "out" / "extend_tiny.json") as fh:
        saved = json.load(fh)
    assert saved["settings"]["epochs"] == 1 and saved["settings"]["extend_epochs"] == 2
    assert saved["holdout"] == "mall" and saved["tasks"] == ["click", "like", "favourite"]
    assert [a["arm"] for a in saved["arms"]] == [
        "base (without the scenario)", "zero-shot (global token)", "extend 100%",
        "full retrain"]
    for arm in saved["arms"][1:]:
        assert set(arm["auc"]) == set(saved["tasks"])
        click = arm["auc"]["click"]
        assert 0.0 <= click["mean"] <= 1.0 and click["std"] is None  # one seed: no std
        assert arm["seconds"]["mean"] > 0
    assert saved["arms"][0]["auc"] is None
    assert np.isclose(summary["arms"][1]["seconds"]["mean"], saved["arms"][1]["seconds"]["mean"])
    assert "| zero-shot (global token) |" in (tmp_path / "out" / "extend_tiny.md").read_text()
    assert (tmp_path / "out" / "extend_tiny.png").read_bytes()[:4] == b"\x89PNG"
    # Run again: the finished seed is read back from work_dir/seed0.json, nothing trains.
    assert os.path.exists(tmp_path / "work" / "seed0.json")
    again = bench.main(argv)
    for a, b in zip(again["arms"], summary["arms"]):   # NaN where a cell has one class
        np.testing.assert_equal(a["auc"], b["auc"])
    assert [a["seconds"] for a in again["arms"]] == [a["seconds"] for a in summary["arms"]]
