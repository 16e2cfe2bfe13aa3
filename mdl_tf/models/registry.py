"""Model registry: `--model NAME` -> model class; a model is built from a config object."""
import dataclasses

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
    """The model's config dataclass with `overrides` ({field: value or string}) applied."""
    cls = _model_class(name).config_class
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in (overrides or {}).items():
        if key not in fields:
            raise ValueError(f"model '{name}' has no config field '{key}' "
                             f"(fields: {', '.join(fields)})")
        kwargs[key] = _coerce(value, fields[key].type, key)
    return cls(**kwargs)


def build_model(name, schema, config=None):
    cls = _model_class(name)
    return cls(schema, config if config is not None else cls.config_class())


def _model_class(name):
    if name not in MODELS:
        raise ValueError(f"unknown model '{name}'; choose from {', '.join(model_names())}")
    return MODELS[name]


def _coerce(value, type_name, key):
    if not isinstance(value, str):
        return value
    type_name = str(type_name)
    try:
        if type_name in ("bool", "<class 'bool'>"):
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(value)
            return value.lower() in ("true", "1")
        if type_name in ("int", "<class 'int'>"):
            return int(value)
        if type_name in ("float", "<class 'float'>"):
            return float(value)
    except ValueError:
        raise ValueError(f"config field '{key}' expects {type_name}, got '{value}'") from None
    return value
