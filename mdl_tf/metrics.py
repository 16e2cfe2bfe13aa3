"""Per-scenario x per-task ranking metrics, computed in numpy on full prediction arrays.

AUC: the Mann-Whitney statistic with average ranks for ties. GAUC: AUC inside each group
(e.g. user, or user+query: the paper's QAUC) averaged over the groups that contain both
classes (unweighted). Logloss: mean binary cross-entropy. A metric that is undefined
(one class only) is NaN, never a made-up 0.5; so is every metric of scores that hold a
non-finite value (NaN or inf: a broken model, not a ranking). `to_json` writes NaN as
null, so the metrics files are strict JSON. Calibration: ECE over equal-mass bins, and
the mean predicted probability next to the observed positive rate.

Rows are masked twice: by scenario membership (multi-hot: an example that belongs to two
scenarios counts in both) and by label presence (a missing label, -1, is excluded from
that task only). Predictions for task n are always read from column n of the model's
output: the model has one head per task and the scenario enters through its input.
"""
import json
import math

import numpy as np

EPS = 1e-7


def auc(labels, scores):
    labels, scores = np.asarray(labels, bool), np.asarray(scores, float)
    pos = int(labels.sum())
    neg = len(labels) - pos
    if pos == 0 or neg == 0 or not np.isfinite(scores).all():
        return float("nan")
    ranks = _average_ranks(scores)
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def _average_ranks(x):
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    # Ties share the mean of the 1-based ranks they span.
    boundaries = np.flatnonzero(np.diff(sorted_x)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(x)]])
    mean_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def gauc(labels, scores, groups):
    """Mean AUC over groups that have both classes; NaN when none has."""
    labels, scores, groups = np.asarray(labels, bool), np.asarray(scores), np.asarray(groups)
    if len(labels) == 0 or not np.isfinite(scores.astype(float)).all():
        return float("nan")
    order = np.argsort(groups, kind="mergesort")
    g, y, s = groups[order], labels[order], scores[order]
    cuts = np.flatnonzero(g[1:] != g[:-1]) + 1
    values = [auc(yy, ss) for yy, ss in zip(np.split(y, cuts), np.split(s, cuts))
              if 0 < yy.sum() < len(yy)]
    return float(np.mean(values)) if values else float("nan")


def logloss(labels, probs):
    labels, probs = np.asarray(labels, float), np.asarray(probs, float)
    if len(labels) == 0 or not np.isfinite(probs).all():
        return float("nan")
    probs = np.clip(probs, EPS, 1 - EPS)
    return float(-np.mean(labels * np.log(probs) + (1 - labels) * np.log(1 - probs)))


CALIBRATION_BINS = 10


def reliability_bins(labels, probs, bins=CALIBRATION_BINS):
    """Equal-mass reliability bins: the rows sorted by predicted probability and cut into
    `bins` groups of (almost) equal size (fewer when there are fewer rows).

    Returns {"mean_predicted": [k], "observed_rate": [k], "count": [k]}, lists of floats
    (counts ints), one entry per bin, in increasing order of prediction; empty lists
    when there are no rows.
    """
    labels, probs = np.asarray(labels, float), np.asarray(probs, float)
    order = np.argsort(probs, kind="mergesort")
    parts = [p for p in np.array_split(order, min(bins, len(order))) if len(p)] \
        if len(order) else []
    return {"mean_predicted": [float(probs[p].mean()) for p in parts],
            "observed_rate": [float(labels[p].mean()) for p in parts],
            "count": [int(len(p)) for p in parts]}


def ece(labels, probs, bins=CALIBRATION_BINS):
    """Expected calibration error with equal-mass bins (Naeini et al., 2015):
    sum over bins of (rows in bin / rows) * |mean predicted - observed positive rate|.
    In probability units, 0 = calibrated; NaN without rows."""
    b = reliability_bins(labels, probs, bins)
    if not b["count"]:
        return float("nan")
    gaps = np.abs(np.subtract(b["mean_predicted"], b["observed_rate"]))
    return float(np.average(gaps, weights=b["count"]))


def calibration_summary(labels, probs, bins=CALIBRATION_BINS):
    """{"ece", "mean_predicted", "observed_rate"} of one cell (NaN without rows)."""
    empty = len(labels) == 0
    return {"ece": ece(labels, probs, bins),
            "mean_predicted": float("nan") if empty else float(np.mean(probs)),
            "observed_rate": float("nan") if empty else float(np.mean(labels))}


def cell(labels, probs, groups=None):
    """Metrics of one (rows, task) cell; labels already restricted to present ones."""
    return {"auc": auc(labels, probs),
            "gauc": gauc(labels, probs, groups) if groups is not None else float("nan"),
            "logloss": logloss(labels, probs),
            "count": int(len(labels)), "positives": int(np.sum(labels)),
            **calibration_summary(labels, probs)}


def scenario_task_metrics(probs, labels, membership, scenario_names, task_names, groups=None):
    """{"scenarios": {s: {t: cell}}, "overall": {t: cell}} from arrays:

    probs [N, N_t], labels [N, N_t] (1/0/-1 missing), membership [N, N_s] 0/1, groups [N].
    """
    probs, labels, membership = np.asarray(probs), np.asarray(labels), np.asarray(membership)
    out = {"scenarios": {}, "overall": {}}

    def compute(rows):
        result = {}
        for n, task in enumerate(task_names):
            keep = rows & (labels[:, n] >= 0)
            result[task] = cell(labels[keep, n], probs[keep, n],
                                None if groups is None else np.asarray(groups)[keep])
        return result

    for k, scenario in enumerate(scenario_names):
        out["scenarios"][scenario] = compute(membership[:, k] > 0)
    out["overall"] = compute(np.ones(len(probs), bool))
    return out


def to_json(metrics, fh):
    """Writes metrics as strict JSON: NaN and infinities (undefined metrics) become null."""
    json.dump(_finite_or_none(metrics), fh, indent=2, allow_nan=False)


def _finite_or_none(value):
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def format_table(metrics, title=None):
    """A fixed-width text table: one row per scenario x task, then the overall rows."""
    head = f"{'scenario':<12} {'task':<12} {'auc':>7} {'gauc':>7} {'logloss':>8} " \
           f"{'ece':>7} {'count':>8} {'pos':>7}"
    lines = ([title] if title else []) + [head, "-" * len(head)]
    rows = [(s, t, c) for s, tasks in metrics["scenarios"].items() for t, c in tasks.items()]
    rows += [("(overall)", t, c) for t, c in metrics["overall"].items()]
    for s, t, c in rows:
        lines.append(f"{s:<12} {t:<12} {c['auc']:>7.4f} {c['gauc']:>7.4f} "
                     f"{c['logloss']:>8.4f} {c.get('ece', float('nan')):>7.4f} "
                     f"{c['count']:>8d} {c['positives']:>7d}")
    return "\n".join(lines + [TABLE_LEGEND])


TABLE_LEGEND = ("auc: ROC AUC; gauc: mean AUC over gauc_group groups holding both classes "
                "(NaN without one); ece: expected calibration error (equal-mass bins); "
                "count: labelled rows; pos: positives. A row in several scenarios counts in "
                "each, so scenario counts can add up to more than (overall).")
