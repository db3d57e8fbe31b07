"""torch -> ONNX: one self-contained FP32 ``.onnx`` per model, checked for TensorRT before it is written.

The export stage (``ExportOnnx``, Polygraphy-loader style: built with its settings, run with an output
path) traces the model with the TorchScript exporter, checks the graph (IO contract, LayerNorm fused,
every op parseable by TensorRT 10), simplifies it with onnxslim, stamps ``scalablevit.*`` metadata
and writes it atomically. ``check_onnx`` is the gate later stages (quantize, TensorRT build) run on
their input: a valid ONNX, of the expected model and input size.

Why the TorchScript exporter (``dynamo=False``): torch 2.13's default dynamo exporter needs opset
>= 18 and writes external data; opset 17 is the newest TensorRT 8.6 (JetPack 6.0) parses, and the
first with the fused ``LayerNormalization`` (a decomposed LayerNorm overflows in FP16 on TensorRT).

torch, onnx and onnxslim are imported inside the functions that need them.
"""
import contextlib
import logging
import numbers
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from ..core.compat import DEFAULT_OPSET, check_opset
from ..core.errors import ScalableViTError
from ..core.fileio import PathLike, atomic_path, sha256_file
from ..core.runners import INPUT_NAME, OUTPUT_NAME
from ..core.steps import timed_step

logger = logging.getLogger(__name__)

__all__ = ['ExportOnnx', 'export_onnx', 'load_onnx', 'check_onnx', 'check_onnx_model', 'check_tensorrt_ops',
           'infer_shapes', 'check_layernorm_fused', 'op_histogram', 'read_metadata', 'onnx_precision', 'stamp_metadata',
           'TRT_ONNX_OPS', 'TRT_OPS_ADDED_AFTER_10_0', 'onnx_data_config', 'check_bundle_onnx']

META_PREFIX = 'scalablevit.'
BATCH_DIM = 'batch'

# ONNX ops the TensorRT ONNX parser supports ('Y' rows of the support matrix), taken from onnx/onnx-tensorrt
# docs/operators.md of the TensorRT 10.15 release ("opset 9 to opset 24"). Ops its docs/Changelog.md says
# arrived after 10.0 are listed apart and not accepted, so the table holds for every TensorRT 10.x parser
# (JetPack 6.1/6.2 ship 10.3). Only default-domain ops count: custom domains need plugins.
_TRT_10_15_OPS = frozenset('''
    Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh Attention AveragePool BatchNormalization
    BlackmanWindow Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh
    CumSum DeformConv DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike
    Flatten Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool
    Greater GreaterOrEqual GridSample GroupNormalization GRU HammingWindow HannWindow HardSigmoid HardSwish
    Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less
    LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean
    MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad
    ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform RandomUniformLike
    Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd
    ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RMSNormalization RNN RoiAlign
    RotaryEmbedding Round STFT ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid
    Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh
    TensorScatter ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
'''.split())
# op -> TensorRT release that added it (onnx-tensorrt docs/Changelog.md).
TRT_OPS_ADDED_AFTER_10_0 = {
    'DeformConv': '10.1', 'BlackmanWindow': '10.4', 'HammingWindow': '10.4', 'HannWindow': '10.4',
    'STFT': '10.5', 'Attention': '10.14', 'RotaryEmbedding': '10.15', 'RMSNormalization': '10.15',
    'TensorScatter': '10.15',
}
TRT_ONNX_OPS = _TRT_10_15_OPS - set(TRT_OPS_ADDED_AFTER_10_0)
_DEFAULT_DOMAINS = ('', 'ai.onnx')

# Ops that only a decomposed LayerNorm brings into ScalableViT (its attention scale is a constant Mul).
_LAYERNORM_DECOMPOSITION_OPS = ('Pow', 'Sqrt', 'Reciprocal')

InputSize = Union[int, Sequence[int]]


# --------------------------------------------------------------------------------------- small helpers
def _pair(size: InputSize) -> Tuple[int, int]:
    """``224`` or ``(224, 448)`` -> (height, width)."""
    if isinstance(size, numbers.Integral):
        return int(size), int(size)
    size = tuple(int(s) for s in size)
    if len(size) != 2:
        raise ScalableViTError(f'input size {size} must be one side or (height, width)')
    return size


