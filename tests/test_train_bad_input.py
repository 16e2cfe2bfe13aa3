"""Bad input to training: skipped rows counted per split, file and reason, the skip limit,
splits without usable rows, non-finite losses and weights."""
import json
import os

import mdl_tf  # noqa: F401
import pytest
import tensorflow as tf

from conftest import TINY_CONFIG
from mdl_tf import data, export, train
from mdl_tf.models import build_model, make_config


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


def _options(micro_schema, data_dir, model_dir, **kwargs):
    """On conftest's micro_schema: the bad-row accounting does not depend on its size."""
    return train.TrainOptions(
        dataset=micro_schema, data_dir=data_dir,
        model_dir=str(model_dir), config={"d_model": 16, "num_layers": 1, "num_heads": 2},
        batch_size=64, jit_compile=False, early_stopping_patience=0, verbose=0,
        **{"epochs": 1, "export": False, **kwargs})


def test_skipped_rows_are_counted_per_split_file_and_reason(micro_schema, tiny_dataset, tmp_path):
    def edit(split, columns, lines):
        if split == "train":
            _set(lines, columns, 3, "price", "1e39")
        if split == "valid":                  # the final evaluation skips it too
            _set(lines, columns, 7, "click", "2")
        return lines
    data_dir = _data_dir(tiny_dataset, tmp_path, edit=edit)
    result = train.train(_options(micro_schema, data_dir, tmp_path / "run", bad_rows="skip"))
    assert result["metrics"]["overall"]["click"]["count"] == 299
    with open(tmp_path / "run" / "run.json") as fh:
        counts = json.load(fh)["bad_rows"]
    train_csv, valid_csv = (os.path.join(data_dir, f) for f in ("train.csv", "valid.csv"))
    assert counts["train"]["by_file"][train_csv] == {"rows_read": 300, "bad_rows": 1,
                                                     "bad_value": 1}
    assert counts["valid"]["by_file"][valid_csv]["label_out_of_range"] == 1
    assert counts["evaluation (valid)"]["by_file"][valid_csv] == {
        "rows_read": 300, "bad_rows": 1, "label_out_of_range": 1}


def test_too_many_skipped_rows_fail_the_run(micro_schema, tiny_dataset, tmp_path):
    def edit(split, columns, lines):
        for i in range(0, len(lines), 3) if split == "train" else ():
            _set(lines, columns, i, "click", "x")          # a third of the rows
        return lines
    data_dir = _data_dir(tiny_dataset, tmp_path, edit=edit)
    with pytest.raises(data.DataError, match=r"split 'train': 100 of 300 rows read are bad "
                                             r"\(33.33%\).*label_out_of_range 100.*"
                                             r"--max_bad_fraction=0.01"):
        train.train(_options(micro_schema, data_dir, tmp_path / "run", bad_rows="skip"))


@pytest.mark.parametrize("case", ["all rows bad, --steps", "header-only valid"])
def test_a_split_without_usable_rows_fails_before_training(micro_schema, tiny_dataset, tmp_path,
                                                           case):
    def edit(split, columns, lines):
        if case == "header-only valid":
            return [] if split == "valid" else lines
        for i in range(len(lines)):
            _set(lines, columns, i, "scenario", "cinema")
        return lines
    data_dir = _data_dir(tiny_dataset, tmp_path, rows=50, edit=edit)
    split = "valid" if case == "header-only valid" else "train"
    with pytest.raises(data.DataError, match=f"split '{split}' .* has no usable rows"):
        train.train(_options(micro_schema, data_dir, tmp_path / "run", bad_rows="skip",
                             steps=5, steps_per_eval=5))
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_a_non_finite_loss_is_an_error_and_nothing_is_saved(micro_schema, tiny_dataset, tmp_path):
    data_dir = _data_dir(tiny_dataset, tmp_path)
    with pytest.raises(train.NonFiniteLossError,
                       match="the training loss is (nan|inf) after epoch 1"):   # diverges
        train.train(_options(micro_schema, data_dir, tmp_path / "run", export=True,
                             learning_rate=1e37))
    assert not os.path.exists(tmp_path / "run" / "checkpoints" / "checkpoint")
    assert not os.path.exists(tmp_path / "run" / "export")


def test_export_refuses_non_finite_weights(tiny_schema, tmp_path):
    model = build_model("mdl", tiny_schema, make_config("mdl", TINY_CONFIG)).build_from_schema()
    variable = model.trainable_variables[-1]
    variable.assign(tf.fill(variable.shape, float("nan")))
    with pytest.raises(ValueError, match="refusing to export: 1 of .* hold NaN or inf"):
        export.export_saved_model(model, str(tmp_path / "export"))
    assert not os.listdir(tmp_path / "export") if os.path.exists(tmp_path / "export") else True
