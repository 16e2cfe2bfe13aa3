"""Command-line flags of the absl entry points, defined without importing TensorFlow.

Each entry point calls `help_without_tensorflow` before it imports TensorFlow, so
`python -m mdl_tf.train --help` answers at once and exits 0. The model names, their
config keys and the strategies are listed here statically (tests/test_cli.py checks them
against the registry and mdl_tf/distribute.py), because reading them would load TensorFlow.
"""
import argparse
import contextlib
import sys

from absl import flags

from mdl_tf import datasets
from mdl_tf.options import OPTIMIZERS, ExtendOptions, TrainOptions

HELP_FLAGS = {"-h", "--help", "--helpshort", "--helpfull", "-?"}
STRATEGIES = ("default", "mirrored", "multi_worker", "parameter_server", "tpu")
CALIBRATION_METHODS = ("platt", "isotonic")      # = calibration.METHODS (tested)
CHARTS = ("attention", "reliability")            # = visualize.CHARTS (tested)
_BACKBONE_KEYS = ("d_model", "num_layers", "num_heads", "ffn_multiplier", "dropout",
                  "interaction", "scenario_feature", "scenario_group",
                  "scenario_embedding_dim", "tower_units")
# --config keys per --model: the backbone's, then the model's own.
MODEL_CONFIG_KEYS = {
    "hmoe": ("num_experts", "expert_units"),
    "mdl": ("domain_pre_ln", "task_tokens", "scenario_tokens", "global_token",
            "domain_attention", "shared_domain_tables", "task_head", "qkv_projection",
            "domain_learning_rate", "domain_weight_decay"),
    "mmoe": ("num_experts", "expert_units"),
    "pepnet": ("gate_hidden_units",),
    "ple": ("num_levels", "task_experts", "shared_experts", "expert_units"),
    "rankmixer": (),
    "shared_bottom": ("bottom_units",),
    "star": ("star_units", "star_layers", "aux_units"),
}
MODEL_NAMES = tuple(sorted(MODEL_CONFIG_KEYS))


def config_keys(model):
    return _BACKBONE_KEYS + MODEL_CONFIG_KEYS[model]


def help_without_tensorflow(module_name, doc, define):
    """When the calling module runs as a script with a help flag: defines its flags with
    `define`, prints `doc` and the flags, and exits 0. Otherwise does nothing."""
    if module_name != "__main__" or not HELP_FLAGS & set(sys.argv[1:]):
        return
    define()
    print(doc.strip() + "\n\nflags:\n" + flags.FLAGS.get_help(include_special_flags=False))
    sys.exit(0)


# What a user's input causes (a bad flag value, schema, row or path): "error: ..." and exit 2,
# not a traceback. data.DataError, schema.SchemaError, ... are ValueErrors.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError)


