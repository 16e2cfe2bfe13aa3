"""ServingError: a request failed with a gRPC status code and TF Serving's wording.

Every status message leaves the server through `truncate`, as TF Serving's do (the first
1024 bytes, then "...TRUNCATED"; model_servers/grpc_status_util.cc): a message that copies
request values stays far below gRPC's 8-16 KB metadata limit, past which the client would
see RESOURCE_EXHAUSTED instead of the real code. `log_line` is what the log gets.
"""
import re

import grpc

# TensorFlow's error codes are gRPC's status codes, number for number.
_CODES = {code.value[0]: code for code in grpc.StatusCode}
MESSAGE_LIMIT_BYTES = 1024     # TF Serving's kErrorMessageLimit
LOG_LIMIT_BYTES = 300


class ServingError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code, self.message = code, message


# tf.debugging.Assert's message: "...assertion failed: [part] [part]\n\t [[{{node ...}}]]".
_ASSERTION = re.compile(r"assertion failed: (.*?)\s*(?:\n|\[\[|$)", re.S)
# Graph internals TensorFlow adds around an op's own message.
_INTERNALS = re.compile(r"\{\{function_node [^}]*\}\}\s*|\s*\[\[\{\{node [^\]]*\]\]"
                        r"|\s*\[Op:[^\]]*\]")


def from_tf_error(error):
    """The ServingError of a tf.errors.OpError raised while running a signature, with the
    op's own message only (no node names; a failed assertion, e.g. an unknown scenario,
    keeps just its parts)."""
    return ServingError(_CODES.get(error.error_code, grpc.StatusCode.UNKNOWN),
                        without_graph_internals(error.message))


def without_graph_internals(message):
    match = _ASSERTION.search(message)
    if match:   # TensorFlow prints string data with quotes escaped
        parts = re.split(r"\]\s+\[", match.group(1).replace("\\'", "'"))
        return " ".join(p.strip("[] ") for p in parts)
    message = _INTERNALS.sub("", message)
    return message.split("<stack traces unavailable>", 1)[-1].strip()


def invalid_argument(message):
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message):
    return ServingError(grpc.StatusCode.NOT_FOUND, message)


def truncate(message, limit=MESSAGE_LIMIT_BYTES):
    """`message` cut to `limit` UTF-8 bytes plus "...TRUNCATED" when longer (TF Serving)."""
    data = message.encode("utf-8", "replace")
    if len(data) <= limit:
        return message
    return data[:limit].decode("utf-8", "ignore") + "...TRUNCATED"


def log_line(message):
    """`message` as one bounded, printable log line: truncated, then newlines and any
    non-ASCII or control bytes escaped (request values never reach the log raw)."""
    text = truncate(message, LOG_LIMIT_BYTES)
    return text.encode("ascii", "backslashreplace").decode("ascii").replace(
        "\n", "\\n").replace("\r", "\\r")
