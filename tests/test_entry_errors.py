"""What a user's input causes ends an entry point with "error: ..." and exit 2, not a
traceback (mdl_tf/cli.py: user_errors)."""
import os
import subprocess
import sys

import pytest

from conftest import REPO
from mdl_tf import cli


@pytest.mark.parametrize("error", [ValueError("bad value"), FileNotFoundError("no such dir"),
                                   FileExistsError("exists")])
def test_user_errors_exit_2_with_the_message(error, capsys):
    with pytest.raises(SystemExit) as stop:
        with cli.user_errors():
            raise error
    assert stop.value.code == 2
    assert capsys.readouterr().err == f"error: {error}\n"


def test_other_errors_keep_their_traceback():
    with pytest.raises(KeyError):
        with cli.user_errors():
            raise KeyError("a bug, not bad input")


@pytest.mark.parametrize("module", ["mdl_tf.export", "mdl_tf.evaluate"])
def test_a_directory_that_is_not_a_run_is_a_clear_error(module, tmp_path):
    run = subprocess.run([sys.executable, "-m", module, "--model_dir", str(tmp_path)],
                         capture_output=True, text=True, cwd=REPO, timeout=300,
                         env={**os.environ, "PYTHONPATH": REPO})
    assert run.returncode == 2, run.stderr[-2000:]
    assert f"error: {tmp_path} is not a model directory (no run.json)" in run.stderr
    assert "Traceback" not in run.stderr
