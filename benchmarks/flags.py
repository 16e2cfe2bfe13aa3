"""Command-line flags of every benchmark, defined without importing TensorFlow.

Each benchmark calls `flags.start_script(__name__, __doc__, flags.<x>_parser)` before it
imports TensorFlow, so `python -m benchmarks.<x> --help` answers at once (its docstring,
then every flag with its default) and exits 0, and parses its flags with the same builder.
The constants the flags name live here (the benchmarks import them); BASELINES is a static
copy of mdl_tf.models.registry.BASELINES, which loads TensorFlow (tests/test_cli.py
checks it).
"""
import argparse
import functools
import os

from mdl_tf import cli, quiet

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
# --- quality and learning_curve ---
DATASETS = {"movielens100k": "movielens", "census": "census", "epinions": "epinions",
            "synthetic": "synthetic"}
REFERENCE = "mdl"
BASELINES = ("rankmixer", "shared_bottom", "mmoe", "ple", "star", "hmoe", "pepnet")
REFERENCE_MODELS = ("sk_logreg", "sk_hgb")       # benchmarks/reference_models.py
SYNTHETIC_ROWS = {"train": 80_000, "valid": 10_000, "test": 10_000}
OPTIMIZER_PAIRS = {"adam": ("adam", "adam"), "rmsprop_adagrad": ("rmsprop", "adagrad")}
BUDGETS = ("dense", "total")
# --- train_throughput ---
DEEPCTR_MMOE = "deepctr_mmoe"
THROUGHPUT_MODELS = ("mdl", "mmoe", DEEPCTR_MMOE)


def floats(text):
    return [float(x) for x in text.split(",")]


def ints(text):
    return [int(x) for x in text.split(",")]


def start_script(module_name, doc, make_parser):
    """When the benchmark runs as a script: with -h/--help, prints `make_parser(doc)`'s help
    and exits 0 (mdl_tf.cli.argparse_help_first); otherwise loads TensorFlow without the
    CUDA-stub lines of CPU-only machines (mdl_tf.quiet). Imported as a module: nothing."""
    cli.argparse_help_first(module_name, functools.partial(make_parser, doc))
    quiet.load_tensorflow_quietly(module_name)


def _parser(name, doc):
    return argparse.ArgumentParser(prog=f"python -m benchmarks.{name}", description=doc,
                                   formatter_class=cli.HelpFormatter)


def add_protocol_flags(p):
    """The flags of the data and of the training protocol (quality and learning_curve)."""
    p.add_argument("--dataset", choices=sorted(DATASETS), help="a built-in dataset")
    p.add_argument("--data_dir", default=None, help="raw files of the dataset's recipe "
                   "(default: the recipe's)")
    p.add_argument("--schema", default=None,
                   help="a schema YAML: any dataset (e.g. from mdl_tf.infer; --dataset not "
                   "needed), or one replacing a built-in dataset's schema (same recipe)")
    p.add_argument("--name", default=None, help="name of the outputs <out_dir>/<name>.json, "
                   ".md, .png (default: --dataset, or the schema's name)")
    p.add_argument("--synthetic_rows", default=None, metavar="TRAIN,VALID,TEST",
                   help="--dataset synthetic: rows per split (default "
                   f"{','.join(str(n) for n in SYNTHETIC_ROWS.values())})")
    p.add_argument("--seeds", type=int, default=3,
                   help="final runs (seeds) at the chosen setting, evaluated on test")
    p.add_argument("--tune_seeds", type=int, default=2,
                   help="seeds per tuning point; the choice is on their mean")
    p.add_argument("--lrs", type=floats, default=[2e-3, 4e-3],
                   help="learning-rate grid (comma-separated)")
    p.add_argument("--weight_decays", type=floats, default=[0.0, 0.1],
                   help="grid of the embedding tables' decoupled weight decay "
                   "(comma-separated; per step w -= lr x decay x w)")
    p.add_argument("--trials", type=int, default=0,
                   help="> 0: this many Optuna trials over the lr range x weight decays "
                        "instead of the grid")
    p.add_argument("--train_fraction", type=float, default=1.0,
                   help="fraction in (0, 1] of the training rows the final seeds train on")
    p.add_argument("--tune_train_fraction", type=float, default=1.0,
                   help="fraction in (0, 1] of the training rows the tuning runs train on")
    p.add_argument("--epochs", type=int, default=6, help="at most this many epochs per run")
    p.add_argument("--steps_per_eval", type=int, default=0,
                   help="validate every this many steps (batches; 0: once per epoch)")
    p.add_argument("--patience", type=int, default=2,
                   help="validations without improvement before stopping (0: never stop)")
    p.add_argument("--batch_size", type=int, default=1024, help="rows per training batch")
    p.add_argument("--budget", choices=BUDGETS, default="dense",
                   help="parameters matched across models: dense (no embedding tables) or "
                        "total")
    p.add_argument("--optimizer_pair", choices=sorted(OPTIMIZER_PAIRS), default="adam",
                   help="adam: Adam for both groups; rmsprop_adagrad: the paper's RMSProp "
                        "(dense) + Adagrad (embedding tables)")
    p.add_argument("--adagrad_initial_accumulator", type=float, default=1e-6,
                   help="rmsprop_adagrad: Adagrad's initial accumulator value")
    p.add_argument("--adagrad_lr_scale", type=float, default=10.0,
                   help="Adagrad's learning rate = this x the dense learning rate")
    p.add_argument("--d_model", type=int, default=32, help="token width of every model")
    p.add_argument("--num_layers", type=int, default=2, help="interaction blocks")
    p.add_argument("--num_heads", type=int, default=4, help="attention heads per block")
    p.add_argument("--ffn_multiplier", type=int, default=2,
                   help="feed-forward width = this x d_model")
    p.add_argument("--dropout", type=float, default=0.0, help="dropout rate in [0, 1)")
    p.add_argument("--warmup_steps", type=int, default=0,
                   help="linear learning-rate warm-up over this many steps (0: none)")
    p.add_argument("--jit_compile", action="store_true",
                   help="XLA-compile training steps (slower overall for short CPU runs)")
    p.add_argument("--out_dir", default="benchmarks/results",
                   help="where the .json, .md and .png go")
    p.add_argument("--work_dir", default="runs/bench_quality",
                   help="prepared data and cached results of finished runs")


