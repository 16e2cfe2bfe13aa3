"""Which implementation a layer should trace: some products are fastest written one way
for TensorFlow's kernels and another way for XLA, which fuses loops differently (see the
layers that call this)."""
import tensorflow as tf
from tf_keras.src.utils import control_flow_util


def in_xla_compilation():
    """True while tracing inside tf.function(jit_compile=True) (also nested in one); the
    same check Keras makes to pick a layer's implementation."""
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())