@contextlib.contextmanager
def user_errors():
    """Turns USER_ERRORS raised inside the block into "error: <message>" on stderr and
    exit status 2."""
    try:
        yield
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def argparse_help_first(module_name, make_parser):
    """The same for argparse entry points: `make_parser()` prints the help and exits 0."""
    if module_name == "__main__" and {"-h", "--help"} & set(sys.argv[1:]):
        make_parser().parse_args()


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter,
                    argparse.RawDescriptionHelpFormatter):
    """argparse help with each flag's default after its text (unless None: the text says
    what no value means), and the description (a module docstring with its example
    commands) kept as written."""

    def _get_help_string(self, action):
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def define_train_flags():
    d = TrainOptions()
    flags.DEFINE_string("dataset", d.dataset, f"A built-in dataset "
                        f"({', '.join(datasets.BUILTIN)}) or a schema YAML path (write one "
                        "with python -m mdl_tf.infer; keys: docs/schema.md).")
    flags.DEFINE_string("data_dir", None, "Where the schema's files are (default: the schema's "
                        "directory; for recipe datasets: the raw files the recipe reads).")
    flags.DEFINE_enum("model", d.model, MODEL_NAMES, "Model: mdl or a baseline on the same "
                      "feature tokenizer and backbone.")
    flags.DEFINE_string("model_dir", None, "Output directory (default runs/<dataset>-<model>).")
    flags.DEFINE_multi_string(
        "config", [], "Model config override key=value (repeatable), e.g. --config d_model=128 "
        "--config num_layers=3. Keys of every model: " + ", ".join(_BACKBONE_KEYS) + "; "
        "per model also: " + "; ".join(f"{m}: {', '.join(k)}" for m, k in
                                       MODEL_CONFIG_KEYS.items() if k) + ".")
    flags.DEFINE_integer("epochs", d.epochs, "Passes over the training data (ignored with "
                         "--steps).")
    flags.DEFINE_integer("steps", d.steps, "Train this many steps (batches) instead of "
                         "--epochs; 0: use --epochs.")
    flags.DEFINE_integer("steps_per_eval", d.steps_per_eval,
                         "With --steps: validate and checkpoint every this many steps.")
    flags.DEFINE_integer("batch_size", d.batch_size, "Global batch size in examples (split "
                         "over replicas; the paper uses 2048; small datasets need less: "
                         "training warns below 4 batches per epoch).")
    flags.DEFINE_float("learning_rate", d.learning_rate, "Learning rate of the dense weights.")
    flags.DEFINE_enum("optimizer", d.optimizer, OPTIMIZERS, "Optimizer of the dense weights.")
    flags.DEFINE_enum("embedding_optimizer", d.embedding_optimizer, OPTIMIZERS + ("same",),
                      "Optimizer of the embedding tables ('same': share --optimizer).")
    flags.DEFINE_float("embedding_learning_rate", None, "Learning rate of the embedding "
                       "tables (default: --learning_rate).")
    flags.DEFINE_float("embedding_weight_decay", d.embedding_weight_decay,
                       "Decoupled weight decay of the embedding tables (0: none): a "
                       "regulariser against ID memorisation.")
    flags.DEFINE_float("adagrad_initial_accumulator", d.adagrad_initial_accumulator,
                       "Initial Adagrad accumulator (Keras default 0.1; 1e-6..1e-3 lets "
                       "small batch-mean gradients move the embedding rows).")
    flags.DEFINE_bool("jit_compile", d.jit_compile, "Compile the training step with XLA.")
    flags.DEFINE_integer("seed", d.seed, "Random seed (weights, shuffling).")
    flags.DEFINE_integer("early_stopping_patience", d.early_stopping_patience,
                         "Epochs without a better val_auc_mean before stopping and restoring "
                         "the best epoch's weights (0: off).")
    flags.DEFINE_string("eval_split", d.eval_split, "Split evaluated at the end (writes "
                        "<model_dir>/metrics_<split>.json).")
    define_bad_row_flags()
    flags.DEFINE_bool("cache_data", d.cache_data, "Keep parsed training/validation rows in "
                      "memory after the first epoch.")
    flags.DEFINE_bool("export", d.export, "Export a SavedModel to <model_dir>/export/<version> "
                      "at the end.")
    flags.DEFINE_enum("calibrate", None, CALIBRATION_METHODS,
                      "Fit a post-hoc calibration per scenario x task on the validation "
                      "split; the export then serves calibrated probabilities.")
    flags.DEFINE_enum("strategy", d.strategy, STRATEGIES,
                      "tf.distribute strategy; multi_worker and parameter_server read the "
                      "cluster from TF_CONFIG (see BUILD.md, 'Training at scale').")
    flags.DEFINE_string("tpu", None, "--strategy tpu: TPU name or grpc address ('' = local).")
    flags.DEFINE_bool("mixed_precision", d.mixed_precision,
                      "mixed_float16 with loss scaling on GPU, mixed_bfloat16 on TPU and CPU; "
                      "logits and loss stay float32.")
    flags.DEFINE_integer("backup_every", d.backup_every,
                         "Steps between fault-tolerance backups (0: every epoch); a killed run "
                         "restarted with the same command resumes from the last one.")
    flags.DEFINE_bool("force_retrain", d.force_retrain,
                      "Train a --model_dir whose run already finished again from scratch "
                      "(its checkpoints are removed; exports are kept). Without it, such a "
                      "run is a no-op that says so.")
    flags.DEFINE_integer("ps_min_shard_bytes", d.ps_min_shard_bytes,
                         "--strategy parameter_server: variables are split over the ps tasks "
                         "in shards of at least this many bytes.")


def define_bad_row_flags():
    """--bad_rows and --max_bad_fraction: one meaning for training and evaluation."""
    d = TrainOptions()
    flags.DEFINE_enum("bad_rows", d.bad_rows, ["error", "skip"], "Bad input rows: stop with "
                      "an error naming file/line/column, or skip and count.")
    flags.DEFINE_float("max_bad_fraction", d.max_bad_fraction,
                       "With --bad_rows skip: fail when more than this fraction (0..1) of the "
                       "rows read from a split are bad (as pipelines.preprocess).")


