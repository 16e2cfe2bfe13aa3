"""Deterministic train/valid/test assignment: by a hashed key, or by time.

Hashed: bucket = first 8 bytes of md5(key), big-endian, modulo `buckets`; the first
fractions[0] * buckets buckets are train, the next fractions[1] * buckets valid, the rest
test. The key is the split-key columns' text joined by "-", or the whole record text.
With key `user_id,item_id` and 10 buckets this is the MovieLens reference split of
../shared/data/movielens_100k_mdmt/README.md.

Time: rows before the first boundary are train, before the second valid, the rest test
(a timestamp equal to a boundary goes to the later split). Boundaries are given, or taken
from the train and train+valid fractions' quantiles of the time column.
"""
from __future__ import annotations

import bisect
import math

from mdl_tf.datasets.splits import hash_bucket

SPLITS = ("train", "valid", "test")


def bucket_thresholds(fractions, buckets: int) -> tuple:
    """Cumulative bucket counts that end train and valid; ValueError if they are not whole."""
    ends, total = [], 0.0
    for f in fractions[:2]:
        total += f
        ends.append(round(total * buckets))
        if abs(total * buckets - ends[-1]) > 1e-6:
            raise ValueError(f"split fractions {list(fractions)} are not multiples of "
                             f"1/{buckets}: raise --hash_buckets")
    return tuple(ends)


class HashSplitter:
    """Key text -> split name."""

    def __init__(self, fractions, buckets: int):
        self.buckets = buckets
        self.thresholds = bucket_thresholds(fractions, buckets)

    def __call__(self, key: str) -> str:
        return SPLITS[bisect.bisect_right(self.thresholds, hash_bucket(key, self.buckets))]


def split_key(extras: dict, key_columns, record_text: str) -> str:
    return "-".join(extras[c] for c in key_columns) if key_columns else record_text


def time_split(t: float, boundaries) -> str:
    """Split of time t given (train end, valid end)."""
    return SPLITS[bisect.bisect_right(list(boundaries), t)]


def boundaries_from_quantiles(quantiles, fractions) -> tuple:
    """(train end, valid end) from evenly spaced quantiles [min, ..., max] of the times."""
    if not quantiles:   # no good rows: nothing to split (the bad-row guard reports it)
        return math.inf, math.inf
    steps = len(quantiles) - 1
    train_end = quantiles[round(fractions[0] * steps)]
    # With no test split, the latest rows (equal to the max) must stay in valid.
    valid_end = (quantiles[round((fractions[0] + fractions[1]) * steps)] if fractions[2] > 0
                 else math.inf)
    return float(train_end), float(valid_end)
