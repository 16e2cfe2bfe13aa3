"""Raw logs -> sharded gzip TFRecords, vocabularies, statistics and a ready schema.

    python -m pipelines.preprocess --schema mdl_tf/datasets/ali_ccp.yaml \\
        --input 'raw/ali_ccp_*.csv.gz' --output_dir data/ali_ccp --scenario_map 1=s1,2=s2,3=s3
    python -m mdl_tf.train --dataset data/ali_ccp/schema.yaml

Flags not listed here are Apache Beam pipeline options (--runner DataflowRunner|FlinkRunner|
SparkRunner, --project, --temp_location, ...); the default runner is DirectRunner.
This module only parses flags; `pipelines.pipeline.run` does the work.
"""
from __future__ import annotations

import argparse
import sys

from mdl_tf.schema import SchemaError
from pipelines import pipeline, sources
from pipelines.options import OptionsError, PreprocessOptions

_D = PreprocessOptions(schema="", inputs=[], output_dir="")


def _names(text):
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _floats(text):
    return tuple(float(t) for t in _names(text))


def _mapping(text):
    """'1=s1,2=s2' -> {'1': 's1', '2': 's2'}."""
    try:
        return dict(pair.split("=", 1) for pair in _names(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected raw=name pairs, got '{text}'") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.preprocess",
                                description=__doc__.split("\n")[0],
                                epilog="Other flags go to Apache Beam (e.g. --runner).")
    p.add_argument("--schema", required=True, help="input schema YAML (its `files` are ignored)")
    p.add_argument("--input", required=True, action="append", dest="inputs",
                   help="file glob (local, gs://, s3://, hdfs://); repeatable")
    p.add_argument("--output_dir", required=True, help="new or empty output directory")
    p.add_argument("--input_format", default=_D.input_format,
                   choices=("auto",) + sources.FORMATS, help="auto: from the file extension")
    p.add_argument("--max_bad_fraction", type=float, default=_D.max_bad_fraction,
                   help="fail when more than this fraction of the rows are bad")
    p.add_argument("--split", default=_D.split, choices=("hash", "time"))
    p.add_argument("--split_key", type=_names, default=_D.split_key,
                   help="hash split: comma-separated key columns (default: the whole record)")
    p.add_argument("--split_fractions", type=_floats, default=_D.split_fractions,
                   help="train,valid,test fractions (default 0.8,0.1,0.1)")
    p.add_argument("--hash_buckets", type=int, default=_D.hash_buckets,
                   help="hash split: buckets (fractions must be multiples of 1/buckets)")
    p.add_argument("--time_column", default=None,
                   help="time split: column with a number or an ISO-8601 date")
    p.add_argument("--time_boundaries", type=_floats, default=_D.time_boundaries,
                   help="time split: 'train_end,valid_end' (default: from --split_fractions)")
    p.add_argument("--vocab_top_k", type=int, default=_D.vocab_top_k,
                   help="largest vocabulary per feature (most frequent tokens)")
    p.add_argument("--vocab_min_count", type=int, default=_D.vocab_min_count,
                   help="rarer tokens are left out of the vocabulary (OOV)")
    p.add_argument("--skip_vocab", type=_names, default=_D.skip_vocab,
                   help="comma-separated features that keep the schema's own index")
    p.add_argument("--num_quantiles", type=int, default=_D.num_quantiles,
                   help="dense features: quantile intervals reported (10: deciles)")
    p.add_argument("--num_shards", type=int, default=_D.num_shards,
                   help="TFRecord shards per split (0: the runner decides)")
    p.add_argument("--scenario_map", type=_mapping, default={},
                   help="raw scenario value -> scenario name, e.g. 1=s1,2=s2,3=s3")
    p.add_argument("--scenario_from_path", default=None,
                   help="regex whose first group (lowercased) in each file's path is the "
                        "scenario of its rows, e.g. 'AliExpress_([A-Za-z]+)'")
    return p


def main(argv=None) -> int:
    args, beam_args = parser().parse_known_args(argv)
    opts = PreprocessOptions(**vars(args))
    try:
        report = pipeline.run(opts, beam_args)
    except (pipeline.PreprocessError, OptionsError, sources.InputError, SchemaError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    rows, split = report["rows"], report["split"]["rows"]
    print(f"{rows['good']} examples ({', '.join(f'{s} {n}' for s, n in split.items())}) and "
          f"{rows['bad']} bad rows ({rows['bad_fraction']:.2%}) -> {opts.output_dir}\n"
          f"train: python -m mdl_tf.train --dataset {opts.output_dir}/schema.yaml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
