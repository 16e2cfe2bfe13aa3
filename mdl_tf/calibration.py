"""Post-hoc calibration per scenario x task: Platt scaling or isotonic regression.

Fitted with scikit-learn on a trained model's predictions for the validation split, saved
as `<model_dir>/calibration.json`, and applied as TF ops inside the exported signatures
(mdl_tf/export.py), so served scores are calibrated. Both maps are increasing, so AUC
does not change (isotonic: up to float32 rounding, which can tie two rows' scores on its
near-flat steps but never swaps them; < 1e-4 AUC in the tests):

  platt     p' = sigmoid(a * logit(p) + b), one (a > 0, b) per scenario x task
            (LogisticRegression on the logit, unregularised);
  isotonic  p' = (1 - MIX) f(p) + MIX p, f the isotonic regression fitted on (p, label):
            its thresholds interpolated linearly, clipped outside them (sklearn's own
            predict). f is flat between thresholds; mixing in MIX = 1e-3 of p keeps the map
            strictly increasing, so rows keep their order.

A row of several scenarios gets the mean of its scenarios' calibrated probabilities (the
weights of the fusion) from serving_default; scenario_<s> always applies s's maps. So the
order of the scores within scenario s is kept where s's maps apply: in scenario_<s>, and
for single-scenario rows. A cell with fewer than MIN_ROWS labelled rows or one class only
keeps the identity map, and the file says so ("identity": reason).

calibration.json: {"method", "fitted_on", "scenarios", "tasks",
                   "cells": {scenario: {task: {"rows", "a", "b"} | {"rows", "x", "y"}}}}
"""
from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf

FILE = "calibration.json"
METHODS = ("platt", "isotonic")
MIN_ROWS = 20
MIX = 1e-3
EPS = 1e-7


