"""PredictRequests from Python values, and numpy arrays from PredictResponses.

Part of the serving contract (mdl_tf.contract): mdl_tf.export builds its warm-up requests
with it, and `serving` (client, servable) builds and checks requests with it.

TF Serving checks every input against the dtype its signature declares and converts
nothing: `tf.make_tensor_proto([1, 2])` is int32, and an int64 input rejects it. So values
are cast to the signature's dtype (from GetModelMetadata or the SavedModel) when it is
known; otherwise Python ints become int64 and floats float32, the dtypes MDL exports.

`tensor_proto` and `ndarray` convert the layouts requests use (numbers as tensor_content,
strings as string_val) directly: 5-10x faster than tf.make_tensor_proto/make_ndarray,
which at batch 1 saves about 0.5 ms per request over the ~15 inputs of an MDL signature
(benchmarks/serving.py). Other layouts go through TensorFlow's functions.

Values follow the trainer's rules (mdl_tf.values), on the client and in the server's
checks alike: a float must be finite as float32, an int64 id in range; a text cell is
stripped and an empty one is missing (int64 -> -1, the OOV bucket; string -> ""; float ->
the schema's default, which the client needs the schema for).
"""
import math

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import predict_pb2

from mdl_tf import values as rules   # "values" is an argument name here

_INFERRED = {"i": np.int64, "u": np.int64, "f": np.float32, "b": np.bool_}
_NUMERIC = {tf.as_dtype(t).as_datatype_enum: np.dtype(t)
            for t in (np.float32, np.float64, np.int32, np.int64, np.bool_)}
_STRING = tf.string.as_datatype_enum


def to_array(values, dtype=None, name="input"):
    """`values` as an np.ndarray of `dtype` (tf.DType, numpy dtype or DataType enum).

    Strings become bytes objects (TF's string layout); numbers are parsed from strings,
    so CSV cells work. Raises ValueError naming the input when a value does not convert.
    """
    tf_dtype = None if dtype is None else tf.as_dtype(dtype)
    try:
        if tf_dtype == tf.string or (tf_dtype is None and _is_text(values)):
            return np.asarray([_as_bytes(v) for v in np.ravel(np.asarray(values, object))],
                              dtype=object).reshape(np.shape(values))
        if tf_dtype is not None:
            with np.errstate(over="ignore"):   # an overflow to inf is reported just below
                array = np.asarray(values, dtype=tf_dtype.as_numpy_dtype)
        else:
            array = np.asarray(values)
            array = array.astype(_INFERRED.get(array.dtype.kind, array.dtype))
    except (TypeError, ValueError, OverflowError) as e:
        want = tf_dtype.name if tf_dtype is not None else "a tensor"
        raise ValueError(f"input '{name}': cannot convert {str(values)[:80]} to {want}: {e}") \
            from None
    check_finite(name, array)
    return array


def check_finite(name, array):
    """ValueError naming the input and the first value when a float array holds NaN or inf
    (mdl_tf.values: a dense value must be finite as float32)."""
    if array.dtype.kind == "f":
        problem = rules.array_problem(array)
        if problem:
            raise ValueError(f"input '{name}': {problem}")


def _is_text(values):
    return np.asarray(values).dtype.kind in "USO"


def _as_bytes(value):
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")


def input_dtypes(signature_def):
    """{input name: tf.DType} of a SignatureDef proto."""
    return {k: tf.as_dtype(v.dtype) for k, v in signature_def.inputs.items()}


def make_predict_request(model_name, signature_name, inputs, dtypes=None, version=None,
                         output_filter=()):
    """A PredictRequest; `inputs` maps input names to array-likes, `dtypes` to their dtypes.

    Inputs are sent as given (no names added or dropped): the server validates them.
    """
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = int(version)
    for name, values in inputs.items():
        dtype = (dtypes or {}).get(name)
        request.inputs[name].CopyFrom(tensor_proto(to_array(values, dtype, name)))
    request.output_filter.extend(output_filter)
    return request


