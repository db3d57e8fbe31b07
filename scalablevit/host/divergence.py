"""Where a candidate ONNX (INT8, FP8 or FP16) departs from its FP32 source: block by block and node by node.

Both graphs run side by side on the same images with their intermediate tensors exposed as outputs (onnxruntime
CPU running each graph as written, see ``_exposed_session``). Tensors are matched **by name**: modelopt's Q/DQ
insertion and AutoCast keep every node and tensor name of the export and only add nodes (QuantizeLinear,
DequantizeLinear, Cast) whose outputs have new names; what exists in both graphs is compared, the rest is skipped.
Per matched tensor, over all images:

* cosine similarity and relative L2 error ``||cand - ref|| / ||ref||`` of the whole tensor, max |cand - ref|;
* the range that explains them: FP32 max |x|, RMS and median |x|, and, where the candidate quantizes the tensor, its
  quantizer step at the median |x| (INT8: ``scale`` everywhere; FP8 E4M3: 2^-3 of the value's power of two, at
  least 2^-9 ``scale``) and the share of values beyond the clip range (``127.5 * scale``; FP8 ``464 * scale``). A
  step near or above the median |x| means the typical value rounds to a level or two, or to zero: an outlier
  channel set the scale (FP8's relative grid keeps the step near 2^-3 of the value until it turns subnormal);
* ``local_error``: the node's output error minus the largest error of the tensors it reads (behind Q/DQ and
  Casts). That is the error the node itself adds, and what ``autoquant`` ranks quantized layers by.

A block is a top-level module of the export (``patch_embeds.1``, ``stages.2.1``, ``pos_block.0``, ``norm``,
``head``): the first part of our node names, which the TorchScript exporter takes from the torch module path. Its
output is the last tensor it hands to the rest of the graph. The first block whose relative error crosses the
threshold is where to look first.

Memory: every float tensor of both graphs is exposed, about 0.4 GB per image and graph for ScalableViT-S, so the
images stream through in batches sized to ``MEMORY_BUDGET`` (one at a time for S). onnx, onnxruntime and
matplotlib are imported lazily.
"""
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..core.errors import ScalableViTError
from ..core.fileio import PathLike, write_json, write_text
from .export import onnx_precision

logger = logging.getLogger(__name__)

__all__ = ['Probe', 'DEFAULT_THRESHOLD', 'probes', 'block_outputs', 'batch_size_for', 'measure', 'divergence_report',
           'local_errors', 'render_markdown', 'plot_divergence', 'write_divergence']

DEFAULT_THRESHOLD = 0.05  # relative L2 error of a block output: 5 % of the signal is error
MEMORY_BUDGET = 1 << 30  # bytes of exposed tensors (both graphs) held per batch
MAX_BATCH = 32
_MEDIAN_SAMPLE = 1 << 16  # elements per batch behind the median |x| (a strided sample)
_QDQ = ('QuantizeLinear', 'DequantizeLinear')
_THROUGH = ('QuantizeLinear', 'DequantizeLinear', 'Cast', 'Identity')
_FLOATS = (1, 10)  # TensorProto FLOAT, FLOAT16
ModelLike = Union[PathLike, Any]


@dataclass
class Probe:
    """One tensor both graphs compute: where it sits in the FP32 graph and how the candidate computes it."""

    tensor: str
    node: str
    op_type: str
    block: Optional[str]
    depth: int  # index of the producing node in the FP32 graph (topological order)
    sources: Tuple[str, ...] = ()  # the activation tensors the candidate node reads, behind Q/DQ and Casts
    quantized: bool = False  # the candidate node reads a DequantizeLinear output (an INT8 or FP8 layer)
    qdq_scale: Optional[float] = None  # the candidate quantizes this tensor (per-tensor scale)


