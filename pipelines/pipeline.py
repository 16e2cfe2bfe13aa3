"""The Beam graph and `run()`: read -> validate -> split -> write, then the schema and report.

    records ──Validate──> good rows ──AssignSplit──> (split, row) ──> <split>-*.tfrecord.gz
               └──> bad rows ──> dead_letter/bad_rows-*.jsonl
    train rows ──> vocab/<feature>.txt, dense moments and quantiles
    everything ──> stats.json (counts, statistics)

`run()` checks the settings and the input before launching, runs the pipeline on the
runner the Beam flags choose (DirectRunner by default), then, on the launching machine,
reads stats.json and writes report.json / report.md and schema.yaml. When more than
--max_bad_fraction of the rows are bad it writes the reports but no schema.yaml, and
raises PreprocessError.
"""
from __future__ import annotations

import json
import time

import mdl_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import apache_beam as beam
import yaml
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from mdl_tf import data as data_lib
from mdl_tf import schema as schema_lib
from pipelines import files, output_schema, sources, statistics
from pipelines import options as options_lib
from pipelines import report as report_lib
from pipelines import split as split_lib
from pipelines.validate import BadRow, RowValidator

GOOD, BAD = "good", "bad"
STATS_FILE = "stats.json"
TIME_QUANTILES = 1000   # time split boundaries to 0.1% of the rows


class PreprocessError(RuntimeError):
    """The run produced no usable dataset; the message says why and where to look."""


class ValidateFn(beam.DoFn):
    """record -> (row, split input) on the main output, or a dead-letter entry on BAD.

    The split input is the time (time split) or the hash key text (hash split).
    """

    def __init__(self, validator: RowValidator, key_columns, time_column):
        super().__init__()
        self.validator, self.key_columns, self.time_column = validator, key_columns, time_column

    def process(self, record):
        source, text, cells, error = record
        if error is None:
            try:
                row, extras = self.validator(cells, source)
            except BadRow as e:
                error = e.reason, e.detail
        if error is not None:
            yield beam.pvalue.TaggedOutput(BAD, {"reason": error[0], "detail": error[1],
                                                 "source": source, "record": text})
        elif self.time_column:
            yield row, extras[self.time_column]
        else:
            yield row, split_lib.split_key(extras, self.key_columns, text)


def _assign_splits(good, opts):
    """(split, row) pairs, and the time boundaries (a PCollection) for a time split."""
    if opts.split == "hash":
        splitter = split_lib.HashSplitter(opts.split_fractions, opts.hash_buckets)
        return good | "AssignSplit" >> beam.MapTuple(lambda row, key: (splitter(key), row)), None
    if opts.time_boundaries:
        bounds = good.pipeline | "Boundaries" >> beam.Create([tuple(opts.time_boundaries)])
    else:
        bounds = (good | "Times" >> beam.Values()
                  | "TimeQuantiles" >> beam.ApproximateQuantiles.Globally(TIME_QUANTILES + 1)
                  | "Boundaries" >> beam.Map(split_lib.boundaries_from_quantiles,
                                             opts.split_fractions))
    assigned = good | "AssignSplit" >> beam.Map(
        lambda e, b: (split_lib.time_split(e[1], b), e[0]), beam.pvalue.AsSingleton(bounds))
    return assigned, bounds


def _write_examples(rows, split, schema, opts):
    serialize = lambda row: data_lib.example_from_row(schema, row).SerializeToString()  # noqa: E731
    return (rows | f"Serialize_{split}" >> beam.Map(serialize)
            | f"Write_{split}" >> beam.io.WriteToTFRecord(
                files.join(opts.output_dir, split), file_name_suffix=".tfrecord.gz",
                num_shards=opts.num_shards))


def _write_vocabulary(element, output_dir):
    name, summary = element
    if summary["tokens"]:
        files.write_text(files.join(output_dir, output_schema.vocab_file(name)),
                         "".join(t + "\n" for t in summary["tokens"]))


def _write_stats(stats, output_dir):
    files.write_text(files.join(output_dir, STATS_FILE), json.dumps(stats, indent=1))


def _statistics(bad, assigned, train, bounds, schema, opts) -> dict:
    """{section: PCollection of (key, value)}: counts and train-split statistics."""
    vocabs = train | "Vocabularies" >> statistics.Vocabularies(
        options_lib.vocab_features(opts, schema), opts.vocab_top_k, opts.vocab_min_count)
    vocabs | "WriteVocabularies" >> beam.Map(_write_vocabulary, opts.output_dir)
    sections = {
        "bad_rows": bad | "Reasons" >> beam.Map(lambda e: e["reason"])
        | "CountReasons" >> beam.combiners.Count.PerElement(),
        "split_rows": assigned | "Splits" >> beam.Keys()
        | "CountSplits" >> beam.combiners.Count.PerElement(),
        "scenarios": assigned | "ScenarioCounts" >> statistics.ScenarioCounts(schema),
        "dense": train | "DenseMoments" >> statistics.DenseMoments(schema.features),
        "quantiles": train | "DenseQuantiles" >> statistics.DenseQuantiles(schema.features,
                                                                           opts.num_quantiles),
        "vocabularies": vocabs,
    }
    if bounds is not None:
        sections["time_boundaries"] = bounds | "KeyBoundaries" >> beam.Map(lambda b: (None, b))
    return sections


