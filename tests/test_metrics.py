"""Metrics against direct reference computations on hand-made cases."""
import itertools
import math

import numpy as np
import pytest

from mdl_tf import metrics


def brute_auc(labels, scores):
    """P(score_pos > score_neg) + 0.5 P(tie), over all pairs."""
    pos = [s for y, s in zip(labels, scores) if y]
    neg = [s for y, s in zip(labels, scores) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("labels,scores", [
    ([1, 0, 1, 0, 1], [0.9, 0.1, 0.4, 0.5, 0.8]),
    ([0, 0, 1, 1], [0.5, 0.5, 0.5, 0.5]),                       # all tied -> 0.5
    ([1, 0, 0, 1, 0, 1, 1], [0.3, 0.3, 0.2, 0.9, 0.9, 0.1, 0.3]),
])
def test_auc_matches_pairwise_definition(labels, scores):
    assert metrics.auc(labels, scores) == pytest.approx(brute_auc(labels, scores))


def test_auc_random_cases_match_pairwise():
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, 40)
        s = np.round(rng.random(40), 1)                          # many ties
        if 0 < y.sum() < 40:
            assert metrics.auc(y, s) == pytest.approx(brute_auc(y, s))


def test_auc_undefined_with_one_class_is_nan():
    assert math.isnan(metrics.auc([1, 1], [0.2, 0.3]))


def test_gauc_averages_groups_with_both_classes_only():
    labels = [1, 0, 0, 1, 1, 1, 0, 0]
    scores = [0.9, 0.1, 0.8, 0.2, 0.5, 0.6, 0.3, 0.4]
    groups = ["a", "a", "b", "b", "c", "c", "d", "d"]            # c, d: one class only
    assert metrics.gauc(labels, scores, groups) == pytest.approx((1.0 + 0.0) / 2)


def test_logloss_reference():
    y, p = [1, 0, 1], [0.8, 0.3, 0.6]
    expected = -np.mean([math.log(0.8), math.log(0.7), math.log(0.6)])
    assert metrics.logloss(y, p) == pytest.approx(expected)


def test_scenario_task_cells_mask_scenarios_and_missing_labels():
    # 4 examples, 2 scenarios (example 3 in both), 2 tasks (example 0's task b missing).
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])
    labels = np.array([[1, -1], [0, 1], [1, 0], [0, 1]])
    membership = np.array([[1, 0], [1, 0], [0, 1], [1, 1]])
    out = metrics.scenario_task_metrics(probs, labels, membership, ["s0", "s1"], ["a", "b"])
    s0a = out["scenarios"]["s0"]["a"]                            # rows 0, 1, 3
    assert (s0a["count"], s0a["positives"]) == (3, 1)
    assert s0a["auc"] == pytest.approx(brute_auc([1, 0, 0], [0.9, 0.2, 0.4]))
    s0b = out["scenarios"]["s0"]["b"]                            # rows 1, 3 (row 0 missing)
    assert (s0b["count"], s0b["positives"]) == (2, 2) and math.isnan(s0b["auc"])
    s1b = out["scenarios"]["s1"]["b"]                            # rows 2, 3, read from column b
    assert s1b["auc"] == pytest.approx(brute_auc([0, 1], [0.3, 0.6]))
    assert s1b["logloss"] == pytest.approx(metrics.logloss([0, 1], [0.3, 0.6]))
    assert out["overall"]["b"]["count"] == 3
    table = metrics.format_table(out)
    assert "s1" in table and "(overall)" in table


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_any_non_finite_score_makes_every_metric_nan(bad):
    labels = [1, 0, 1, 0, 1, 0]
    scores = np.array([0.9, 0.1, 0.4, 0.5, 0.8, 0.2])
    scores[2] = bad
    assert math.isnan(metrics.auc(labels, scores))
    assert math.isnan(metrics.auc(labels, np.full(6, np.nan)))
    assert math.isnan(metrics.gauc(labels, scores, [1, 1, 1, 2, 2, 2]))
    assert math.isnan(metrics.logloss(labels, scores))


def test_metrics_json_is_strict_json_with_null_for_nan(tmp_path):
    import json
    path = tmp_path / "metrics.json"
    with open(path, "w") as fh:
        metrics.to_json({"overall": {"click": {"auc": float("nan"), "gauc": 0.7,
                                               "logloss": float("inf"), "count": 3}}}, fh)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    strict = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict {c}"))
    assert strict["overall"]["click"] == {"auc": None, "gauc": 0.7, "logloss": None,
                                          "count": 3}
