"""Resuming training (mdl_tf/resume.py): from the last epoch checkpoint with more epochs, and
a run killed mid-epoch that ends where the uninterrupted run ends; a finished run is a
no-op. (A kill -9 in another process: tests/test_distribute.py.) On conftest's
micro_schema: what is tested does not depend on the schema's size."""
import csv
import itertools
import os
import shutil

import mdl_tf  # noqa: F401
import numpy as np
import pytest
import tensorflow as tf

from conftest import TINY_CONFIG
from mdl_tf import train


def test_resume_continues_from_the_last_checkpoint(micro_schema, tiny_dataset, tmp_path,
                                                   capsys):
    opts = train.TrainOptions(dataset=micro_schema, data_dir=tiny_dataset,
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


class _Killed(Exception):
    pass


class _KillAtStep(tf.keras.callbacks.Callback):
    """Ends training abruptly (no on_train_end: the backup stays) at a step."""

    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) >= self.step:
            raise _Killed(f"killed at step {self.step}")


def _overfitting_dataset(micro_schema, tiny_dataset, out):
    """micro_schema over tiny_dataset with inverted validation labels: the more the model
    learns, the lower val_auc_mean, so early stopping ends the run after its first epochs."""
    os.makedirs(out)
    shutil.copy(micro_schema, os.path.join(out, "schema.yaml"))
    shutil.copy(os.path.join(tiny_dataset, "train.csv"), out)
    with open(os.path.join(tiny_dataset, "valid.csv"), newline="") as src, \
            open(os.path.join(out, "valid.csv"), "w", newline="") as dst:
        reader = csv.DictReader(src)
        writer = csv.DictWriter(dst, reader.fieldnames)
        writer.writeheader()
        for row in itertools.islice(reader, 600):
            writer.writerow({k: {"0": "1", "1": "0"}[v] if k in ("click", "like", "favourite")
                             and v else v for k, v in row.items()})
    return os.path.join(out, "schema.yaml")


def test_killed_run_resumes_to_the_same_end_and_a_finished_run_is_a_no_op(
        micro_schema, tiny_dataset, tmp_path, capsys):
    schema_path = _overfitting_dataset(micro_schema, tiny_dataset, str(tmp_path / "data"))

    def options(name, **extra):
        return train.TrainOptions(
            dataset=schema_path, model_dir=str(tmp_path / name), config=dict(TINY_CONFIG),
            steps=40, steps_per_eval=5, backup_every=3, early_stopping_patience=2,
            batch_size=256, jit_compile=False, verbose=0, **extra)

    reference = train.train(options("reference"))
    stopped_at = int(reference["model"].optimizer.iterations.numpy())
    assert stopped_at < 40                         # early stopping ended it
    # The killed run never reaches its export; the resumed one skips it (export=False): the
    # reference exports its final model's weights, which are compared here.
    with pytest.raises(_Killed):                   # mid-epoch, after a backup, while
        train.train(options("killed", export=False,       # waiting
                            callbacks=[_KillAtStep(stopped_at - 1)]))
    resumed = train.train(options("killed", export=False))
    assert "resuming training at step" in capsys.readouterr().out
    assert int(resumed["model"].optimizer.iterations.numpy()) == stopped_at
    expected, got = (r["model"].variables for r in (reference, resumed))
    assert len(expected) == len(got) and expected
    for want, have in zip(expected, got):
        np.testing.assert_allclose(have.numpy(), want.numpy(), atol=1e-5, err_msg=want.name)

    exports = os.listdir(tmp_path / "reference" / "export")
    again = train.train(options("reference"))
    assert again["already_trained"]["step"] == stopped_at
    assert again["export_path"] == reference["export_path"]
    assert f"already trained: {tmp_path / 'reference'} finished at step {stopped_at}" in \
        capsys.readouterr().out
    assert os.listdir(tmp_path / "reference" / "export") == exports
