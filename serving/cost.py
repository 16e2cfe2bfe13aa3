"""Analytic cost of the export's signatures: multiply-add FLOPs per example.

Counts the FLOPs of the contractions (Einsum, MatMul, BatchMatMul) in a signature's graph
traced at a fixed batch size, where every shape is static. That is where MDL spends its
arithmetic; element-wise and string ops are left out. Comparing `scenario_<s>` with
`serving_default` shows what computing 2 of the N_s + 1 scenario tokens saves.
"""
import math

import tensorflow as tf

from mdl_tf import export
from mdl_tf.contract import signatures

CONTRACTIONS = ("Einsum", "MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3")


def op_flops(op):
    """2 x multiply-adds of one contraction op (0 for other ops)."""
    if op.type not in CONTRACTIONS:
        return 0
    shapes = [t.shape for t in op.inputs]
    if op.type == "Einsum":
        return 2 * _einsum_size(op, shapes)
    if not all(s.is_fully_defined() for s in shapes):
        raise _unknown_shape(op, shapes)
    a, b = (s.as_list() for s in shapes)
    if op.get_attr("transpose_a" if op.type == "MatMul" else "adj_x"):
        a[-2], a[-1] = a[-1], a[-2]
    if op.get_attr("transpose_b" if op.type == "MatMul" else "adj_y"):
        b[-2], b[-1] = b[-1], b[-2]
    batch = math.prod(tf.broadcast_static_shape(tf.TensorShape(a[:-2]),
                                                tf.TensorShape(b[:-2])).as_list())
    return 2 * batch * a[-2] * a[-1] * b[-1]


def _einsum_size(op, shapes):
    """Product of the sizes of every index in an einsum: its multiply-add count.

    An index unknown in one operand (a batch size lost in string ops) is taken from another.
    """
    equation = op.get_attr("equation").decode()
    operands = equation.split("->")[0].split(",")
    if any("." in labels for labels in operands):
        raise ValueError(f"op {op.name}: ellipsis einsum '{equation}' is not supported")
    sizes = {}
    for labels, shape in zip(operands, shapes):
        sizes.update({k: n for k, n in zip(labels, shape.as_list()) if n is not None})
    if len(sizes) < len(set("".join(operands))):
        raise _unknown_shape(op, shapes)
    return math.prod(sizes.values())


def _unknown_shape(op, shapes):
    return ValueError(f"op {op.name} has unknown input shapes {shapes}; trace with a fixed "
                      "batch size")


CALLS = ("PartitionedCall", "StatefulPartitionedCall")


def graph_flops(concrete_function):
    """FLOPs of a function's graph, including the functions it calls (a signature that
    reads another signature's graph costs what that graph costs)."""
    return _graph_flops(concrete_function.graph)


def _graph_flops(graph):
    total = 0
    for op in graph.get_operations():
        if op.type in CALLS:
            # FuncGraph's library lookup: the called function keeps its traced shapes.
            total += _graph_flops(graph._get_function(op.get_attr("f").name).graph)
        else:
            total += op_flops(op)
    return total


def signature_flops(model, batch_size=256):
    """{signature: FLOPs per example} for serving_default and each scenario_<s>.

    (Per-task signatures call their scenario's graph, so they cost what scenario_<s> costs,
    unless exported with per_task_graphs.)
    """
    functions = export.build_signatures(model, batch_size=batch_size)
    chosen = [signatures.DEFAULT] + [signatures.scenario_signature(s)
                                     for s in model.schema.scenario_names]
    return {name: graph_flops(functions[name]) / batch_size for name in chosen}