def _versions() -> Dict[str, str]:
    import onnx
    import torch
    from .. import __version__
    return {'torch': torch.__version__, 'onnx': onnx.__version__, 'scalablevit': __version__}


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Hide the TorchScript exporter's known noise, nothing else."""
    import torch
    with warnings.catch_warnings():
        # We choose the TorchScript exporter on purpose (see the module docstring).
        warnings.filterwarnings('ignore', message='.*legacy TorchScript-based ONNX export', category=DeprecationWarning)
        warnings.filterwarnings('ignore', category=DeprecationWarning, module=r'torch\.onnx')
        # check_input_size() reads the traced H, W: static by design, so baking them in is what we want.
        warnings.filterwarnings('ignore', category=torch.jit.TracerWarning, module=r'scalablevit\.model')
        yield


# --------------------------------------------------------------------------------------- graph checks
def _nodes(graph: Any) -> Iterator[Any]:
    """Every node, including those of If/Loop/Scan subgraphs."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField('g') else []) + list(attr.graphs):
                yield from _nodes(sub)


def op_histogram(model: Any) -> Dict[str, int]:
    """``{op_type: count}`` over the whole model, most frequent first."""
    return dict(Counter(n.op_type for n in _nodes(model.graph)).most_common())


def check_tensorrt_ops(model: Any, name: str = 'ONNX model') -> None:
    """Raise unless every node is an op the TensorRT 10 ONNX parser supports (see ``TRT_ONNX_OPS``)."""
    bad: Dict[str, List[str]] = {}
    for node in _nodes(model.graph):
        if node.domain not in _DEFAULT_DOMAINS or node.op_type not in TRT_ONNX_OPS:
            op = node.op_type if node.domain in _DEFAULT_DOMAINS else f'{node.domain}::{node.op_type}'
            bad.setdefault(op, []).append(node.name or '<unnamed>')
    if bad:
        listed = '; '.join(f'{op} x{len(nodes)} (e.g. {nodes[0]})' for op, nodes in sorted(bad.items()))
        raise ScalableViTError(f'{name}: ops the TensorRT 10 ONNX parser does not support: {listed}')


def _constants(graph: Any) -> Dict[str, Any]:
    """Tensors known without running the graph: initializers and Constant node values."""
    found = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == 'Constant':
            found.update({node.output[0]: a.t for a in node.attribute if a.name == 'value'})
    return found


def _reduce_axes(node: Any, initializers: Dict[str, Any]) -> Optional[List[int]]:
    """Axes of a ReduceMean (attribute up to opset 17, input from 18); None when not known."""
    from onnx import numpy_helper
    for attr in node.attribute:
        if attr.name == 'axes':
            return list(attr.ints)
    if len(node.input) > 1 and node.input[1] in initializers:
        return [int(a) for a in numpy_helper.to_array(initializers[node.input[1]]).reshape(-1)]
    return None


# Element types of weights, never of the small shape tensors shape inference reads (ONNX TensorProto codes:
# FLOAT, UINT8, INT8, FLOAT16, DOUBLE, BFLOAT16).
_WEIGHT_TYPES = (1, 2, 3, 10, 11, 16)


def infer_shapes(model: Any, batch: Optional[int] = None, data_prop: bool = False) -> Any:
    """ONNX shape inference on a copy of ``model``'s graph without the weights' data (their types and dims stay),
    so it costs the graph, not the two or three copies of the weights that inferring on the model makes (3 x 437
    MB for ScalableViT-L). ``batch`` fixes a symbolic first input dimension; ``value_info`` is inferred afresh."""
    import onnx
    graph = onnx.GraphProto(name=model.graph.name, node=model.graph.node, input=model.graph.input,
                            output=model.graph.output)
    for tensor in model.graph.initializer:
        if tensor.data_type in _WEIGHT_TYPES:
            graph.initializer.add(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims)
        else:
            graph.initializer.append(tensor)
    if batch is not None:
        for value in graph.input:
            dims = value.type.tensor_type.shape.dim
            if dims and not dims[0].HasField('dim_value'):
                dims[0].dim_value = batch
    light = onnx.ModelProto(ir_version=model.ir_version, opset_import=model.opset_import, graph=graph,
                            functions=model.functions)
    return onnx.shape_inference.infer_shapes(light, data_prop=data_prop)


def _ranks(model: Any) -> Dict[str, int]:
    """Rank of every tensor whose shape ONNX shape inference knows."""
    graph = infer_shapes(model).graph
    infos = list(graph.value_info) + list(graph.input) + list(graph.output)
    return {v.name: len(v.type.tensor_type.shape.dim) for v in infos if v.type.tensor_type.HasField('shape')}


def _reduces_last_axis(node: Any, initializers: Dict[str, Any], ranks: Dict[str, int]) -> bool:
    """True for a ReduceMean over the last axis, or one whose axes or rank are unknown."""
    axes, rank = _reduce_axes(node, initializers), ranks.get(node.input[0])
    if axes is None or rank is None:
        return True
    return any(a % rank == rank - 1 for a in axes)


def check_layernorm_fused(model: Any, expected: Optional[int] = None, name: str = 'ONNX model') -> int:
    """Raise if any LayerNorm was decomposed; returns the number of LayerNormalization nodes.

    A decomposed LayerNorm shows up as Pow/Sqrt/Reciprocal or as a ReduceMean over the last (channel)
    axis; ScalableViT's only legitimate ReduceMean is the global average pool over tokens (axis 1).
    ``expected`` is the number of ``nn.LayerNorm`` modules: each must be exactly one fused node.
    """
    initializers = _constants(model.graph)
    ranks = _ranks(model) if any(n.op_type == 'ReduceMean' for n in _nodes(model.graph)) else {}
    suspects = [f'{n.op_type} {n.name or "<unnamed>"}' for n in _nodes(model.graph)
                if n.op_type in _LAYERNORM_DECOMPOSITION_OPS
                or (n.op_type == 'ReduceMean' and _reduces_last_axis(n, initializers, ranks))]
    if suspects:
        raise ScalableViTError(f'{name}: LayerNorm decomposed into primitive ops ({len(suspects)} nodes, e.g. '
                               f'{", ".join(suspects[:3])}); export at opset >= 17 with the TorchScript exporter')
    fused = sum(1 for n in _nodes(model.graph) if n.op_type == 'LayerNormalization')
    if expected is not None and fused != expected:
        raise ScalableViTError(f'{name}: {fused} LayerNormalization nodes for {expected} nn.LayerNorm modules')
    return fused


def _dims(value_info: Any) -> List[Union[int, str]]:
    return [d.dim_param if d.HasField('dim_param') else d.dim_value for d in value_info.type.tensor_type.shape.dim]


def _io_shapes(model: Any, name: str) -> Tuple[List[Union[int, str]], List[Union[int, str]]]:
    """Shapes of the one ``input`` and the one ``logits`` tensor; raise if the IO contract is broken."""
    weights = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    ins, outs = [i.name for i in inputs], [o.name for o in model.graph.output]
    if ins != [INPUT_NAME] or outs != [OUTPUT_NAME]:
        raise ScalableViTError(f'{name}: inputs {ins} / outputs {outs}, expected [{INPUT_NAME!r}] / [{OUTPUT_NAME!r}]')
    return _dims(inputs[0]), _dims(model.graph.output[0])


# --------------------------------------------------------------------------------------- metadata
def read_metadata(model: Any) -> Dict[str, str]:
    """The ``scalablevit.*`` metadata_props, without the prefix."""
    return {p.key[len(META_PREFIX):]: p.value for p in model.metadata_props if p.key.startswith(META_PREFIX)}


def onnx_precision(model: Any) -> str:
    """'int8' or 'fp8' when the graph has Q/DQ nodes (by their zero points), 'fp16' when any tensor is float16,
    else 'fp32'.

    Our quantized files also say it in ``scalablevit.precision`` metadata; this reads any ONNX file.
    """
    from onnx import TensorProto
    declared = read_metadata(model).get('precision')
    if declared:
        return declared
    graph = model.graph
    if any(n.op_type in ('QuantizeLinear', 'DequantizeLinear') for n in _nodes(graph)):  # FP8 zero points: E4M3
        return 'fp8' if any(t.data_type == TensorProto.FLOAT8E4M3FN for t in graph.initializer) else 'int8'
    types = [t.data_type for t in graph.initializer]
    types += [v.type.tensor_type.elem_type for v in (*graph.value_info, *graph.input, *graph.output)]
    types += [a.i for n in _nodes(graph) if n.op_type == 'Cast' for a in n.attribute if a.name == 'to']
    return 'fp16' if TensorProto.FLOAT16 in types else 'fp32'


def stamp_metadata(model: Any, values: Dict[str, Any]) -> None:
    """Add/replace ``scalablevit.<key>`` metadata_props, keeping every other entry."""
    from onnx import helper
    props = {p.key: p.value for p in model.metadata_props}
    props.update({META_PREFIX + k: str(v) for k, v in values.items()})
    helper.set_model_props(model, props)


# --------------------------------------------------------------------------------------- check_onnx
def _load(path: Path) -> Any:
    """Load an ONNX file (weights inline); every failure is one ScalableViTError line."""
    import onnx
    from onnx.external_data_helper import uses_external_data
    if not path.is_file():
        raise ScalableViTError(f'{path}: file not found')
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises DecodeError and friends
        raise ScalableViTError(f'{path}: not a valid ONNX file ({type(e).__name__})') from e
    if not model.graph.node:
        raise ScalableViTError(f'{path}: not a valid ONNX file (empty graph)')
    external = [t.name for t in model.graph.initializer if uses_external_data(t)]
    if external:
        raise ScalableViTError(f'{path}: weights stored in external data files ({len(external)} tensors, e.g. '
                               f'{external[0]}); bundles need one self-contained .onnx')
    return model


def load_onnx(path: PathLike) -> Any:
    """Load one self-contained ONNX file; every failure is one ScalableViTError line naming the file."""
    return _load(Path(path))


def check_onnx(path: PathLike, expected_model: Optional[str] = None, input_size: Optional[InputSize] = None,
               require_trt_ops: bool = True) -> Dict[str, Any]:
    """Load ``path`` and check that it is a valid ScalableViT export of ``expected_model`` at ``input_size``.

    Returns the facts later stages need (model, input size, classes, opset, metadata, op histogram,
    size, sha256). Raises ScalableViTError with one line naming the file and the mismatch.
    """
    path = Path(path)
    info = check_onnx_model(_load(path), path, expected_model, input_size, require_trt_ops)
    return dict(info, size_bytes=path.stat().st_size, sha256=sha256_file(path))


def check_onnx_model(model: Any, path: PathLike, expected_model: Optional[str] = None,
                     input_size: Optional[InputSize] = None, require_trt_ops: bool = True) -> Dict[str, Any]:
    """``check_onnx`` on an already loaded model (``path`` names it in errors); no size or hash."""
    import onnx
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise ScalableViTError(f'{path}: invalid ONNX model ({str(e).splitlines()[0]})') from e
    meta = read_metadata(model)
    if 'model' not in meta:
        raise ScalableViTError(f'{path}: not a ScalableViT export (no {META_PREFIX}model metadata)')
    if expected_model is not None and meta['model'] != expected_model:
        raise ScalableViTError(f"{path}: exported from '{meta['model']}', expected '{expected_model}'")
    in_dims, out_dims = _io_shapes(model, str(path))
    if len(in_dims) != 4 or isinstance(in_dims[0], int) or not all(isinstance(d, int) for d in in_dims[1:]):
        raise ScalableViTError(f'{path}: input shape {in_dims}, expected (batch, C, H, W) with static C, H, W')
    size = (in_dims[2], in_dims[3])
    if input_size is not None and size != _pair(input_size):
        h, w = _pair(input_size)
        raise ScalableViTError(f'{path}: input size {size[0]}x{size[1]}, expected {h}x{w}')
    if require_trt_ops:
        check_tensorrt_ops(model, str(path))
    opset = next((o.version for o in model.opset_import if o.domain in _DEFAULT_DOMAINS), None)
    return dict(path=str(path), model=meta['model'], input_size=size, in_chans=in_dims[1], num_classes=out_dims[-1],
                opset=opset, weights_sha256=meta.get('weights_sha256'), metadata=meta, ops=op_histogram(model))


# --------------------------------------------------------------------------------------- export stage
class ExportOnnx:
    """Export stage: ``ExportOnnx(model, opset, input_size)(out_path) -> info``.

    Settings are checked when the stage is built (bad opset or input size fail before any work); the
    export runs when it is called. Batch is dynamic (dim 0 named ``batch``), H and W are static.
    ``fold_normalization`` exports a copy whose stem conv does the normalization (``scalablevit.models.fold``):
    the ONNX then takes RGB 0-255 and says so in its ``scalablevit.normalize_in_model`` metadata.
    """

    def __init__(self, model: Any, opset: int = DEFAULT_OPSET, input_size: Optional[InputSize] = None,
                 weights_sha256: Optional[str] = None, simplify: bool = True, fold_normalization: bool = False):
        self.model = model
        self.opset = check_opset(opset)
        self.name = getattr(model, 'name', None) or type(model).__name__
        self.input_size = self._resolve_size(input_size)
        self.weights_sha256 = weights_sha256 or getattr(model, 'weights_sha256', None) or 'untrained'
        self.simplify = simplify
        self.fold_normalization = fold_normalization
        if fold_normalization:  # refused here, before any work, when the fold would not be exact
            from ..models.fold import fold_normalization as fold
            self.model = fold(model, self.input_size)

    def _resolve_size(self, input_size: Optional[InputSize]) -> Tuple[int, int]:
        if input_size is None:
            data_cfg = getattr(self.model, 'data_cfg', None)
            if not data_cfg:
                raise ScalableViTError(f'{self.name}: no data_cfg to take the input size from; pass input_size')
            input_size = tuple(data_cfg['input_size'][1:])
        h, w = _pair(input_size)
        self.model.check_input_size(h, w)
        return h, w

    def __call__(self, out_path: PathLike) -> Dict[str, Any]:
        out_path = Path(out_path)
        h, w = self.input_size
        v = _versions()
        logger.info('exporting %s (%dx%d, opset %d) with torch %s, onnx %s -> %s',
                    self.name, h, w, self.opset, v['torch'], v['onnx'], out_path)
        start = time.perf_counter()
        with timed_step('trace'):
            model = self._trace()
            self._check(model, 'traced graph')
        if self.simplify:
            with timed_step('simplify'):
                model = self._simplify(model)
                self._check(model, 'simplified graph')
        stamp_metadata(model, self._metadata(v))
        with timed_step('save', [out_path]):
            info = self._save(model, out_path)
        info['export_s'] = time.perf_counter() - start
        return info

    def _trace(self) -> Any:
        """TorchScript export to memory (never external data), model in eval mode, FP32 on its device."""
        import io
        import onnx
        import torch
        param = next(self.model.parameters(), None)
        if param is not None and param.dtype != torch.float32:
            raise ScalableViTError(f'{self.name}: export takes an FP32 model, got {param.dtype}')
        device = param.device if param is not None else torch.device('cpu')
        # Batch 2, not 1: a traced size-1 dimension can be specialised into the graph.
        x = torch.zeros(2, self.model.in_chans, *self.input_size, device=device)
        buffer = io.BytesIO()
        was_training = self.model.training
        self.model.eval()
        try:
            with _quiet_exporter(), torch.no_grad():
                torch.onnx.export(self.model, (x,), buffer, dynamo=False, opset_version=self.opset,
                                  input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], do_constant_folding=True,
                                  dynamic_axes={INPUT_NAME: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}})
        finally:
            self.model.train(was_training)
        return onnx.load_from_string(buffer.getvalue())

    def _simplify(self, model: Any) -> Any:
        import onnxslim
        before = len(model.graph.node)
        start = time.perf_counter()
        model = onnxslim.slim(model)
        logger.info('onnxslim %s: %d -> %d nodes in %.1f s', onnxslim.__version__, before, len(model.graph.node),
                    time.perf_counter() - start)
        return model

    def _check(self, model: Any, what: str) -> None:
        """Full ONNX check plus the project's own: IO contract, fused LayerNorm, TensorRT ops."""
        import onnx
        import torch
        name = f'{self.name} {what}'
        try:
            onnx.checker.check_model(model, full_check=True)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
            raise ScalableViTError(f'{name}: ONNX checker failed ({str(e).splitlines()[0]})') from e
        in_dims, _ = _io_shapes(model, name)
        expected = [BATCH_DIM, self.model.in_chans, *self.input_size]
        if in_dims != expected:
            raise ScalableViTError(f'{name}: input shape {in_dims}, expected {expected}')
        n_ln = sum(isinstance(m, torch.nn.LayerNorm) for m in self.model.modules())
        check_layernorm_fused(model, expected=n_ln, name=name)
        check_tensorrt_ops(model, name)

    def _metadata(self, versions: Dict[str, str]) -> Dict[str, Any]:
        h, w = self.input_size
        return {'model': self.name, 'input_size': f'{h}x{w}', 'num_classes': self.model.num_classes,
                'opset': self.opset, 'weights_sha256': self.weights_sha256,
                'normalize_in_model': self.fold_normalization,
                'exporter': f'torch {versions["torch"]} (TorchScript, dynamo=False)',
                'onnx_version': versions['onnx'], 'version': versions['scalablevit']}

    def _save(self, model: Any, out_path: Path) -> Dict[str, Any]:
        """Write one self-contained file and re-read it with ``check_onnx_model`` before it takes the final name."""
        import onnx
        with atomic_path(out_path) as tmp:
            onnx.save_model(model, str(tmp), save_as_external_data=False)
            info = check_onnx_model(_load(tmp), tmp, expected_model=self.name, input_size=self.input_size)
            info['size_bytes'] = tmp.stat().st_size
        info['path'] = str(out_path)
        return info