@dataclass
class _Stats:
    """Running sums over images for one tensor (float64: exact zeros for identical graphs)."""

    ref_sq: float = 0.0
    cand_sq: float = 0.0
    diff_sq: float = 0.0
    max_diff: float = 0.0
    ref_absmax: float = 0.0
    cand_absmax: float = 0.0
    count: int = 0
    clipped: int = 0
    nonfinite: int = 0
    median_sum: float = 0.0  # per-batch median |x| of the FP32 tensor (on a strided sample), summed
    batches: int = 0

    def add(self, ref: np.ndarray, cand: np.ndarray, clip: Optional[float]) -> None:
        a = ref.astype(np.float64).ravel()
        b = cand.astype(np.float64).ravel()
        finite = np.isfinite(b)
        if not finite.all():
            self.nonfinite += int((~finite).sum())
            b = np.where(finite, b, 0.0)
        d = b - a
        self.ref_sq += float(a @ a)
        self.cand_sq += float(b @ b)
        self.diff_sq += float(d @ d)
        self.count += a.size
        if a.size:
            self.max_diff = max(self.max_diff, float(np.abs(d).max()))
            self.ref_absmax = max(self.ref_absmax, float(np.abs(a).max()))
            self.cand_absmax = max(self.cand_absmax, float(np.abs(b).max()))
            self.median_sum += float(np.median(np.abs(a[::max(1, a.size // _MEDIAN_SAMPLE)])))
            self.batches += 1
        if clip is not None:
            self.clipped += int((np.abs(a) > clip).sum())

    def metrics(self) -> Dict[str, Any]:
        norms = math.sqrt(self.ref_sq * self.cand_sq)
        # cosine from the three sums, so identical tensors give exactly 1
        cosine = (self.ref_sq + self.cand_sq - self.diff_sq) / (2 * norms) if norms else float(self.diff_sq == 0)
        return {'cosine': cosine,
                'rel_l2': math.sqrt(self.diff_sq / self.ref_sq) if self.ref_sq else math.sqrt(self.diff_sq),
                'max_abs_err': self.max_diff, 'fp32_absmax': self.ref_absmax,
                'fp32_rms': math.sqrt(self.ref_sq / self.count) if self.count else 0.0,
                'fp32_median_abs': self.median_sum / self.batches if self.batches else 0.0,
                'candidate_absmax': self.cand_absmax, 'nonfinite': self.nonfinite,
                'clipped_fraction': self.clipped / self.count if self.count else 0.0}


# --------------------------------------------------------------------------------------- graphs
def _load(model: ModelLike) -> Any:
    import onnx
    if isinstance(model, onnx.ModelProto):
        return model
    path = Path(model)
    if not path.is_file():
        raise ScalableViTError(f'{path}: ONNX file not found')
    try:
        return onnx.load(str(path))
    except Exception as e:  # protobuf raises its own untyped errors
        raise ScalableViTError(f'{path}: not a readable ONNX model ({type(e).__name__})') from e


def _block(node_name: str) -> Optional[str]:
    """The top-level module of a node of our export (``/stages.2.1/attn/qkv/MatMul`` -> ``stages.2.1``)."""
    parts = node_name.strip('/').split('/')
    return parts[0] if len(parts) > 1 else None


def _float_types(model: Any) -> Dict[str, int]:
    """Element type of every float (FP32 / FP16) tensor shape inference resolves, graph outputs included."""
    import onnx
    inferred = onnx.shape_inference.infer_shapes(model).graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*inferred.value_info, *inferred.output)}
    return {name: t for name, t in types.items() if t in _FLOATS}


def _constant_values(model: Any) -> Dict[str, np.ndarray]:
    from onnx import numpy_helper
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == 'Constant':
            values.update({node.output[0]: numpy_helper.to_array(a.t) for a in node.attribute if a.name == 'value'})
    return values


def _source(tensor: str, producer: Dict[str, Any]) -> str:
    """The tensor behind Q/DQ, Cast and Identity chains."""
    node = producer.get(tensor)
    while node is not None and node.op_type in _THROUGH:
        tensor = node.input[0]
        node = producer.get(tensor)
    return tensor


# Q/DQ format -> the largest |x / scale| that rounds to within half a step of the top level (beyond it: clipped)
CLIP_LEVEL = {'int8': 127.5, 'fp8': 464.0}


def quantizer_step(fmt: str, scale: float, value: float) -> float:
    """The distance between the levels around ``value`` of a quantizer with ``scale``: INT8's uniform ``scale``;
    FP8 E4M3's 2^(e - 3) ``scale`` for a value in [2^e, 2^(e+1)) ``scale``, subnormal below 2^-6 (step 2^-9)."""
    if fmt != 'fp8':
        return scale
    exponent = math.floor(math.log2(value / scale)) if value > 0 else -6
    return 2.0 ** (max(exponent, -6) - 3) * scale


def _qdq_format(model: Any) -> Optional[str]:
    """'int8' or 'fp8' for a Q/DQ candidate, None for FP32 / FP16 ones."""
    precision = onnx_precision(model)
    return precision if precision in CLIP_LEVEL else None


def _qdq_scales(model: Any, producer: Dict[str, Any]) -> Dict[str, float]:
    """tensor -> per-tensor scale of the QuantizeLinear that quantizes it (behind Casts) in ``model``."""
    values = _constant_values(model)
    scales = {}
    for node in model.graph.node:
        scale = values.get(node.input[1]) if node.op_type == 'QuantizeLinear' else None
        if scale is not None and scale.size == 1:
            scales[_source(node.input[0], producer)] = float(scale)
    return scales


def probes(reference: Any, candidate: Any) -> List[Probe]:
    """The tensors both graphs compute, in the FP32 graph's order, with how the candidate computes each."""
    ref_types, cand_types = _float_types(reference), _float_types(candidate)
    producer = {out: node for node in candidate.graph.node for out in node.output}
    constants = set(_constant_values(candidate))
    scales = _qdq_scales(candidate, producer)
    found = []
    for depth, node in enumerate(reference.graph.node):
        for tensor in node.output:
            cand = producer.get(tensor)
            while cand is not None and cand.op_type in ('Cast', 'Identity'):  # AutoCast's cast to FP32 IO
                cand = producer.get(cand.input[0])
            if tensor not in ref_types or tensor not in cand_types or cand is None or cand.op_type in _QDQ:
                continue
            sources = tuple(dict.fromkeys(_source(t, producer) for t in cand.input if t))
            found.append(Probe(
                tensor=tensor, node=node.name, op_type=node.op_type, block=_block(node.name), depth=depth,
                sources=tuple(s for s in sources if s not in constants),
                quantized=any(producer.get(t) is not None and producer[t].op_type == 'DequantizeLinear'
                              for t in cand.input),
                qdq_scale=scales.get(tensor)))
    return found


def block_outputs(reference: Any) -> Dict[str, str]:
    """block -> the last tensor it hands to another block or the graph output, in graph order."""
    block_of = {out: _block(n.name) for n in reference.graph.node for out in n.output}
    handed = {o.name for o in reference.graph.output}
    for node in reference.graph.node:
        handed.update(t for t in node.input if t in block_of and block_of[t] != _block(node.name))
    outputs: Dict[str, str] = {}
    for node in reference.graph.node:
        block = _block(node.name)
        for tensor in node.output:
            if block is not None and tensor in handed:
                outputs[block] = tensor  # later ones win: the block's last hand-over
    return outputs


def _exposed_session(model: Any, tensors: Sequence[str]) -> Any:
    """An onnxruntime CPU session of ``model`` with ``tensors`` added to its outputs, running the graph as written.

    Graph optimizations are off: onnxruntime's fusions (Q/DQ into integer kernels among them) are blocked wherever
    an intermediate tensor is an output, so with them on the exposed graph would compute something else than the
    plain one (on the trained Fashion-MNIST INT8 + FP16 graph: up to 0.1 in the logits). FP32 graphs then compute
    exactly what they compute unexposed. FP16 ones nearly: the CPU provider runs FP16 ops in FP32 and drops the
    FP16 round trips between them, except where a tensor is an output, so exposed, every FP16 tensor is rounded to
    FP16 as the ONNX declares it (as a strongly typed TensorRT engine stores it). On that graph the logits move by
    up to 0.04, against an INT8 error of 0.08.
    """
    import onnx
    import onnxruntime as ort
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    types = _float_types(model)
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(t, types[t], None) for t in tensors if t not in known)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(probe.SerializeToString(), options, providers=['CPUExecutionProvider'])
    except Exception as e:  # onnxruntime raises its own untyped errors
        raise ScalableViTError(f'onnxruntime cannot run the exposed graph: {str(e).splitlines()[0]}') from e


def batch_size_for(reference: Any, found: Sequence[Probe], budget: int = MEMORY_BUDGET) -> int:
    """Images per batch so that both graphs' exposed tensors fit ``budget`` bytes (FP32 sizes at batch 1); one
    image at a time when the sizes are unknown."""
    from .census import layers_of
    nodes = {p.node for p in found}
    per_image = sum(la.out_bytes for la in layers_of(reference) if la.name in nodes)
    if not per_image:
        return 1
    return int(max(1, min(MAX_BATCH, budget // (2 * per_image))))


# --------------------------------------------------------------------------------------- measurement
def measure(reference: ModelLike, candidate: ModelLike, images: np.ndarray, batch_size: Optional[int] = None,
            progress: Optional[Callable[[int], None]] = None, memory_budget: int = MEMORY_BUDGET
            ) -> Tuple[List[Probe], Dict[str, Dict[str, Any]]]:
    """Run both graphs on ``images`` (N, C, H, W float32) with every matched tensor exposed.

    Returns the probes (FP32 graph order) and ``{tensor: metrics}`` (see ``_Stats.metrics``) plus ``local_error``.
    """
    ref_model, cand_model = _load(reference), _load(candidate)
    found = probes(ref_model, cand_model)
    if not found:
        raise ScalableViTError('the two graphs share no tensor name: is the candidate made from this FP32 model?')
    names = [p.tensor for p in found]
    batch = batch_size or batch_size_for(ref_model, found, memory_budget)
    input_name = ref_model.graph.input[0].name
    stats = {p.tensor: _Stats() for p in found}
    level = CLIP_LEVEL[_qdq_format(cand_model) or 'int8']
    clip = {p.tensor: level * p.qdq_scale for p in found if p.qdq_scale}
    logger.info('divergence: %d tensors matched by name, %d images in batches of %d', len(found), len(images), batch)
    sessions = [_exposed_session(m, names) for m in (ref_model, cand_model)]
    for start in range(0, len(images), batch):
        feed = {input_name: np.ascontiguousarray(images[start:start + batch], dtype=np.float32)}
        ref_out, cand_out = (dict(zip(names, s.run(names, feed))) for s in sessions)
        for name in names:
            stats[name].add(ref_out[name], cand_out[name], clip.get(name))
        del ref_out, cand_out
        if progress:
            progress(len(feed[input_name]))
    metrics = {name: s.metrics() for name, s in stats.items()}
    for p in found:
        inherited = max((metrics[s]['rel_l2'] for s in p.sources if s in metrics), default=0.0)
        metrics[p.tensor]['local_error'] = metrics[p.tensor]['rel_l2'] - inherited
    return found, metrics


def local_errors(found: Sequence[Probe], metrics: Dict[str, Dict[str, Any]]) -> Dict[str, float]:
    """node -> the error it adds itself, for the candidate's quantized nodes (the ``autoquant`` sensitivity)."""
    return {p.node: metrics[p.tensor]['local_error'] for p in found if p.quantized}


def _rows(found: Sequence[Probe], metrics: Dict[str, Dict[str, Any]], fmt: str) -> List[Dict[str, Any]]:
    """One JSON row per probe; a quantized node also gets the quantizer step at the median |x| (over it) and the
    clipping of what it reads."""
    rows = []
    for p in found:
        m = metrics[p.tensor]
        median = m['fp32_median_abs']
        step = quantizer_step(fmt, p.qdq_scale, median) if p.qdq_scale else None
        rows.append({'tensor': p.tensor, 'node': p.node, 'op_type': p.op_type, 'block': p.block, 'depth': p.depth,
                     'quantized': p.quantized, 'sources': list(p.sources), **m, 'scale': p.qdq_scale, 'step': step,
                     'step_over_median': step / median if step and median else None})
    by_tensor = {r['tensor']: r for r in rows}
    for row in rows:
        feeds = [by_tensor[s] for s in row['sources'] if s in by_tensor and by_tensor[s]['step']]
        row['input_step_over_median'] = max((f['step_over_median'] or 0.0 for f in feeds), default=None)
        row['input_clipped_fraction'] = max((f['clipped_fraction'] for f in feeds), default=None)
    return rows


def _crossed(row: Dict[str, Any], threshold: float) -> bool:
    return row['nonfinite'] > 0 or row['rel_l2'] > threshold


def divergence_report(reference: ModelLike, candidate: ModelLike, images: np.ndarray,
                      threshold: float = DEFAULT_THRESHOLD, batch_size: Optional[int] = None,
                      progress: Optional[Callable[[int], None]] = None) -> Dict[str, Any]:
    """The divergence of ``candidate`` from ``reference`` on ``images``, JSON-ready.

    ``blocks``: one row per block output in depth order, with the node in the block that adds the most error;
    ``nodes``: every matched tensor; ``first_block`` / ``first_node``: the first to cross ``threshold``
    (relative L2 error, or any non-finite value); ``quantized_nodes`` ranks the INT8 / FP8 layers by local error.
    """
    if not threshold > 0:
        raise ScalableViTError(f'divergence threshold must be a positive relative error, got {threshold}')
    ref_model, cand_model = _load(reference), _load(candidate)
    found, metrics = measure(ref_model, cand_model, images, batch_size, progress)
    fmt = _qdq_format(cand_model)
    rows = _rows(found, metrics, fmt or 'int8')
    by_tensor = {r['tensor']: r for r in rows}
    blocks = []
    for block, tensor in block_outputs(ref_model).items():
        if tensor not in by_tensor:
            continue
        inside = [r for r in rows if r['block'] == block]
        worst = max(inside, key=lambda r: r['local_error'])
        blocks.append({**by_tensor[tensor], 'block': block, 'quantized_nodes': sum(r['quantized'] for r in inside),
                       'worst_node': worst['node'], 'worst_local_error': worst['local_error']})
    blocks.sort(key=lambda r: r['depth'])
    ranked = sorted((r for r in rows if r['quantized']), key=lambda r: -r['local_error'])
    return {
        'reference': str(reference) if not hasattr(reference, 'graph') else 'in-memory model',
        'candidate': str(candidate) if not hasattr(candidate, 'graph') else 'in-memory model',
        'format': fmt, 'images': int(len(images)), 'threshold': threshold, 'matched_tensors': len(rows),
        'first_block': next((b for b in blocks if _crossed(b, threshold)), None),
        'first_node': next((r for r in rows if _crossed(r, threshold)), None),
        'blocks': blocks, 'quantized_nodes': [{'node': r['node'], 'op_type': r['op_type'], 'block': r['block'],
                                               'local_error': r['local_error'], 'rel_l2': r['rel_l2']}
                                              for r in ranked],
        'nodes': rows,
    }


# --------------------------------------------------------------------------------------- output
def _g(value: Optional[float], spec: str = '.3g') -> str:
    return 'n/a' if value is None else format(value, spec)


def render_markdown(report: Dict[str, Any], top: int = 12) -> str:
    """The report for people: the block table, the first crossing, the quantized nodes adding most error."""
    first = report['first_block']
    lines = [f"# Divergence of {report['candidate']} from {report['reference']}", '',
             f"{report['images']} images, {report['matched_tensors']} tensors matched by name; threshold: relative "
             f"L2 error {report['threshold']:g}.", '']
    if first:
        lines += [f"**First block over the threshold: `{first['block']}`** (relative error {first['rel_l2']:.3g}, "
                  f"cosine {first['cosine']:.5f}); the node in it adding the most error: `{first['worst_node']}` "
                  f"(local error {first['worst_local_error']:.3g}).", '']
    else:
        lines += ['No block crosses the threshold.', '']
    name = (report.get('format') or 'int8').upper()
    lines += [f'| block | output | cosine | rel. L2 error | max abs error | FP32 max abs | FP32 RMS | {name} nodes '
              '| node adding most error (local error) |', '|---|---|---:|---:|---:|---:|---:|---:|---|']
    lines += [f"| {b['block']} | `{b['tensor']}` | {b['cosine']:.5f} | {b['rel_l2']:.3g} | {b['max_abs_err']:.3g} "
              f"| {b['fp32_absmax']:.3g} | {b['fp32_rms']:.3g} | {b['quantized_nodes']} | `{b['worst_node']}` "
              f"({b['worst_local_error']:.3g}) |" for b in report['blocks']]
    by_node = {r['node']: r for r in report['nodes']}
    ranked = report['quantized_nodes'][:top]
    if ranked:
        lines += ['', f'## {name} nodes adding the most error (top {len(ranked)} of {len(report["quantized_nodes"])})',
                  '', 'Local error: the node\'s output error minus the largest error of what it reads. The ranges are '
                  f'those of its output; the {name} step (at the median |x|) and clipping are those of the quantized '
                  'tensor it reads (the largest step over median |x| when it reads several; weights are quantized per '
                  'channel, not shown).',
                  '', f'| node | op | local error | rel. L2 error | FP32 max abs | FP32 RMS | input {name} step / '
                  'median |x| | input clipped |', '|---|---|---:|---:|---:|---:|---:|---:|']
        for q in ranked:
            r = by_node[q['node']]
            lines.append(f"| `{q['node']}` | {q['op_type']} | {q['local_error']:.3g} | {r['rel_l2']:.3g} "
                         f"| {r['fp32_absmax']:.3g} | {r['fp32_rms']:.3g} | {_g(r['input_step_over_median'])} "
                         f"| {_g(r['input_clipped_fraction'], '.2%')} |")
    return '\n'.join(lines) + '\n'


def plot_divergence(report: Dict[str, Any], path: PathLike, title: Optional[str] = None) -> Optional[Path]:
    """Error against depth (top) and the FP32 range against depth (bottom); blocks labelled, first crossing marked.

    Every matched tensor is a dot (quantized nodes in orange), block outputs a line; y axes are logarithmic.
    """
    from ..core.plots import _pyplot, _save
    plt = _pyplot()
    if plt is None:
        return None
    rows, blocks, floor = report['nodes'], report['blocks'], 1e-7
    fig, (ax_err, ax_rng) = plt.subplots(2, 1, figsize=(12, 7), sharex=True, gridspec_kw={'height_ratios': [3, 2]})
    name = (report.get('format') or 'int8').upper()
    for quantized, color, label in ((False, '0.65', 'tensor'), (True, 'tab:orange', f'{name} node output')):
        sel = [r for r in rows if r['quantized'] == quantized]
        ax_err.scatter([r['depth'] for r in sel], [max(r['rel_l2'], floor) for r in sel], s=9, c=color, label=label)
        ax_rng.scatter([r['depth'] for r in sel], [max(r['fp32_absmax'], floor) for r in sel], s=9, c=color)
    depth = [b['depth'] for b in blocks]
    ax_err.plot(depth, [max(b['rel_l2'], floor) for b in blocks], '-o', c='tab:blue', ms=4, label='block output')
    ax_rng.plot(depth, [max(b['fp32_absmax'], floor) for b in blocks], '-o', c='tab:blue', ms=4, label='max |x|')
    ax_rng.plot(depth, [max(b['fp32_rms'], floor) for b in blocks], '--', c='tab:blue', lw=1, label='RMS')
    steps = [r for r in rows if r['step']]
    ax_rng.scatter([r['depth'] for r in steps], [r['step'] for r in steps], marker='_', s=60, c='tab:red',
                   label=f'{name} step of a quantized tensor (at its median |x|)')
    ax_err.axhline(report['threshold'], c='tab:red', lw=1, ls=':', label=f"threshold {report['threshold']:g}")
    first = report['first_block']
    if first:
        for ax in (ax_err, ax_rng):
            ax.axvline(first['depth'], c='tab:red', lw=1, alpha=0.5)
        ax_err.annotate(f"first over: {first['block']}", (first['depth'], max(first['rel_l2'], floor)),
                        textcoords='offset points', xytext=(6, 6), fontsize=8, color='tab:red')
    ax_err.set_ylabel('relative L2 error vs FP32')
    ax_rng.set_ylabel('FP32 activation (abs)')
    for ax in (ax_err, ax_rng):
        ax.set_yscale('log')
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc='upper left')
    ax_rng.set_xticks(depth, _spaced_labels(blocks), rotation=60, ha='right', fontsize=7)
    ax_rng.set_xlabel('depth (FP32 graph order; ticks at block outputs)')
    fig.suptitle(title or f"Divergence from FP32 on {report['images']} images")
    try:
        return _save(fig, Path(path))
    finally:
        plt.close(fig)


def _spaced_labels(blocks: Sequence[Dict[str, Any]], slots: int = 60) -> List[str]:
    """Block names for the x ticks, leaving out a name that would overlap the one before (S has 40 blocks)."""
    gap = (blocks[-1]['depth'] - blocks[0]['depth']) / slots if blocks else 0
    labels, last = [], None
    for b in blocks:
        keep = last is None or b['depth'] - last >= gap
        labels.append(b['block'] if keep else '')
        last = b['depth'] if keep else last
    return labels


def write_divergence(report: Dict[str, Any], out_dir: PathLike, stem: str = 'divergence') -> Dict[str, str]:
    """``<stem>.json``, ``<stem>.md`` and ``<stem>.png`` (when matplotlib is present) in ``out_dir``, atomically."""
    out_dir = Path(out_dir)
    paths = {'json': out_dir / f'{stem}.json', 'markdown': out_dir / f'{stem}.md'}
    write_json(paths['json'], _finite(report))
    md = render_markdown(report)
    png = plot_divergence(report, out_dir / f'{stem}.png')
    if png is not None:
        md += f'\n![error against depth]({png.name})\n'
        paths['plot'] = png
    write_text(paths['markdown'], md)
    return {k: str(v) for k, v in paths.items()}


def _finite(obj: Any) -> Any:
    """JSON has no inf/NaN: such floats become null (``nonfinite`` counts say why)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
