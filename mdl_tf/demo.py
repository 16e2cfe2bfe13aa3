"""`make demo`: train MDL on the built-in dataset, evaluate, export, then serve and query it.

    python -m mdl_tf.demo [--model_dir runs/demo] [--rows 4]

After training, the local model server (serving/server.py, TF Serving's gRPC API) starts
on the fresh export on a free 127.0.0.1 port; once GetModelStatus says AVAILABLE, the
client scores a few validation rows with every scenario's signature, prints the scores,
and the server is stopped.
"""
import argparse
import os

from mdl_tf import cli, quiet


def parser():
    p = argparse.ArgumentParser(prog="python -m mdl_tf.demo",
                                description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model_dir", default="runs/demo", help="run directory (a finished run "
                   "there is resumed)")
    p.add_argument("--rows", type=int, default=4, help="validation rows scored through gRPC")
    return p


# --help answers before TensorFlow loads (tens of seconds on a busy machine).
cli.argparse_help_first(__name__, parser)
quiet.load_tensorflow_quietly(__name__)  # without the CUDA-stub lines of CPU-only machines

import mdl_tf  # noqa: F401
from absl import logging

from mdl_tf import data, runs, train
from serving.client import ServingClient
from serving.process import LocalServer


def validation_rows(model_dir, n):
    """The first n rows of the run's validation split: {column: np.ndarray}."""
    info, schema = runs.load_run(model_dir)
    ds = data.make_dataset(schema, "valid", data_dir=info["data_dir"], batch_size=n)
    features, _ = next(iter(ds))
    return {k: v.numpy() for k, v in features.items()}, schema


def serve_and_query(model_dir, export_path, n_rows=4, model_name="mdl"):
    """Starts the local server on export_path's base, prints per-scenario scores, stops it."""
    rows, schema = validation_rows(model_dir, n_rows)
    export_base = os.path.dirname(export_path)
    log_path = os.path.join(model_dir, "server.log")
    with LocalServer(export_base, model_name, log_path=log_path) as server, \
            ServingClient(server.target, model_name) as client:
        version = client.wait_until_ready()
        print(f"\nmodel server: {export_base} version {version} at {server.target} "
              f"(log {log_path})")
        print(f"rows' own scenarios: {[s.decode() for s in rows[data.SCENARIO_KEY]]}")
        for scenario in schema.scenario_names:
            scores = client.predict(rows, scenario=scenario)
            print(f"  scenario_{scenario}:")
            for task in schema.task_names:
                print(f"    {task:<12}" + " ".join(f"{p:.4f}" for p in scores[task]))
    print("model server stopped")


def main(argv=None):
    args = parser().parse_args(argv)
    logging.set_verbosity(logging.WARNING)
    result = train.train(train.TrainOptions(model_dir=args.model_dir))
    print(f"\nSavedModel: {result['export_path']}")
    serve_and_query(args.model_dir, result["export_path"], args.rows)
    return result


if __name__ == "__main__":
    main()
