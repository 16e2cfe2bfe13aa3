"""Peer implementations timed next to ours: DeepCTR's MMoE (deepctr==0.9.4, the `bench` extra).

DeepCTR (github.com/shenweichen/DeepCTR) builds tf.keras functional models; it imports
`tensorflow.keras`, which is tf_keras here because mdl_tf sets TF_USE_LEGACY_KERAS=1
before TensorFlow is imported. Its MMoE reads the concatenated feature embeddings (no
feature tokens, no interaction blocks) into the experts; one softmax gate and one tower
per task.

The peer reads the same encoded batches as our models, converted to its input format:
  categorical ids [B]           -> SparseFeat, vocabulary = our num_buckets (OOV included)
  multi_categorical [B, L] (-1)  -> VarLenSparseFeat, ids + 1 (DeepCTR pads with 0), mean
  dense [B]                     -> DenseFeat [B, 1]
  scenario multi-hot [B, N_s]   -> VarLenSparseFeat of the member scenarios, mean (as our
                                   MMoE's "scenario" feature)
  labels [B, N_t]               -> one [B] label per task output
"""
import tensorflow as tf

from mdl_tf.layers.encoding import SCENARIO_KEY
from mdl_tf.models.backbone import BackboneConfig, membership_ids


def deepctr_columns(schema, scenario_embedding_dim=BackboneConfig.scenario_embedding_dim):
    from deepctr.feature_column import DenseFeat, SparseFeat, VarLenSparseFeat
    columns = []
    for f in schema.features:
        if f.type == "dense":
            columns.append(DenseFeat(f.name, 1))
        elif f.type == "multi_categorical":
            columns.append(VarLenSparseFeat(SparseFeat(f.name, f.num_buckets + 1,
                                                       f.embedding_dim), f.max_len, "mean"))
        else:
            columns.append(SparseFeat(f.name, f.num_buckets, f.embedding_dim))
    columns.append(VarLenSparseFeat(SparseFeat(SCENARIO_KEY, schema.num_scenarios + 1,
                                               scenario_embedding_dim),
                                    schema.num_scenarios, "mean"))
    return columns


def deepctr_mmoe(schema, expert_units, num_experts=4, tower_units=64, seed=0):
    """DeepCTR's MMoE for the schema's tasks (all binary), uncompiled."""
    from deepctr.models import MMOE
    return MMOE(deepctr_columns(schema), num_experts=num_experts,
                expert_dnn_hidden_units=(expert_units,),
                tower_dnn_hidden_units=(tower_units, max(tower_units // 2, 1)),
                gate_dnn_hidden_units=(), task_types=("binary",) * schema.num_tasks,
                task_names=tuple(schema.task_names), seed=seed)


def param_counts(model):
    """{"dense": weights other than the embedding tables, "total": all weights} of a DeepCTR
    model (as benchmarks.quality.param_counts for ours)."""
    tables = sum(layer.count_params() for layer in model.layers
                 if isinstance(layer, tf.keras.layers.Embedding))
    return {"dense": model.count_params() - tables, "total": model.count_params()}


def sized_deepctr_mmoe(schema, target, budget="dense"):
    """deepctr_mmoe with the expert width whose parameter count (under `budget`: "dense"
    or "total") is closest to target."""
    def count(units):
        return param_counts(deepctr_mmoe(schema, units))[budget]
    lo, hi = 4, 4096
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(mid) <= target else (lo, mid)
    return deepctr_mmoe(schema, min((lo, hi), key=lambda u: abs(count(u) - target)))


def deepctr_inputs(schema, encoded, labels):
    """Our encoded batch -> (DeepCTR's feature dict, tuple of per-task labels)."""
    x = {}
    for f in schema.features:
        value = encoded[f.name]
        if f.type == "dense":
            x[f.name] = tf.reshape(value, [-1, 1])
        elif f.type == "multi_categorical":
            x[f.name] = value + 1                                  # padding -1 -> 0
        else:
            x[f.name] = value
    x[SCENARIO_KEY] = membership_ids(encoded[SCENARIO_KEY]) + 1    # [B, N_s], 0 = none
    return x, tuple(labels[:, n] for n in range(schema.num_tasks))