def _logit(p):
    p = np.clip(np.asarray(p, np.float64), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def fit_cell(method, probs, labels):
    """The parameters of one cell's map from predicted probabilities and 0/1 labels."""
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
    rows = int(len(labels))
    if rows < MIN_ROWS or labels.min(initial=0) == labels.max(initial=0):
        return {"rows": rows, "identity": f"{rows} labelled rows, "
                f"{int(np.sum(labels))} positive: too few to fit"}
    if method == "platt":
        from sklearn.linear_model import LogisticRegression
        fit = LogisticRegression(C=np.inf).fit(_logit(probs)[:, None], labels)
        a, b = float(fit.coef_[0, 0]), float(fit.intercept_[0])
        if a <= 0:
            return {"rows": rows, "identity": f"fitted slope {a:.3g} <= 0 would reverse "
                    "the ranking"}
        return {"rows": rows, "a": a, "b": b}
    from sklearn.isotonic import IsotonicRegression
    fit = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(probs, labels)
    return {"rows": rows, "x": fit.X_thresholds_.tolist(), "y": fit.y_thresholds_.tolist()}


def fit(method, probs, labels, membership, scenario_names, task_names, fitted_on="valid"):
    """A Calibration fitted per scenario x task: probs [N, N_t], labels [N, N_t] (1/0/-1
    missing), membership [N, N_s] 0/1 (a row counts in each of its scenarios)."""
    if method not in METHODS:
        raise ValueError(f"unknown calibration method '{method}'; choose from "
                         f"{', '.join(METHODS)}")
    probs, labels, membership = map(np.asarray, (probs, labels, membership))
    cells = {}
    for k, scenario in enumerate(scenario_names):
        cells[scenario] = {}
        for n, task in enumerate(task_names):
            keep = (membership[:, k] > 0) & (labels[:, n] >= 0)
            cells[scenario][task] = fit_cell(method, probs[keep, n], labels[keep, n])
    return Calibration({"method": method, "fitted_on": fitted_on,
                        "scenarios": list(scenario_names), "tasks": list(task_names),
                        "cells": cells})


class Calibration:
    """The fitted maps of every scenario x task, applied with TF ops (graph-safe)."""

    def __init__(self, spec):
        self.spec = spec
        self.method = spec["method"]
        cells = [[spec["cells"][s][t] for t in spec["tasks"]] for s in spec["scenarios"]]
        if self.method == "platt":
            self.a = np.array([[c.get("a", 1.0) for c in row] for row in cells], np.float32)
            self.b = np.array([[c.get("b", 0.0) for c in row] for row in cells], np.float32)
        else:
            self.x, self.y = _knots(cells)                               # [N_s, N_t, K]

    @property
    def num_tasks(self):
        return len(self.spec["tasks"])

    # --- files ------------------------------------------------------------------------
    def save(self, path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as fh:
            json.dump(self.spec, fh, indent=2)

    @classmethod
    def load(cls, path):
        with open(path) as fh:
            return cls(json.load(fh))

    def check_schema(self, schema):
        """Raises ValueError unless the calibration was fitted for the schema's cells."""
        if (self.spec["scenarios"], self.spec["tasks"]) != (schema.scenario_names,
                                                            schema.task_names):
            raise ValueError(
                f"calibration fitted for scenarios {self.spec['scenarios']} x tasks "
                f"{self.spec['tasks']}, but the model has {schema.scenario_names} x "
                f"{schema.task_names}: fit it again (mdl_tf.evaluate --calibrate)")

    # --- the maps -----------------------------------------------------------------------
    def apply(self, probs, membership):
        """probs [B, N_t], membership [B, N_s] -> calibrated probs [B, N_t] (float32)."""
        probs = tf.cast(probs, tf.float32)
        per_scenario = self.per_scenario(probs)                        # [B, N_s, N_t]
        weights = tf.cast(membership, tf.float32)
        weights = weights / tf.maximum(tf.reduce_sum(weights, axis=1, keepdims=True), 1.0)
        return tf.einsum("bs,bst->bt", weights, per_scenario)

    def per_scenario(self, probs):
        """probs [B, N_t] -> [B, N_s, N_t]: every scenario's maps applied to every row."""
        probs = tf.cast(probs, tf.float32)
        if self.method == "platt":
            p = tf.clip_by_value(probs, EPS, 1 - EPS)
            z = tf.math.log(p) - tf.math.log1p(-p)                       # [B, N_t]
            return tf.sigmoid(self.a[None] * z[:, None, :] + self.b[None])
        n_s, n_t, _ = self.x.shape
        values = tf.broadcast_to(tf.transpose(probs)[None], [n_s, n_t, tf.shape(probs)[0]])
        mapped = interpolate(tf.constant(self.x), tf.constant(self.y), values)  # [N_s, N_t, B]
        return (1 - MIX) * tf.transpose(mapped, [2, 0, 1]) + MIX * probs[:, None, :]


def _knots(cells):
    """(x, y) [N_s, N_t, K] float32: each cell's thresholds, padded to K by repeating
    the last one (a zero-width segment maps to its left end); identity cells: [0, 1]."""
    pairs = [[(c.get("x", [0.0, 1.0]), c.get("y", [0.0, 1.0])) for c in row] for row in cells]
    k = max(2, max(len(x) for row in pairs for x, _ in row))

    def pad(v):
        return list(v) + [v[-1]] * (k - len(v))
    x = np.array([[pad(x) for x, _ in row] for row in pairs], np.float32)
    y = np.array([[pad(y) for _, y in row] for row in pairs], np.float32)
    return x, y


def interpolate(x, y, values):
    """Piecewise-linear y(values) through the knots (x, y), clipped to the end knots.

    x, y [..., K] (x ascending), values [..., B] -> [..., B]; np.interp per leading index.
    """
    v = tf.clip_by_value(values, x[..., :1], x[..., -1:])
    k = tf.shape(x)[-1]
    right = tf.clip_by_value(tf.searchsorted(x, v, side="right"), 1, k - 1)   # [..., B]
    batch_dims = len(x.shape) - 1
    x0, x1 = (tf.gather(x, i, batch_dims=batch_dims) for i in (right - 1, right))
    y0, y1 = (tf.gather(y, i, batch_dims=batch_dims) for i in (right - 1, right))
    dx = x1 - x0
    t = tf.where(dx > 0, (v - x0) / tf.where(dx > 0, dx, 1.0), 0.0)
    return y0 + t * (y1 - y0)


def model_file(model_dir):
    return os.path.join(model_dir, FILE)


def load_for(model_dir, schema):
    """The model directory's Calibration (checked against its schema), or None."""
    path = model_file(model_dir)
    if not os.path.exists(path):
        return None
    calibration = Calibration.load(path)
    calibration.check_schema(schema)
    return calibration