def quality_parser(doc):
    p = _parser("quality", doc)
    add_protocol_flags(p)
    p.add_argument("--render", metavar="JSON",
                   help="only rewrite the .md and .png of an existing results JSON")
    p.add_argument("--models", nargs="+", default=[REFERENCE, *BASELINES, *REFERENCE_MODELS],
                   help="model names, name:key=value:... variants, or the scikit-learn "
                        f"rows {', '.join(REFERENCE_MODELS)}")
    return p


def learning_curve_parser(doc):
    p = _parser("learning_curve", doc)
    add_protocol_flags(p)
    p.add_argument("--mdl", default=REFERENCE,
                   help="the MDL spec (options as name:key=value:...)")
    p.add_argument("--baselines", nargs=2, required=True, metavar="SPEC",
                   help="the two baselines to compare with")
    p.add_argument("--train_fractions", type=floats, default=[0.1, 0.3, 1.0],
                   help="fractions in (0, 1] of the training rows (comma-separated)")
    p.add_argument("--num_scenarios", type=ints, default=[3, 8, 15],
                   help="scenario counts (comma-separated; capped at the dataset's)")
    p.add_argument("--full_grid", action="store_true",
                   help="every train fraction x scenario count (default: the two sweeps)")
    p.add_argument("--from_results", metavar="JSON",
                   help="take each model's learning rate and weight decay from this "
                        "quality results file")
    p.add_argument("--tune_each_point", action="store_true",
                   help="tune at every point instead of once")
    return p


def extend_parser(doc):
    p = _parser("extend", doc)
    p.add_argument("--dataset", default="movielens",
                   help="a built-in dataset (epinions, movielens, synthetic)")
    p.add_argument("--data_dir", default=None, help="raw files of the dataset's recipe "
                   "(default: the recipe's)")
    p.add_argument("--holdout", default=None, help="scenario held out (default: the last)")
    p.add_argument("--fractions", default=[0.01, 0.1, 1.0], type=floats,
                   help="fractions in (0, 1] of the held-out scenario's training rows "
                   "extend trains on (comma-separated)")
    p.add_argument("--seeds", type=int, default=3, help="repetitions of every arm")
    p.add_argument("--epochs", type=int, default=6,
                   help="at most this many epochs per base and full-retrain run")
    p.add_argument("--extend_epochs", type=int, default=None,
                   help="at most this many epochs per extend run (default: --epochs); the "
                   "held-out scenario's rows are few, so more passes over them are cheap")
    p.add_argument("--patience", type=int, default=1,
                   help="epochs without a better validation AUC before stopping")
    p.add_argument("--batch_size", type=int, default=1024, help="rows per training batch")
    p.add_argument("--lr", type=float, default=2e-3, help="learning rate of every run")
    p.add_argument("--d_model", type=int, default=32, help="MDL's token width")
    p.add_argument("--num_layers", type=int, default=2, help="MDL's interaction blocks")
    p.add_argument("--num_heads", type=int, default=4, help="attention heads per block")
    p.add_argument("--synthetic_rows", type=int, default=80_000,
                   help="--dataset synthetic: training rows (valid and test: a quarter each)")
    p.add_argument("--out_dir", default="benchmarks/results",
                   help="where <name>.json, .md and .png go")
    p.add_argument("--name", default="extend", help="name of the outputs")
    p.add_argument("--work_dir", default="runs/bench_extend",
                   help="prepared and held-out data, model directories")
    return p


