"""Calibration: ECE and reliability bins (mdl_tf.metrics), Platt and isotonic maps
(mdl_tf.calibration): monotone, AUC unchanged, ECE lowered on a miscalibrated case."""
import mdl_tf  # noqa: F401
import numpy as np
import pytest
import tensorflow as tf

from mdl_tf import calibration, metrics


def test_reliability_bins_have_equal_mass_and_ece_is_their_weighted_gap():
    probs = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.9, 0.05])
    labels = np.array([0, 0, 1, 0, 1, 1, 0])
    bins = metrics.reliability_bins(labels, probs, bins=3)
    assert bins["count"] == [3, 2, 2]
    np.testing.assert_allclose(bins["mean_predicted"], [0.35 / 3, 0.35, 0.75])
    np.testing.assert_allclose(bins["observed_rate"], [0.0, 0.5, 1.0])
    expected = (3 * 0.35 / 3 + 2 * 0.15 + 2 * 0.25) / 7
    np.testing.assert_allclose(metrics.ece(labels, probs, bins=3), expected)
    assert np.isnan(metrics.ece([], []))
    assert metrics.reliability_bins([], [])["count"] == []
    summary = metrics.calibration_summary(labels, probs)
    np.testing.assert_allclose([summary["mean_predicted"], summary["observed_rate"]],
                               [probs.mean(), labels.mean()])


def _miscalibrated(n, seed):
    """Labels ~ Bernoulli(p); the 'model' says p ** 3 for scenario 0 and sqrt(p) for 1."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.01, 0.99, n)
    labels = (rng.random(n) < p).astype(float)
    membership = np.zeros([n, 2])
    membership[np.arange(n), rng.integers(0, 2, n)] = 1
    predicted = np.where(membership[:, 0] > 0, p ** 3, np.sqrt(p))
    labels = np.stack([labels, np.where(rng.random(n) < 0.1, -1.0, labels)], axis=1)
    return np.stack([predicted, predicted], axis=1).astype(np.float32), labels, membership


@pytest.mark.parametrize("method", calibration.METHODS)
def test_calibration_lowers_ece_and_keeps_auc(method):
    fit_probs, fit_labels, fit_membership = _miscalibrated(4000, 0)
    fitted = calibration.fit(method, fit_probs, fit_labels, fit_membership, ["a", "b"],
                             ["t", "u"])
    probs, labels, membership = _miscalibrated(4000, 1)
    calibrated = fitted.apply(probs, membership).numpy()
    for k in range(2):
        for n in range(2):
            rows = (membership[:, k] > 0) & (labels[:, n] >= 0)
            y, before, after = labels[rows, n], probs[rows, n], calibrated[rows, n]
            assert metrics.ece(y, after) < 0.5 * metrics.ece(y, before)
            # Platt is strictly increasing; isotonic's near-flat steps can round rows
            # to equal float32 scores (ties), never swap them.
            tolerance = 1e-6 if method == "platt" else 1e-4
            assert abs(metrics.auc(y, after) - metrics.auc(y, before)) < tolerance
            order = np.argsort(before, kind="mergesort")
            assert np.all(np.diff(after[order]) >= 0)            # monotone within a cell


def test_isotonic_interpolation_matches_numpy_and_is_clipped():
    x = tf.constant([[0.1, 0.4, 0.4, 0.8]])
    y = tf.constant([[0.0, 0.3, 0.3, 0.9]])
    values = np.array([[0.0, 0.1, 0.25, 0.4, 0.6, 0.8, 1.0]], np.float32)
    got = calibration.interpolate(x, y, tf.constant(values)).numpy()
    np.testing.assert_allclose(got[0], np.interp(values[0], [0.1, 0.4, 0.8], [0, 0.3, 0.9]),
                               atol=1e-6)


def test_multi_scenario_rows_get_the_mean_of_their_scenarios_maps():
    fitted = calibration.Calibration({
        "method": "platt", "fitted_on": "valid", "scenarios": ["a", "b"], "tasks": ["t"],
        "cells": {"a": {"t": {"rows": 100, "a": 1.0, "b": 1.0}},
                  "b": {"t": {"rows": 100, "a": 2.0, "b": -1.0}}}})
    probs = np.array([[0.3], [0.3], [0.3]], np.float32)
    out = fitted.apply(probs, np.array([[1, 0], [0, 1], [1, 1]], np.float32)).numpy()[:, 0]
    z = np.log(0.3 / 0.7)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    np.testing.assert_allclose(out, [sig(z + 1), sig(2 * z - 1),
                                     (sig(z + 1) + sig(2 * z - 1)) / 2], rtol=1e-5)


def test_cells_without_enough_labels_keep_the_identity_map():
    probs = np.full([10, 1], 0.2, np.float32)
    labels = np.zeros([10, 1])
    fitted = calibration.fit("platt", probs, labels, np.ones([10, 1]), ["a"], ["t"])
    assert "identity" in fitted.spec["cells"]["a"]["t"]
    np.testing.assert_allclose(fitted.apply(probs, np.ones([10, 1])).numpy(), probs,
                               rtol=1e-5)


def test_unknown_method_and_mismatched_schema_are_refused(tiny_schema, tmp_path):
    with pytest.raises(ValueError, match="unknown calibration method 'beta'"):
        calibration.fit("beta", np.zeros([1, 1]), np.zeros([1, 1]), np.ones([1, 1]),
                        ["a"], ["t"])
    other = calibration.fit("platt", np.zeros([1, 1]), np.zeros([1, 1]), np.ones([1, 1]),
                            ["a"], ["t"])
    other.save(str(tmp_path / calibration.FILE))
    with pytest.raises(ValueError, match="fit it again"):
        calibration.load_for(str(tmp_path), tiny_schema)
    assert calibration.load_for(str(tmp_path / "nothing"), tiny_schema) is None
