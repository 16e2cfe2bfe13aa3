"""Scale-out training (mdl_tf/distribute.py): TF_CONFIG and strategy checks, a two-process
MultiWorkerMirroredStrategy run, an in-process parameter-server cluster, kill -9 and
resume, and mixed precision.

The multi-process runs start together (module fixture `jobs`) so that they overlap; each
is a tests/distribute_driver.py process with a timeout, killed if a test fails first.
Meanwhile one float32 run trains in this process (`float32_run`): the baseline of the
mixed-precision run and the uninterrupted reference of the killed job (same options).
They use a smaller schema than tiny_dataset's (conftest's micro_schema: 5 features, 2
tasks) to keep XLA and graph compilation short.
"""
import json
import os
import signal
import subprocess
import sys
import types

import mdl_tf  # noqa: F401
import numpy as np
import portpicker
import pytest
import tensorflow as tf

from conftest import REPO
from mdl_tf import distribute, train

DRIVER = os.path.join(REPO, "tests", "distribute_driver.py")
TIMEOUT = 420
MICRO_CONFIG = {"d_model": 16, "num_layers": 1, "num_heads": 2, "ffn_multiplier": 2}
# The in-process float32 run: the mixed-precision test's baseline and the kill -9 test's
# uninterrupted reference (the killed job trains with the same options).
SINGLE = dict(config=MICRO_CONFIG, steps=20, steps_per_eval=20, backup_every=5,
              batch_size=128, learning_rate=5e-3, jit_compile=False,
              early_stopping_patience=0, export=False, verbose=0)
KILL_AT_STEP = 12   # after the backup at step 10, before the next one


# --- fast checks -------------------------------------------------------------------------
def tf_config(cluster, task_type="worker", index=0):
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


def test_tf_config_is_parsed_and_the_chief_found():
    cluster = {"worker": ["localhost:1", "localhost:2"]}
    assert distribute.read_tf_config(tf_config(cluster, index=0)).is_chief
    assert not distribute.read_tf_config(tf_config(cluster, index=1)).is_chief
    with_chief = {"chief": ["h:1"], "worker": ["h:2"], "ps": ["h:3"]}
    config = distribute.read_tf_config(tf_config(with_chief, "worker", 0))
    assert not config.is_chief and distribute.is_server_task(config)
    assert distribute.read_tf_config(tf_config(with_chief, "chief", 0)).is_chief
    assert distribute.read_tf_config("") is None
    # Strategies without a cluster ignore TF_CONFIG, even a malformed one.
    assert distribute.make_distribution("default", tf_config="{oops").cluster is None


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ('{"task": {"type": "worker"}}', 'needs a "cluster"'),
    (tf_config({"worker": ["localhost"]}), '"host:port" strings'),
    (tf_config({"worker": []}), "non-empty list"),
    ('{"cluster": {"worker": ["h:1"]}}', 'needs a "task"'),
    (tf_config({"worker": ["h:1"]}, "ps"), 'task type "ps" is not a job'),
    (tf_config({"worker": ["h:1"]}, "worker", 1), "index 1 is out of range"),
])
def test_malformed_tf_config_is_rejected_with_the_reason(text, message):
    with pytest.raises(distribute.DistributionError, match=message):
        distribute.read_tf_config(text)


def test_strategy_and_cluster_mismatches_are_rejected():
    with pytest.raises(distribute.DistributionError, match="unknown strategy 'horovod'"):
        distribute.make_distribution("horovod")
    with pytest.raises(distribute.DistributionError, match="needs TF_CONFIG"):
        distribute.make_distribution("multi_worker", tf_config="")
    with pytest.raises(distribute.DistributionError, match=r"it needs \['chief', 'worker', 'ps'\]"):
        distribute.make_distribution("parameter_server",
                                     tf_config=tf_config({"worker": ["h:1"]}))
    ps_worker = tf_config({"chief": ["h:1"], "worker": ["h:2"], "ps": ["h:3"]}, "worker", 0)
    with pytest.raises(distribute.DistributionError, match="only the chief trains"):
        distribute.make_distribution("parameter_server", tf_config=ps_worker)


def test_batch_size_must_split_over_the_replicas():
    dist = distribute.Distribution("mirrored", types.SimpleNamespace(num_replicas_in_sync=3))
    with pytest.raises(distribute.DistributionError, match="divisible by the 3 replicas"):
        dist.check_batch_size(256)
    dist.check_batch_size(255)


def test_xla_policy_per_strategy(caplog):
    assert distribute.xla_policy("default", True) == (True, False)
    assert distribute.xla_policy("default", False) == (False, False)
    assert distribute.xla_policy("multi_worker", True) == (False, True)
    assert distribute.xla_policy("mirrored", True) == (False, True)
    assert distribute.xla_policy("tpu", True) == (False, False)
    assert distribute.xla_policy("multi_worker", False) == (False, False)
    with caplog.at_level("WARNING"):
        assert distribute.xla_policy("parameter_server", True) == (False, False)
    assert "XLA cannot compile variables that live on parameter servers" in caplog.text


