"""Guards and feedback around training: small data, d_model vs groups, progress lines."""
import os

import pytest

import mdl_tf  # noqa: F401
from mdl_tf import datasets, distribute, resume, train
from mdl_tf import schema as schema_lib
from mdl_tf.models import build_model, make_config


def tiny_split(tmp_path, rows):
    """The synthetic schema over a train.csv of `rows` rows (same header)."""
    schema = datasets.load_schema("synthetic")
    header = ",".join(dict.fromkeys(
        [f.source_column for f in schema.features] + [schema.scenario.column]
        + [t.column for t in schema.tasks] + list(schema.gauc_group)))
    (tmp_path / "train.csv").write_text(header + "\n" + "x\n" * rows)
    raw = schema.to_dict()
    raw["files"] = {"train": "train.csv"}
    raw.pop("recipe", None), raw.pop("recipe_options", None)
    return schema_lib.from_dict(raw, path=str(tmp_path / "schema.yaml"))


def test_fewer_rows_than_one_batch_is_a_clear_error(tmp_path):
    schema = tiny_split(tmp_path, 100)
    with pytest.raises(ValueError, match=r"train split has 100 rows, fewer than one batch "
                                         r"\(--batch_size 2048\); use --batch_size 4 or less"):
        train.check_data_size(schema, str(tmp_path), train.TrainOptions())


def test_few_batches_warn_with_a_suggested_batch_size_and_the_dropped_rows(tmp_path, capsys):
    schema = tiny_split(tmp_path, 3000)
    assert train.check_data_size(schema, str(tmp_path), train.TrainOptions()) == 3000
    out = capsys.readouterr().out
    assert "3000 rows: 1 step(s) per epoch at --batch_size 2048" in out
    assert "try --batch_size 128" in out
    assert "drops its last partial batch (952 of 3000 rows" in out


def test_d_model_not_divisible_by_groups_names_the_flag_and_valid_values():
    schema = datasets.load_schema("synthetic")            # 4 groups
    config = make_config("mdl", {"d_model": "30"})
    with pytest.raises(ValueError) as err:
        train.check_token_width(config, schema)
    message = str(err.value)
    assert "--config d_model=N" in message and "4, 8, 12" in message and "groups (4" in message
    train.check_token_width(make_config("mdl", {"d_model": "32"}), schema)


def test_progress_line_has_steps_throughput_eta_and_loss(capsys):
    progress = train.Progress(steps_per_epoch=10, batch_size=32, every_s=0)
    progress.on_epoch_begin(0)
    progress.on_train_batch_end(0)
    progress.on_train_batch_end(4, {"loss": 0.5})
    line = capsys.readouterr().out
    assert "epoch 1 step 5/10" in line and "examples/s" in line and "ETA" in line
    assert "loss 0.5000" in line


def test_early_stopping_says_when_it_stops_and_which_weights_it_restores(tmp_path):
    opts = train.TrainOptions(model_dir=str(tmp_path), verbose=2)
    model = build_model("mdl", schema := datasets.load_schema("synthetic"),
                        make_config("mdl", {}))
    callbacks = train.fit_callbacks(schema, str(tmp_path), opts, distribute.make_distribution(),
                                    None, resume.attach_state(model), 10)
    # It says "Epoch N: early stopping"; fit() then restores the best epoch's checkpoint
    # and prints which (resume.restore_best_weights).
    stop = [c for c in callbacks if isinstance(c, resume.ResumableEarlyStopping)]
    assert stop and stop[0].verbose == 1
    assert any(isinstance(c, train.Progress) for c in callbacks)


def test_metrics_table_explains_its_columns():
    from mdl_tf import metrics
    cell = {"auc": 0.7, "gauc": 0.6, "logloss": 0.5, "count": 10, "positives": 3}
    table = metrics.format_table({"scenarios": {"a": {"t": cell}, "b": {"t": cell}},
                                  "overall": {"t": cell}})
    assert table.splitlines()[-1] == metrics.TABLE_LEGEND
    assert "gauc" in metrics.TABLE_LEGEND and "counts in each" in metrics.TABLE_LEGEND


def test_tensorflow_info_lines_are_off_unless_the_user_chose_a_level():
    import subprocess
    import sys
    code = "import os, mdl_tf; print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True).stdout.strip() == "1"
    env["TF_CPP_MIN_LOG_LEVEL"] = "0"
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True).stdout.strip() == "0"
