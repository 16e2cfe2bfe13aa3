"""Scale-out training on tf.distribute: strategies, TF_CONFIG, input, XLA and precision policy.

    --strategy default           one device; `--jit_compile`: see XLA below
    --strategy mirrored          every local GPU, synchronous all-reduce
    --strategy multi_worker      MultiWorkerMirroredStrategy over the TF_CONFIG cluster
    --strategy parameter_server  ParameterServerStrategy: the chief coordinates, workers compute,
                                 ps tasks hold the variables (embedding tables partitioned)
    --strategy tpu               TPUStrategy (`--tpu`: name or address; '' = local TPU VM)

Every process runs the same command with its own TF_CONFIG, e.g. for multi_worker:
    TF_CONFIG='{"cluster": {"worker": ["host1:2222", "host2:2222"]},
                "task": {"type": "worker", "index": 0}}'
Parameter-server clusters name a chief (the coordinator), workers and ps tasks; the worker
and ps processes only serve (`serve_forever`), the chief runs `train()`.

Batch size: `--batch_size` is global for the synchronous strategies (split evenly over
`num_replicas_in_sync` replicas by Keras). Under parameter_server each worker step takes a
whole batch of `--batch_size`: steps are asynchronous, there is no global step batch.

XLA (`xla_policy`): default compiles the whole step (with the embedding tables' gradients
dense inside it, see RankingModel.train_step); mirrored and multi_worker compile
only forward + backward (XLA has no CPU collectives) and all-reduce and apply the
gradients outside; parameter_server runs without XLA (it cannot compile variables that
live on another task); on TPU everything is compiled anyway.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os

import mdl_tf  # noqa: F401
import tensorflow as tf
from absl import logging

STRATEGIES = ("default", "mirrored", "multi_worker", "parameter_server", "tpu")
# Workers of an in-process or small-machine PS cluster deadlock with 2 inter-op threads.
MIN_SERVER_INTER_OP_THREADS = 4
DEFAULT_PS_MIN_SHARD_BYTES = 256 << 10


class DistributionError(ValueError):
    """A bad --strategy, TF_CONFIG or batch size for the strategy; the message says which."""


# --- TF_CONFIG ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ClusterConfig:
    """The validated content of TF_CONFIG."""
    cluster: dict          # {job name: [host:port, ...]}
    task_type: str
    task_index: int

    @property
    def is_chief(self) -> bool:
        """The chief task, or worker 0 when the cluster has no chief."""
        if "chief" in self.cluster:
            return self.task_type == "chief"
        return self.task_type == "worker" and self.task_index == 0

    def num_tasks(self, job) -> int:
        return len(self.cluster.get(job, ()))


def read_tf_config(text: str | None = None) -> ClusterConfig | None:
    """Parses and validates TF_CONFIG (default: the environment); None when unset or empty."""
    text = os.environ.get("TF_CONFIG", "") if text is None else text
    if not text.strip():
        return None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise DistributionError(f"TF_CONFIG is not valid JSON: {e}") from None
    if not isinstance(config, dict) or not isinstance(config.get("cluster"), dict):
        raise DistributionError('TF_CONFIG needs a "cluster" object: '
                                '{"cluster": {"worker": ["host:port", ...]}, "task": {...}}')
    cluster = config["cluster"]
    for job, addresses in cluster.items():
        if (not isinstance(addresses, list) or not addresses
                or not all(isinstance(a, str) and _is_address(a) for a in addresses)):
            raise DistributionError(f'TF_CONFIG cluster job "{job}" must be a non-empty list '
                                    f'of "host:port" strings, got {addresses!r}')
    task = config.get("task")
    if not isinstance(task, dict) or "type" not in task:
        raise DistributionError('TF_CONFIG needs a "task" object: {"type": "worker", "index": 0}')
    task_type, index = task["type"], task.get("index", 0)
    if task_type not in cluster:
        raise DistributionError(f'TF_CONFIG task type "{task_type}" is not a job of the cluster '
                                f'({", ".join(cluster)})')
    if not isinstance(index, int) or not 0 <= index < len(cluster[task_type]):
        raise DistributionError(f'TF_CONFIG task index {index!r} is out of range for job '
                                f'"{task_type}" ({len(cluster[task_type])} tasks)')
    return ClusterConfig(cluster=cluster, task_type=task_type, task_index=index)


def _is_address(address: str) -> bool:
    host, _, port = address.rpartition(":")
    return bool(host) and port.isdigit()


def _require_cluster(name, config, jobs, forbidden=()):
    if config is None:
        raise DistributionError(f"--strategy {name} needs TF_CONFIG describing the cluster "
                                "(see BUILD.md, 'Training at scale')")
    missing = [j for j in jobs if j not in config.cluster]
    bad = [j for j in forbidden if j in config.cluster]
    if missing or bad:
        raise DistributionError(
            f"--strategy {name}: TF_CONFIG cluster has jobs {sorted(config.cluster)}; it needs "
            f"{list(jobs)}" + (f" and no {bad}" if bad else ""))


# --- strategies --------------------------------------------------------------------------
@dataclasses.dataclass
class Distribution:
    """A strategy plus what training needs to know about it."""
    name: str
    strategy: tf.distribute.Strategy
    cluster: ClusterConfig | None = None
    jit_compile: bool = False       # XLA-compile the whole train step (model.compile)
    xla_gradients: bool = False     # XLA-compile only forward + backward (RankingModel)

    @property
    def is_chief(self) -> bool:
        return self.cluster is None or self.cluster.is_chief

    @property
    def num_workers(self) -> int:
        """Processes that read input (the coordinator reads none under parameter_server)."""
        if self.cluster is None:
            return 1
        chief_trains = self.name == "multi_worker"
        return self.cluster.num_tasks("worker") + chief_trains * self.cluster.num_tasks("chief")

    @property
    def task_name(self) -> str:
        return f"{self.cluster.task_type}_{self.cluster.task_index}" if self.cluster else "chief"

    def check_batch_size(self, batch_size: int) -> None:
        replicas = self.strategy.num_replicas_in_sync
        if self.name != "parameter_server" and batch_size % replicas:
            raise DistributionError(
                f"--batch_size {batch_size} (global) must be divisible by the "
                f"{replicas} replicas of --strategy {self.name}")

    def private_dir(self, path: str) -> str:
        """`path` on the chief; a per-task directory under it elsewhere (for files that every
        synchronous worker must write, e.g. checkpoints, but only the chief's are kept)."""
        return path if self.is_chief else os.path.join(path, ".workers", self.task_name)


def make_distribution(name: str = "default", *, jit_compile: bool = False, tpu: str | None = None,
                      ps_min_shard_bytes: int = DEFAULT_PS_MIN_SHARD_BYTES,
                      tf_config: str | None = None) -> Distribution:
    """The Distribution for --strategy `name` (TF_CONFIG from the environment by default)."""
    if name not in STRATEGIES:
        raise DistributionError(f"unknown strategy '{name}'; choose from {', '.join(STRATEGIES)}")
    # Only the cluster strategies read TF_CONFIG: the others ignore a stray one.
    config = read_tf_config(tf_config) if name in ("multi_worker", "parameter_server") else None
    whole_step, gradients_only = xla_policy(name, jit_compile)
    if name == "default":
        strategy = tf.distribute.get_strategy()
    elif name == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
    elif name == "multi_worker":
        _require_cluster(name, config, ["worker"], forbidden=["ps"])
        strategy = tf.distribute.MultiWorkerMirroredStrategy(
            cluster_resolver=_resolver(config))
    elif name == "parameter_server":
        _require_cluster(name, config, ["chief", "worker", "ps"])
        if config.task_type != "chief":
            raise DistributionError(
                f"this is {config.task_type} {config.task_index} of a parameter-server cluster: "
                "it serves (serve_forever); only the chief trains")
        strategy = tf.distribute.experimental.ParameterServerStrategy(
            _resolver(config), variable_partitioner=ps_partitioner(
                config.num_tasks("ps"), ps_min_shard_bytes))
    else:
        strategy = _tpu_strategy(tpu)
    return Distribution(name, strategy, config, whole_step, gradients_only)


def _resolver(config: ClusterConfig):
    return tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(config.cluster), task_type=config.task_type,
        task_id=config.task_index, rpc_layer="grpc")


