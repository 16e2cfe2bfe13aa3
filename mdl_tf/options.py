"""Training options: what `mdl_tf.train` takes, importable without TensorFlow (the CLIs'
--help reads the defaults from here before TensorFlow loads)."""
from __future__ import annotations

import dataclasses

OPTIMIZERS = ("adam", "adagrad", "rmsprop", "sgd")
DEFAULT_PS_MIN_SHARD_BYTES = 256 << 10   # = distribute.DEFAULT_PS_MIN_SHARD_BYTES (tested)


@dataclasses.dataclass
class TrainOptions:
    dataset: str = "synthetic"
    data_dir: str | None = None
    model: str = "mdl"
    model_dir: str = "runs/default"
    config: dict = dataclasses.field(default_factory=dict)
    epochs: int = 3
    steps: int = 0                   # > 0: train this many steps (overrides epochs)
    steps_per_eval: int = 100        # with steps: evaluate/checkpoint every this many steps
    batch_size: int = 2048           # global: split over the replicas of the strategy
    learning_rate: float = 2e-3
    optimizer: str = "adam"
    embedding_optimizer: str = "adam"   # "same": one optimizer for all weights
    embedding_learning_rate: float | None = None
    embedding_weight_decay: float = 0.0  # decoupled (AdamW-style) decay of the tables
    adagrad_initial_accumulator: float = 0.1   # Keras' default; small values suit a mean loss
    # Off: every run would pay XLA's compilation at start, which short runs never earn
    # back; on CPU XLA runs MDL's train step 1.35x faster at batch 2048
    # (benchmarks/results/train_throughput.md): pass --jit_compile for long runs.
    jit_compile: bool = False
    seed: int = 0
    early_stopping_patience: int = 2
    eval_split: str = "valid"
    bad_rows: str = "error"
    max_bad_fraction: float = 0.01   # with bad_rows="skip": fail above this fraction
    cache_data: bool = False         # keep parsed rows in memory (datasets that fit in RAM)
    export: bool = True
    calibrate: str | None = None     # platt | isotonic: post-hoc, fitted on "valid"
    verbose: int | None = None
    strategy: str = "default"        # see cli.STRATEGIES (distribute.STRATEGIES)
    tpu: str | None = None           # --strategy tpu: TPU name or address ("" = local)
    mixed_precision: bool = False    # mixed_float16 on GPU, mixed_bfloat16 on TPU and CPU
    backup_every: int = 100          # steps between fault-tolerance backups (0: every epoch)
    ps_min_shard_bytes: int = DEFAULT_PS_MIN_SHARD_BYTES
    callbacks: list = dataclasses.field(default_factory=list)   # extra Keras callbacks
    force_retrain: bool = False      # a finished model_dir: start over instead of a no-op


def suggested_batch_size(rows: int, steps: int = 20) -> int:
    """The power of two giving about `steps` steps per epoch over `rows`, in [1, 2048]."""
    return min(2048, 1 << max(0, max(rows // steps, 1).bit_length() - 1))


@dataclasses.dataclass
class ExtendOptions:
    """What `mdl_tf.extend` takes (see its docstring)."""
    model_dir: str
    model_dir_out: str
    add_scenario: str | None = None
    add_task: str | None = None
    label_column: str | None = None   # --add_task: its label column (default: the name)
    init_from_task: str | None = None  # --add_task: copy this task's token (default: mean)
    dataset: str | None = None        # schema with the addition (default: old one + it)
    data_dir: str | None = None       # default: the old run's data directory
    finetune: str = "new"             # "new": only the new token's slices; "all"
    learning_rate: float | None = None  # default 2e-3 (new) or 2e-4 (all)
    epochs: int = 5
    batch_size: int = 512
    train_fraction: float = 1.0       # use this fraction of the new rows (evenly spaced)
    early_stopping_patience: int = 2
    eval_split: str = "valid"
    bad_rows: str = "error"
    jit_compile: bool = False
    seed: int = 0
    export: bool = True
    verbose: int = 0

    @property
    def kind(self):
        return "scenario" if self.add_scenario else "task"

    @property
    def added(self):
        return self.add_scenario or self.add_task
