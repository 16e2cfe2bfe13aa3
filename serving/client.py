"""Client for TF Serving's gRPC API (this project's server or `tensorflow_model_server`).

    from serving.client import ServingClient
    with ServingClient("127.0.0.1:8500", "mdl") as client:
        client.wait_until_ready()
        scores = client.predict_rows(rows, scenario="feed")           # {task: np.ndarray}
        clicks = client.predict_rows(rows, scenario="feed", task="click")["probability"]

    python -m serving.client --server 127.0.0.1:8500 status
    python -m serving.client signatures
    python -m serving.client predict --scenario feed --csv valid.csv --limit 5

Values are cast to the dtypes the signature declares (read once with GetModelMetadata),
so Python ints go out as int64 and CSV strings as numbers. CSV files are read in the
trainer's dialect (mdl_tf.dialect: quoting, BOM, blank lines) and cells by its rules
(mdl_tf.values): an empty cell is missing, and an empty dense cell takes the schema's
default, so give the model's schema (`schema=` / `--schema <model_dir>/schema.yaml`).
Readiness is GetModelStatus (state AVAILABLE): real TF Serving has no gRPC health service.
"""
import argparse
import itertools
import json
import sys
import time

from mdl_tf import cli, quiet


def _parser():
    p = argparse.ArgumentParser(prog="python -m serving.client",
                                description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--server", default="127.0.0.1:8500", help="host:port of the gRPC API")
    p.add_argument("--model_name", default="mdl", help="model name the server serves")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per call")
    p.add_argument("--root_cert", help="PEM CA certificate: connect with TLS")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("status", help="GetModelStatus: versions and their states")
    sub.add_parser("signatures", help="GetModelMetadata: signatures with inputs and outputs")
    defaults = {"formatter_class": argparse.ArgumentDefaultsHelpFormatter}
    wait = sub.add_parser("wait", help="wait until a version is AVAILABLE", **defaults)
    wait.add_argument("--wait_timeout", type=float, default=60.0, help="seconds")
    pred = sub.add_parser("predict", help="Predict for rows; prints JSON", **defaults)
    pred.add_argument("--scenario", help="scenario name: use its signature scenario_<s> "
                      "(default: serving_default, scenario taken from each row)")
    pred.add_argument("--task", help="with --scenario: only this task's signature")
    pred.add_argument("--signature", help="explicit signature name (overrides scenario/task)")
    source = pred.add_mutually_exclusive_group(required=True)
    source.add_argument("--json", help='columns as JSON: {"user_id": [1, 2], ...}')
    source.add_argument("--jsonl", help="file with one JSON row object per line")
    source.add_argument("--csv", help="CSV file with a header (e.g. a dataset split)")
    pred.add_argument("--limit", type=int, default=10, help="rows read from --jsonl/--csv")
    pred.add_argument("--delimiter", default=",", help="--csv: the schema's csv.delimiter")
    pred.add_argument("--schema", help="the model's schema.yaml: empty dense cells take its "
                      "defaults, as in training")
    return p


# --help answers before TensorFlow loads (tens of seconds on a busy machine).
cli.argparse_help_first(__name__, _parser)
quiet.load_tensorflow_quietly(__name__)  # without the CUDA-stub lines of CPU-only machines

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, prediction_service_pb2_grpc)

from mdl_tf import dialect, schema as schema_lib
from mdl_tf.contract import requests, signatures
from serving.errors import without_graph_internals

State = get_model_status_pb2.ModelVersionStatus.State
MiB = 1 << 20