def test_ps_partitioner_splits_only_big_variables():
    split = distribute.ps_partitioner(num_ps=2, min_shard_bytes=64 << 10)
    assert split(tf.TensorShape([100_000, 16]), tf.float32) == [2, 1]
    assert split(tf.TensorShape([64, 64]), tf.float32) == [1, 1]


def test_input_sharding_policy_and_precision_policy():
    policy = tf.data.experimental.AutoShardPolicy
    assert distribute.shard_policy(num_files=4, num_workers=2) == policy.FILE
    assert distribute.shard_policy(num_files=1, num_workers=2) == policy.DATA
    gpu = bool(tf.config.list_physical_devices("GPU"))
    assert distribute.mixed_precision_policy(distribute.make_distribution()) == (
        "mixed_float16" if gpu else "mixed_bfloat16")


def test_step_plan_is_exact_and_ps_needs_steps():
    assert train.epoch_plan(train.TrainOptions(steps=300, steps_per_eval=100)) == (3, 100)
    assert train.epoch_plan(train.TrainOptions(steps=50, steps_per_eval=100)) == (1, 50)
    with pytest.raises(ValueError, match="multiple of --steps_per_eval"):
        train.epoch_plan(train.TrainOptions(steps=250, steps_per_eval=100))
    ps = distribute.Distribution("parameter_server", None)
    with pytest.raises(distribute.DistributionError, match="needs --steps"):
        train.epoch_plan(train.TrainOptions(), ps)


def test_train_cli_reports_a_bad_tf_config(tmp_path):
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "PYTHONPATH": REPO, "TF_CONFIG": "{oops"}
    run = subprocess.run([sys.executable, "-m", "mdl_tf.train", "--strategy", "multi_worker",
                          "--model_dir", str(tmp_path)], capture_output=True, text=True,
                         env=env, cwd=REPO, timeout=120)
    assert run.returncode == 2 and "error: TF_CONFIG is not valid JSON" in run.stderr


# --- runs in other processes ------------------------------------------------------------
class Job:
    """One driver process: options -> <out>.json/.npz; stdout+stderr in <out>.log."""

    def __init__(self, out, options, env=None, **spec):
        self.out, self.spec = out, {"options": options, "out": out, **spec}
        self.env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
                    **(env or {})}
        self.process = None

    def start(self):
        with open(self.out + ".log", "w") as log:
            self.process = subprocess.Popen([sys.executable, DRIVER, json.dumps(self.spec)],
                                            stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                            cwd=REPO)
        return self

    def wait(self):
        """Return code; the job is killed if it runs past TIMEOUT."""
        try:
            return self.process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self):
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    @property
    def log(self):
        with open(self.out + ".log") as fh:
            return fh.read()

    def result(self):
        assert self.wait() == 0, self.log[-3000:]
        with open(self.out + ".json") as fh:
            result = json.load(fh)
        weights = np.load(self.out + ".npz")
        return result, [weights[k] for k in weights.files]


def localhost_addresses(n):
    return [f"localhost:{portpicker.pick_unused_port()}" for _ in range(n)]


# Which jobs each test needs: only the selected tests' jobs start.
JOBS_OF_TEST = {
    "test_multi_worker_mirrored_two_processes_with_xla": ("worker0", "worker1"),
    "test_parameter_server_cluster_trains_partitions_and_exports": ("ps",),
    "test_kill_9_then_restart_resumes_and_matches_an_uninterrupted_run": ("killed",),
}


def make_jobs(root, micro_schema, data_dir):
    def options(name, **overrides):
        return {"dataset": micro_schema, "data_dir": data_dir,
                "model_dir": os.path.join(root, name), "config": MICRO_CONFIG,
                "batch_size": 128, "early_stopping_patience": 0, "verbose": 0, **overrides}

    def job(name, opts, **spec):
        return Job(os.path.join(root, name), opts, **spec)

    workers = localhost_addresses(2)
    jobs = {f"worker{i}": job(f"worker{i}", options(
        "multi_worker", strategy="multi_worker", steps=6, steps_per_eval=6, jit_compile=True),
        env={"TF_CONFIG": tf_config({"worker": workers}, "worker", i)}) for i in range(2)}
    # Two ps tasks rather than one, so that partitioning has servers to split over.
    jobs["ps"] = job("ps", options(
        "parameter_server", strategy="parameter_server", steps=20, steps_per_eval=10,
        ps_min_shard_bytes=32 << 10, early_stopping_patience=1, jit_compile=True),
        ps_cluster={"workers": 2, "ps": 2})
    jobs["killed"] = job("killed", {**options("killed"), **SINGLE},
                         kill_at_step=KILL_AT_STEP)
    return jobs


