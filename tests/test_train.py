"""Training end to end: quality on synthetic data, outputs, resume, CLIs and bad input."""
import json
import math
import os
import subprocess
import sys

import mdl_tf  # noqa: F401
import pytest
import tensorflow as tf

from conftest import REPO
from mdl_tf import data, train
from mdl_tf.datasets import synthetic

ENV = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "PYTHONPATH": REPO}


def cli(*args):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          env=ENV, cwd=REPO, timeout=300)


def test_training_reaches_auc_07_in_every_scenario_and_task(tmp_path):
    data_dir = str(tmp_path / "data")
    synthetic.prepare(data_dir, rows={"train": 100_000, "valid": 20_000, "test": 1000})
    result = train.train(train.TrainOptions(
        dataset=os.path.join(data_dir, "schema.yaml"), model_dir=str(tmp_path / "run"),
        config={"d_model": 32, "num_layers": 1, "num_heads": 2}, epochs=3, batch_size=1024,
        learning_rate=3e-3, cache_data=True, export=False, verbose=0))
    cells = {(s, t): c["auc"] for s, tasks in result["metrics"]["scenarios"].items()
             for t, c in tasks.items()}
    assert len(cells) == 9
    assert all(auc >= 0.7 for auc in cells.values()), cells


def test_run_outputs_metrics_json_and_export(tiny_run, tiny_schema):
    with open(os.path.join(tiny_run["model_dir"], "metrics_valid.json")) as fh:
        saved = json.load(fh)
    assert set(saved["scenarios"]) == set(tiny_schema.scenario_names)
    for scenario in tiny_schema.scenario_names:
        assert set(saved["scenarios"][scenario]) == set(tiny_schema.task_names)
        for cell in saved["scenarios"][scenario].values():
            assert set(cell) == {"auc", "gauc", "logloss", "count", "positives", "ece",
                                 "mean_predicted", "observed_rate"}
    assert saved["overall"]["click"]["count"] == 2000
    export_dir = tiny_run["export_path"]
    assert os.path.basename(export_dir).isdigit()
    assert os.path.exists(os.path.join(export_dir, "saved_model.pb"))
    assert not [d for d in os.listdir(os.path.dirname(export_dir)) if d.startswith(".tmp")]


def test_resume_continues_from_the_last_checkpoint(tiny_dataset, tmp_path, capsys):
    opts = train.TrainOptions(dataset=os.path.join(tiny_dataset, "schema.yaml"),
                              model_dir=str(tmp_path), config={"d_model": 16, "num_layers": 1,
                                                               "num_heads": 2},
                              epochs=1, batch_size=512, jit_compile=False,
                              early_stopping_patience=0, export=False, verbose=0)
    first = train.train(opts)
    assert len(first["history"]["loss"]) == 1
    opts.epochs = 2
    second = train.train(opts)
    assert "resuming from" in capsys.readouterr().out
    assert len(second["history"]["loss"]) == 1            # only the missing epoch ran
    assert os.path.basename(
        __import__("tensorflow").train.latest_checkpoint(str(tmp_path / "checkpoints"))
    ) == "ckpt-2"


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


