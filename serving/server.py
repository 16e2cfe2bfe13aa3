"""A local model server that speaks TF Serving's gRPC API, for development and tests.

    python -m serving.server --model_name mdl --model_base_path runs/demo/export --port 8500

Implements `tensorflow.serving.PredictionService` (Predict, GetModelMetadata; Classify,
Regress and MultiInference answer UNIMPLEMENTED) and `ModelService.GetModelStatus` with
the servicer classes generated in tensorflow-serving-api, so clients written against it
work unchanged against `tensorflow_model_server`. `grpc.health.v1` (SERVING once a version
is loaded; --enable_grpc_healthcheck_service, TF Serving's flag) and server reflection
(--enable_reflection) are off by default, as in TF Serving: portable clients check
GetModelStatus.

The newest version under --model_base_path is loaded and warmed up before the port opens;
newer versions are picked up every --file_system_poll_wait_seconds and swapped in without
failing in-flight requests; a version that fails to load is retried (see
serving/manager.py). It binds 127.0.0.1 unless --host says otherwise; TLS is on with
--ssl_cert_file/--ssl_key_file. A bad request gets TF Serving's status code and wording
(messages truncated to 1 KB as TF Serving does), one log line, and never stops the
server. A request of more than --max_batch_size rows is refused with INVALID_ARGUMENT.
"""
import functools
import logging
import os
import signal
import sys
import threading
from concurrent import futures

# TensorFlow's C++ warnings would add a line per failed op, quoting the request's values
# ("OP_REQUIRES failed ... value: '<bytes>'"); the server logs each rejection itself.
# (Before mdl_tf is imported: it sets a milder level by default.)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mdl_tf import cli, quiet
# server.ServerOptions, server.parse_args and server.DEFAULT_MAX_BATCH_SIZE: API.
from serving.options import (DEFAULT_MAX_BATCH_SIZE, ServerOptions,  # noqa: F401
                             parse_args, parser)

# --help answers before gRPC and TensorFlow load (tens of seconds on a busy machine).
cli.argparse_help_first(__name__, parser)
# As a script: TensorFlow loads here without the CUDA-stub lines of CPU-only machines.
quiet.load_tensorflow_quietly(__name__)

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
# The *_pb2 service modules must be imported for reflection to know the services.
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2, model_service_pb2_grpc,
                                     prediction_service_pb2, prediction_service_pb2_grpc)

from serving import errors
from serving.manager import ModelManager

log = logging.getLogger("serving.server")
PREDICTION_SERVICE = prediction_service_pb2.DESCRIPTOR.services_by_name[
    "PredictionService"].full_name
MODEL_SERVICE = model_service_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name
# "" is the whole server's health, as grpc.health.v1 defines it.
HEALTH_SERVICES = ("", PREDICTION_SERVICE)


def _answers_errors(method):
    """Turns ServingError into its status code, and any other exception into INTERNAL;
    the message is truncated as TF Serving's are, and logged as one bounded line."""
    @functools.wraps(method)
    def wrapper(self, request, context):
        try:
            return method(self, request, context)
        except errors.ServingError as e:
            code, message = e.code, e.message
        except Exception as e:  # a bug must fail one request, not the server
            log.debug("%s failed", method.__name__, exc_info=True)
            code, message = grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}"
        log.warning("%s rejected: %s: %s", method.__name__, code.name,
                    errors.log_line(message))
        context.abort(code, errors.truncate(message))
    return wrapper


class _OneLineDeserializationErrors(logging.Filter):
    """gRPC logs a request that is not a valid protocol buffer with a traceback; keep one
    bounded line (gRPC answers it with INTERNAL itself, before any servicer runs)."""

    def filter(self, record):
        if record.exc_info and "deserializing" in str(record.msg):
            error = record.exc_info[1]
            record.msg, record.args = "rejected a request: %s: %s", (
                type(error).__name__, errors.log_line(str(error)))
            record.exc_info = record.exc_text = None
        return True


_ONE_LINE_DESERIALIZATION_ERRORS = _OneLineDeserializationErrors()


def _check_batch_size(request, limit):
    """TF Serving's batching refuses requests larger than max_batch_size with this."""
    if limit <= 0:
        return
    for alias, proto in request.inputs.items():
        dims = proto.tensor_shape.dim
        if dims and dims[0].size > limit:
            raise errors.invalid_argument(
                f"Task size {dims[0].size} is larger than maximum input batch size {limit} "
                f"(input '{alias}'; see --max_batch_size)")