def train_throughput_parser(doc):
    p = _parser("train_throughput", doc)
    p.add_argument("--batch_size", type=int, default=2048, help="rows per training step")
    p.add_argument("--steps", type=int, default=12, help="timed steps per config per round")
    p.add_argument("--rounds", type=int, default=4,
                   help="rounds of --steps steps, configurations taking turns")
    p.add_argument("--models", default=",".join(THROUGHPUT_MODELS),
                   help="comma-separated models to time")
    p.add_argument("--skip_default_run", action="store_true",
                   help="don't measure the default training run's wall time and peak RSS")
    p.add_argument("--quick", action="store_true",
                   help="a check in a few minutes: fewer rows and steps, train steps only, "
                        "no mixed precision, profile or default run; writes no files")
    p.add_argument("--out", default=os.path.join(RESULTS_DIR, "train_throughput.md"),
                   help="the Markdown report (the JSON goes next to it)")
    return p


def serving_parser(doc):
    p = _parser("serving", doc)
    p.add_argument("--model_dir", required=True, help="a trained run with an export")
    p.add_argument("--export_base", help="default <model_dir>/export; its newest version")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 256],
                   help="rows per request, one measurement per value")
    p.add_argument("--iterations", type=int, default=300, help="calls per path at batch 1 "
                   "(a third of it at larger batches)")
    p.add_argument("--threads", type=int, default=8, help="concurrent-load client threads")
    p.add_argument("--duration", type=float, default=15.0,
                   help="seconds of the concurrent load")
    p.add_argument("--load_batch", type=int, default=16,
                   help="rows per request under the concurrent load")
    p.add_argument("--output", default=os.path.join(RESULTS_DIR, "serving.md"),
                   help="the Markdown report")
    return p


def scaling_parser(doc):
    p = _parser("scaling", doc)
    p.add_argument("--d_models", default="16,32,64",
                   help="token widths d (comma-separated)")
    p.add_argument("--layers", default="1,2", help="depths L in blocks (comma-separated)")
    p.add_argument("--epochs", type=int, default=3, help="at most this many epochs per point")
    p.add_argument("--lr", type=float, default=3e-3, help="learning rate of every point")
    p.add_argument("--batch_size", type=int, default=1024, help="rows per training batch")
    p.add_argument("--out_dir", default="benchmarks/results",
                   help="where scaling.json, .md and .png go")
    p.add_argument("--work_dir", default="runs/bench_scaling", help="the prepared data")
    return p


def optimizers_parser(doc):
    p = _parser("optimizers", doc)
    p.add_argument("--epochs", type=int, default=3, help="at most this many epochs per run")
    p.add_argument("--work_dir", default="runs/bench_optimizers",
                   help="model directories of the runs")
    p.add_argument("--out", default="benchmarks/results/optimizers.md",
                   help="the Markdown report (the JSON goes next to it)")
    return p


def pipelines_parser(doc):
    p = _parser("pipelines", doc)
    p.add_argument("--rows", type=int, default=1_000_000, help="synthetic rows to preprocess")
    p.add_argument("--work_dir", default=None,
                   help="input CSV and pipeline output (default: a temporary directory)")
    p.add_argument("--direct_num_workers", type=int, default=1,
                   help="Beam DirectRunner workers")
    p.add_argument("--direct_running_mode", default="in_memory",
                   choices=("in_memory", "multi_threading", "multi_processing"),
                   help="Beam DirectRunner mode")
    p.add_argument("--output", default=os.path.join(RESULTS_DIR, "pipelines.md"),
                   help="the Markdown table the result is appended to")
    return p
