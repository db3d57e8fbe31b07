"""Where FP16 is not safe: the measured rules that keep a node FP32 when everything else runs FP16.

A strongly typed TensorRT engine runs each op in the dtype the ONNX gives it, so FP32 is paid in full (CUDA cores
instead of tensor cores, twice the bytes): it is kept only where a rule below, measured on the calibration images
with onnxruntime on the FP32 graph, says FP16 would overflow. Each FP32 node ("island") is recorded with its rule
and measured value, and the precision census holds every other FP32 node against the bundle.

* ``layernorm_variance``: a LayerNormalization whose input deviates from its mean by more than
  ``LAYERNORM_LIMIT`` = 128. The squares summed into the variance overflow FP16 past sqrt(65504) = 256 (a public
  report: ViT-B at 18.96 % top-1 FP16 on an Orin Nano); half of that leaves headroom for unseen inputs.
* ``fp16_range``: a node reading or writing a value (activation or initializer) beyond ``RANGE_LIMIT`` = 8192,
  so an input 8x larger than any calibration image still fits FP16's 65504. Covers attention scores before
  Softmax, the residual stream and MLP activations alike.
* ``requested``: kept FP32 by the caller (``--exclude-op-types`` / ``--exclude-nodes`` for FP16 bundles).

The ranges come from ``RANGE_CHECK_IMAGES`` images spread evenly over the calibration set, run one at a time
with every float tensor exposed, so memory stays at one image's activations whatever the set size.
"""
import logging
from typing import Any, Dict, Iterable, List, Tuple

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ['LAYERNORM_LIMIT', 'RANGE_LIMIT', 'RANGE_CHECK_IMAGES', 'activation_ranges', 'fp16_islands',
           'float_tensors', 'with_qdq_feeds']

LAYERNORM_LIMIT = 128.0
RANGE_LIMIT = 8192.0
RANGE_CHECK_IMAGES = 64
_RANGE_BATCH = 1  # every float tensor is exposed: one image of S holds ~0.6 GB of them
_QDQ = ('QuantizeLinear', 'DequantizeLinear')


def float_tensors(model: Any) -> Dict[str, int]:
    """Every FP32 tensor a node writes, with its bytes for one image (0 where shape inference cannot tell):
    what a pass exposing them all (the range pass here, modelopt's calibration) holds per image."""
    import onnx

    from .export import infer_shapes
    inferred = infer_shapes(model, batch=1).graph
    values = {v.name: v.type.tensor_type for v in (*inferred.value_info, *inferred.output)}
    found = {}
    for out in (out for node in model.graph.node for out in node.output):
        tensor = values.get(out)
        if tensor is not None and tensor.elem_type == onnx.TensorProto.FLOAT:
            dims = [d.dim_value if d.HasField('dim_value') else 0 for d in tensor.shape.dim]
            found[out] = 4 * int(np.prod(dims)) if tensor.HasField('shape') else 0
    return found


def _subset(total: int, count: int) -> List[int]:
    """Indices of a fixed, evenly spread subset (deterministic, so the stage's cache key stays meaningful)."""
    if total <= count:
        return list(range(total))
    return sorted(set(np.linspace(0, total - 1, count).round().astype(int).tolist()))


def activation_ranges(model: Any, images: Any) -> Tuple[Dict[str, float], Dict[str, float]]:
    """Max |x| of every float tensor of ``model`` (FP32 onnxruntime) and max |x - mean| at each LayerNorm input.

    Runs ``RANGE_CHECK_IMAGES`` of ``images`` (an array or a ``data.StoredImages``, read as needed) in small
    batches; returns ({tensor: max |x|}, {LayerNorm node: peak}).
    """
    import onnxruntime as ort

    from ..data.store import image_batches
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # Every tensor is an output, so no activation memory can be reused: no arena holding it after a run, no plan.
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False
    session = ort.InferenceSession(_exposing(model, list(float_tensors(model))), options,
                                   providers=['CPUExecutionProvider'])
    names = [o.name for o in session.get_outputs()]
    layernorms = [(n.name, n.input[0], next((a.i for a in n.attribute if a.name == 'axis'), -1))
                  for n in model.graph.node if n.op_type == 'LayerNormalization']
    graph_input = model.graph.input[0].name
    ranges = dict.fromkeys(names + [graph_input], 0.0)
    peaks = {name: 0.0 for name, _, _ in layernorms}
    for batch in image_batches(images, _RANGE_BATCH, _subset(len(images), RANGE_CHECK_IMAGES)):
        values = dict(zip(names, session.run(names, {graph_input: batch})))
        values[graph_input] = batch
        for name, x in values.items():
            ranges[name] = max(ranges[name], float(np.abs(x).max()) if x.size else 0.0)
        for name, tensor, axis in layernorms:
            x = values[tensor]
            dims = tuple(range(axis % x.ndim, x.ndim))
            peaks[name] = max(peaks[name], float(np.abs(x - x.mean(axis=dims, keepdims=True)).max()))
    return ranges, peaks