def test_train_cli_reports_bad_rows_with_file_line_and_column(tiny_dataset, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for split in ("train", "valid", "test"):
        with open(os.path.join(tiny_dataset, f"{split}.csv")) as src:
            lines = src.read().splitlines()
        if split == "train":
            fields = lines[5].split(",")
            fields[4] = "NaN"                                    # activity
            lines[5] = ",".join(fields)
        (data_dir / f"{split}.csv").write_text("\n".join(lines) + "\n")
    schema = os.path.join(tiny_dataset, "schema.yaml")
    args = ("mdl_tf.train", "--dataset", schema, "--data_dir", str(data_dir), "--model_dir",
            str(tmp_path / "run"), "--epochs", "1", "--batch_size", "256", "--nojit_compile",
            "--config", "d_model=16", "--config", "num_layers=1", "--noexport")
    run = cli(*args)
    assert run.returncode == 2
    assert "train.csv:6: column 'activity': NaN in dense feature 'NaN'" in run.stderr
    skipped = cli(*args, "--bad_rows", "skip", "--model_dir", str(tmp_path / "run2"))
    assert skipped.returncode == 0, skipped.stderr[-2000:]


def test_train_cli_rejects_bad_config_and_schema(tiny_dataset, tmp_path):
    run = cli("mdl_tf.train", "--dataset", os.path.join(tiny_dataset, "schema.yaml"),
              "--model_dir", str(tmp_path), "--config", "d_modle=8")
    assert run.returncode == 2 and "no config field 'd_modle'" in run.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(open(os.path.join(tiny_dataset, "schema.yaml")).read().replace(
        "- user_id\n  - age_group", "- user_id\n  - agegroup", 1))
    run = cli("mdl_tf.train", "--dataset", str(bad), "--model_dir", str(tmp_path / "r"))
    assert run.returncode == 2 and "unknown feature 'agegroup'" in run.stderr


def test_gauc_and_counts_are_consistent(tiny_run):
    cells = tiny_run["metrics"]["scenarios"]
    total = sum(c["click"]["count"] for c in cells.values())
    assert total >= tiny_run["metrics"]["overall"]["click"]["count"]  # overlap counts twice
    assert all(not math.isnan(c["click"]["auc"]) for c in cells.values())


# --- bad input: accounting, unusable splits, non-finite losses and weights ----------------
def _data_dir(tiny_dataset, tmp_path, rows=300, edit=None):
    """train/valid/test.csv with the first `rows` rows of the tiny splits; edit(split,
    header, lines) may change the data lines."""
    out = tmp_path / "data"
    out.mkdir(exist_ok=True)
    for split in ("train", "valid", "test"):
        with open(os.path.join(tiny_dataset, f"{split}.csv")) as src:
            header, *lines = src.read().splitlines()[:rows + 1]
        if edit:
            lines = edit(split, header.split(","), lines)
        (out / f"{split}.csv").write_text("\n".join([header] + lines) + "\n")
    return str(out)


def _set(lines, columns, i, column, value):
    fields = lines[i].split(",")
    fields[columns.index(column)] = value
    lines[i] = ",".join(fields)


def _options(tiny_dataset, data_dir, model_dir, **kwargs):
    return train.TrainOptions(
        dataset=os.path.join(tiny_dataset, "schema.yaml"), data_dir=data_dir,
        model_dir=str(model_dir), config={"d_model": 16, "num_layers": 1, "num_heads": 2},
        batch_size=64, jit_compile=False, early_stopping_patience=0, verbose=0,
        **{"epochs": 1, "export": False, **kwargs})


def test_skipped_rows_are_counted_per_split_file_and_reason(tiny_dataset, tmp_path):
    def edit(split, columns, lines):
        if split == "train":
            _set(lines, columns, 3, "price", "1e39")
        if split == "valid":                  # the final evaluation skips it too
            _set(lines, columns, 7, "click", "2")
        return lines
    data_dir = _data_dir(tiny_dataset, tmp_path, edit=edit)
    result = train.train(_options(tiny_dataset, data_dir, tmp_path / "run", bad_rows="skip"))
    assert result["metrics"]["overall"]["click"]["count"] == 299
    with open(tmp_path / "run" / "run.json") as fh:
        counts = json.load(fh)["bad_rows"]
    train_csv, valid_csv = (os.path.join(data_dir, f) for f in ("train.csv", "valid.csv"))
    assert counts["train"]["by_file"][train_csv] == {"rows_read": 300, "bad_rows": 1,
                                                     "bad_value": 1}
    assert counts["valid"]["by_file"][valid_csv]["label_out_of_range"] == 1
    assert counts["evaluation (valid)"]["by_file"][valid_csv] == {
        "rows_read": 300, "bad_rows": 1, "label_out_of_range": 1}


def test_too_many_skipped_rows_fail_the_run(tiny_dataset, tmp_path):
    def edit(split, columns, lines):
        for i in range(0, len(lines), 3) if split == "train" else ():
            _set(lines, columns, i, "click", "x")          # a third of the rows
        return lines
    data_dir = _data_dir(tiny_dataset, tmp_path, edit=edit)
    with pytest.raises(data.DataError, match=r"split 'train': 100 of 300 rows read are bad "
                                             r"\(33.33%\).*label_out_of_range 100.*"
                                             r"--max_bad_fraction=0.01"):
        train.train(_options(tiny_dataset, data_dir, tmp_path / "run", bad_rows="skip"))


@pytest.mark.parametrize("case", ["all rows bad, --steps", "header-only valid"])
def test_a_split_without_usable_rows_fails_before_training(tiny_dataset, tmp_path, case):
    def edit(split, columns, lines):
        if case == "header-only valid":
            return [] if split == "valid" else lines
        for i in range(len(lines)):
            _set(lines, columns, i, "scenario", "cinema")
        return lines
    data_dir = _data_dir(tiny_dataset, tmp_path, rows=50, edit=edit)
    split = "valid" if case == "header-only valid" else "train"
    with pytest.raises(data.DataError, match=f"split '{split}' .* has no usable rows"):
        train.train(_options(tiny_dataset, data_dir, tmp_path / "run", bad_rows="skip",
                             steps=5, steps_per_eval=5))
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_a_non_finite_loss_is_an_error_and_nothing_is_saved(tiny_dataset, tmp_path):
    data_dir = _data_dir(tiny_dataset, tmp_path)
    with pytest.raises(train.NonFiniteLossError,
                       match="the training loss is (nan|inf) after epoch 1"):   # diverges
        train.train(_options(tiny_dataset, data_dir, tmp_path / "run", export=True,
                             learning_rate=1e37))
    assert not os.path.exists(tmp_path / "run" / "checkpoints" / "checkpoint")
    assert not os.path.exists(tmp_path / "run" / "export")


def test_export_refuses_non_finite_weights(tiny_schema, tmp_path):
    from conftest import TINY_CONFIG
    from mdl_tf import export
    from mdl_tf.models import build_model, make_config
    model = build_model("mdl", tiny_schema, make_config("mdl", TINY_CONFIG)).build_from_schema()
    variable = model.trainable_variables[-1]
    variable.assign(tf.fill(variable.shape, float("nan")))
    with pytest.raises(ValueError, match="refusing to export: 1 of .* hold NaN or inf"):
        export.export_saved_model(model, str(tmp_path / "export"))
    assert not os.listdir(tmp_path / "export") if os.path.exists(tmp_path / "export") else True