def _tpu_strategy(tpu):
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def ps_partitioner(num_ps: int, min_shard_bytes: int = DEFAULT_PS_MIN_SHARD_BYTES):
    """Splits a variable along its rows over up to `num_ps` servers, each shard at least
    `min_shard_bytes`: big embedding tables spread over the servers, small weights stay whole."""
    return tf.distribute.experimental.partitioners.MinSizePartitioner(
        min_shard_bytes=min_shard_bytes, max_shards=max(num_ps, 1))


def is_server_task(config: ClusterConfig | None = None) -> bool:
    """True for the worker and ps tasks of a parameter-server cluster (they only serve)."""
    config = config if config is not None else read_tf_config()
    return bool(config and "ps" in config.cluster and config.task_type in ("worker", "ps"))


def server_config() -> tf.compat.v1.ConfigProto:
    config = tf.compat.v1.ConfigProto()
    config.inter_op_parallelism_threads = max(MIN_SERVER_INTER_OP_THREADS, os.cpu_count() or 1)
    return config


def serve_forever(config: ClusterConfig | None = None) -> None:
    """Runs this process's worker or ps server of a parameter-server cluster; never returns."""
    config = config if config is not None else read_tf_config()
    server = tf.distribute.Server(tf.train.ClusterSpec(config.cluster), job_name=config.task_type,
                                  task_index=config.task_index, protocol="grpc",
                                  config=server_config(), start=True)
    print(f"serving as {config.task_type} {config.task_index} at "
          f"{config.cluster[config.task_type][config.task_index]}", flush=True)
    server.join()