@pytest.fixture(scope="module")
def jobs(request, micro_schema, tiny_dataset, tmp_path_factory):
    wanted = {j for item in request.session.items for j in JOBS_OF_TEST.get(item.name, ())}
    all_jobs = make_jobs(str(tmp_path_factory.mktemp("distribute")), micro_schema, tiny_dataset)
    started = {name: job.start() for name, job in all_jobs.items() if name in wanted}
    yield started
    for job in started.values():
        job.kill()


def train_here(micro_schema, data_dir, model_dir, **overrides):
    """train() in this process with the SINGLE options."""
    return train.train(train.TrainOptions(dataset=micro_schema, data_dir=data_dir,
                                          model_dir=model_dir, **{**SINGLE, **overrides}))


@pytest.fixture(scope="module")
def float32_run(jobs, micro_schema, tiny_dataset, tmp_path_factory):
    """Trained in this process while the multi-process jobs run (`jobs` starts them)."""
    return train_here(micro_schema, tiny_dataset, str(tmp_path_factory.mktemp("float32")))


def test_mixed_precision_trains_close_to_float32(float32_run, micro_schema, tiny_dataset,
                                                 tmp_path):
    results = {False: float32_run,
               True: train_here(micro_schema, tiny_dataset, str(tmp_path), mixed_precision=True)}
    model = results[True]["model"]
    policy = distribute.mixed_precision_policy(distribute.make_distribution())  # bf16 on CPU
    assert model.dtype_policy.name == policy
    assert model.feature_tokenizer.compute_dtype == tf.keras.mixed_precision.Policy(
        policy).compute_dtype
    assert tf.keras.mixed_precision.global_policy().name == "float32"   # restored
    encoded, labels = next(iter(train.training_datasets(
        model, model.schema, tiny_dataset, train.TrainOptions(batch_size=8))[1]))
    assert model.logits(encoded).dtype == tf.float32
    assert model.masked_loss(labels, model.logits(encoded), False).dtype == tf.float32
    for task, cell in results[False]["metrics"]["overall"].items():
        mixed = results[True]["metrics"]["overall"][task]
        assert mixed["auc"] == pytest.approx(cell["auc"], abs=0.02)
        assert mixed["logloss"] == pytest.approx(cell["logloss"], rel=0.02)


def test_multi_worker_mirrored_two_processes_with_xla(jobs):
    (chief, chief_weights), (other, other_weights) = [jobs[f"worker{i}"].result()
                                                      for i in range(2)]
    assert chief["xla_gradients"] and chief["steps"] == other["steps"] == 6
    assert len(chief_weights) == len(other_weights)
    for a, b in zip(chief_weights, other_weights):
        np.testing.assert_array_equal(a, b)
    model_dir = os.path.dirname(os.path.dirname(chief["export_path"]))
    assert other["export_path"] is None and other["metrics"] is None
    assert chief["metrics"]["overall"]["click"]["count"] == 2000
    assert os.listdir(os.path.join(model_dir, "export")) == [os.path.basename(
        chief["export_path"])]
    assert os.path.exists(os.path.join(chief["export_path"], "saved_model.pb"))
    assert not os.path.exists(os.path.join(model_dir, ".workers"))
    assert not os.path.exists(os.path.join(model_dir, "backup"))


def test_parameter_server_cluster_trains_partitions_and_exports(jobs):
    result, _ = jobs["ps"].result()
    assert result["steps"] == 20
    # Tables above ps_min_shard_bytes are split over both ps tasks, small ones are not.
    assert result["table_shards"]["feature_embedding/user_id"] == 2
    assert result["table_shards"]["feature_embedding/category"] == 1
    assert set(result["history"]) >= {"loss", "val_click_auc", "val_auc_mean"}
    assert os.path.exists(os.path.join(result["export_path"], "saved_model.pb"))
    assert "XLA cannot compile variables that live on parameter servers" in jobs["ps"].log


def test_kill_9_then_restart_resumes_and_matches_an_uninterrupted_run(jobs, float32_run):
    killed = jobs["killed"]
    assert killed.wait() == -signal.SIGKILL, killed.log[-3000:]
    resumed, resumed_weights = killed.start().result()      # the same command again
    assert "resuming training at step 10" in killed.log
    reference = float32_run                 # the same options, uninterrupted, in this process
    reference_weights = [v.numpy() for v in reference["model"].variables]
    assert len(resumed_weights) == len(reference_weights)
    steps = int(reference["model"].optimizer.iterations.numpy())
    assert resumed["steps"] == steps == SINGLE["steps"]
    # The restart continues the same data stream from the backup: same model.
    for a, b in zip(resumed_weights, reference_weights):
        np.testing.assert_allclose(a, b, atol=1e-5)
    for task, cell in reference["metrics"]["overall"].items():
        assert resumed["metrics"]["overall"][task]["auc"] == pytest.approx(cell["auc"], abs=1e-4)
        assert resumed["metrics"]["overall"][task]["logloss"] == pytest.approx(
            cell["logloss"], rel=1e-4)