def _require_model_spec(request):
    if not request.HasField("model_spec"):
        raise errors.invalid_argument("Missing ModelSpec")


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, manager, max_batch_size=DEFAULT_MAX_BATCH_SIZE):
        self.manager, self.max_batch_size = manager, max_batch_size

    @_answers_errors
    def Predict(self, request, context):
        _require_model_spec(request)
        _check_batch_size(request, self.max_batch_size)
        return self.manager.servable(request.model_spec).predict(request)

    @_answers_errors
    def GetModelMetadata(self, request, context):
        _require_model_spec(request)
        if not request.metadata_field:
            raise errors.invalid_argument(
                "GetModelMetadataRequest must specify at least one metadata_field")
        unsupported = [f for f in request.metadata_field if f != "signature_def"]
        if unsupported:
            raise errors.invalid_argument(f"Metadata field {unsupported[0]} is not supported")
        servable = self.manager.servable(request.model_spec)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = servable.version
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, signature in servable.signature_defs.items():
            signature_map.signature_def[name].CopyFrom(signature)
        response.metadata["signature_def"].Pack(signature_map)
        return response

    def Classify(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "Classify is not implemented; use Predict")

    def Regress(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "Regress is not implemented; use Predict")

    def MultiInference(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED,
                      "MultiInference is not implemented; use Predict")


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, manager):
        self.manager = manager

    @_answers_errors
    def GetModelStatus(self, request, context):
        _require_model_spec(request)
        spec = request.model_spec
        version = spec.version.value if spec.HasField("version") else None
        response = get_model_status_pb2.GetModelStatusResponse()
        for state in self.manager.version_states(spec.name, version):
            status = response.model_version_status.add(version=state.version, state=state.state)
            if state.error:
                status.status.error_code = grpc.StatusCode.UNKNOWN.value[0]
                status.status.error_message = state.error
        return response

    def HandleReloadConfigRequest(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED,
                      "this server serves one model from --model_base_path; no config to reload")


class LocalModelServer:
    """A running server: `port` is the bound port; `stop()` ends it."""

    def __init__(self, grpc_server, manager, port):
        self.grpc_server, self.manager, self.port = grpc_server, manager, port

    def stop(self, grace_s=5.0):
        """Stops accepting requests, lets in-flight ones finish (up to grace_s), stops polling."""
        self.grpc_server.stop(grace_s).wait()
        self.manager.stop()

    def wait(self):
        self.grpc_server.wait_for_termination()


def _health_servicer():
    servicer = health.HealthServicer()
    for service in HEALTH_SERVICES:
        servicer.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
    return servicer


def _mark_serving(servicer, _servable):
    for service in HEALTH_SERVICES:
        servicer.set(service, health_pb2.HealthCheckResponse.SERVING)


def _bind(server, options):
    address = f"{options.host}:{options.port}"
    if options.ssl_cert_file is None and options.ssl_key_file is None:
        return server.add_insecure_port(address)
    if not (options.ssl_cert_file and options.ssl_key_file):
        raise ValueError("TLS needs both --ssl_cert_file and --ssl_key_file")
    with open(options.ssl_key_file, "rb") as fh:
        key = fh.read()
    with open(options.ssl_cert_file, "rb") as fh:
        cert = fh.read()
    client_ca = None
    if options.ssl_client_ca_file:
        with open(options.ssl_client_ca_file, "rb") as fh:
            client_ca = fh.read()
    credentials = grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None)
    return server.add_secure_port(address, credentials)


def start(options: ServerOptions) -> LocalModelServer:
    """Loads the newest version (if any), then starts answering on options.host:port."""
    logging.getLogger("grpc._common").addFilter(_ONE_LINE_DESERIALIZATION_ERRORS)  # once
    health_servicer = _health_servicer() if options.enable_health else None
    manager = ModelManager(
        options.model_name, options.model_base_path, options.enable_warmup,
        on_change=health_servicer and functools.partial(_mark_serving, health_servicer),
        max_load_retries=options.max_num_load_retries,
        load_retry_interval_s=options.load_retry_interval_s)
    if manager.poll() is None:
        log.warning("no loadable version under %s yet; polling", options.model_base_path)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=options.max_threads),
        options=[("grpc.max_receive_message_length", options.max_receive_message_bytes),
                 ("grpc.max_send_message_length", options.max_send_message_bytes),
                 # Without this, a second server could silently share the port.
                 ("grpc.so_reuseport", 0)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(manager, options.max_batch_size), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(manager), server)
    services = [PREDICTION_SERVICE, MODEL_SERVICE]
    if health_servicer is not None:
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        services.append(health_pb2.DESCRIPTOR.services_by_name["Health"].full_name)
    if options.enable_reflection:
        reflection.enable_server_reflection(services + [reflection.SERVICE_NAME], server)
    port = _bind(server, options)
    if not port:
        raise OSError(f"cannot bind {options.host}:{options.port}")
    server.start()
    manager.start(options.poll_seconds)
    return LocalModelServer(server, manager, port)


# --- CLI ---------------------------------------------------------------------------------
def main(argv=None):
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    options = parse_args(argv)
    if not os.path.isdir(options.model_base_path):
        print(f"error: --model_base_path {options.model_base_path} is not a directory",
              file=sys.stderr)
        return 2
    try:
        server = start(options)
    except (ValueError, OSError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    # The one line on stdout: process.LocalServer reads the port from it.
    print(f"listening on {options.host}:{server.port}", flush=True)
    stopping.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
