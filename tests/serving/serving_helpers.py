"""Helpers shared by the serving tests (plain functions: each module owns its fixtures)."""
import os
import shutil

import mdl_tf  # noqa: F401
import numpy as np
import tensorflow as tf

from mdl_tf import data, demo
from serving import server as server_lib

ATOL = 1e-6  # eager Keras vs graph: see TF_STACK_NOTES (about 4e-7 observed)


def validation_columns(tiny_run, n=8):
    """The first n validation rows of the tiny run, as {column: np.ndarray}."""
    return demo.validation_rows(tiny_run["model_dir"], n)[0]


def feature_inputs(columns, schema, scenario=None):
    """The raw feature inputs of a signature; with `scenario`, serving_default's inputs
    with every row put in that scenario."""
    inputs = {f.name: columns[f.name] for f in schema.features}
    if scenario is not None:
        inputs[data.SCENARIO_KEY] = np.array([scenario.encode()] * len(columns["scenario"]),
                                             dtype=object)
    return inputs


def call_signature(loaded, name, inputs):
    """{output: np.ndarray} of a loaded SavedModel signature."""
    return {k: v.numpy() for k, v in loaded.signatures[name](
        **{k: tf.constant(v) for k, v in inputs.items()}).items()}


def start_server(base_path, **options):
    """An in-process server on a free 127.0.0.1 port (stop() it)."""
    return server_lib.start(server_lib.ServerOptions(
        model_name="mdl", model_base_path=base_path, host="127.0.0.1", port=0, **options))


def publish_version(version_dir, export_base, version):
    """Copies a version into export_base/<version> the way an export does: into a hidden
    temporary directory first, then one rename, so a polling server never sees half of it."""
    tmp = os.path.join(export_base, f".tmp-{version}")
    shutil.copytree(version_dir, tmp)
    os.rename(tmp, os.path.join(export_base, str(version)))
