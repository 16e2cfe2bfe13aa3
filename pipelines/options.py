"""The preprocessing pipeline's settings (one per command-line flag) and their checks."""
from __future__ import annotations

import dataclasses
import math

from mdl_tf.schema import Schema
from pipelines import split as split_lib


class OptionsError(ValueError):
    """Settings that contradict each other or the schema; the message names the flag."""


@dataclasses.dataclass
class PreprocessOptions:
    schema: str
    inputs: list
    output_dir: str
    input_format: str = "auto"          # csv | json | parquet | auto (from the extension)
    max_bad_fraction: float = 0.01
    split: str = "hash"                 # hash | time
    split_key: tuple = ()               # hash split: key columns; () = the whole record
    split_fractions: tuple = (0.8, 0.1, 0.1)
    hash_buckets: int = 10
    time_column: str | None = None
    time_boundaries: tuple = ()         # time split: (train end, valid end); () = quantiles
    vocab_top_k: int = 1_000_000
    vocab_min_count: int = 1
    skip_vocab: tuple = ()              # features that keep the schema's own index
    num_quantiles: int = 10
    num_shards: int = 0                 # per split; 0 = the runner decides
    scenario_map: dict = dataclasses.field(default_factory=dict)
    scenario_from_path: str | None = None


def check(opts: PreprocessOptions, schema: Schema) -> None:
    """Raises OptionsError for the first inconsistent setting."""
    _check_fractions(opts)
    if opts.split == "hash":
        if opts.time_boundaries:
            raise OptionsError("--time_boundaries needs --split time")
        try:
            split_lib.bucket_thresholds(opts.split_fractions, opts.hash_buckets)
        except ValueError as e:
            raise OptionsError(str(e)) from None
    elif opts.split == "time":
        if not opts.time_column:
            raise OptionsError("--split time needs --time_column")
        if opts.split_key:
            raise OptionsError("--split_key is only used by --split hash")
        if opts.time_boundaries and (len(opts.time_boundaries) != 2
                                     or opts.time_boundaries[0] > opts.time_boundaries[1]):
            raise OptionsError("--time_boundaries needs two ascending times: train end, valid end")
    else:
        raise OptionsError(f"--split must be hash or time, got '{opts.split}'")
    if not 0 <= opts.max_bad_fraction <= 1:
        raise OptionsError("--max_bad_fraction must be in [0, 1]")
    if opts.vocab_top_k < 1 or opts.vocab_min_count < 1 or opts.num_quantiles < 2:
        raise OptionsError("--vocab_top_k and --vocab_min_count must be >= 1, "
                           "--num_quantiles >= 2")
    _check_schema_refs(opts, schema)


def _check_fractions(opts):
    fr = opts.split_fractions
    if len(fr) != 3 or any(f < 0 for f in fr) or not math.isclose(sum(fr), 1.0, abs_tol=1e-6):
        raise OptionsError(f"--split_fractions needs three non-negative fractions "
                           f"(train, valid, test) summing to 1, got {list(fr)}")
    if fr[0] == 0 or fr[1] == 0:
        raise OptionsError("--split_fractions: train and valid must be > 0 (training needs both)")


def _check_schema_refs(opts, schema):
    categorical = {f.name for f in schema.features if f.type != "dense"}
    unknown = [n for n in opts.skip_vocab if n not in categorical]
    if unknown:
        raise OptionsError(f"--skip_vocab: {unknown} are not categorical features of the schema")
    bad = [v for v in opts.scenario_map.values() if v not in schema.scenario_names]
    if bad:
        raise OptionsError(f"--scenario_map: {bad} are not scenario names "
                           f"({', '.join(schema.scenario_names)})")


def vocab_features(opts: PreprocessOptions, schema: Schema) -> list:
    """Features that get a computed vocabulary: categorical ones not indexed by vocab_size."""
    return [f for f in schema.features
            if f.type != "dense" and f.vocab_size is None and f.name not in opts.skip_vocab]
