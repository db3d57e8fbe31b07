"""The kernels a TensorRT engine will run, read from an ONNX graph: TensorRT's documented layer fusions, for the
cost estimate (``costmodel``).

Every ONNX node is assigned to one *group*, a kernel of the engine, by the rules of ``RULES`` (each with its source):
Q/DQ, reshapes and Casts cost nothing of their own; a bias, activation, scale or residual Add whose input is the
only use of a convolution's, GEMM's or normalization's output runs in that kernel's epilogue; adjacent pointwise ops
share one kernel; LayerNormalization is one kernel; MatMul -> (mask Add) -> Softmax -> MatMul is one fused attention
kernel when TensorRT's fused-attention conditions hold, else three kernels. What a group reads and writes across its
boundary (and its weights) is what can reach DRAM; ``costmodel`` decides which of it stays in the on-chip cache.

This is a model of TensorRT's fusions, not TensorRT: its builder also picks tactics, reorders layouts and fuses
across more patterns (Myelin). The engine report puts the real layer list beside it (``device.inspector``).
onnx and numpy only.
"""
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .census import COMPUTE_OPS, QUANTIZED, _Graph, _macs

__all__ = ['Group', 'RULES', 'groups_of', 'group_summary']

_CATALOG = 'TensorRT docs, Layer Fusion Catalog (docs.nvidia.com/deeplearning/tensorrt/latest/performance/fusion-catalog.html)'
_QDQ_DOC = ('TensorRT docs, Working with Quantized Types > Q/DQ Layer-Placement and fusion: DQ fused into the consumer, '
            'Q into the producer (docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/work-quantized-types.html)')
_ATTENTION_DOC = ('TensorRT docs, Fused Attention, Method 2 (MatrixMultiply -> Softmax -> MatrixMultiply; "TensorRT '
                  'requires Q or K to be multiplied with attention scale ... before going into ... the first BMM"; an '
                  'add mask offsetting Q*K^T is allowed) (docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/'
                  'transformers-fused-attention.html)')
RULES = {
    'free': ('Reshape, Flatten, Squeeze, Unsqueeze, Identity and Dropout move no data; Casts fold into the kernel '
             'around them in a strongly typed build; constant work is folded at build time', _CATALOG),
    'qdq': ('QuantizeLinear / DequantizeLinear run inside the INT8 kernel that produces / consumes them', _QDQ_DOC),
    'epilogue': ('a bias, activation, scale, BatchNorm or residual Add whose input is the only use of a convolution, '
                 'GEMM, normalization or pointwise kernel runs in that kernel (Convolution + Activation, Convolution + '
                 'ElementWise, PointWise fusion)', _CATALOG),
    'pointwise': ('adjacent pointwise ops fuse into one PointWise kernel', _CATALOG),
    'layernorm': ('LayerNormalization is one normalization kernel', _CATALOG),
    'layout': ('a Transpose, Split or Slice that is the only reader of a kernel\'s output is that kernel\'s strided '
               'store, not a copy kernel of its own', 'model assumption (TensorRT\'s Myelin backend fuses shuffles '
               'into neighbouring kernels; not in the fusion catalog): tested against the published engines'),
    'transposed_operand': ('a Transpose of the last two axes feeding a MatMul is the MatMul\'s transposed operand '
                           '(IMatrixMultiplyLayer MatrixOperation.kTRANSPOSE)',
                           'TensorRT API, IMatrixMultiplyLayer / MatrixOperation'),
    'attention': ('MatMul -> (mask Add) -> Softmax -> MatMul is one fused attention kernel; the S x S scores never '
                  'leave the chip', _ATTENTION_DOC),
    'attention_scale_after_bmm1': ('a scale applied to Q*K^T (after the first MatMul) does not fuse: TensorRT '
                                   'requires it on Q or K before the first MatMul', _ATTENTION_DOC),
    'attention_fp32': ('attention in FP32 is not fused: fused attention kernels take FP16/BF16 (or 8-bit with a '
                       'quantized softmax output) operands', _ATTENTION_DOC),
}

