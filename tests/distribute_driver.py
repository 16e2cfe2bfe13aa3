"""Runs train() in its own process for the distribution tests (tests/test_distribute.py).

    python tests/distribute_driver.py '{"options": {...}, "out": "/tmp/x", ...}'

options:      TrainOptions fields (TF_CONFIG comes from the environment)
out:          writes <out>.npz (final weights) and <out>.json (metrics, export path, steps)
kill_at_step: SIGKILL this process when training reaches that step, unless <out>.killed
              exists (it is created first): the same command then resumes and finishes
ps_cluster:   {"workers": W, "ps": P}: start W worker and P ps servers in this process and
              train as the chief of that cluster (an in-process parameter-server cluster)
"""
import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import mdl_tf  # noqa: E402,F401
import numpy as np  # noqa: E402
import portpicker  # noqa: E402
import tensorflow as tf  # noqa: E402

from conftest import skip_graph_optimizations  # noqa: E402  (this script's directory)
from mdl_tf import distribute, train  # noqa: E402

# As in the test process: the kill -9 test compares this process's weights with its.
skip_graph_optimizations()


class KillAtStep(tf.keras.callbacks.Callback):
    """kill -9 of the trainer in the middle of an epoch, once."""

    def __init__(self, step, marker):
        super().__init__()
        self.step, self.marker = step, marker

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) >= self.step and not os.path.exists(
                self.marker):
            open(self.marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)


def start_ps_cluster(workers, ps):
    """Starts worker and ps servers here; returns the chief's TF_CONFIG."""
    def addresses(n):
        return [f"localhost:{portpicker.pick_unused_port()}" for _ in range(n)]
    cluster = {"chief": addresses(1), "worker": addresses(workers), "ps": addresses(ps)}
    for job in ("worker", "ps"):
        for index in range(len(cluster[job])):
            tf.distribute.Server(tf.train.ClusterSpec(cluster), job_name=job, task_index=index,
                                 protocol="grpc", config=distribute.server_config(), start=True)
    return json.dumps({"cluster": cluster, "task": {"type": "chief", "index": 0}})


def main(spec):
    out = spec["out"]
    if "ps_cluster" in spec:
        os.environ["TF_CONFIG"] = start_ps_cluster(**spec["ps_cluster"])
    opts = train.TrainOptions(**spec["options"])
    if "kill_at_step" in spec:
        opts.callbacks = [KillAtStep(spec["kill_at_step"], out + ".killed")]
    result = train.train(opts)
    model = result["model"]
    np.savez(out + ".npz", *[v.numpy() for v in model.variables])
    with open(out + ".json", "w") as fh:
        json.dump({"metrics": result["metrics"], "export_path": result["export_path"],
                   "steps": int(model.optimizer.iterations.numpy()),
                   "history": {k: [float(x) for x in v] for k, v in result["history"].items()},
                   "variables": [v.name for v in model.variables],
                   "xla_gradients": model.xla_gradients,
                   "table_shards": table_shards(model)}, fh)


def table_shards(model):
    """{layer/feature: number of shards} of every embedding table."""
    sharded = tf.__internal__.distribute.ShardedVariable
    return {f"{layer.name}/{name}": len(v.variables) if isinstance(v, sharded) else 1
            for layer in model._flatten_layers() for name, v in getattr(layer, "tables", {}).items()}


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
    sys.stdout.flush()
    os._exit(0)   # in-process servers keep threads alive
