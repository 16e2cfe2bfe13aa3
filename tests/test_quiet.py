"""mdl_tf.quiet: the CUDA-stub start-up lines of CPU-only machines are dropped from the
entry points' stderr; everything else, real errors and exceptions included, still shows."""
import os
import subprocess
import sys
import textwrap

from conftest import REPO
from mdl_tf import quiet

ABSL = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
CUDART = (b"I0000 00:00:1796023846.816466   15286 cudart_stub.cc:31] Could not find cuda "
          b"drivers on your machine, GPU will not be used.\n")
CPU_GUARD = (b"I0000 00:00:1796023855.563512   15456 cpu_feature_guard.cc:227] This TensorFlow "
             b"binary is optimized to use available CPU instructions in performance-critical "
             b"operations.\n")
CPU_GUARD_2 = (b"To enable the following instructions: AVX2 FMA, in other operations, rebuild "
               b"TensorFlow with the appropriate compiler flags.\n")
CUINIT = (b"E0000 00:00:1796023852.886247   15286 cuda_platform.cc:52] failed call to cuInit: "
          b"INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n")
OTHER_ERROR = (b"E0000 00:00:1796023852.900000   15286 op_kernel.cc:1840] OP_REQUIRES failed: "
               b"Could not find cuda drivers\n")


def run_python(code):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          cwd=REPO, timeout=300, env={**os.environ, "PYTHONPATH": REPO})


def test_filter_drops_benign_lines_and_keeps_the_rest():
    text = ABSL + CUDART + b"real line\n" + CPU_GUARD + CPU_GUARD_2 + CUINIT + OTHER_ERROR
    assert quiet.filter_lines(text, cuda_expected=False) == b"real line\n" + OTHER_ERROR
    # With a GPU or a CUDA driver present, a failed cuInit is why the GPU goes unused.
    assert quiet.filter_lines(text, cuda_expected=True) == b"real line\n" + CUINIT + OTHER_ERROR
    # Only whole lines match: a benign text quoted inside another line is kept.
    quoted = b"ValueError: " + CUDART
    assert quiet.filter_lines(quoted, cuda_expected=False) == quoted
    assert quiet.filter_lines(b"no newline at the end", cuda_expected=False) == \
        b"no newline at the end"


def test_capture_keeps_order_and_python_warnings(tmp_path):
    run = run_python(f"""
        import os, warnings
        from mdl_tf import quiet
        def window():
            os.write(2, {ABSL + CUDART!r})
            warnings.warn("emitted on purpose")
            os.write(2, {OTHER_ERROR!r})
            return "result"
        result, captured = quiet.capture_fd2(window)
        quiet._write_fd2(quiet.filter_lines(captured, cuda_expected=False))
        print(result)
        """)
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    assert run.stdout == b"result\n"
    assert ABSL not in run.stderr and CUDART not in run.stderr
    warning = run.stderr.index(b"UserWarning: emitted on purpose")
    assert warning < run.stderr.index(OTHER_ERROR)


def test_exception_in_the_window_shows_every_captured_line_then_raises():
    run = run_python(f"""
        import os
        from mdl_tf import quiet
        def window():
            os.write(2, {CUDART!r} + b"native detail before the failure\\n")
            raise RuntimeError("import failed")
        quiet.capture_fd2(window)
        """)
    assert run.returncode == 1
    # Unfiltered: the import failed, so even the usually benign lines may matter.
    assert CUDART in run.stderr
    detail = run.stderr.index(b"native detail before the failure")
    assert detail < run.stderr.index(b"RuntimeError: import failed")


def test_library_imports_and_raw_logs_leave_stderr_alone(monkeypatch):
    def fail(fn):
        raise AssertionError("fd 2 redirected")
    monkeypatch.setattr(quiet, "capture_fd2", fail)
    quiet.load_tensorflow_quietly("mdl_tf.train")        # `import mdl_tf.train` in a notebook
    monkeypatch.setenv(quiet.RAW_LOGS_ENV, "1")
    quiet.load_tensorflow_quietly("__main__")


def test_cli_stderr_has_no_cuda_stub_lines_but_shows_the_real_error(tmp_path):
    run = subprocess.run([sys.executable, "-m", "mdl_tf.export", "--model_dir", str(tmp_path)],
                         capture_output=True, cwd=REPO, timeout=300,
                         env={**os.environ, "PYTHONPATH": REPO})
    assert run.returncode != 0
    assert b"is not a model directory (no run.json)" in run.stderr
    lines = run.stderr.splitlines(keepends=True)
    dropped = quiet.BENIGN + (() if quiet._cuda_driver_loads() else quiet.NO_GPU_BENIGN)
    assert not [line for line in lines if any(p.match(line) for p in dropped)]
