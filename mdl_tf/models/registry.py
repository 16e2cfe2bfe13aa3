"""Model registry: `--model NAME` -> model class; a model is built from a config object."""
import dataclasses
import typing

from mdl_tf.models.hmoe import HMoE
from mdl_tf.models.mdl import MDL
from mdl_tf.models.mmoe import MMoE
from mdl_tf.models.pepnet import PEPNet
from mdl_tf.models.ple import PLE
from mdl_tf.models.rankmixer import RankMixer
from mdl_tf.models.shared_bottom import SharedBottom
from mdl_tf.models.star import STAR

MODELS = {"mdl": MDL, "rankmixer": RankMixer, "shared_bottom": SharedBottom, "mmoe": MMoE,
          "ple": PLE, "star": STAR, "hmoe": HMoE, "pepnet": PEPNet}
BASELINES = ("rankmixer", "shared_bottom", "mmoe", "ple", "star", "hmoe", "pepnet")


def model_names():
    return sorted(MODELS)


def make_config(name, overrides=None):
    """The model's config dataclass with `overrides` ({field: value or string}) applied.
    Strings are parsed by the field's type; "none" sets an Optional field to None."""
    cls = _model_class(name).config_class
    types = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in (overrides or {}).items():
        if key not in fields:
            raise ValueError(f"model '{name}' has no config field '{key}' "
                             f"(fields: {', '.join(fields)})")
        kwargs[key] = _coerce(value, types[key], key)
    return cls(**kwargs)


def build_model(name, schema, config=None):
    cls = _model_class(name)
    return cls(schema, config if config is not None else cls.config_class())


def _model_class(name):
    if name not in MODELS:
        raise ValueError(f"unknown model '{name}'; choose from {', '.join(model_names())}")
    return MODELS[name]


def _coerce(value, annotation, key):
    """A command-line string -> the field's type (bool, int, float, str, Optional[...])."""
    if not isinstance(value, str):
        return value
    args = typing.get_args(annotation)
    if type(None) in args:                              # Optional[T]
        if value.lower() in ("none", "null"):
            return None
        annotation = next(a for a in args if a is not type(None))
    try:
        if annotation is bool:
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(value)
            return value.lower() in ("true", "1")
        if annotation in (int, float):
            return annotation(value)
    except ValueError:
        expected = getattr(annotation, "__name__", annotation)
        raise ValueError(f"config field '{key}' expects {expected}, got '{value}'") from None
    return value
