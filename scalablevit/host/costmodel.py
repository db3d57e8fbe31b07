"""A TensorRT latency ESTIMATE from the ONNX alone: the engine's kernels (``fusion``) costed on a given GPU.

Per kernel (a fusion group) at batch B:

    time = launch + max(2 * MACs * B / (peak of its dtype * compute fraction * occupancy),
                        DRAM bytes / (bandwidth * BANDWIDTH_FRACTION))

* peaks and DRAM bandwidth: ``device_peaks.json`` (datasheets); INT8 and FP16 GEMMs and convolutions on tensor
  cores, grouped (depthwise) convolutions and FP32 on CUDA cores (TF32 is off in our builds);
* occupancy: a kernel with fewer 64 x 64 output tiles than the GPU has SMs leaves the rest idle (small GEMMs at
  batch 1);
* DRAM bytes: the kernel's weights and the activations crossing its boundary; an activation of at most
  ``CACHE_SHARE`` of the L2 stays on chip (written and read there), and the weights stay there across runs when all
  of them fit in that share;
* ``launch`` (per-kernel overhead) and the compute fraction are fitted per device class on half of the published
  TensorRT latencies in ``bench/published`` and checked on the other half (``cost_fit.json`` holds the fit and the
  measured error; ``python bench/cost_model_check.py`` recomputes both).

What it is not: a measurement. It knows TensorRT's documented fusions, not the tactics its builder picks, and
assumes the clocks of ``device_peaks.json`` (lower power modes are slower). The error band it carries is the one
measured on the checking half of the published engines.
"""
import functools
import json
import math
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

from ..core.errors import ScalableViTError
from ..core.peaks import device_limits
from .fusion import Group, group_summary

__all__ = ['estimate', 'unsupported', 'error_band', 'limits_note', 'load_fit', 'device_class', 'FIT_FILE',
           'BANDWIDTH_FRACTION', 'CACHE_SHARE', 'TILE']

FIT_FILE = Path(__file__).with_name('cost_fit.json')
BANDWIDTH_FRACTION = 0.8  # what a streaming kernel reaches of the datasheet DRAM bandwidth (not fitted)
CACHE_SHARE = 0.5  # an activation (or all weights) within this share of the L2 stays on chip
TILE = 64  # output tile side of a tensor-core kernel for the occupancy rule
_PEAK_FIELD = {'fp8': 'fp8_tflops', 'int8': 'int8_tops', 'fp16': 'fp16_tflops', 'fp32': 'fp32_tflops'}


@functools.lru_cache(maxsize=None)
def _read_fit(path: str) -> Dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ScalableViTError(f'{path}: unreadable cost model fit ({e})') from e


def load_fit(path: Path = FIT_FILE) -> Dict[str, Any]:
    """The fitted parameters per device class and the error measured on the checking half."""
    return _read_fit(str(path))


def error_band(fit: Optional[Dict[str, Any]] = None) -> str:
    """'+-X % on N published engines' (the checking half's largest |error|), for every table that shows an estimate."""
    check = (fit or load_fit()).get('check') or {}
    if not check.get('n'):
        return 'error not measured'
    return (f"median error {check['median_abs_pct']:.0f} %, worst {check['max_abs_pct']:.0f} % on "
            f"{check['n']} published TensorRT engines")


LIMITS_NOTE = ('Estimate from the ONNX alone (TensorRT\'s documented fusions, datasheet peaks, launch overhead and '
               'achievable fractions fitted on published engines): {band}. Benchmark the engine for a latency.')


def limits_note() -> str:
    """What every table that shows the estimate says under it, with the measured error."""
    return LIMITS_NOTE.format(band=error_band())


def device_class(limits: Dict[str, Any]) -> str:
    """The class a device's fitted parameters come from: 'jetson' (integrated Orin GPUs) or 'gpu'."""
    return 'jetson' if limits['kind'] == 'jetson' else 'gpu'