def build(p, opts, schema, validator, input_format, headers=None) -> None:
    """Adds the whole preprocessing graph to pipeline p."""
    records = p | "Read" >> sources.ReadRecords(opts.inputs, input_format, headers,
                                                schema.csv_delimiter)
    checked = records | "Validate" >> beam.ParDo(
        ValidateFn(validator, opts.split_key, opts.time_column if opts.split == "time" else None)
    ).with_outputs(BAD, main=GOOD)
    bad = checked[BAD]
    (bad | "DeadLetterJson" >> beam.Map(json.dumps)
     | "DeadLetter" >> beam.io.WriteToText(files.join(opts.output_dir, "dead_letter", "bad_rows"),
                                           file_name_suffix=".jsonl"))
    assigned, bounds = _assign_splits(checked[GOOD], opts)
    parts = assigned | "BySplit" >> beam.Partition(
        lambda e, n: split_lib.SPLITS.index(e[0]), len(split_lib.SPLITS))
    for split, part in zip(split_lib.SPLITS, parts):
        _write_examples(part | f"Rows_{split}" >> beam.Values(), split, schema, opts)
    train = parts[0] | "TrainRows" >> beam.Values()
    (_statistics(bad, assigned, train, bounds, schema, opts)
     | "Statistics" >> statistics.Collect()
     | "WriteStats" >> beam.Map(_write_stats, opts.output_dir))


def _check_input(opts, schema, validator) -> tuple:
    """(format, CSV headers or None); fails before launching when the input can't work."""
    fmt = sources.detect_format(opts.inputs) if opts.input_format == "auto" else opts.input_format
    if fmt not in sources.FORMATS:
        raise sources.InputError(f"--input_format must be auto or one of {sources.FORMATS}")
    matched = sources.match_files(opts.inputs)
    sources.verify_compressed(matched)
    if fmt != "csv":
        return fmt, None
    if not schema.csv_header:
        raise sources.InputError(f"{opts.schema}: CSV input needs a header line (csv.header)")
    headers = sources.read_csv_headers(matched, schema.csv_delimiter)
    sources.check_columns(headers, validator.required_columns)
    return fmt, headers


def run(opts: options_lib.PreprocessOptions, beam_args=()) -> dict:
    """Runs the whole preprocessing; returns the report. Raises on unusable input or output."""
    start = time.time()
    schema = schema_lib.load(opts.schema)
    options_lib.check(opts, schema)
    if not files.is_empty_dir(opts.output_dir):
        raise PreprocessError(f"--output_dir {opts.output_dir} is not empty: give a new one "
                              "(shards of different runs must not mix)")
    validator = RowValidator(schema, extra_columns=opts.split_key,
                             time_column=opts.time_column if opts.split == "time" else None,
                             scenario_map=opts.scenario_map,
                             scenario_from_path=opts.scenario_from_path)
    fmt, headers = _check_input(opts, schema, validator)
    pipeline_options = PipelineOptions(list(beam_args))
    standard = pipeline_options.view_as(StandardOptions)
    standard.runner = standard.runner or "DirectRunner"
    with beam.Pipeline(options=pipeline_options) as p:
        build(p, opts, schema, validator, fmt, headers)
    stats = json.loads(files.read_text(files.join(opts.output_dir, STATS_FILE)))
    return finish(opts, schema, stats, runner=str(standard.runner), input_format=fmt,
                  seconds=time.time() - start)


def finish(opts, schema, stats, *, runner, input_format, seconds) -> dict:
    """Writes report.json / report.md, then schema.yaml unless the run failed."""
    report = report_lib.build(opts, stats, runner=runner, input_format=input_format,
                              seconds=seconds)
    out = opts.output_dir
    files.write_text(files.join(out, "report.json"), json.dumps(report, indent=1))
    files.write_text(files.join(out, "report.md"),
                     report_lib.to_markdown(report, schema.task_names))
    if report["status"] != "ok":
        raise PreprocessError(_failure(report, out))
    path = files.join(out, "schema.yaml")
    vocab_names = [f.name for f in options_lib.vocab_features(opts, schema)]
    files.write_text(path, yaml.safe_dump(output_schema.build(schema, stats, vocab_names),
                                          sort_keys=False))
    if files.is_local(path):
        schema_lib.load(path)   # the trainer's own check, vocabulary files included
    return report


def _failure(report, out) -> str:
    r = report["rows"]
    if r["read"] == 0:
        return f"no rows were read from {', '.join(report['input'])}"
    reasons = ", ".join(f"{k}: {v}" for k, v in report["bad_rows_by_reason"].items())
    return (f"{r['bad']} of {r['read']} rows ({r['bad_fraction']:.2%}) are bad "
            f"(limit --max_bad_fraction={r['max_bad_fraction']}; {reasons or 'no good rows'}). "
            f"The bad rows and their reasons are in {files.join(out, report['dead_letter'])}; "
            f"see {files.join(out, 'report.md')}. No schema.yaml was written.")
