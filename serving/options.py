"""The server's options and command-line flags, importable without gRPC or TensorFlow
(`python -m serving.server --help` answers from here before either loads)."""
from __future__ import annotations

import argparse
import dataclasses

from mdl_tf import cli

MiB = 1 << 20
# serving/deploy/batching_parameters.txt's max_batch_size: the largest request TF Serving
# with that file accepts (without enable_large_batch_splitting).
DEFAULT_MAX_BATCH_SIZE = 512
DESCRIPTION = """Serves the newest SavedModel version under --model_base_path through TF
Serving's gRPC API (PredictionService, ModelService); the flags keep TF Serving's names
where it has the flag."""


@dataclasses.dataclass
class ServerOptions:
    model_name: str
    model_base_path: str
    host: str = "127.0.0.1"
    port: int = 8500                          # 0: any free port (see LocalModelServer.port)
    poll_seconds: float = 1.0                 # 0: load once, never poll
    enable_warmup: bool = True
    max_threads: int = 8
    max_receive_message_bytes: int = 64 * MiB
    max_send_message_bytes: int = 64 * MiB
    ssl_cert_file: str | None = None
    ssl_key_file: str | None = None
    ssl_client_ca_file: str | None = None     # set: clients must present a certificate
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE   # rows per request; 0: no limit
    max_num_load_retries: int = 5
    load_retry_interval_s: float = 60.0
    enable_health: bool = False
    enable_reflection: bool = False


def parser() -> argparse.ArgumentParser:
    d = ServerOptions("", "")
    p = argparse.ArgumentParser(prog="python -m serving.server", description=DESCRIPTION,
                                formatter_class=cli.HelpFormatter)
    p.add_argument("--model_name", default="mdl", help="name clients put in ModelSpec.name")
    p.add_argument("--model_base_path", required=True,
                   help="directory of numeric version directories (an export base)")
    p.add_argument("--host", default=d.host, help="address to bind (0.0.0.0: all interfaces)")
    p.add_argument("--port", type=int, default=d.port, help="gRPC port (0: a free one)")
    p.add_argument("--file_system_poll_wait_seconds", type=float, default=d.poll_seconds,
                   help="seconds between scans for new versions (0: never)")
    p.add_argument("--enable_model_warmup", type=_bool, default=d.enable_warmup,
                   help="replay assets.extra/tf_serving_warmup_requests on load (true/false)")
    p.add_argument("--grpc_max_threads", type=int, default=d.max_threads,
                   help="threads answering requests at once")
    p.add_argument("--max_receive_message_bytes", type=int, default=d.max_receive_message_bytes,
                   help="largest request the server accepts, in bytes")
    p.add_argument("--max_send_message_bytes", type=int, default=d.max_send_message_bytes,
                   help="largest response the server sends, in bytes")
    p.add_argument("--ssl_cert_file", help="PEM server certificate (turns TLS on)")
    p.add_argument("--ssl_key_file", help="PEM private key of --ssl_cert_file")
    p.add_argument("--ssl_client_ca_file", help="PEM CA; clients must present a cert it signed")
    p.add_argument("--max_batch_size", type=int, default=d.max_batch_size,
                   help="most rows one request may ask for; larger ones get INVALID_ARGUMENT "
                   "(the default is serving/deploy/batching_parameters.txt's; 0: no limit)")
    p.add_argument("--max_num_load_retries", type=int, default=d.max_num_load_retries,
                   help="times a version that failed to load is tried again (TF Serving's)")
    p.add_argument("--load_retry_interval_micros", type=int,
                   default=int(d.load_retry_interval_s * 1e6),
                   help="microseconds between load retries (TF Serving's; 60000000: 1 minute)")
    p.add_argument("--enable_grpc_healthcheck_service", type=_bool, default=d.enable_health,
                   help="serve grpc.health.v1 (true/false; TF Serving's flag)")
    p.add_argument("--enable_reflection", type=_bool, default=d.enable_reflection,
                   help="serve gRPC server reflection, e.g. for grpcurl (true/false; TF "
                   "Serving has none)")
    return p


def parse_args(argv=None) -> ServerOptions:
    a = parser().parse_args(argv)
    return ServerOptions(
        model_name=a.model_name, model_base_path=a.model_base_path, host=a.host, port=a.port,
        poll_seconds=a.file_system_poll_wait_seconds, enable_warmup=a.enable_model_warmup,
        max_threads=a.grpc_max_threads, max_receive_message_bytes=a.max_receive_message_bytes,
        max_send_message_bytes=a.max_send_message_bytes, ssl_cert_file=a.ssl_cert_file,
        ssl_key_file=a.ssl_key_file, ssl_client_ca_file=a.ssl_client_ca_file,
        max_batch_size=a.max_batch_size, max_num_load_retries=a.max_num_load_retries,
        load_retry_interval_s=a.load_retry_interval_micros / 1e6,
        enable_health=a.enable_grpc_healthcheck_service, enable_reflection=a.enable_reflection)


def _bool(text):
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")
