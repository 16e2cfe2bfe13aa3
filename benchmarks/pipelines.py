"""Preprocessing throughput: the Beam pipeline on N synthetic rows (default 1M), rows/s.

    python -m benchmarks.pipelines                      # 1M rows, DirectRunner, 1 worker
    python -m benchmarks.pipelines --rows 100000 --direct_num_workers 2 \\
        --direct_running_mode multi_processing

Writes a CSV of the built-in synthetic log (`mdl_tf.datasets.synthetic`, 18 columns:
ids, strings, a multi-valued column, dense values, multi-scenario cells, three labels)
to --work_dir, runs `pipelines.pipeline.run` on it with the synthetic schema (hash split,
vocabularies for every string feature), and appends the result to
benchmarks/results/pipelines.md: rows, wall seconds of the pipeline (CSV generation
excluded), rows/s, CPU seconds, the exact command and the machine. A script, not a test.
"""
from __future__ import annotations

import os
import platform
import resource
import shlex
import shutil
import sys
import tempfile
import time

from benchmarks import flags

# --help answers before Beam and TensorFlow load (tens of seconds on a busy machine).
flags.start_script(__name__, __doc__, flags.pipelines_parser)

import apache_beam as beam

from mdl_tf.datasets import synthetic
from pipelines import pipeline
from pipelines.options import PreprocessOptions

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMA = os.path.join(os.path.dirname(HERE), "mdl_tf", "datasets", "synthetic.yaml")


def write_input(path: str, rows: int) -> float:
    """Writes the synthetic CSV; returns the seconds it took."""
    start = time.time()
    synthetic.write_csv(path, synthetic.SyntheticLog(seed=0), rows, "train")
    return time.time() - start


def cpu_seconds() -> float:
    """User + system CPU of this process and its children (multi_processing workers)."""
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def machine() -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
            f"load average at start {load}; Python {platform.python_version()}, "
            f"Apache Beam {beam.__version__}")


def append_result(args, result: dict) -> None:
    header = not os.path.exists(args.output)
    with open(args.output, "a") as fh:
        if header:
            fh.write("# Preprocessing pipeline throughput\n\n"
                     "Produced by `benchmarks/pipelines.py` (see its docstring). Each run: "
                     "synthetic CSV -> validate -> hash split -> gzip TFRecords + "
                     "vocabularies + statistics + schema + report. Seconds are the "
                     "pipeline's wall time (CSV generation excluded); CPU seconds are the "
                     "user + system time of the process and its workers, which on a shared "
                     "machine says more than the wall time.\n\n"
                     "| rows | runner | workers / mode | seconds | rows/s | CPU seconds | "
                     "rows per CPU second | machine |\n|---|---|---|---|---|---|---|---|\n")
        fh.write(f"| {result['rows']:,} | DirectRunner | {args.direct_num_workers} / "
                 f"{args.direct_running_mode} | {result['seconds']:.1f} | "
                 f"{result['rows_per_s']:,.0f} | {result['cpu_s']:.1f} | "
                 f"{result['rows'] / result['cpu_s']:,.0f} | {result['machine']} |\n")
        fh.write(f"\nCommand: `{result['command']}`  \nOutput: {result['good']:,} examples "
                 f"(train {result['split']['train']:,} / valid {result['split']['valid']:,} / "
                 f"test {result['split']['test']:,}), {result['output_mb']:.0f} MB of gzip "
                 f"TFRecords; CSV generation took {result['generate_s']:.0f} s.\n\n")


def output_mb(directory: str) -> float:
    total = 0
    for root, _, names in os.walk(directory):
        total += sum(os.path.getsize(os.path.join(root, n)) for n in names
                     if n.endswith(".tfrecord.gz"))
    return total / 2 ** 20


def main(argv=None):
    args = flags.pipelines_parser(__doc__).parse_args(argv)
    work = args.work_dir or tempfile.mkdtemp(prefix="bench_pipelines_")
    os.makedirs(work, exist_ok=True)
    csv_path, out = os.path.join(work, "synthetic.csv"), os.path.join(work, "out")
    shutil.rmtree(out, ignore_errors=True)
    started_on = machine()
    generate_s = write_input(csv_path, args.rows)
    opts = PreprocessOptions(schema=SCHEMA, inputs=[csv_path], output_dir=out)
    beam_args = ["--runner=DirectRunner", f"--direct_num_workers={args.direct_num_workers}",
                 f"--direct_running_mode={args.direct_running_mode}"]
    start, cpu_start = time.time(), cpu_seconds()
    report = pipeline.run(opts, beam_args)
    seconds, cpu_s = time.time() - start, cpu_seconds() - cpu_start
    result = {"rows": args.rows, "seconds": seconds, "rows_per_s": args.rows / seconds,
              "cpu_s": cpu_s,
              "good": report["rows"]["good"], "split": report["split"]["rows"],
              "output_mb": output_mb(out), "generate_s": generate_s, "machine": started_on,
              "command": "python -m benchmarks.pipelines " + shlex.join(sys.argv[1:])}
    append_result(args, result)
    print(f"{args.rows:,} rows in {seconds:.1f} s ({cpu_s:.1f} CPU s): "
          f"{result['rows_per_s']:,.0f} rows/s -> {args.output}")
    if not args.work_dir:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
