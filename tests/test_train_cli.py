"""The training, evaluation and export CLIs in subprocesses: outputs, bad rows, bad flags."""
import json
import os
import subprocess
import sys

from conftest import REPO

ENV = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "PYTHONPATH": REPO}


def cli(*args):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          env=ENV, cwd=REPO, timeout=300)


def test_evaluate_and_export_clis(tiny_run, tmp_path):
    out = str(tmp_path / "test_metrics.json")
    run = cli("mdl_tf.evaluate", "--model_dir", tiny_run["model_dir"], "--split", "test",
              "--output", out)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "(overall)" in run.stdout and "favourite" in run.stdout
    with open(out) as fh:
        assert json.load(fh)["split"] == "test"
    run = cli("mdl_tf.export", "--model_dir", tiny_run["model_dir"],
              "--export_base", str(tmp_path / "exp"))
    assert run.returncode == 0, run.stderr[-2000:]
    assert [d for d in os.listdir(tmp_path / "exp") if d.isdigit()]


def test_train_cli_reports_bad_rows_with_file_line_and_column(micro_schema, tiny_dataset,
                                                            tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for split in ("train", "valid", "test"):
        with open(os.path.join(tiny_dataset, f"{split}.csv")) as src:
            lines = src.read().splitlines()
        bad_line = {"train": 6, "valid": 7, "test": 8}[split]
        fields = lines[bad_line - 1].split(",")
        fields[4] = "NaN"                                        # activity
        lines[bad_line - 1] = ",".join(fields)
        (data_dir / f"{split}.csv").write_text("\n".join(lines) + "\n")
    args = ("mdl_tf.train", "--dataset", micro_schema, "--data_dir", str(data_dir), "--model_dir",
            str(tmp_path / "run"), "--epochs", "1", "--batch_size", "256", "--nojit_compile",
            "--config", "d_model=16", "--config", "num_layers=1", "--noexport")
    run = cli(*args)
    assert run.returncode == 2
    assert "train.csv:6: column 'activity': NaN in dense feature 'NaN'" in run.stderr
    skipped = cli(*args, "--bad_rows", "skip", "--model_dir", str(tmp_path / "run2"))
    assert skipped.returncode == 0, skipped.stderr[-2000:]
    # Calibrating on valid while evaluating test counts each split's bad rows apart.
    evaluated = cli("mdl_tf.evaluate", "--model_dir", str(tmp_path / "run2"), "--split", "test",
                    "--calibrate", "platt", "--bad_rows", "skip")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    for split in ("valid", "test"):
        assert f"bad rows ({split}): 1 of 2000 rows read are bad" in evaluated.stdout


def test_train_cli_rejects_bad_config_and_schema(tiny_dataset, tmp_path):
    run = cli("mdl_tf.train", "--dataset", os.path.join(tiny_dataset, "schema.yaml"),
              "--model_dir", str(tmp_path), "--config", "d_modle=8")
    assert run.returncode == 2 and "no config field 'd_modle'" in run.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(open(os.path.join(tiny_dataset, "schema.yaml")).read().replace(
        "- user_id\n  - age_group", "- user_id\n  - agegroup", 1))
    run = cli("mdl_tf.train", "--dataset", str(bad), "--model_dir", str(tmp_path / "r"))
    assert run.returncode == 2 and "unknown feature 'agegroup'" in run.stderr