class ServingClient:
    """One channel to a model server, for one model name."""

    def __init__(self, target, model_name="mdl", *, timeout_s=30.0,
                 max_message_bytes=64 * MiB, root_certificates=None, schema=None):
        """schema: the model's Schema or its YAML path; its dense defaults fill empty cells
        in predict_rows, as in training."""
        options = [("grpc.max_send_message_length", max_message_bytes),
                   ("grpc.max_receive_message_length", max_message_bytes)]
        if root_certificates is None:
            self.channel = grpc.insecure_channel(target, options)
        else:
            credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self.channel = grpc.secure_channel(target, credentials, options)
        self.model_name, self.timeout_s = model_name, timeout_s
        if isinstance(schema, str):
            schema = schema_lib.load(schema)
        self.defaults = {} if schema is None else {
            f.name: f.default for f in schema.features if f.type == "dense"}
        self.predictions = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)
        self._signature_defs = None

    def close(self):
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- model state -------------------------------------------------------------------
    def status(self, version=None):
        """{version: state name ("AVAILABLE", "LOADING", ...)} from GetModelStatus."""
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = self.model_name
        if version is not None:
            request.model_spec.version.value = int(version)
        response = self.models.GetModelStatus(request, timeout=self.timeout_s)
        return {s.version: State.Name(s.state) for s in response.model_version_status}

    def wait_until_ready(self, timeout_s=60.0, poll_s=0.2):
        """Waits until a version is AVAILABLE and returns it; TimeoutError after timeout_s.

        "Not reachable yet" (UNAVAILABLE) and "no version yet" (NOT_FOUND) are waited out;
        any other error is raised.
        """
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                available = [v for v, s in self.status().items() if s == "AVAILABLE"]
                if available:
                    return max(available)
                last = "no version AVAILABLE yet"
            except grpc.RpcError as e:
                if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND):
                    raise
                last = f"{e.code().name}: {e.details()}"
            time.sleep(poll_s)
        raise TimeoutError(f"model '{self.model_name}' not ready after {timeout_s:.0f}s ({last})")

    def signature_defs(self, refresh=False):
        """{signature name: SignatureDef} from GetModelMetadata (cached; refresh=True re-reads)."""
        if self._signature_defs is None or refresh:
            request = get_model_metadata_pb2.GetModelMetadataRequest(
                metadata_field=["signature_def"])
            request.model_spec.name = self.model_name
            response = self.predictions.GetModelMetadata(request, timeout=self.timeout_s)
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            response.metadata["signature_def"].Unpack(signature_map)
            self._signature_defs = dict(signature_map.signature_def)
        return self._signature_defs

    def input_dtypes(self, signature_name):
        """{input name: tf.DType} of a signature; ValueError naming the known ones if absent."""
        defs = self.signature_defs()
        if signature_name not in defs:
            known = ", ".join(sorted(n for n in defs if not n.startswith("__")))
            raise ValueError(f"model '{self.model_name}' has no signature '{signature_name}'; "
                             f"it has: {known}")
        return requests.input_dtypes(defs[signature_name])

    # --- prediction --------------------------------------------------------------------
    def predict(self, inputs, *, scenario=None, task=None, signature=None, version=None):
        """{output: np.ndarray} for `inputs` (name -> values, one per example).

        The signature is `signature`, else the one for scenario/task (serving_default when
        neither; then `inputs` must hold the scenario column, named as in the dataset's
        files). Keys the signature doesn't take, such as labels, are ignored; a missing input raises ValueError before anything is sent.
        """
        name = signature or signatures.signature_for(scenario, task)
        dtypes = self.input_dtypes(name)
        missing = sorted(set(dtypes) - set(inputs))
        if missing:
            raise ValueError(f"signature '{name}' needs input(s) {missing}")
        request = requests.make_predict_request(
            self.model_name, name, {k: inputs[k] for k in dtypes}, dtypes, version)
        return requests.response_arrays(self.predictions.Predict(request, timeout=self.timeout_s))

    def predict_rows(self, rows, *, locations=None, **kwargs):
        """predict() for a list of row dicts (e.g. from dialect.read_rows); text cells are
        read by the trainer's rules. locations: "<file>:<line>" per row, for errors."""
        name = kwargs.get("signature") or signatures.signature_for(
            kwargs.get("scenario"), kwargs.get("task"))
        dtypes = self.input_dtypes(name)
        return self.predict(requests.columns_from_rows(rows, list(dtypes), dtypes,
                                                       self.defaults, locations), **kwargs)


# --- CLI ---------------------------------------------------------------------------------
def _read_rows(args):
    """(rows, locations or None)."""
    if args.json:
        columns = json.loads(args.json)
        n = len(next(iter(columns.values())))
        return [{k: v[i] for k, v in columns.items()} for i in range(n)], None
    if args.jsonl:
        with open(args.jsonl) as fh:
            return [json.loads(line) for line in itertools.islice(fh, args.limit)
                    if line.strip()], None
    located = list(dialect.read_rows(args.csv, args.delimiter, args.limit))
    return [row for _, row in located], [where for where, _ in located]


def _describe(signature_def):
    """JSON-able {"inputs": {name: dtype}, "outputs": {name: dtype}} of a SignatureDef."""
    return {side: {k: tf.as_dtype(v.dtype).name for k, v in sorted(tensors.items())}
            for side, tensors in (("inputs", signature_def.inputs),
                                  ("outputs", signature_def.outputs))}


def json_scores(scores):
    """{output: [float | None]}: a NaN or infinite score (a model that diverged, served
    by a server that does not refuse it) becomes JSON null, not the invalid bare `NaN`."""
    return {k: [float(x) if np.isfinite(x) else None
                for x in np.asarray(v, np.float64).ravel()] for k, v in scores.items()}


def main(argv=None):
    args = _parser().parse_args(argv)
    root = None
    if args.root_cert:
        with open(args.root_cert, "rb") as fh:
            root = fh.read()
    with ServingClient(args.server, args.model_name, timeout_s=args.timeout,
                       root_certificates=root,
                       schema=getattr(args, "schema", None)) as client:
        try:
            if args.command == "status":
                out = client.status()
            elif args.command == "wait":
                out = {"ready_version": client.wait_until_ready(args.wait_timeout)}
            elif args.command == "signatures":
                out = {k: _describe(v) for k, v in sorted(client.signature_defs().items())
                       if not k.startswith("__")}
            else:
                rows, locations = _read_rows(args)
                scores = client.predict_rows(rows, locations=locations, scenario=args.scenario,
                                             task=args.task, signature=args.signature)
                out = json_scores(scores)
        except grpc.RpcError as e:
            # TF Serving passes a graph error on with its node names (our server strips them).
            print(f"error: {e.code().name}: {without_graph_internals(e.details() or '')}",
                  file=sys.stderr)
            return 1
        except (ValueError, TimeoutError, OSError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    print(json.dumps(out, indent=1, allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
