"""Models: MDL and the baselines, built from a schema and a config object via the registry."""
from mdl_tf.models.base import RankingModel
from mdl_tf.models.mdl import MDL, MDLConfig
from mdl_tf.models.registry import build_model, make_config, model_names

__all__ = ["MDL", "MDLConfig", "RankingModel", "build_model", "make_config", "model_names"]
