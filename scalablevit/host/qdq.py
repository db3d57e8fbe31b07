"""Q/DQ graphs: which nodes an INT8 or FP8 model quantizes, and the rewrites that move a node out of its Q/DQ.

onnx graph work only (no modelopt): node selection by op type and name pattern, the Q/DQ census of compute ops,
the two Q/DQ formats (``QDQ_FORMATS``), zero-point checks, and ``moved_out_of_qdq``, which reroutes a node around
its Q/DQ on the one calibrated graph.
"""
import logging
import re
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import numpy as np

from ..core.errors import ScalableViTError, unknown_choice
from .int8_policy import compile_pattern

logger = logging.getLogger(__name__)

__all__ = ['QDQ_FORMATS', 'match_nodes', 'quantized_nodes', 'qdq_summary', 'qdq_format', 'check_zero_points',
           'moved_out_of_qdq']
COMPUTE_OP_TYPES = ('MatMul', 'Gemm', 'Conv')  # the ops INT8 and FP8 exist for; qdq_summary counts them
# Q/DQ format -> (ONNX element type of its zero points, the largest magnitude it holds). TensorRT's symmetric
# quantization: INT8 (TensorProto.INT8) to +-127, FP8 E4M3 (TensorProto.FLOAT8E4M3FN, ONNX opset >= 19) to +-448;
# a scale is the calibrated threshold over that maximum, for activations and weights (quantize._fp8_weight_scales).
QDQ_FORMATS = {'int8': (3, 127.0), 'fp8': (17, 448.0)}


def opset_of(model: Any) -> int:
    return next((o.version for o in model.opset_import if o.domain in ('', 'ai.onnx')), 0)


def match_nodes(model: Any, op_types: Iterable[str] = (), patterns: Iterable[str] = (),
                strict: bool = True) -> List[str]:
    """Names of the nodes whose op type is in ``op_types`` or whose name a pattern ``re.search``-es.

    ``strict`` (user input): an op type absent from the graph or a pattern matching nothing is an error,
    almost always a typo. Policies are applied non-strictly (a pattern may not apply to every variant).
    """
    nodes = list(model.graph.node)
    present = {n.op_type for n in nodes}
    op_types, patterns = list(op_types), list(patterns)
    if strict:
        for op in op_types:
            if op not in present:
                raise unknown_choice('op type (not in this model)', op, present)
    compiled = [(p, compile_pattern(p)) for p in patterns]
    if strict:
        for p, rx in compiled:
            if not any(rx.search(n.name) for n in nodes):
                raise ScalableViTError(f"node pattern '{p}' matches no node of the model (names look like "
                                       f"'{next((n.name for n in nodes if n.op_type == 'MatMul'), nodes[0].name)}')")
    return [n.name for n in nodes if n.op_type in op_types or any(rx.search(n.name) for _, rx in compiled)]


def exact_patterns(names: Iterable[str]) -> List[str]:
    """modelopt ``re.match``-es its patterns: escape and anchor names so each selects exactly one node."""
    return [re.escape(n) + '$' for n in names]


# --------------------------------------------------------------------------------------- Q/DQ inspection
def _producers(model: Any) -> Dict[str, Any]:
    return {out: node for node in model.graph.node for out in node.output}


def quantized_nodes(model: Any, op_types: Sequence[str] = COMPUTE_OP_TYPES) -> List[str]:
    """Names of ``op_types`` nodes whose data and weight inputs (first two) both come from DequantizeLinear."""
    producers = _producers(model)

    def from_dq(tensor: str) -> bool:
        node = producers.get(tensor)
        return node is not None and node.op_type == 'DequantizeLinear'
    return [n.name for n in model.graph.node
            if n.op_type in op_types and len(n.input) >= 2 and all(from_dq(t) for t in n.input[:2])]


def nodes_with_dq_inputs(model: Any, names: Iterable[str]) -> List[str]:
    """Those of ``names`` that read any DequantizeLinear output (an excluded node must read none)."""
    producers, wanted = _producers(model), set(names)
    return [n.name for n in model.graph.node if n.name in wanted and any(
        producers.get(t) is not None and producers[t].op_type == 'DequantizeLinear' for t in n.input)]


def qdq_summary(model: Any) -> Dict[str, Any]:
    """Counts of Q/DQ nodes and, per compute op type, quantized / total nodes."""
    ops = [n.op_type for n in model.graph.node]
    done = set(quantized_nodes(model))
    by_type = {op: {'quantized': sum(1 for n in model.graph.node if n.op_type == op and n.name in done),
                    'total': ops.count(op)} for op in COMPUTE_OP_TYPES if op in ops}
    return {'quantize_linear': ops.count('QuantizeLinear'), 'dequantize_linear': ops.count('DequantizeLinear'),
            'quantized': by_type, 'quantized_total': len(done), 'compute_total': sum(v['total'] for v in
                                                                                      by_type.values())}


def _constant_protos(model: Any) -> Dict[str, Any]:
    """Initializers and Constant-node values by tensor name, as TensorProtos (their element type is the point)."""
    protos = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == 'Constant':
            protos.update({node.output[0]: a.t for a in node.attribute if a.name == 'value'})
    return protos