def _occupancy(group: Group, sms: Optional[int], batch: int) -> float:
    if not group.gemm_shape or not sms:
        return 1.0
    count, m, n, _ = group.gemm_shape
    tiles = count * math.ceil(m * batch / TILE) * math.ceil(n / TILE)
    return min(1.0, tiles / sms)


def _peak(group: Group, limits: Dict[str, Any]) -> Optional[float]:
    if group.depthwise or group.kind not in ('conv', 'gemm', 'attention'):
        return limits['fp32_tflops'] if group.dtype == 'fp32' or group.depthwise else limits['fp16_tflops']
    return limits.get(_PEAK_FIELD.get(group.dtype, ''))


def unsupported(groups: Sequence[Group], device: Union[str, Dict[str, Any]]) -> Optional[str]:
    """Why ``device`` cannot run these kernels (FP8 on a GPU without FP8 tensor cores), or None."""
    from ..core.compat import fp8_problem
    limits = device_limits(device) if isinstance(device, str) else device
    if limits.get('fp8_tflops') is None and any(g.dtype == 'fp8' for g in groups):
        return fp8_problem(limits.get('compute_capability'), limits['name']) or f"{limits['name']} has no FP8 peak"
    return None


def estimate(groups: Sequence[Group], device: Union[str, Dict[str, Any]], batch: int = 1,
             fit: Optional[Dict[str, Any]] = None, kernels: bool = False) -> Dict[str, Any]:
    """The estimated time of one batch on ``device`` (a device_peaks.json key or a limits dict).

    ``kernels``: add the per-kernel table (what fused with what, compute- or memory-bound, its time).
    """
    fit = fit or load_fit()
    limits = device_limits(device) if isinstance(device, str) else device
    problem = unsupported(groups, limits)
    if problem:
        raise ScalableViTError(problem)
    params = fit['classes'][device_class(limits)]
    launch = params['launch_us'] * 1e-6
    bandwidth = limits['mem_bw_gbs'] * 1e9 * BANDWIDTH_FRACTION
    cache = (limits.get('l2_mb') or 0) * 1e6 * CACHE_SHARE
    weights_resident = sum(g.weight_bytes for g in groups) <= cache
    total = compute_total = memory_total = 0.0
    by_dtype: Dict[str, float] = {}
    rows = []
    bound = {'compute': 0, 'memory': 0, 'launch': 0}
    for group in groups:
        peak = _peak(group, limits)
        compute = 0.0
        if group.macs and peak:
            compute = 2.0 * group.macs * batch / (peak * 1e12 * params['compute_fraction'] *
                                                  _occupancy(group, limits.get('sms'), batch))
        dram = 0 if weights_resident else group.weight_bytes
        dram += sum(b * batch for b in (*group.inputs.values(), *group.outputs.values()) if b * batch > cache)
        memory = dram / bandwidth
        time = launch + max(compute, memory)
        which = 'compute' if compute > memory and compute > launch else 'memory' if memory > launch else 'launch'
        bound[which] += 1
        total += time
        compute_total += compute
        memory_total += memory
        by_dtype[group.dtype] = by_dtype.get(group.dtype, 0.0) + time
        if kernels:
            rows.append({'kind': group.kind, 'dtype': group.dtype, 'nodes': group.nodes, 'ops': group.op_types,
                         'rules': group.rules, 'attention': group.attention, 'macs': group.macs,
                         'dram_bytes': dram, 'bound': which, 'ms': time * 1e3})
    result = {'estimate': True, 'device': limits['device'], 'device_name': limits['name'], 'batch': int(batch),
              'latency_ms': total * 1e3, 'images_per_s': batch / total if total else None,
              'launch_ms': launch * len(groups) * 1e3, 'compute_ms': compute_total * 1e3,
              'memory_ms': memory_total * 1e3, 'by_dtype_ms': {d: t * 1e3 for d, t in sorted(by_dtype.items())},
              'bound': bound, 'weights_on_chip': weights_resident, 'error_band': error_band(fit),
              'fusion': group_summary(list(groups))}
    if kernels:
        result['kernels'] = rows
    return result
