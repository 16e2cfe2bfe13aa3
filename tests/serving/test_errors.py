"""TensorFlow errors become gRPC statuses whose message is the op's own, no graph internals."""
import grpc
import tensorflow as tf

from serving import errors

ASSERT = ("Graph execution error:\n\nDetected at node Assert/Assert defined at (most recent "
          "call last):\n<stack traces unavailable>\nassertion failed: [unknown scenario] "
          "['Kids', 'x'] [(input 'segment'); known scenarios: mens, 'Mens E-Mail']\n\t "
          "[[{{node Assert/Assert}}]] [Op:__inference_signature_wrapper_1494]")


def test_assertion_keeps_only_its_parts():
    error = errors.from_tf_error(tf.errors.InvalidArgumentError(None, None, ASSERT))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.message == ("unknown scenario 'Kids', 'x' (input 'segment'); known "
                             "scenarios: mens, 'Mens E-Mail'")


def test_escaped_quotes_in_assertion_data_are_restored():
    message = ASSERT.replace("'Kids', 'x'", "\\'Kids\\'")
    assert errors.without_graph_internals(message).startswith("unknown scenario 'Kids' (input")


def test_other_errors_lose_function_and_op_names():
    message = ("{{function_node __inference_signature_wrapper_7}} Could not parse example "
               "input, value: 'x' [Op:__inference_signature_wrapper_7]")
    assert errors.without_graph_internals(message) == "Could not parse example input, value: 'x'"
