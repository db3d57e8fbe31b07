"""A TensorRT cost ESTIMATE from the ONNX alone: what each precision plan would cost on a given GPU.

Per layer of the census (``census.layers_of``), at batch B:

    time = max(2 * MACs * B / peak of the layer's dtype,  (weight bytes + B * activation bytes) / memory bandwidth)

with the dense peaks and DRAM bandwidth of ``device_peaks.json`` (``roofline.device_limits``): INT8 and FP16 on
tensor cores, FP32 on CUDA cores (TF32 is off in our builds). The sum over layers is the estimate.

Limits, stated wherever the numbers appear: it is an estimate, not a measurement. It models no fusion (TensorRT
folds LayerNorm, GELU, residual Adds, Q/DQ and Casts into neighbouring kernels, so the memory term is an upper
bound), no kernel-launch overhead (a few microseconds per kernel, which dominates small models at batch 1), no
caches (every layer reads its weights from DRAM), and peak datasheet rates at the maximum clock (real kernels reach
a fraction of them, and lower power modes lower the clocks). Use it to compare precision plans on one device and to
see which layers are compute- or memory-bound, never as a latency promise: benchmark the engine for that.
"""
from typing import Any, Dict, Iterable, List, Sequence, Union

from ..core.peaks import device_limits
from .census import DTYPES, Layer

__all__ = ['estimate', 'estimate_table', 'LIMITS_NOTE']

LIMITS_NOTE = ('Estimate from the ONNX alone (no fusion, no launch overhead, no caches, datasheet peaks): compare '
               'precision plans with it, do not read it as latency.')
_PEAK_FIELD = {'int8': 'int8_tops', 'fp16': 'fp16_tflops', 'fp32': 'fp32_tflops'}


def estimate(layers: Sequence[Layer], device: Union[str, Dict[str, Any]], batch: int = 1) -> Dict[str, Any]:
    """The estimated time of one batch on ``device`` (a device_peaks.json key or a limits dict)."""
    limits = device_limits(device) if isinstance(device, str) else device
    bandwidth = limits['mem_bw_gbs'] * 1e9
    total = compute_total = memory_total = 0.0
    by_dtype = dict.fromkeys(DTYPES, 0.0)
    compute_bound = 0
    for layer in layers:
        peak = limits.get(_PEAK_FIELD.get(layer.dtype, ''))
        compute = 2.0 * layer.macs * batch / (peak * 1e12) if layer.macs and peak else 0.0
        memory = (layer.weight_bytes + batch * (layer.in_bytes + layer.out_bytes)) / bandwidth
        time = max(compute, memory)
        total += time
        compute_total += compute
        memory_total += memory
        compute_bound += compute > memory
        if layer.dtype in by_dtype:
            by_dtype[layer.dtype] += time
    return {'estimate': True, 'device': limits['device'], 'device_name': limits['name'], 'batch': int(batch),
            'latency_ms': total * 1e3, 'images_per_s': batch / total if total else None,
            'compute_ms': compute_total * 1e3, 'memory_ms': memory_total * 1e3,
            'by_dtype_ms': {d: t * 1e3 for d, t in by_dtype.items()},
            'compute_bound_layers': compute_bound, 'layers': len(layers)}


def estimate_table(layers: Sequence[Layer], devices: Iterable[str], batches: Iterable[int] = (1, 8)
                   ) -> List[Dict[str, Any]]:
    """``estimate`` for every device and batch size, in that order."""
    return [estimate(layers, device, batch) for device in devices for batch in batches]
