"""mdl_tf: MDL (Multi-Distribution Learner) multi-scenario, multi-task ranking in TensorFlow.

TensorFlow Recommenders needs Keras 2, so the legacy-Keras switch must be set before
anything imports TensorFlow: importing this package first guarantees it.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's C++ INFO lines (no CUDA driver on a CPU machine, CPU instruction sets) on
# every command; warnings and errors still show. A value the user set is kept.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
if os.environ["TF_USE_LEGACY_KERAS"] != "1":
    raise ImportError(
        "mdl_tf needs Keras 2 (tf_keras): unset TF_USE_LEGACY_KERAS or set it to 1 "
        "before importing TensorFlow."
    )

__version__ = "0.1.0"