def define_evaluate_flags():
    flags.DEFINE_string("model_dir", None, "Model directory written by mdl_tf.train (required).")
    flags.DEFINE_string("split", "valid", "Split to evaluate: train, valid or test.")
    flags.DEFINE_string("data_dir", None, "Data directory (default: the one recorded at "
                        "training).")
    flags.DEFINE_string("output", None, "Metrics JSON path (default "
                        "<model_dir>/metrics_<split>.json).")
    flags.DEFINE_integer("batch_size", 4096, "Evaluation batch size in examples.")
    define_bad_row_flags()
    flags.DEFINE_enum("calibrate", None, CALIBRATION_METHODS,
                      "Fit a post-hoc calibration per scenario x task on the validation "
                      "split and save it with the model (exports apply it).")


def define_export_flags():
    flags.DEFINE_string("model_dir", None, "Model directory written by mdl_tf.train (required).")
    flags.DEFINE_string("export_base", None, "Export base path (default <model_dir>/export).")
    flags.DEFINE_integer("version", 0, "Version number (0: max(now in seconds, last + 1)).")
    flags.DEFINE_boolean("per_task_graphs", False, "Give each scenario_<s>__<task> signature "
                         "its own graph computing only that task (MDL): fewer FLOPs per "
                         "one-task request, N_scenarios x N_tasks more graphs to trace, "
                         "store and load. Default: they read their scenario's graph.")


def define_visualize_flags():
    flags.DEFINE_string("model_dir", None, "Model directory written by mdl_tf.train (required).")
    flags.DEFINE_string("split", "test", "Split whose examples are averaged.")
    flags.DEFINE_multi_enum("charts", list(CHARTS), CHARTS,
                            "attention: domain attention maps (MDL); reliability: "
                            "reliability diagrams per scenario x task (any model).")
    flags.DEFINE_string("out_dir", None, "Output directory (default <model_dir>/attention "
                        "or <model_dir>/reliability).")
    flags.DEFINE_string("data_dir", None, "Data directory (default: the one recorded at "
                        "training).")
    flags.DEFINE_integer("batch_size", 4096, "Batch size in examples.")
    flags.DEFINE_integer("max_batches", None, "Average over at most this many batches "
                         "(default: the whole split).")


def define_extend_flags():
    _D = ExtendOptions(model_dir="", model_dir_out="")
    flags.DEFINE_string("model_dir", None, "The trained MDL model directory to extend.")
    flags.DEFINE_string("model_dir_out", None, "Where the extended model goes (a new directory).")
    flags.DEFINE_string("add_scenario", None, "Name of the scenario to add.")
    flags.DEFINE_string("add_task", None, "Name of the task to add.")
    flags.DEFINE_string("label_column", None, "--add_task: its label column (default: the name).")
    flags.DEFINE_string("init_from_task", None, "--add_task: start from this task's token "
                        "(default: the mean of the task tokens).")
    flags.DEFINE_string("dataset", None, "Schema (YAML path or built-in name) with the addition; "
                        "default: the model's schema plus the addition.")
    flags.DEFINE_string("data_dir", None, "Data directory (default: the model's).")
    flags.DEFINE_enum("finetune", _D.finetune, ["new", "all"],
                      "new: train only the new token's slices (old outputs unchanged); "
                      "all: train every weight with a small learning rate.")
    flags.DEFINE_float("learning_rate", None, "Default 2e-3 (--finetune new), 2e-4 (all).")
    flags.DEFINE_integer("epochs", _D.epochs, "Passes over the new rows (0: no training).")
    flags.DEFINE_integer("batch_size", _D.batch_size, "Batch size.")
    flags.DEFINE_float("train_fraction", _D.train_fraction,
                       "Train on this fraction of the new rows (evenly spaced).")
    flags.DEFINE_integer("early_stopping_patience", _D.early_stopping_patience,
                         "Epochs without a better validation AUC before stopping (0: off).")
    flags.DEFINE_string("eval_split", _D.eval_split, "Split evaluated at the end.")
    flags.DEFINE_enum("bad_rows", _D.bad_rows, ["error", "skip"], "Bad input rows policy.")
    flags.DEFINE_bool("jit_compile", _D.jit_compile, "Compile the training step with XLA.")
    flags.DEFINE_integer("seed", _D.seed, "Random seed.")
    flags.DEFINE_bool("export", _D.export, "Export a SavedModel at the end.")