def qdq_format(model: Any) -> Optional[str]:
    """'int8' or 'fp8' from the zero points of the model's Q/DQ nodes, None without Q/DQ; a model that mixes
    formats, or has zero points of neither, is refused (TensorRT's explicit quantization takes these two)."""
    protos = _constant_protos(model)
    types = {protos[n.input[2]].data_type if len(n.input) > 2 and n.input[2] in protos else None
             for n in model.graph.node if n.op_type in ('QuantizeLinear', 'DequantizeLinear')}
    found = [fmt for fmt, (elem, _) in QDQ_FORMATS.items() if elem in types]
    if not types:
        return None
    if len(found) != 1 or len(types) != 1:
        raise ScalableViTError(f'the Q/DQ zero points mix or miss formats (ONNX element types '
                               f'{sorted(map(str, types))}); expected all int8 or all float8e4m3fn')
    return found[0]


def check_zero_points(model: Any, name: str = 'INT8 model', fmt: str = 'int8') -> int:
    """Every Q/DQ must have an explicit zero point of 0 of the format's type (int8, or float8e4m3fn for FP8) and a
    finite positive scale (TensorRT's rules).

    Returns the number of Q/DQ nodes checked; raises ScalableViTError naming the first offending node.
    """
    from onnx import numpy_helper
    elem, _ = QDQ_FORMATS[fmt]
    protos = _constant_protos(model)
    checked = 0
    for node in model.graph.node:
        if node.op_type not in ('QuantizeLinear', 'DequantizeLinear'):
            continue
        checked += 1
        if len(node.input) < 3 or not node.input[2]:
            raise ScalableViTError(f'{name}: {node.op_type} {node.name} has no zero point (uint8 by default); '
                                   f'TensorRT needs {fmt} with zero point 0')
        zp, scale = protos.get(node.input[2]), protos.get(node.input[1])
        if zp is None or zp.data_type != elem or np.any(numpy_helper.to_array(zp).astype(np.float32) != 0):
            found = 'not a constant' if zp is None else (
                f'element type {zp.data_type}, values '
                f'{np.unique(numpy_helper.to_array(zp).astype(np.float32))[:4].tolist()}')
            raise ScalableViTError(f'{name}: {node.op_type} {node.name} zero point is {found}; TensorRT needs {fmt} 0 '
                                   f'(element type {elem})')
        values = None if scale is None else numpy_helper.to_array(scale).astype(np.float32)
        if values is None or not np.all(np.isfinite(values)) or np.any(values <= 0):
            raise ScalableViTError(f'{name}: {node.op_type} {node.name} has a non-constant, zero or non-finite scale')
    return checked


def reroute_excluded(model: Any, excluded: Set[str]) -> int:
    """Let excluded nodes read the float tensor, not a Q/DQ that ORT shares with a quantized sibling.

    ORT puts one Q/DQ pair on a tensor for all of its consumers: when a quantized depthwise conv and an
    excluded residual Add read the same tensor, the Add would otherwise add the INT8-rounded value.
    Returns the number of inputs rerouted; Q/DQ pairs left without consumers are removed.
    """
    producers = _producers(model)
    source = {}
    for node in model.graph.node:
        q = producers.get(node.input[0]) if node.op_type == 'DequantizeLinear' else None
        if q is not None and q.op_type == 'QuantizeLinear':
            source[node.output[0]] = q.input[0]
    rerouted = 0
    for node in model.graph.node:
        if node.name in excluded:
            for i, tensor in enumerate(node.input):
                if tensor in source:
                    node.input[i] = source[tensor]
                    rerouted += 1
    _drop_unused(model, ('DequantizeLinear', 'QuantizeLinear'))
    return rerouted


def _drop_unused(model: Any, op_types: Sequence[str]) -> None:
    """Remove nodes of ``op_types`` (in this order) whose outputs nothing reads."""
    outputs = {o.name for o in model.graph.output}
    for op in op_types:
        used = {t for n in model.graph.node for t in n.input} | outputs
        keep = [n for n in model.graph.node if n.op_type != op or any(o in used for o in n.output)]
        del model.graph.node[:]
        model.graph.node.extend(keep)


def moved_out_of_qdq(model: Any, nodes: Sequence[str]) -> Tuple[Any, int]:
    """A copy of the deployable INT8 or FP8 ``model`` with ``nodes`` reading the tensors behind their Q/DQ pairs.

    The same rewrite as every exclusion (``reroute_excluded``), done after the FP16 step: AutoCast gave each Q/DQ
    pair one dtype (FP16, or FP32 for an island's feeds), so the tensor behind the pair has the dtype the node
    read and the node keeps running in the dtype AutoCast gave it. Returns the copy and the rerouted inputs.
    """
    import onnx
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    producers = _producers(copy)
    wanted = set(nodes)
    for node in copy.graph.node:
        for tensor in node.input if node.name in wanted else ():
            dq = producers.get(tensor)
            q = producers.get(dq.input[0]) if dq is not None and dq.op_type == 'DequantizeLinear' else None
            if q is not None and q.op_type == 'QuantizeLinear' and _scale_type(copy, q) != _scale_type(copy, dq):
                raise ScalableViTError(f'cannot move {node.name} out of its Q/DQ: the pair on {q.input[0]} mixes '
                                       f'dtypes')
    return copy, reroute_excluded(copy, wanted)


def _scale_type(model: Any, node: Any) -> int:
    """Element type of a Q/DQ node's scale (the dtype of its float side)."""
    return next((t.data_type for t in model.graph.initializer if t.name == node.input[1]), 0)
