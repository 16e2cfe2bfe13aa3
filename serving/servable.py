"""Servable: one loaded version of a SavedModel, answering PredictRequests as TF Serving does.

Requests are checked against the SignatureDef stored in saved_model.pb, in TF Serving's
order and wording (tensorflow_serving/servables/tensorflow/predict_util.cc):
  unknown signature                         FAILED_PRECONDITION  Serving signature key "x" not found.
  missing or extra inputs                   INVALID_ARGUMENT     input size does not match signature: ...
  wrong dtype, incompatible shape, bad proto INVALID_ARGUMENT
  a float value that is NaN or inf          INVALID_ARGUMENT     input 'x': value i: not finite ...
                                            (mdl_tf.values; MDL's exported graph asserts it too)
  unknown output in output_filter           INVALID_ARGUMENT     output tensor alias not found in signature: ...
  errors raised by the graph (e.g. an unknown scenario, bytes that are not an Example)
                                            their TensorFlow code (INVALID_ARGUMENT for both),
                                            the op's message without node names
"""
import os

import grpc
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import predict_pb2

from mdl_tf.contract import requests, signatures, warmup
from serving import errors


def read_signature_defs(path):
    """{name: SignatureDef} of the "serve" MetaGraph of the SavedModel at `path`."""
    with open(os.path.join(path, "saved_model.pb"), "rb") as fh:
        saved_model = saved_model_pb2.SavedModel.FromString(fh.read())
    for meta_graph in saved_model.meta_graphs:
        if tf.saved_model.SERVING in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    raise ValueError(f"{path}: no MetaGraph tagged '{tf.saved_model.SERVING}'")


class Servable:
    """A SavedModel version loaded for serving; `predict` is safe to call from many threads."""

    def __init__(self, model_name, version, path):
        self.model_name, self.version, self.path = model_name, int(version), path
        self.signature_defs = read_signature_defs(path)
        loaded = tf.saved_model.load(path, tags=[tf.saved_model.SERVING])
        # The loaded object owns the variables the functions read: keep it alive.
        self._loaded = loaded
        self._functions = dict(loaded.signatures)
        self.warmup_count = 0           # warm-up requests replayed

    def warm_up(self):
        """Replays the version's warm-up requests; returns how many ran. Raises on failure."""
        logged = warmup.read(self.path)
        for request in logged:
            self.predict(request)
        self.warmup_count = len(logged)
        return self.warmup_count

    def predict(self, request):
        """PredictResponse for a PredictRequest; raises errors.ServingError."""
        name = request.model_spec.signature_name or signatures.DEFAULT
        if name not in self._functions:
            raise errors.ServingError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f'Serving signature key "{name}" not found.')
        signature = self.signature_defs[name]
        _check_input_names(signature, request)
        inputs = {k: _input_array(k, request.inputs[k], signature.inputs[k])
                  for k in request.inputs}
        aliases = _output_aliases(signature, request.output_filter)
        try:
            outputs = self._functions[name](**inputs)
        except tf.errors.OpError as e:
            raise errors.from_tf_error(e) from None
        except UnicodeDecodeError as e:
            # TF echoes the offending value in its message (e.g. bytes that are not an
            # Example); non-UTF-8 bytes there break the Python binding before it can raise
            # the OpError. Such errors are always about the input.
            raise errors.invalid_argument(errors.without_graph_internals(
                e.object.decode("utf-8", "replace"))) from None
        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = self.version
        response.model_spec.signature_name = name
        for alias in aliases:
            response.outputs[alias].CopyFrom(requests.tensor_proto(outputs[alias].numpy()))
        return response


def _check_input_names(signature, request):
    sent, expected = set(request.inputs), set(signature.inputs)
    if sent != expected:
        raise errors.invalid_argument(
            f"input size does not match signature: {len(sent)}!={len(expected)} "
            f"len({{{_join(sent)}}}) != len({{{_join(expected)}}}). "
            f"Sent extra: {{{_join(sent - expected)}}}. "
            f"Missing but required: {{{_join(expected - sent)}}}.")


def _input_array(alias, proto, info):
    """The numpy value of one request input, checked against the signature's TensorInfo."""
    if proto.dtype != info.dtype:
        raise errors.invalid_argument(
            f"Expects arg[{alias}] to be {_dtype_name(info.dtype)} but "
            f"{_dtype_name(proto.dtype)} is provided")
    try:
        array = requests.ndarray(proto)
    except (TypeError, ValueError) as e:
        raise errors.invalid_argument(f"tensor parsing error: {alias}: {e}") from None
    expected = tf.TensorShape(info.tensor_shape)
    if not expected.is_compatible_with(array.shape):
        raise errors.invalid_argument(
            f"input '{alias}' has shape {list(array.shape)}, incompatible with the "
            f"signature's shape {expected}")
    try:
        requests.check_finite(alias, array)
    except ValueError as e:
        raise errors.invalid_argument(str(e)) from None
    return array


def _output_aliases(signature, output_filter):
    if not output_filter:
        return list(signature.outputs)
    seen = set()
    for alias in output_filter:
        if alias not in signature.outputs:
            raise errors.invalid_argument(
                f"output tensor alias not found in signature: {alias} Outputs expected to "
                f"be in the set {{{_join(signature.outputs)}}}.")
        if alias in seen:
            raise errors.invalid_argument(f"duplicate output tensor alias: {alias}")
        seen.add(alias)
    return list(output_filter)


def _dtype_name(enum):
    try:
        return tf.as_dtype(enum).name
    except TypeError:
        return f"an invalid dtype ({enum})"


def _join(names):
    return ",".join(sorted(names))