def response_arrays(response):
    """{output name: np.ndarray} of a PredictResponse."""
    return {k: ndarray(v) for k, v in response.outputs.items()}


def tensor_proto(array):
    """TensorProto of an np.ndarray (strings: an object array of bytes, as from to_array)."""
    if array.dtype == object:
        proto = tensor_pb2.TensorProto(dtype=_STRING)
        proto.string_val.extend(array.ravel().tolist())
    elif array.dtype in _NUMERIC.values():
        proto = tensor_pb2.TensorProto(dtype=tf.as_dtype(array.dtype).as_datatype_enum,
                                       tensor_content=array.tobytes())
    else:
        return tf.make_tensor_proto(array)
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    return proto


def ndarray(proto):
    """np.ndarray of a TensorProto. Raises ValueError or TypeError for a malformed one: a
    negative dimension, or values (or tensor_content bytes) that do not fill the shape
    exactly (TensorFlow would repeat a short list's last value; a request is refused)."""
    shape = [d.size for d in proto.tensor_shape.dim]
    if any(size < 0 for size in shape):
        raise ValueError(f"shape {shape} has a negative dimension")
    elements = math.prod(shape)
    if proto.tensor_content and proto.dtype in _NUMERIC:
        needed = elements * _NUMERIC[proto.dtype].itemsize
        if len(proto.tensor_content) != needed:
            raise ValueError(f"{len(proto.tensor_content)} bytes of tensor_content; shape "
                             f"{shape} needs {needed}")
        return np.frombuffer(proto.tensor_content, _NUMERIC[proto.dtype]).reshape(shape)
    values = len(proto.string_val) if proto.dtype == _STRING else _value_count(proto)
    if not proto.tensor_content and values != elements:
        raise ValueError(f"{values} values for shape {shape} ({elements} elements)")
    if proto.dtype == _STRING:
        return np.array(proto.string_val, dtype=object).reshape(shape)
    return tf.make_ndarray(proto)


def _value_count(proto):
    """How many values the typed *_val fields of a TensorProto hold."""
    return sum(len(getattr(proto, field.name)) for field in proto.DESCRIPTOR.fields
               if field.name.endswith("_val"))


def columns_from_rows(rows, names, dtypes=None, defaults=None, locations=None):
    """{name: [value per row]} for `names`, from row dicts; extra keys are ignored.

    With `dtypes` ({name: tf.DType}), text cells are read by the trainer's rules
    (`cell_value`); `defaults` maps dense inputs to the schema's default for empty cells;
    `locations` names each row ("<file>:<line>", default "row <i>") in errors.
    Raises ValueError naming the row (and column) that lacks an input or holds a bad value.
    """
    rows = list(rows)
    out = {n: [] for n in names}
    for i, row in enumerate(rows):
        where = locations[i] if locations else f"row {i}"
        missing = [n for n in names if n not in row]
        if missing:
            raise ValueError(f"{where} lacks input(s) {missing}; it has {sorted(row)}")
        for n in names:
            try:
                out[n].append(cell_value(row[n], (dtypes or {}).get(n), (defaults or {}).get(n)))
            except ValueError as e:
                raise ValueError(f"{where}: column '{n}': {e}") from None
    return out


def cell_value(cell, dtype=None, default=None):
    """One row value for an input of `dtype`; non-text values (JSON numbers) pass as given.

    Text follows mdl_tf.values: stripped; empty is missing (int64 -> -1, string -> "",
    float -> `default`, ValueError without one); otherwise a valid float32 or int64 text.
    """
    if not isinstance(cell, str) or dtype is None:
        return cell
    dtype, cell = tf.as_dtype(dtype), cell.strip()
    if dtype == tf.string:
        return cell
    if cell == "":
        if dtype.is_integer:
            return rules.EMPTY_ID
        if default is None:
            raise ValueError("empty dense cell: give the model's schema (--schema "
                             "<model_dir>/schema.yaml) so it takes the schema's default, "
                             "as in training")
        return default
    problem = rules.id_problem(cell) if dtype.is_integer else rules.dense_problem(cell)
    if problem:
        raise ValueError(problem)
    return cell