def export_onnx(model: Any, out_path: PathLike, opset: int = DEFAULT_OPSET, input_size: Optional[InputSize] = None,
                weights_sha256: Optional[str] = None, simplify: bool = True,
                fold_normalization: bool = False) -> Dict[str, Any]:
    """Export ``model`` to one checked, simplified, self-contained ONNX file; returns ``check_onnx`` info."""
    return ExportOnnx(model, opset=opset, input_size=input_size, weights_sha256=weights_sha256,
                      simplify=simplify, fold_normalization=fold_normalization)(out_path)


def onnx_data_config(model: Any, path: PathLike) -> Dict[str, Any]:
    """The preprocessing an exported ONNX (loaded: ``model``) expects: its model's data config at the input side
    and class count of the graph, folded when its metadata says ``normalize_in_model``."""
    from ..data.transforms import folded_config, sized_config
    from ..models.scalablevit import class_config, data_config
    info = check_onnx_model(model, path, require_trt_ops=False)
    dcfg = sized_config(class_config(data_config(info['model']), info['num_classes']), info['input_size'][0])
    return folded_config(dcfg) if info['metadata'].get('normalize_in_model') == 'True' else dcfg


def check_bundle_onnx(path: PathLike, manifest: Dict[str, Any], shown: Optional[PathLike] = None) -> Dict[str, Any]:
    """A bundle's ONNX against what its manifest says of it: the model it was exported from, its input side, its
    class count and whether the normalization is folded in. Readers that load the ONNX run it, so a manifest
    edited to describe another model, or another preprocessing, is refused instead of believed. ``shown``: the
    name for messages (the bundle's file, where ``path`` is its verified copy)."""
    name = Path(shown if shown is not None else path)
    info = check_onnx_model(load_onnx(path), name, expected_model=manifest['model'],
                            input_size=manifest['input']['shape'][-1], require_trt_ops=False)
    if info['num_classes'] != manifest['output']['num_classes']:
        raise ScalableViTError(f"{name}: {info['num_classes']} outputs, the bundle manifest says "
                               f"{manifest['output']['num_classes']} classes")
    folded = info['metadata'].get('normalize_in_model') == 'True'
    recorded = bool((manifest['input'].get('preprocessing') or {}).get('normalize_in_model', False))
    if folded != recorded:
        raise ScalableViTError(f"{name}: its normalization is {'in the model' if folded else 'not in the model'}, "
                               f"the bundle manifest says {'it is' if recorded else 'it is not'}")
    return info