# --- XLA and precision -------------------------------------------------------------------
def xla_policy(name: str, jit_compile: bool) -> tuple:
    """(compile the whole train step, compile only forward + backward) for a strategy.

    The default strategy compiles the whole step, on CPU too: with the embedding tables'
    gradients dense inside XLA (RankingModel.train_step) the compiled optimizer updates
    cost less than applying them outside (BUILD.md, "XLA policy")."""
    if not jit_compile or name == "tpu":       # TPUStrategy compiles the whole step itself
        return False, False
    if name == "parameter_server":
        logging.warning("--jit_compile is ignored with --strategy parameter_server: XLA cannot "
                        "compile variables that live on parameter servers; training runs "
                        "without XLA.")
        return False, False
    if name in ("mirrored", "multi_worker"):
        return False, True
    return True, False


def mixed_precision_policy(distribution: Distribution) -> str:
    """mixed_float16 (with loss scaling) on GPU, mixed_bfloat16 on TPU and CPU."""
    if distribution.name != "tpu" and tf.config.list_physical_devices("GPU"):
        return "mixed_float16"
    return "mixed_bfloat16"


@contextlib.contextmanager
def precision(policy: str | None):
    """Sets the global Keras dtype policy (models built inside use it) and restores it."""
    previous = tf.keras.mixed_precision.global_policy()
    if policy:
        tf.keras.mixed_precision.set_global_policy(policy)
    try:
        yield
    finally:
        tf.keras.mixed_precision.set_global_policy(previous)


# --- input -------------------------------------------------------------------------------
def shard_policy(num_files: int, num_workers: int):
    """FILE sharding when every worker gets a file, else DATA (each worker reads everything
    and keeps its share of every global batch)."""
    policy = tf.data.experimental.AutoShardPolicy
    return policy.FILE if num_files >= num_workers else policy.DATA


def shard_input(ds: tf.data.Dataset, distribution: Distribution, num_files: int):
    """Sets how tf.distribute shards `ds` over the workers of a synchronous strategy."""
    if distribution.num_workers <= 1:
        return ds
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = shard_policy(
        num_files, distribution.num_workers)
    return ds.with_options(options)

