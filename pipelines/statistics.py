"""Dataset statistics as Beam transforms, and their assembly into one JSON-ready dict.

Computed on the train split (what the model normalises and indexes with):
  vocabularies  per categorical feature: tokens with count >= min_count, the top_k most
                frequent, ordered by count then token; plus distinct tokens, occurrences
                and the share of occurrences the vocabulary covers
  moments       per dense feature, of the value the model sees (log1p(x) under log1p):
                count, missing, mean, std, min, max
  quantiles     per dense feature, of the raw value: num_quantiles + 1 evenly spaced
                approximate quantiles [min, ..., max] (boundaries for bucketing)
Computed on every split:
  scenarios     per split x scenario: rows, and per task labelled rows and positives
                (a row in several scenarios counts in each)
"""
from __future__ import annotations

import math

import apache_beam as beam

from pipelines.split import SPLITS


# --- dense -------------------------------------------------------------------------------
class MomentsFn(beam.CombineFn):
    """count, missing, mean, std, min, max; merges partial results exactly (Chan et al.)."""

    def create_accumulator(self):
        return 0, 0, 0.0, 0.0, math.inf, -math.inf   # n, missing, mean, M2, min, max

    def add_input(self, acc, x):
        n, missing, mean, m2, lo, hi = acc
        if x is None:
            return n, missing + 1, mean, m2, lo, hi
        n += 1
        delta = x - mean
        mean += delta / n
        return n, missing, mean, m2 + delta * (x - mean), min(lo, x), max(hi, x)

    def merge_accumulators(self, accumulators):
        n, missing, mean, m2, lo, hi = self.create_accumulator()
        for bn, bmiss, bmean, bm2, blo, bhi in accumulators:
            total = n + bn
            if bn:
                delta = bmean - mean
                mean += delta * bn / total
                m2 += bm2 + delta * delta * n * bn / total
            n, missing, lo, hi = total, missing + bmiss, min(lo, blo), max(hi, bhi)
        return n, missing, mean, m2, lo, hi

    def extract_output(self, acc):
        n, missing, mean, m2, lo, hi = acc
        if n == 0:
            return {"count": 0, "missing": missing}
        return {"count": n, "missing": missing, "mean": mean, "std": math.sqrt(m2 / n),
                "min": lo, "max": hi}


def model_value(feature, x):
    """The dense value the model normalises (None stays None: a missing cell)."""
    return math.log1p(x) if x is not None and feature.log1p else x


class DenseMoments(beam.PTransform):
    """rows -> (feature name, moments dict) for every dense feature."""

    def __init__(self, features):
        super().__init__()
        self.features = [f for f in features if f.type == "dense"]

    def expand(self, rows):
        features = self.features

        def values(row):
            return [(f.name, model_value(f, row[f.source_column])) for f in features]
        return (rows | "Values" >> beam.FlatMap(values)
                | "Moments" >> beam.CombinePerKey(MomentsFn()))


class DenseQuantiles(beam.PTransform):
    """rows -> (feature name, [min, ..., max]) of the raw values."""

    def __init__(self, features, num_quantiles):
        super().__init__()
        self.features = [f for f in features if f.type == "dense"]
        self.num_quantiles = num_quantiles

    def expand(self, rows):
        features = self.features

        def values(row):
            return [(f.name, row[f.source_column]) for f in features
                    if row[f.source_column] is not None]
        return (rows | "Values" >> beam.FlatMap(values)
                | "Quantiles" >> beam.ApproximateQuantiles.PerKey(self.num_quantiles + 1))


# --- vocabularies ------------------------------------------------------------------------
def _tokens(row, features):
    """(feature name, token) for every token of the row (newlines cannot go in a vocab file)."""
    out = []
    for f in features:
        value = row[f.source_column]
        if value is None:
            continue
        for token in (value if isinstance(value, list) else [value]):
            token = str(token)
            if "\n" not in token and "\r" not in token:
                out.append((f.name, token))
    return out


