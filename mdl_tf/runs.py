"""A model directory: what training leaves in it and how other tools reload the model.

    <model_dir>/run.json         model name, config, dataset and data directory; after
                                 a --bad_rows skip run, "bad_rows" per split, file, reason
    <model_dir>/schema.yaml      the dataset schema the model was built from
    <model_dir>/checkpoints/     tf.train checkpoints (model + optimizers + epoch)
    <model_dir>/backup/          BackupAndRestore's fault-tolerance backups (while training)
    <model_dir>/.workers/<task>/ checkpoints of non-chief tasks (while training; see distribute)
    <model_dir>/logs/            TensorBoard
    <model_dir>/metrics_<split>.json  the last evaluation of each split
    <model_dir>/calibration.json post-hoc calibration per scenario x task (optional; see
                                 mdl_tf/calibration.py), applied inside the exports
    <model_dir>/finished.json    step, epochs and export of a finished run (mdl_tf/resume.py)
    <model_dir>/.validation/     --strategy parameter_server: the weights the chief validates
    <model_dir>/export/<v>/      SavedModels, one numeric version each
"""
import dataclasses
import json
import os

import mdl_tf  # noqa: F401
import tensorflow as tf

from mdl_tf import schema as schema_lib
from mdl_tf.models import build_model, make_config


def save_run(model_dir, model_name, config, schema, data_dir):
    """Writes schema.yaml and run.json (with the schema's lineage, if it extends a model)."""
    os.makedirs(model_dir, exist_ok=True)
    schema_lib.dump(schema, os.path.join(model_dir, "schema.yaml"))
    info = {"model": model_name, "config": dataclasses.asdict(config),
            "dataset": schema.name, "data_dir": os.path.abspath(data_dir)}
    if schema.lineage:
        info["lineage"] = [dict(entry) for entry in schema.lineage]
    with open(os.path.join(model_dir, "run.json"), "w") as fh:
        json.dump(info, fh, indent=2)


def record(model_dir, **entries):
    """Adds or replaces top-level entries of run.json (e.g. the bad-row counts)."""
    path = os.path.join(model_dir, "run.json")
    with open(path) as fh:
        info = json.load(fh)
    info.update(entries)
    with open(path, "w") as fh:
        json.dump(info, fh, indent=2)


def load_run(model_dir):
    """(run info dict, schema) of a model directory written by training."""
    path = os.path.join(model_dir, "run.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{model_dir} is not a model directory (no run.json); "
                                "train one with python -m mdl_tf.train --model_dir ...")
    with open(path) as fh:
        info = json.load(fh)
    return info, schema_lib.load(os.path.join(model_dir, "schema.yaml"))


def checkpoint(model, epoch=None):
    epoch = epoch if epoch is not None else tf.Variable(0, dtype=tf.int64, name="epoch")
    return tf.train.Checkpoint(model=model, epoch=epoch), epoch


def restore_model(model_dir, checkpoint_path=None):
    """(model with the weights of checkpoint_path (default: the latest checkpoint), schema,
    run info)."""
    info, schema = load_run(model_dir)
    model = build_model(info["model"], schema, make_config(info["model"], info["config"]))
    model.build_from_schema()
    ckpt, _ = checkpoint(model)
    latest = checkpoint_path or tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    if latest is None:
        raise FileNotFoundError(f"{model_dir}/checkpoints holds no checkpoint")
    ckpt.restore(latest).expect_partial()
    return model, schema, info
