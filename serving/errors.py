"""ServingError: a request failed with a gRPC status code and TF Serving's wording."""
import grpc

# TensorFlow's error codes are gRPC's status codes, number for number.
_CODES = {code.value[0]: code for code in grpc.StatusCode}


class ServingError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code, self.message = code, message


def from_tf_error(error):
    """The ServingError of a tf.errors.OpError raised while running a signature."""
    return ServingError(_CODES.get(error.error_code, grpc.StatusCode.UNKNOWN), error.message)


def invalid_argument(message):
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message):
    return ServingError(grpc.StatusCode.NOT_FOUND, message)
