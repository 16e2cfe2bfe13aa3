"""MDL building blocks (arXiv 2602.07520), one concept per module."""
from mdl_tf.layers.domain_attention import DomainAwareAttention
from mdl_tf.layers.embedding import FeatureEmbedding
from mdl_tf.layers.encoding import FeatureEncoder
from mdl_tf.layers.fusion import DomainFusion
from mdl_tf.layers.gates import GateNU, SoftmaxGate
from mdl_tf.layers.interaction import (RankMixerBlock, SelfAttentionBlock, TokenMixing,
                                       make_interaction)
from mdl_tf.layers.moe import MixtureOfExperts
from mdl_tf.layers.per_token_dense import PerTokenDense, PerTokenFFN
from mdl_tf.layers.scenario import ScenarioEncoder
from mdl_tf.layers.star import PartitionedNormalization, StarDense
from mdl_tf.layers.token_head import TokenTowerHead
from mdl_tf.layers.tokenization import DomainTokenizer, FeatureTokenizer
from mdl_tf.layers.towers import ParallelMLP

__all__ = ["DomainAwareAttention", "DomainFusion", "DomainTokenizer", "FeatureEmbedding", "FeatureEncoder",
           "FeatureTokenizer", "PerTokenDense", "PerTokenFFN", "RankMixerBlock",
           "ScenarioEncoder", "SelfAttentionBlock", "TokenMixing", "make_interaction",
           "GateNU", "MixtureOfExperts", "ParallelMLP", "PartitionedNormalization",
           "SoftmaxGate", "StarDense", "TokenTowerHead"]