_FREE = {'Reshape', 'Flatten', 'Squeeze', 'Unsqueeze', 'Identity', 'Dropout', 'Cast', 'CastLike', 'Constant',
         'QuantizeLinear', 'DequantizeLinear', 'Shape', 'Size', 'ConstantOfShape'}
_POINTWISE = {'Add', 'Sub', 'Mul', 'Div', 'Pow', 'Sqrt', 'Reciprocal', 'Exp', 'Log', 'Neg', 'Abs', 'Erf', 'Relu',
              'LeakyRelu', 'PRelu', 'Elu', 'Selu', 'Sigmoid', 'HardSigmoid', 'HardSwish', 'Tanh', 'Gelu', 'Softplus',
              'Clip', 'Max', 'Min', 'Where', 'Mish', 'BatchNormalization', 'Sin', 'Cos', 'Floor', 'Ceil', 'Round',
              'Sign', 'Equal', 'Less', 'Greater', 'Not', 'And', 'Or'}
_LAYOUT = {'Transpose', 'Split', 'Slice'}
_SCALE_OPS = {'Mul', 'Div'}


@dataclass
class Group:
    """One kernel of the engine: the ONNX nodes it runs, its math and what crosses its boundary (batch 1)."""

    kind: str  # conv | gemm | attention | norm | softmax | pointwise | reduce | copy
    nodes: List[str]
    op_types: List[str]
    dtype: str  # the dtype its math runs in: fp8 | int8 | fp16 | fp32 (an 'assumed' plan overrides fp32)
    macs: int = 0
    weight_bytes: int = 0
    inputs: Dict[str, int] = field(default_factory=dict)  # boundary activation -> bytes at batch 1
    outputs: Dict[str, int] = field(default_factory=dict)
    gemm_shape: Optional[Tuple[int, int, int, int]] = None  # (batch count, M, N, K) of its largest GEMM
    depthwise: bool = False  # a grouped convolution: CUDA cores, not tensor cores
    rules: List[str] = field(default_factory=list)
    attention: Optional[Dict[str, Any]] = None


def _perm_swaps_last_two(node: Any) -> bool:
    perm = next((list(a.ints) for a in node.attribute if a.name == 'perm'), None)
    return bool(perm) and len(perm) >= 2 and perm[:-2] == list(range(len(perm) - 2)) and \
        perm[-2:] == [len(perm) - 1, len(perm) - 2]