def _exposing(model: Any, tensors: List[str]) -> bytes:
    """``model`` serialized with ``tensors`` as extra outputs; the model itself is left as it was (outputs are
    added for the serialization and removed again, so no second copy of the weights is made)."""
    import onnx
    count = len(model.graph.output)
    known = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None)
                              for t in tensors if t not in known)
    try:
        return model.SerializeToString()
    finally:
        del model.graph.output[count:]


def fp16_islands(model: Any, images: Any,
                 requested: Iterable[str] = ()) -> Dict[str, Dict[str, Any]]:
    """The nodes of the FP32 ``model`` that must stay FP32: ``{node: {'rule', 'value', 'limit'}}``, graph order.

    Without images nothing can be measured: every LayerNorm stays FP32 (rule ``layernorm_variance``, value None).
    """
    from onnx import numpy_helper
    found: Dict[str, Dict[str, Any]] = {n: {'rule': 'requested', 'value': None, 'limit': None} for n in requested}
    if images is None:
        logger.warning('no calibration images: every LayerNorm kept FP32 (their input range cannot be measured)')
        for node in model.graph.node:
            if node.op_type == 'LayerNormalization':
                found.setdefault(node.name, {'rule': 'layernorm_variance', 'value': None, 'limit': LAYERNORM_LIMIT})
        return _in_graph_order(model, found)
    ranges, peaks = activation_ranges(model, images)
    ranges.update({t.name: float(np.abs(numpy_helper.to_array(t)).max(initial=0.0)) for t in model.graph.initializer
                   if t.data_type == 1})  # FLOAT initializers
    for node in model.graph.node:
        if node.name in found or node.op_type in _QDQ:
            continue
        if peaks.get(node.name, 0.0) > LAYERNORM_LIMIT:
            found[node.name] = {'rule': 'layernorm_variance', 'value': peaks[node.name], 'limit': LAYERNORM_LIMIT}
            continue
        value = max((ranges.get(t, 0.0) for t in (*node.input, *node.output) if t), default=0.0)
        if value > RANGE_LIMIT:
            found[node.name] = {'rule': 'fp16_range', 'value': value, 'limit': RANGE_LIMIT}
    logger.info('FP16 safety on %d images: %d FP32 island(s) (LayerNorm |x - mean| max %.1f, limit %.0f; '
                '|x| limit %.0f)', min(len(images), RANGE_CHECK_IMAGES), len(found), max(peaks.values(), default=0.0),
                LAYERNORM_LIMIT, RANGE_LIMIT)
    return _in_graph_order(model, found)


def _in_graph_order(model: Any, found: Dict[str, Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    return {n.name: found[n.name] for n in model.graph.node if n.name in found}


def with_qdq_feeds(model: Any, nodes: Iterable[str]) -> List[str]:
    """``nodes`` plus the Q/DQ pairs feeding them: an FP32 island that reads INT8 keeps its DequantizeLinear (and
    that Q/DQ pair's QuantizeLinear) FP32 too, so no Cast lands between DQ and the op (TensorRT's INT8 fusion)."""
    producers = {out: node for node in model.graph.node for out in node.output}
    keep = set(nodes)
    for node in model.graph.node:
        if node.name not in keep:
            continue
        for tensor in node.input:
            dq = producers.get(tensor)
            if dq is not None and dq.op_type == 'DequantizeLinear':
                keep.add(dq.name)
                q = producers.get(dq.input[0])
                if q is not None and q.op_type == 'QuantizeLinear':
                    keep.add(q.name)
    return [n.name for n in model.graph.node if n.name in keep]
