"""The schema written next to the TFRecords: the input schema with the computed statistics.

Changes from the input schema: `format: tfrecord`; `files` names the shards
(`<split>-*.tfrecord.gz`, relative to the output dir) of the splits that have rows; no
recipe; dense features get the train split's mean and std (of log1p(x) under log1p);
features with a computed vocabulary are indexed by `vocabulary_file: vocab/<name>.txt`
instead of their hash buckets / inline vocabulary. A feature whose vocabulary came out
empty (every token under --vocab_min_count) keeps its input index. Inline vocabularies
of the other features stay inline, because a `vocabulary_file` of the input schema is
relative to that schema's directory, not to the output dir.
"""
from __future__ import annotations

import dataclasses

from mdl_tf.schema import Schema

VOCAB_DIR = "vocab"


def vocab_file(name: str) -> str:
    return f"{VOCAB_DIR}/{name}.txt"


def shard_pattern(split: str) -> str:
    return f"{split}-*.tfrecord.gz"


def _with_moments(feature, moments):
    if feature.type != "dense" or not moments or not moments.get("count"):
        return feature
    # A constant column has std 0; the schema needs std > 0 and any std centres it at 0.
    return dataclasses.replace(feature, mean=moments["mean"], std=moments["std"] or 1.0)


def build(schema: Schema, stats: dict, vocab_names) -> dict:
    """The output schema as a YAML-ready dict."""
    features = tuple(_with_moments(f, stats["dense"].get(f.name)) for f in schema.features)
    splits = [s for s, n in stats["split_rows"].items() if n > 0]
    out = dataclasses.replace(schema, format="tfrecord", files={s: shard_pattern(s) for s in splits},
                              features=features, recipe=None, recipe_options={}).to_dict()
    for feat in out["features"]:
        feat.pop("vocabulary_file", None)
        vocab = stats["vocabularies"].get(feat["name"])
        if feat["name"] in vocab_names and vocab and vocab["size"] > 0:
            feat.pop("vocabulary", None)
            feat.pop("hash_buckets", None)
            feat["vocabulary_file"] = vocab_file(feat["name"])
    return out