class _Fuser:
    """Assigns every node to a group, walking the (topologically sorted) graph once."""

    def __init__(self, model: Any, assume: Optional[str]):
        self.g = _Graph(model)
        self.assume = assume
        self.nodes = list(model.graph.node)
        self.group_of: Dict[str, int] = {}  # node name -> group index
        self.groups: List[Group] = []
        self.node_by_name = {n.name: n for n in self.nodes}
        # build-time constants: weights, and shape arithmetic (Shape of an activation onwards) a static-shape engine
        # computes once while building
        self.static = set(self.g.initializers)
        for node in self.nodes:
            if node.op_type in ('Shape', 'Size', 'Constant') or all(t in self.static for t in node.input if t):
                self.static.update(o for o in node.output if o)

    # -- graph questions -----------------------------------------------------------------------------------------
    def producer(self, tensor: str) -> Optional[Any]:
        """The node that really computes ``tensor``, looking through free nodes (Q/DQ, reshapes, Casts)."""
        node = self.g.producer.get(tensor)
        while node is not None and node.op_type in _FREE and node.input and node.input[0]:
            node = self.g.producer.get(node.input[0])
        return node

    def readers(self, tensor: str) -> List[Any]:
        """The nodes that really read ``tensor``, looking through free nodes."""
        found = []
        for node in self.g.consumers.get(tensor, []):
            if node.op_type in _FREE and node.op_type != 'Shape':
                for out in node.output:
                    found += self.readers(out)
            elif node.op_type != 'Shape':
                found.append(node)
        return found

    def activations(self, node: Any) -> List[str]:
        return [t for t in node.input if t and t not in self.static and not self.g.is_weight(t)]

    def dtype(self, node: Any) -> str:
        quantized = self.g.quantized_dtype(node)
        if quantized:
            return quantized
        name = self.g.elem(node.output[0])[0] if node.output else 'other'
        if name not in ('fp8', 'int8', 'fp16'):  # integer and boolean work (indices, masks) is costed like FP32
            name = 'fp32'
        return self.assume if self.assume and name == 'fp32' else name

    # -- building ------------------------------------------------------------------------------------------------
    def new_group(self, node: Any, kind: str, rule: Optional[str] = None) -> int:
        self.groups.append(Group(kind=kind, nodes=[], op_types=[], dtype=self.dtype(node)))
        index = len(self.groups) - 1
        self.add(node, index, rule)
        return index

    def add(self, node: Any, index: int, rule: Optional[str] = None) -> None:
        group = self.groups[index]
        group.nodes.append(node.name)
        group.op_types.append(node.op_type)
        self.group_of[node.name] = index
        if rule and rule not in group.rules:
            group.rules.append(rule)

    def sole_reader(self, node: Any, reader: Any) -> bool:
        """True when ``reader`` is the only consumer of every output of ``node`` (and no graph output)."""
        outputs = {o.name for o in self.g.model.graph.output}
        return all(o not in outputs and [r.name for r in self.readers(o)] == [reader.name] for o in node.output)

    def run(self) -> List[Group]:
        for node in self.nodes:
            if node.name in self.group_of:
                continue
            if node.op_type in _FREE or not self.activations(node):
                continue  # free, or constant work folded at build
            op = node.op_type
            if op == 'MatMul' and not self.g.is_weight(node.input[1]) and self.try_attention(node):
                continue
            if op in _POINTWISE:
                self.place_pointwise(node)
            elif op == 'Conv':
                self.new_group(node, 'conv')
            elif op in COMPUTE_OPS:
                self.new_group(node, 'gemm')
            elif op == 'LayerNormalization':
                self.new_group(node, 'norm', 'layernorm')
            elif op == 'Softmax':
                self.new_group(node, 'softmax')
            elif op.startswith('Reduce') or op in ('GlobalAveragePool', 'AveragePool', 'MaxPool', 'GlobalMaxPool'):
                self.new_group(node, 'reduce')
            elif op == 'Transpose' and _perm_swaps_last_two(node) and \
                    all(r.op_type == 'MatMul' for r in self.readers(node.output[0])):
                continue  # the MatMul's transposed operand
            elif op in _LAYOUT:
                self.place_pointwise(node, rule='layout', kind='copy')
            else:
                self.new_group(node, 'copy')  # Transpose, Concat, Split, Slice, Pad, Resize, Gather, ...
        for node in self.nodes:  # the transposes folded into MatMuls, named on those MatMuls' groups
            if node.op_type == 'Transpose' and node.name not in self.group_of and self.activations(node):
                for reader in self.readers(node.output[0]):
                    if reader.name in self.group_of and 'transposed_operand' not in \
                            self.groups[self.group_of[reader.name]].rules:
                        self.groups[self.group_of[reader.name]].rules.append('transposed_operand')
        for index, group in enumerate(self.groups):
            self.account(index, group)
        return self.groups

    def place_pointwise(self, node: Any, rule: Optional[str] = None, kind: str = 'pointwise') -> None:
        """Into the kernel whose only output it reads (epilogue / pointwise fusion, or ``rule``), else a new
        kernel of ``kind``."""
        for tensor in self.activations(node):
            producer = self.producer(tensor)
            if producer is None or producer.name not in self.group_of:
                continue
            index = self.group_of[producer.name]
            into = self.groups[index].kind
            if into in ('conv', 'gemm', 'norm', 'pointwise', 'attention') and self.sole_reader(producer, node):
                self.add(node, index, rule or ('epilogue' if into != 'pointwise' else 'pointwise'))
                return
        self.new_group(node, kind)

    def try_attention(self, bmm1: Any) -> bool:
        """MatMul(Q, K^T) -> [Mul/Div scale, Add mask] -> Softmax -> MatMul(P, V): one group, fused or not."""
        chain, node = [], bmm1
        while True:
            readers = self.readers(node.output[0])
            if len(readers) != 1:
                return False
            node = readers[0]
            if node.op_type == 'Softmax':
                break
            if node.op_type not in ('Add', 'Mul', 'Div', 'Sub', 'Where') or len(chain) > 3:
                return False
            chain.append(node)
        softmax = node
        readers = self.readers(softmax.output[0])
        if len(readers) != 1 or readers[0].op_type != 'MatMul' or self.producer(readers[0].input[0]) is not softmax:
            return False
        bmm2 = readers[0]
        scaled_after = [n for n in chain if n.op_type in _SCALE_OPS and
                        any(self.g.is_weight(t) for t in n.input if t)]
        dtype = self.dtype(bmm1)
        shape_q = self.g.shapes.get(bmm1.input[0]) or ()
        shape_s = self.g.shapes.get(bmm1.output[0]) or ()
        facts = {'heads': int(shape_q[-3]) if len(shape_q) >= 3 else 1,
                 'seq_q': int(shape_s[-2]) if len(shape_s) >= 2 else None,
                 'seq_kv': int(shape_s[-1]) if shape_s else None,
                 'head_size': int(shape_q[-1]) if shape_q else None}
        reason = 'attention'
        if scaled_after:
            reason = 'attention_scale_after_bmm1'
        elif dtype == 'fp32':
            reason = 'attention_fp32'
        fused = reason == 'attention'
        if fused:
            index = self.new_group(bmm1, 'attention', 'attention')
            for n in (*chain, softmax, bmm2):
                self.add(n, index)
            self.groups[index].attention = {'fused': True, 'rule': reason, **facts}
        else:
            index = self.new_group(bmm1, 'gemm', reason)
            for n in chain:
                self.add(n, index, 'epilogue')
            self.groups[index].attention = {'fused': False, 'rule': reason, **facts}
            self.new_group(softmax, 'softmax', reason)
            self.new_group(bmm2, 'gemm', reason)
        return True

    def account(self, index: int, group: Group) -> None:
        """MACs, weights and what crosses the group's boundary, at batch 1 in the dtypes the engine holds."""
        g = self.g
        outputs = {o.name for o in g.model.graph.output}
        for name in group.nodes:
            node = self.node_by_name[name]
            if node.op_type in COMPUTE_OPS:
                macs = _macs(node, g)
                group.macs += macs
                shape = _gemm_shape(node, g)
                if shape and (group.gemm_shape is None or macs >= math.prod(group.gemm_shape)):
                    group.gemm_shape = shape
                if node.op_type == 'Conv' and _conv_groups(node) > 1:
                    group.depthwise = True
            for tensor in node.input:
                if not tensor:
                    continue
                if g.is_weight(tensor):
                    source = g.source(tensor)
                    if g.numel(source) > 1:
                        per = 1 if group.dtype in QUANTIZED and g.from_dq(tensor) else g.elem(source)[1]
                        group.weight_bytes += g.numel(source) * per
                    continue
                producer = self.producer(tensor)
                if producer is None or self.group_of.get(producer.name) != index:
                    group.inputs[tensor] = g.numel(tensor) * g.stored_bytes(tensor)
            for tensor in node.output:
                readers = self.readers(tensor)
                if tensor in outputs or any(self.group_of.get(r.name) != index for r in readers):
                    group.outputs[tensor] = g.numel(tensor) * _out_bytes(tensor, g)


