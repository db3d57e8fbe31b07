"""Precision census of a deployed ONNX: what a strongly typed TensorRT engine runs in which dtype, and its size.

TensorRT builds our ONNX strongly typed, so the graph *is* the precision plan. The census reads it node by node as
TensorRT will see it: Q/DQ pairs are not layers of their own (TensorRT fuses them into the INT8 or FP8 ops around
them), a MatMul/Gemm/Conv whose data and weight both come from DequantizeLinear runs INT8 (or FP8 when the DQ's
zero point is FLOAT8E4M3FN), every other node runs in the dtype of its output. From shapes at batch 1 (ONNX shape
inference) it counts, per dtype:

* ops per op type; MACs of Conv, MatMul (attention included) and Gemm, which equal ``scalablevit.models.complexity``;
* weight bytes as the engine stores them (one byte for INT8 and FP8 ops, else the initializer's dtype);
* activation bytes at batch 1 (a tensor read only by QuantizeLinear is stored in 8 bits: TensorRT fuses the Q).

``layers`` keeps the per-node records the cost estimate (``costmodel``) needs. Gates next to the accuracy budgets:
no FP32 MACs outside the islands a rule of ``fp16_rules`` named (``census_violations``). onnx and numpy only.
"""
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

__all__ = ['Layer', 'DTYPES', 'QUANTIZED', 'COMPUTE_OPS', 'layers_of', 'census', 'census_violations', 'bytes_per_image']

DTYPES = ('fp8', 'int8', 'fp16', 'fp32')
QUANTIZED = ('fp8', 'int8')  # the 8-bit Q/DQ formats: one byte per element
COMPUTE_OPS = ('Conv', 'MatMul', 'Gemm')
_QDQ = ('QuantizeLinear', 'DequantizeLinear')
_PASS_THROUGH = ('Cast', 'Identity')  # between an initializer and its consumer
# ONNX TensorProto element type -> (dtype name, bytes per element)
_ELEM = {1: ('fp32', 4), 10: ('fp16', 2), 16: ('bf16', 2), 3: ('int8', 1), 2: ('uint8', 1), 6: ('int32', 4),
         7: ('int64', 8), 9: ('bool', 1), 11: ('fp64', 8), 17: ('fp8', 1)}


@dataclass
class Layer:
    """One ONNX node as TensorRT will run it (batch 1)."""

    name: str
    op_type: str
    dtype: str  # fp8 | int8 | fp16 | fp32 | other (shape arithmetic)
    macs: int
    weight_bytes: int
    in_bytes: int
    out_bytes: int


def _shapes_and_types(model: Any) -> Tuple[Dict[str, Tuple[int, ...]], Dict[str, int]]:
    """Static shapes (batch 1) and element types of every tensor shape inference resolves."""
    from .export import infer_shapes
    inferred = infer_shapes(model, batch=1, data_prop=True).graph
    shapes, types = {}, {}
    for value in (*inferred.input, *inferred.value_info, *inferred.output):
        tensor = value.type.tensor_type
        types[value.name] = tensor.elem_type
        dims = tuple(d.dim_value if d.HasField('dim_value') else -1 for d in tensor.shape.dim)
        if tensor.HasField('shape') and all(d >= 0 for d in dims):
            shapes[value.name] = dims
    for init in model.graph.initializer:
        shapes[init.name] = tuple(init.dims)
        types[init.name] = init.data_type
    return shapes, types


class _Graph:
    """Producers, consumers, shapes and types of one model, with the few questions the census asks."""

    def __init__(self, model: Any):
        self.model = model
        self.producer = {out: node for node in model.graph.node for out in node.output}
        self.consumers: Dict[str, List[Any]] = {}
        for node in model.graph.node:
            for tensor in node.input:
                self.consumers.setdefault(tensor, []).append(node)
        self.initializers = {t.name for t in model.graph.initializer}
        self.initializers |= {n.output[0] for n in model.graph.node if n.op_type == 'Constant'}
        self.shapes, self.types = _shapes_and_types(model)

    def numel(self, tensor: str) -> int:
        shape = self.shapes.get(tensor)
        return int(np.prod(shape, dtype=np.int64)) if shape is not None else 0

    def elem(self, tensor: str) -> Tuple[str, int]:
        return _ELEM.get(self.types.get(tensor, 0), ('other', 0))

    def from_dq(self, tensor: str) -> bool:
        node = self.producer.get(tensor)
        return node is not None and node.op_type == 'DequantizeLinear'

    def quantized_dtype(self, node: Any) -> Optional[str]:
        """'int8' or 'fp8' for a Conv / MatMul / Gemm whose data and weight both come from DequantizeLinear (the
        format of its data input's zero point), else None."""
        if node.op_type not in COMPUTE_OPS or len(node.input) < 2 or not all(map(self.from_dq, node.input[:2])):
            return None
        dq = self.producer[node.input[0]]
        zero_point = self.types.get(dq.input[2]) if len(dq.input) > 2 else None
        return 'fp8' if _ELEM.get(zero_point, ('',))[0] == 'fp8' else 'int8'

    def source(self, tensor: str) -> str:
        """The tensor behind Q/DQ and Cast chains: an initializer for weights, an activation otherwise."""
        node = self.producer.get(tensor)
        while node is not None and (node.op_type in _QDQ or node.op_type in _PASS_THROUGH):
            tensor = node.input[0]
            node = self.producer.get(tensor)
        return tensor

    def is_weight(self, tensor: str) -> bool:
        return self.source(tensor) in self.initializers

    def stored_bytes(self, tensor: str) -> int:
        """Bytes per element the engine holds ``tensor`` in: 1 behind a DQ (INT8, FP8) or when only Q reads it."""
        if self.from_dq(tensor):
            return 1
        readers = self.consumers.get(tensor, [])
        if readers and all(r.op_type == 'QuantizeLinear' for r in readers):
            return 1
        return self.elem(tensor)[1]


