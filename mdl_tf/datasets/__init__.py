"""Datasets: built-in schemas (`<name>.yaml`) and the recipes that build their files.

A recipe is a module here with `prepare(out_dir, raw_dir=None, **recipe_options) -> out_dir`
that writes the files its schema's `files:` section names (`recipe_options` come from the
schema). `resolve()` runs it once per output dir and raw input.
"""
import dataclasses
import importlib
import json
import os

from mdl_tf import schema as schema_lib

HERE = os.path.dirname(os.path.abspath(__file__))
BUILTIN = ("synthetic", "movielens", "movielens_time", "census", "epinions")


def schema_path(dataset):
    """`dataset` is a built-in name or the path of a schema YAML file."""
    if dataset in BUILTIN:
        return os.path.join(HERE, f"{dataset}.yaml")
    return dataset


def load_schema(dataset):
    return schema_lib.load(schema_path(dataset))


def write_recipe_free_schema(dataset, out_dir):
    """out_dir/schema.yaml: built-in schema `dataset` without its recipe, so the files a
    recipe wrote into out_dir train with `--dataset <out_dir>/schema.yaml` directly."""
    schema = dataclasses.replace(load_schema(dataset), recipe=None)
    schema_lib.dump(schema, os.path.join(out_dir, "schema.yaml"))


def resolve(schema, data_dir=None, work_dir=None):
    """The directory holding the schema's files, building them with its recipe if needed.

    Without a recipe the files are read from data_dir (default: next to the schema).
    With one, data_dir is the recipe's raw input and the built files go to work_dir.
    """
    if not schema.recipe:
        return data_dir or os.path.dirname(schema.path or ".")
    if work_dir is None:
        raise ValueError(f"dataset '{schema.name}' is built by a recipe: give a work_dir")
    recipe = importlib.import_module(f"mdl_tf.datasets.{schema.recipe}")
    raw_dir = data_dir or getattr(recipe, "DEFAULT_RAW_DIR", None)
    stamp = os.path.join(work_dir, ".prepared.json")
    key = {"recipe": schema.recipe, "options": schema.recipe_options,
           "raw_dir": os.path.abspath(raw_dir) if raw_dir else None}
    if os.path.exists(stamp):
        with open(stamp) as fh:
            if json.load(fh) == key:
                return work_dir
    recipe.prepare(work_dir, raw_dir=raw_dir, **schema.recipe_options)
    with open(stamp, "w") as fh:
        json.dump(key, fh)
    return work_dir