def _out_bytes(tensor: str, g: _Graph) -> int:
    """Bytes per element of a kernel's output as stored: 1 when a Q follows (fused), else its element size."""
    readers = g.consumers.get(tensor, [])
    if readers and all(r.op_type == 'QuantizeLinear' for r in readers):
        return 1
    return g.elem(tensor)[1] or 4


def _conv_groups(node: Any) -> int:
    return next((a.i for a in node.attribute if a.name == 'group'), 1)


def _gemm_shape(node: Any, g: _Graph) -> Optional[Tuple[int, int, int, int]]:
    """(batch count, M, N, K) of a Conv as an implicit GEMM or of a (batched) MatMul / Gemm."""
    out = g.shapes.get(node.output[0])
    if not out:
        return None
    if node.op_type == 'Conv':
        weight = g.shapes.get(g.source(node.input[1])) or g.shapes.get(node.input[1])
        if not weight or len(out) < 3:
            return None
        groups = _conv_groups(node)
        spatial = math.prod(out[2:])
        return groups, out[0] * spatial, out[1] // groups, math.prod(weight[1:])
    a = g.shapes.get(node.input[0])
    if not a:
        return None
    if node.op_type == 'Gemm':
        trans_a = next((attr.i for attr in node.attribute if attr.name == 'transA'), 0)
        return 1, out[0], out[-1], a[0] if trans_a else a[-1]
    batch = math.prod(out[:-2]) if len(out) > 2 else 1
    return batch, out[-2] if len(out) >= 2 else 1, out[-1], a[-1]