def _macs(node: Any, g: _Graph) -> int:
    """Multiply-accumulates of one Conv / MatMul / Gemm at batch 1 (0 when shapes are unknown)."""
    out = g.shapes.get(node.output[0])
    if out is None:
        return 0
    if node.op_type == 'Conv':
        weight = g.shapes.get(g.source(node.input[1])) or g.shapes.get(node.input[1])
        if weight is None:
            return 0
        return int(np.prod(out, dtype=np.int64)) * int(np.prod(weight[1:], dtype=np.int64))
    a = g.shapes.get(node.input[0])
    if a is None:
        return 0
    if node.op_type == 'Gemm':
        trans_a = next((attr.i for attr in node.attribute if attr.name == 'transA'), 0)
        k = a[0] if trans_a else a[-1]
    else:
        k = a[-1]
    return int(np.prod(out, dtype=np.int64)) * int(k)


def _dtype(node: Any, g: _Graph) -> str:
    quantized = g.quantized_dtype(node)
    if quantized:
        return quantized
    name = g.elem(node.output[0])[0] if node.output else 'other'
    return name if name in DTYPES else 'other'


def layers_of(model: Any) -> List[Layer]:
    """Every node but Q/DQ (fused by TensorRT) and constant work (folded at build), as TensorRT runs it at batch 1."""
    g = _Graph(model)
    layers = []
    for node in model.graph.node:
        weights = [t for t in node.input if t and g.is_weight(t)]
        activations = [t for t in node.input if t and t not in weights]
        if node.op_type in _QDQ or not activations:  # fused by TensorRT, or constants it folds at build time
            continue
        dtype = _dtype(node, g)
        weight_bytes = sum(g.numel(g.source(t)) * (1 if dtype in QUANTIZED and g.from_dq(t) else g.elem(t)[1])
                           for t in weights)
        layers.append(Layer(
            name=node.name, op_type=node.op_type, dtype=dtype,
            macs=_macs(node, g) if node.op_type in COMPUTE_OPS else 0, weight_bytes=weight_bytes,
            in_bytes=sum(g.numel(t) * g.stored_bytes(t) for t in activations),
            out_bytes=sum(g.numel(t) * g.stored_bytes(t) for t in node.output)))
    return layers


def census(layers: List[Layer], islands: Optional[Dict[str, Dict[str, Any]]] = None) -> Dict[str, Any]:
    """The census of a model's ``layers_of``: counts, MACs, weight and activation bytes per dtype, FP32 compute.

    ``islands`` ({node: {rule, value, limit}}, from the quantize stage) name the FP32 nodes a rule asked for;
    ``fp32_macs_outside_islands`` is what the gate holds against the bundle.
    """
    islands = islands or {}
    ops: Dict[str, Dict[str, int]] = {}
    for layer in layers:
        if layer.dtype in DTYPES:
            ops.setdefault(layer.op_type, dict.fromkeys(DTYPES, 0))[layer.dtype] += 1
    macs = {d: sum(la.macs for la in layers if la.dtype == d) for d in DTYPES}
    total = sum(macs.values())
    fp32_compute = [la for la in layers if la.dtype == 'fp32' and la.macs]
    return {
        'ops': dict(sorted(ops.items())),
        'macs': {**macs, 'total': total},
        'mac_share': {d: (macs[d] / total if total else 0.0) for d in DTYPES},
        'weight_bytes': {d: sum(la.weight_bytes for la in layers if la.dtype == d) for d in DTYPES},
        'activation_bytes': {d: sum(la.out_bytes for la in layers if la.dtype == d) for d in DTYPES},
        # every layer's reads and writes (batch 1): with the weights, DRAM traffic for the roofline's memory ceiling
        'traffic_bytes': sum(la.in_bytes + la.out_bytes for la in layers),
        'fp32_compute': [{'node': la.name, 'op_type': la.op_type, 'macs': la.macs,
                          'island': islands.get(la.name, {}).get('rule')} for la in fp32_compute],
        'fp32_macs_outside_islands': sum(la.macs for la in fp32_compute if la.name not in islands),
        'islands': islands,
        'batch': 1,
    }


def bytes_per_image(summary: Dict[str, Any], batch: int) -> float:
    """DRAM bytes per image at ``batch`` from a census: the weights once per batch, every layer's reads and writes
    per image (no fusion: an upper bound). The roofline's memory ceiling uses it."""
    return sum(summary['weight_bytes'].values()) / batch + summary['traffic_bytes']


def census_violations(summary: Dict[str, Any], precision: str, budget: Dict[str, Any]) -> List[str]:
    """The census rules a bundle breaks (empty: it runs in the dtypes its precision promises).

    ``budget`` is the precision's entry of accuracy_budgets.json: ``max_fp32_macs_outside_islands`` (0: every
    FP32 MAC must be an island a rule named) for FP16 and INT8 bundles.
    """
    limit = budget.get('max_fp32_macs_outside_islands')
    if limit is None or precision == 'fp32':
        return []
    outside = summary['fp32_macs_outside_islands']
    if outside > limit:
        names = [c['node'] for c in summary['fp32_compute'] if not c['island']]
        return [f"{outside / 1e6:.1f} M FP32 MACs outside the named FP32 islands ({len(names)} node(s), e.g. "
                f"{names[0]})"]
    return []
