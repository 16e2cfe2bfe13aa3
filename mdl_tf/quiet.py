"""Quiet TensorFlow start-up on machines without a GPU, for the command-line entry points.

A CPU-only machine gets, on every command, lines from TensorFlow's native code that the
user cannot act on: absl's "All log messages before absl::InitializeLog()" notice and the
CUDA stub's "Could not find cuda drivers" (twice each, logged before absl reads
TF_CPP_MIN_LOG_LEVEL, so that setting cannot hide them), and an ERROR-level "failed call to
cuInit" at the first device enumeration. They are written to file descriptor 2 by C++, so
Python's logging filters never see them.

`load_tensorflow_quietly` imports TensorFlow and enumerates its devices with fd 2 pointing
at a temporary file, then writes back to fd 2, in order, every captured line except those
in BENIGN (and NO_GPU_BENIGN when no GPU is found and no CUDA driver can be loaded).
Synchronous, no reader thread: nothing is lost when the process exits normally or with an
exception — if the import raises, every captured line is written back unfiltered before the
exception propagates. A native crash (segfault) inside the window loses the captured lines,
but its faulthandler traceback (if enabled) still goes to the real stderr.
MDL_TF_RAW_LOGS=1 turns the filter off.
"""
import faulthandler
import os
import re
import sys
import tempfile

RAW_LOGS_ENV = "MDL_TF_RAW_LOGS"
# glog's prefix: severity + MMDD, time, thread id, then "file.cc:line] ".
_GLOG = rb"[IW]\d{4} [\d:.]+ +\d+ "
BENIGN = tuple(re.compile(p) for p in (
    # absl: lines logged before its initialisation go to stderr regardless of the log level;
    # a notice, not a problem (it precedes the cudart_stub line in every process).
    rb"WARNING: All log messages before absl::InitializeLog\(\) is called are written to "
    rb"STDERR\r?$",
    # INFO: the CUDA runtime stub found no driver library: what a CPU-only machine is.
    _GLOG + rb"cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine, GPU will "
    rb"not be used\.\r?$",
    # INFO: the CPU instruction sets this build uses, and its continuation line: build facts.
    _GLOG + rb"cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized to use "
    rb"available CPU instructions in performance-critical operations\.\r?$",
    rb"To enable the following instructions: [A-Za-z0-9_., ]+, in other operations, rebuild "
    rb"TensorFlow with the appropriate compiler flags\.\r?$",
))
NO_GPU_BENIGN = tuple(re.compile(p) for p in (
    # ERROR: cuInit fails because there is no driver. Benign only where no GPU was found and
    # no driver library loads; with a driver present it is why the GPU is not used.
    rb"E\d{4} [\d:.]+ +\d+ cuda_platform\.cc:\d+\] failed call to cuInit: ",
))


def filter_lines(captured, cuda_expected):
    """The bytes `captured` without the BENIGN lines, and without the NO_GPU_BENIGN lines
    unless `cuda_expected` (a GPU was found or a CUDA driver library loads)."""
    drop = BENIGN if cuda_expected else BENIGN + NO_GPU_BENIGN
    return b"".join(line for line in captured.splitlines(keepends=True)
                    if not any(p.match(line) for p in drop))


def capture_fd2(fn):
    """Calls fn() with file descriptor 2 redirected to a temporary file; returns
    (fn's result, the captured bytes). If fn raises, the captured bytes are written to fd 2
    unchanged before the exception propagates. Python's sys.stderr is flushed on both sides
    of the window, so its lines are captured in order with the native ones. Without an
    fd 2 (a closed stderr) fn() just runs."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        return fn(), b""
    fault_was_enabled = faulthandler.is_enabled()
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        if fault_was_enabled:                       # a crash's traceback to the real stderr
            faulthandler.enable(file=saved)
        try:
            result = fn()
        except BaseException:
            _restore(saved, fault_was_enabled)
            _write_fd2(_read(tmp))
            raise
        _restore(saved, fault_was_enabled)
        return result, _read(tmp)


def _restore(saved, fault_was_enabled):
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)
    if fault_was_enabled:
        faulthandler.enable(file=sys.stderr)


def _read(tmp):
    tmp.seek(0)
    return tmp.read()


def _write_fd2(data):
    while data:
        data = data[os.write(2, data):]


def _enumerate_devices():
    import mdl_tf  # noqa: F401  (legacy Keras and the log level before TensorFlow loads)
    import tensorflow as tf
    return tf.config.list_physical_devices("GPU")


def _cuda_driver_loads():
    """Whether the CUDA driver library loads (the one TensorFlow's cudart stub looks for)."""
    import ctypes
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def load_tensorflow_quietly(module_name):
    """When the caller runs as a script (`module_name == "__main__"`) and MDL_TF_RAW_LOGS is
    not 1: imports TensorFlow and lists its devices with the benign start-up lines filtered
    out (see the module docstring). A library import (a notebook's `import mdl_tf.train`)
    does nothing, so file descriptors of a user's process are never redirected."""
    if module_name != "__main__" or os.environ.get(RAW_LOGS_ENV) == "1":
        return
    gpus, captured = capture_fd2(_enumerate_devices)
    _write_fd2(filter_lines(captured, cuda_expected=bool(gpus) or _cuda_driver_loads()))