def groups_of(model: Any, assume: Optional[str] = None) -> List[Group]:
    """The kernels of ``model`` as TensorRT would fuse them (batch 1).

    ``assume``: the precision TensorRT builds FP32 ops in when the ONNX is FP32 and the build is not strongly typed
    (``--fp16`` / ``--int8`` of trtexec): 'fp16' or 'int8' (then convolutions and GEMMs run INT8, the rest FP16,
    as an implicitly quantized INT8 engine does). None: the ONNX's own dtypes (our strongly typed bundles).
    """
    fuser = _Fuser(model, 'fp16' if assume == 'int8' else assume)
    groups = fuser.run()
    if assume in ('fp16', 'int8'):  # the graph's FP32 tensors, as the engine holds them
        int8_tensors = set()
        for group in groups:
            if assume == 'int8' and group.kind in ('conv', 'gemm') and group.macs and not group.depthwise:
                group.dtype = 'int8'
                int8_tensors |= set(group.inputs) | set(group.outputs)
        for group in groups:
            group.weight_bytes = _recast(group.weight_bytes, 'int8' if group.dtype == 'int8' else 'fp16')
            for side in (group.inputs, group.outputs):
                for tensor in side:
                    side[tensor] = _recast(side[tensor], 'int8' if tensor in int8_tensors else 'fp16',
                                           fuser.g.elem(tensor)[1])
    return groups


def _recast(nbytes: int, dtype: str, element: int = 4) -> int:
    """Bytes of FP32 data (``element`` bytes each; other types are left alone) held as ``dtype``."""
    if element != 4:
        return nbytes
    return nbytes // 4 if dtype == 'int8' else nbytes // 2


def group_summary(groups: List[Group]) -> Dict[str, Any]:
    """Counts a report shows: kernels by kind, attention blocks fused / not, and the rules that fired."""
    kinds: Dict[str, int] = {}
    rules: Dict[str, int] = {}
    for group in groups:
        kinds[group.kind] = kinds.get(group.kind, 0) + 1
        for rule in group.rules:
            rules[rule] = rules.get(rule, 0) + 1
    attention = [g.attention for g in groups if g.attention]
    return {'kernels': len(groups), 'by_kind': dict(sorted(kinds.items())), 'rules': dict(sorted(rules.items())),
            'attention_blocks': len(attention), 'attention_fused': sum(a['fused'] for a in attention),
            'onnx_nodes': sum(len(g.nodes) for g in groups)}
