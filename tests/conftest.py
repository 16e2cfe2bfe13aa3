"""Shared fixtures. TF_USE_LEGACY_KERAS must be set before TensorFlow is imported."""
import fcntl
import json
import os
import shutil

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.abspath(os.path.join(REPO, "..", "shared", "data"))

# Small enough for the whole suite to stay fast on 2 cores, large enough to learn from.
TINY_ROWS = {"train": 6000, "valid": 2000, "test": 2000}
TINY_CONFIG = {"d_model": 16, "num_layers": 1, "num_heads": 2, "ffn_multiplier": 2}


def skip_graph_optimizations():
    """Turns off Grappler, TensorFlow's graph optimiser, in this process. It rewrites every
    graph once before its first run (train and test steps, dataset functions, signatures):
    about 4 of a tiny training run's 25 s of CPU, which the tests' small batches never earn
    back. What a graph computes is unchanged; the CLIs the tests start as subprocesses,
    the demo and the benchmarks run with it."""
    import tensorflow as tf
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})


def pytest_configure(config):
    # Under pytest-xdist the controller runs no test: TensorFlow loads only in the workers.
    if hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None):
        skip_graph_optimizations()


def shared_data(*parts):
    """Path under ../shared/data, or skip the test with the reason when it is absent."""
    path = os.path.join(SHARED_DATA, *parts)
    if not os.path.exists(path):
        pytest.skip(f"shared data not available: {path} (see ../shared/data/README.md)")
    return path


def built_once(tmp_path_factory, worker_id, name, build):
    """The path of a directory that build(path) fills once per `pytest` run: under
    pytest-xdist the first worker to ask builds it (behind a file lock) and the others
    reuse it, instead of each worker building its own copy."""
    root = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        root = root.parent                          # the workers' common base directory
    path, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)            # released when the file closes
        if not done.exists():
            shutil.rmtree(path, ignore_errors=True)     # a build interrupted earlier
            path.mkdir()
            build(str(path))
            done.touch()
    return str(path)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory, worker_id):
    """A small synthetic dataset: directory with train/valid/test.csv and schema.yaml."""
    from mdl_tf.datasets import synthetic
    return built_once(tmp_path_factory, worker_id, "tiny_synthetic",
                      lambda out: synthetic.prepare(out, rows=TINY_ROWS))


@pytest.fixture(scope="session")
def tiny_schema(tiny_dataset):
    from mdl_tf import schema
    return schema.load(os.path.join(tiny_dataset, "schema.yaml"))


def subset_schema(tiny_dataset, path, groups, num_tasks=None, **updates):
    """Writes tiny_dataset's schema.yaml with only the features of `groups` ({group:
    [feature]}), its first num_tasks tasks (None: all) and `updates` applied, to `path`;
    returns the path. Its files are tiny_dataset's: pass data_dir=tiny_dataset, or put the
    schema next to a copy of them."""
    import yaml
    with open(os.path.join(tiny_dataset, "schema.yaml")) as fh:
        schema = yaml.safe_load(fh)
    keep = {name for names in groups.values() for name in names}
    schema.update(features=[f for f in schema["features"] if f["name"] in keep], groups=groups,
                  tasks=schema["tasks"][:num_tasks], **updates)
    with open(path, "w") as fh:
        yaml.safe_dump(schema, fh, sort_keys=False)
    return path


@pytest.fixture(scope="session")
def micro_schema(tiny_dataset, tmp_path_factory):
    """Path of a schema.yaml that reads tiny_dataset's files (data_dir=tiny_dataset) as 5
    features in 2 groups and 2 tasks: smaller graphs, so less tracing and compilation, for
    tests of what does not depend on the schema's size."""
    return subset_schema(tiny_dataset, str(tmp_path_factory.mktemp("micro") / "micro.yaml"),
                         {"user": ["user_id", "activity"],
                          "item": ["item_id", "category", "price"]},
                         num_tasks=2, name="micro", scenario_priors={})


@pytest.fixture(scope="session")
def small_schema(tiny_dataset, tmp_path_factory):
    """Path of a schema.yaml that reads tiny_dataset's files (data_dir=tiny_dataset) with
    every scenario, task and scenario prior, on 8 of its 14 features in 2 groups
    (micro_schema's 5 and the 3 prior features): for tests of adding a scenario or a task,
    with smaller graphs."""
    return subset_schema(tiny_dataset, str(tmp_path_factory.mktemp("small") / "schema.yaml"),
                         {"user": ["user_id", "activity", "act_feed", "act_search", "act_mall"],
                          "item": ["item_id", "category", "price"]})


@pytest.fixture(scope="session")
def tiny_run(tiny_dataset, tmp_path_factory, worker_id):
    """A small MDL trained, evaluated and exported once per `pytest` run (built_once).

    {"model_dir", "metrics" (of valid), "export_path", "model" (restored from the last
    checkpoint, the exported weights)}; tests must not modify it.
    """
    from mdl_tf import evaluate, runs, train
    from mdl_tf.contract.versions import versions_on_disk

    def build(model_dir):
        train.train(train.TrainOptions(
            dataset=os.path.join(tiny_dataset, "schema.yaml"), model_dir=model_dir,
            config=dict(TINY_CONFIG), epochs=2, batch_size=256, jit_compile=False,
            early_stopping_patience=0, verbose=0))

    model_dir = built_once(tmp_path_factory, worker_id, "tiny_run", build)
    with open(evaluate.metrics_path(model_dir, "valid")) as fh:
        metrics = json.load(fh)
    export_base = os.path.join(model_dir, "export")
    (version,) = versions_on_disk(export_base)
    return {"model_dir": model_dir, "metrics": metrics,
            "export_path": os.path.join(export_base, str(version)),
            "model": runs.restore_model(model_dir)[0]}


# `make test` runs each file whole on one of its workers (`--dist loadfile`), handing out
# files in collection order (`--no-loadscope-reorder`). The slowest files go first, so that
# the short ones fill in at the end and the workers finish together. Ordered by the
# per-file CPU seconds of a full `make test` run (2026-12-01); add a new slow file.
SLOW_FILES_FIRST = (
    "tests/test_distribute.py",
    "tests/test_train_cli.py",
    "tests/test_train.py",
    "tests/serving/test_serving_extend.py",
    "tests/models/test_baselines.py",
    "tests/pipelines/test_pipeline_datasets.py",
    "tests/test_mdl_model.py",
    "tests/test_resume.py",
    "tests/models/test_mdl_options.py",
    "tests/test_benchmark_extend.py",
    "tests/test_benchmarks_quality.py",
    "tests/serving/test_serving_export.py",
    "tests/test_train_bad_input.py",
    "tests/models/test_mdl_ablations.py",
    "tests/serving/test_serving_calibration.py",
    "tests/test_infer.py",
    "tests/test_data.py",
)


def pytest_collection_modifyitems(items):
    """SLOW_FILES_FIRST first, in that order; the other files and every file's tests keep
    their order."""
    rank = {path: n for n, path in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))