def _summarise(element, min_count):
    """(name, {counts, top}) -> (name, vocabulary summary with its ordered tokens)."""
    name, grouped = element
    distinct, occurrences = (list(grouped["counts"]) or [(0, 0)])[0]
    top = sorted(next(iter(grouped["top"]), []), key=lambda ct: (-ct[0], ct[1]))
    covered = sum(c for c, _ in top)
    return name, {"tokens": [t for _, t in top], "size": len(top), "distinct": distinct,
                  "occurrences": occurrences,
                  "coverage": covered / occurrences if occurrences else 0.0,
                  "min_count": min_count}


def _add_pairs(pairs):
    """Element-wise sum of (a, b) pairs (a CombineFn for counts)."""
    a = b = 0
    for x, y in pairs:
        a, b = a + x, b + y
    return a, b


class Vocabularies(beam.PTransform):
    """rows -> (feature name, summary incl. "tokens", most frequent first)."""

    def __init__(self, features, top_k, min_count):
        super().__init__()
        self.features, self.top_k, self.min_count = list(features), top_k, min_count

    def expand(self, rows):
        counts = (rows | "Tokens" >> beam.FlatMap(_tokens, self.features)
                  | "Count" >> beam.combiners.Count.PerElement()
                  | "ByFeature" >> beam.Map(lambda kv: (kv[0][0], (kv[1], kv[0][1]))))
        totals = (counts | "OnePerToken" >> beam.MapTuple(lambda name, ct: (name, (1, ct[0])))
                  | "Totals" >> beam.CombinePerKey(_add_pairs))
        min_count = self.min_count
        top = (counts | "MinCount" >> beam.Filter(lambda kv: kv[1][0] >= min_count)
               # Largest (count, token): ties at the cut are decided by token, deterministically.
               | "TopK" >> beam.combiners.Top.LargestPerKey(self.top_k))
        return ({"counts": totals, "top": top} | "Join" >> beam.CoGroupByKey()
                | "Summarise" >> beam.Map(_summarise, min_count))


# --- label counts ------------------------------------------------------------------------
class ScenarioCounts(beam.PTransform):
    """(split, row) -> ((split, scenario, task or None), (count, positives)).

    Task None counts the rows; a task counts its labelled rows and positives.
    """

    def __init__(self, schema):
        super().__init__()
        self.schema = schema

    def expand(self, assigned):
        scenario_column = self.schema.scenario.column
        tasks = [(t.name, t.column) for t in self.schema.tasks]

        def counts(element):
            split, row = element
            out = []
            for scenario in row[scenario_column]:
                out.append(((split, scenario, None), (1, 0)))
                out += [((split, scenario, name), (1, row[col]))
                        for name, col in tasks if row[col] is not None]
            return out
        return (assigned | "Counts" >> beam.FlatMap(counts)
                | "Sum" >> beam.CombinePerKey(_add_pairs))


# --- assembly ----------------------------------------------------------------------------
class Collect(beam.PTransform):
    """{section: PCollection of (key, value)} -> one element: the statistics dict."""

    def expand(self, sections):
        tagged = [pcoll | f"Tag_{name}" >> beam.Map(lambda kv, s: (s, kv[0], kv[1]), name)
                  for name, pcoll in sections.items()]
        return (tagged | "Flatten" >> beam.Flatten()
                | "ToList" >> beam.combiners.ToList()
                | "Assemble" >> beam.Map(assemble))


def assemble(entries) -> dict:
    """(section, key, value) triples -> the statistics dict written to stats.json."""
    stats = {"bad_rows": {}, "split_rows": {s: 0 for s in SPLITS}, "scenarios": {},
             "dense": {}, "quantiles": {}, "vocabularies": {}, "time_boundaries": None}
    for section, key, value in entries:
        if section == "scenarios":
            split, scenario, task = key
            entry = stats["scenarios"].setdefault(split, {}).setdefault(
                scenario, {"rows": 0, "tasks": {}})
            if task is None:
                entry["rows"] = value[0]
            else:
                entry["tasks"][task] = {"count": value[0], "positives": value[1]}
        elif section == "time_boundaries":
            stats["time_boundaries"] = list(value)
        elif section == "vocabularies":
            stats["vocabularies"][key] = {k: v for k, v in value.items() if k != "tokens"}
        else:
            stats[section][key] = value
    return stats
