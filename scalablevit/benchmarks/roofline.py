"""Roofline: what a benchmark reached against the device's two ceilings, math and memory bandwidth.

* achieved (T-ops/s) = model MACs per image x 2 x throughput (images/s) / 1e12;
* compute ceiling = the dense peak for the precision (``device_peaks.json``: NVIDIA datasheets; sparse
  figures are kept for reference, a dense network cannot reach them), scaled to the GPU clock when known;
* memory ceiling = arithmetic intensity (ops per byte moved to and from DRAM) x DRAM bandwidth, scaled to
  the EMC clock when known; the caller gives the bytes moved per image (the ONNX-based cost estimate);
* attainable = min(compute ceiling, memory ceiling); ``bound`` says which one binds.

A ViT at batch 1 is largely memory-bound, which is why a "% of peak" alone reads as a few percent.
An achieved figure above the device's peak is impossible: it is logged as a warning and flagged
(``exceeds_peak``), usually a timing or MAC-count error. "% of peak" needs a known device.

``device_limits`` / ``cpu_limits`` give a device's ceilings as plain numbers, ``roofline`` is pure
arithmetic on them: the TensorRT cost estimate reuses both. numpy-free and torch-free; ``model_gmacs``
asks ``scalablevit.models.complexity`` (torch) on the host only.
"""
import logging
import os
import re
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

from ..core.errors import ScalableViTError
from ..core.peaks import PEAK_FIELDS, Limits, detect_device, device_limits, device_peak

logger = logging.getLogger(__name__)

__all__ = ['estimate_cpu_peak', 'cpu_limits', 'achieved_tera_ops', 'roofline', 'detect_device', 'detect_local_device',
           'model_gmacs', 'resolve_gmacs', 'add_roofline']


# --------------------------------------------------------------------------------------- CPU peak (estimate)
# Per-core FP32 FLOP/cycle = FMA pipes x SIMD lanes x 2. Upper bounds where a family varies, so that a
# figure above the estimate is worth a look rather than a false alarm.
_ARM_TWO_128BIT_PIPES = {'0xd05', '0xd0b', '0xd0c', '0xd0d', '0xd41', '0xd42', '0xd47', '0xd49', '0xd4b', '0xd4d'}


def _cpuinfo_blocks(text: str) -> List[Dict[str, str]]:
    blocks = []
    for chunk in re.split(r'\n\s*\n', text.strip()):
        fields = dict((k.strip(), v.strip()) for k, _, v in (line.partition(':') for line in chunk.splitlines()) if _)
        if 'processor' in fields and fields['processor'].isdigit():
            blocks.append(fields)
    return blocks


def _flops_per_cycle(cpu: Dict[str, str]) -> Tuple[Optional[int], str]:
    flags = set((cpu.get('flags') or cpu.get('Features') or '').split())
    amd_zen4 = cpu.get('vendor_id') == 'AuthenticAMD' and cpu.get('cpu family') == '25'
    if 'avx512f' in flags and amd_zen4:
        return 32, 'AVX-512 on AMD Zen 4 (family 25): 512-bit ops on a 256-bit datapath, 2 FMA pipes x 8 lanes x 2'
    if 'avx512f' in flags:
        return 64, 'AVX-512: 2 FMA units x 16 lanes x 2 (upper bound: some Xeons have one 512-bit FMA unit)'
    if {'avx2', 'fma'} <= flags:
        return 32, 'AVX2 + FMA: 2 FMA units x 8 lanes x 2'
    if 'avx' in flags:
        return 16, 'AVX without FMA: one 8-lane add and one 8-lane multiply per cycle'
    if 'sse2' in flags:
        return 8, 'SSE2: one 4-lane add and one 4-lane multiply per cycle'
    if 'asimd' in flags:
        if cpu.get('CPU part', '').lower() in _ARM_TWO_128BIT_PIPES:
            return 16, f"NEON, CPU part {cpu['CPU part']} (Cortex-A7x/Neoverse N class): 2 x 128-bit FMA x 4 lanes x 2"
        return 32, 'NEON/SVE, other Arm core: 4 x 128-bit FMA x 4 lanes x 2 (upper bound, Neoverse V / Cortex-X class)'
    return None, 'no SIMD flags recognised in /proc/cpuinfo'


def estimate_cpu_peak(cpuinfo: str, allowed_cpus: Iterable[int], max_mhz: Optional[float] = None,
                      clock_source: str = 'given maximum') -> Dict[str, Any]:
    """FP32 peak (GFLOP/s) of the CPUs a process may use, from ``/proc/cpuinfo`` text: an estimate.

    peak = physical cores among ``allowed_cpus`` x FLOP/cycle/core (vector width and FMA pipes) x clock.
    Assumptions: SMT siblings share one core's FMA units (physical cores from ``physical id`` / ``core id``;
    Arm lists none, every CPU counts); the clock is ``max_mhz`` (cpufreq's maximum) or else the largest
    ``cpu MHz`` the kernel prints, which in a VM is often the base clock, so turbo can exceed the estimate;
    FLOP/cycle are upper bounds where a family varies. Use it to flag impossible numbers, not as a spec.
    """
    allowed = set(allowed_cpus)
    cpus = [c for c in _cpuinfo_blocks(cpuinfo) if int(c['processor']) in allowed]
    if not cpus:
        raise ScalableViTError(f'cpuinfo lists none of the allowed CPUs {sorted(allowed)}')
    per_cycle, isa = _flops_per_cycle(cpus[0])
    has_topology = all('core id' in c for c in cpus)
    cores = len({(c.get('physical id'), c['core id']) for c in cpus}) if has_topology else len(cpus)
    mhz_seen = [float(c['cpu MHz']) for c in cpus if 'cpu MHz' in c]
    mhz = max_mhz or (max(mhz_seen) if mhz_seen else None)
    source = clock_source if max_mhz else ("largest 'cpu MHz' in /proc/cpuinfo" if mhz else None)
    peak = cores * per_cycle * mhz / 1000.0 if per_cycle and mhz else None
    model = cpus[0].get('model name') or cpus[0].get('Model name') or f"CPU part {cpus[0].get('CPU part', '?')}"
    return {'model': model, 'logical_cpus': len(cpus), 'cores': cores, 'flops_per_cycle': per_cycle, 'isa': isa,
            'mhz': mhz, 'clock_source': source, 'fp32_gflops': peak,
            'assumptions': 'estimate: physical cores x FP32 FLOP/cycle x clock as the OS reports it; a VM often '
                           'reports the base clock, and turbo or a wider core than assumed can exceed it'}


def _cpufreq_max_mhz(cpus: Iterable[int]) -> Optional[float]:
    values = []
    for cpu in cpus:
        try:
            values.append(int(Path(f'/sys/devices/system/cpu/cpu{cpu}/cpufreq/cpuinfo_max_freq').read_text()) / 1e3)
        except (OSError, ValueError):
            continue
    return max(values) if values else None


def cpu_limits(max_mhz: Optional[float] = None) -> Limits:
    """This machine's CPU as ``device_limits``-shaped ceilings: an FP32 estimate only (no INT8/FP16, no bandwidth).

    ``max_mhz`` overrides the clock (e.g. the known boost clock of a VM that reports only its base clock).
    """
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else list(range(os.cpu_count() or 1))
    try:
        cpuinfo = Path('/proc/cpuinfo').read_text()
    except OSError as e:
        raise ScalableViTError(f'cannot estimate the CPU peak: /proc/cpuinfo unreadable ({e.strerror})') from e
    cpufreq = _cpufreq_max_mhz(allowed)
    est = estimate_cpu_peak(cpuinfo, allowed, max_mhz or cpufreq,
                            'max_mhz argument' if max_mhz else 'cpufreq cpuinfo_max_freq')
    peak = est['fp32_gflops']
    return {'device': 'cpu', 'name': f"{est['model']} ({est['cores']} cores)", 'kind': 'cpu', 'int8_tops': None,
            'fp16_tflops': None, 'fp32_tflops': peak / 1000.0 if peak else None, 'mem_bw_gbs': None,
            'gpu_clock_mhz': None, 'mem_clock_mhz': None, 'mem_bw_source': None, 'estimate': True, 'cpu': est,
            'source': (f"estimate: {est['cores']} cores x {est['flops_per_cycle']} FP32 FLOP/cycle x {est['mhz']} MHz "
                       f"({est['clock_source']}; a VM often reports its base clock)")}


# --------------------------------------------------------------------------------------- the roofline
def achieved_tera_ops(gmacs: float, throughput_ips: float) -> float:
    """Tera-ops/s a model of ``gmacs`` GMACs per image reaches at ``throughput_ips`` images/s (1 MAC = 2 ops)."""
    if gmacs <= 0 or throughput_ips < 0:
        raise ScalableViTError(f'roofline needs positive GMACs and throughput (got {gmacs}, {throughput_ips})')
    return gmacs * 2.0 * throughput_ips / 1e3


def _limits(device: Union[None, str, Limits]) -> Optional[Limits]:
    return device_limits(device) if isinstance(device, str) else device


def _traffic(gmacs: float, throughput_ips: float, bytes_per_image: Optional[float]) -> Dict[str, Any]:
    if bytes_per_image is None:
        return {'bytes_per_image': None, 'intensity': None, 'achieved_bw_gbs': None}
    if bytes_per_image <= 0:
        raise ScalableViTError(f'roofline needs positive bytes moved per image (got {bytes_per_image})')
    return {'bytes_per_image': float(bytes_per_image), 'intensity': gmacs * 2e9 / bytes_per_image,
            'achieved_bw_gbs': bytes_per_image * throughput_ips / 1e9}


def _warn(result: Dict[str, Any], message: str) -> None:
    logger.warning('%s', message)
    result['warnings'].append(message)


def _check_impossible(result: Dict[str, Any], limits: Limits) -> None:
    """Flag an achieved figure above a ceiling: the datasheet never allows it, so the input is wrong."""
    what = 'estimated ' if limits.get('estimate') else ''
    result['exceeds_peak'] = result['achieved'] > result['peak'] * (1 + 1e-9)
    if result['exceeds_peak']:
        _warn(result, f"impossible: achieved {result['achieved']:.4g} {result['unit']} exceeds the {what}peak "
                      f"{result['peak']:.4g} of {limits['name']}; check the timing, the MAC count and the device"
                      + (f" ({limits['source']})" if limits.get('estimate') else ''))
    bw, moved = limits.get('mem_bw_gbs'), result['achieved_bw_gbs']
    result['exceeds_bandwidth'] = bool(bw and moved and moved > bw * (1 + 1e-9))
    if result['exceeds_bandwidth']:
        _warn(result, f'{moved:.4g} GB/s moved by the bytes-per-image estimate exceeds the {bw:.4g} GB/s of '
                      f"{limits['name']}: the estimate counts traffic that stayed in cache, or the timing is wrong")


def roofline(gmacs: float, throughput_ips: float, device: Union[None, str, Limits], precision: str,
             gpu_clock_mhz: Optional[float] = None, *, bytes_per_image: Optional[float] = None,
             emc_mhz: Optional[float] = None) -> Dict[str, Any]:
    """Achieved T(FL)OPS against the device's compute and memory ceilings (pure arithmetic on the arguments).

    ``device``: a table key, a ``device_limits``/``cpu_limits`` dict, or None (achieved only, no "% of peak").
    ``bytes_per_image``: DRAM bytes moved per image (weights + activations, e.g. from the ONNX) for the
    memory ceiling; ``gpu_clock_mhz`` / ``emc_mhz``: clocks the device actually ran at (tegrastats,
    ``jetson_clocks --show``), scaling the datasheet ceilings, since lower power modes cap both.
    Result: ``achieved``, ``peak``, ``utilization`` (of peak), ``ceilings``, ``attainable``, ``bound``
    ('compute' | 'memory', None without bytes), ``utilization_of_attainable``, ``exceeds_peak``, ``warnings``.
    """
    result: Dict[str, Any] = {'gmacs': float(gmacs), 'precision': precision,
                              'achieved': achieved_tera_ops(gmacs, throughput_ips),
                              'unit': PEAK_FIELDS.get(precision, ('', '', 'Tops/s'))[2],
                              **_traffic(gmacs, throughput_ips, bytes_per_image), 'warnings': []}
    limits = _limits(device)
    field = PEAK_FIELDS.get(precision, (None, None))[1]
    if limits is None or field is None or limits.get(field) is None:
        return {**result, 'device': limits['device'] if limits else None, 'peak': None, 'utilization': None,
                'attainable': None, 'bound': None}
    peak = float(limits[field])
    kind = 'FP32 SIMD peak of the allowed cores (estimate)' if limits['kind'] == 'cpu' else PEAK_FIELDS[precision][3]
    result.update(device=limits['device'], device_name=limits['name'], peak=peak, utilization=result['achieved'] / peak,
                  peak_kind=kind, peak_clock_mhz=limits.get('gpu_clock_mhz'),
                  source=limits['source'], mem_bw_gbs=limits.get('mem_bw_gbs'), estimate=bool(limits.get('estimate')))
    result['peak_sparse'] = device_peak(device, precision)['peak_sparse'] if isinstance(device, str) else None
    _add_ceilings(result, limits, gpu_clock_mhz, emc_mhz)
    _check_impossible(result, limits)
    return result


def _add_ceilings(result: Dict[str, Any], limits: Limits, gpu_clock_mhz: Optional[float],
                  emc_mhz: Optional[float]) -> None:
    """Compute and memory ceilings at the clocks the device ran at, the attainable figure and the binding one."""
    compute, bandwidth = result['peak'], limits.get('mem_bw_gbs')
    if gpu_clock_mhz and limits.get('gpu_clock_mhz'):
        compute = compute * float(gpu_clock_mhz) / limits['gpu_clock_mhz']
        result.update(gpu_clock_mhz=float(gpu_clock_mhz), peak_at_clock=compute,
                      utilization_at_clock=result['achieved'] / compute)
    if emc_mhz and bandwidth and limits.get('mem_clock_mhz'):
        bandwidth = bandwidth * float(emc_mhz) / limits['mem_clock_mhz']
        result.update(emc_mhz=float(emc_mhz), mem_bw_at_clock_gbs=bandwidth)
    memory = result['intensity'] * bandwidth / 1e3 if result['intensity'] and bandwidth else None
    known = memory is not None
    result.update(ceilings={'compute': compute, 'memory': memory},
                  ridge_intensity=compute * 1e3 / bandwidth if bandwidth else None,
                  attainable=min(compute, memory) if known else None,
                  bound=('memory' if memory < compute else 'compute') if known else None,
                  utilization_of_attainable=result['achieved'] / min(compute, memory) if known else None,
                  bandwidth_utilization=result['achieved_bw_gbs'] / bandwidth if known else None)


# --------------------------------------------------------------------------------------- which device is this
def model_gmacs(model_or_name: Union[str, Any], input_size: Optional[int] = None) -> float:
    """GMACs per image from ``scalablevit.models.complexity`` (needs torch: a host-side helper)."""
    try:
        from ..models.complexity import model_complexity
    except ImportError as e:
        raise ScalableViTError(f'cannot count MACs here ({e}); pass --gmacs') from e
    return float(model_complexity(model_or_name, input_size)['gmacs'])


def resolve_gmacs(explicit: Optional[float], manifest: Optional[Dict[str, Any]], model: Optional[str],
                  input_size: Optional[int]) -> Tuple[Optional[float], str]:
    """GMACs per image and where it came from: the flag, the bundle manifest, else complexity (needs torch)."""
    if explicit:
        return float(explicit), '--gmacs'
    if manifest and manifest.get('gmacs'):
        return float(manifest['gmacs']), 'bundle manifest'
    if model:
        try:
            return model_gmacs(model, input_size), 'scalablevit.models.complexity'
        except (ImportError, ScalableViTError) as e:
            logger.info('no MAC count (%s): roofline omitted (pass --gmacs)', e)
    return None, 'unavailable'


def cuda_device_name() -> Optional[str]:
    """CUDA device 0's name (through ``scalablevit.device.cuda``: cuda-python or pycuda), None without a device."""
    from ..device.cuda import cuda_status, device_info
    ok, _ = cuda_status()
    return device_info(0)['name'] if ok else None


def detect_local_device(explicit: Optional[str] = None, jetson: Optional[Dict[str, Any]] = None) -> Optional[str]:
    """``explicit`` (validated), else this machine's table key: Jetson board facts or the CUDA device name."""
    if explicit:
        device_peak(explicit, 'fp16')  # raises with the closest name on a typo
        return explicit
    if jetson is None:
        from ..device.jetson import jetson_info
        jetson = jetson_info()
    if jetson.get('is_jetson'):
        return detect_device(board_model=jetson.get('board_model'), mem_total_gb=jetson.get('mem_total_gb'),
                             power_mode=(jetson.get('nvpmodel') or {}).get('mode_name'))
    return detect_device(gpu_name=cuda_device_name())


BlockValue = Optional[Callable[[Dict[str, Any]], Optional[float]]]


def add_roofline(entries: List[Dict[str, Any]], gmacs: Optional[float], device: Union[None, str, Limits],
                 clock_mhz: BlockValue = None, *, bytes_per_image: BlockValue = None,
                 emc_mhz: BlockValue = None) -> None:
    """Attach ``roofline`` to every block of every result entry (nothing without a MAC count).

    ``clock_mhz``, ``bytes_per_image`` and ``emc_mhz`` read a block (its ``batch``, its ``power``) and
    return that block's GPU clock, DRAM bytes per image and EMC clock, or None.
    """
    if not gmacs:
        return
    for entry in entries:
        for block in entry['sweep']:
            block['roofline'] = roofline(gmacs, block['throughput_ips'], device, entry['precision'],
                                         clock_mhz(block) if clock_mhz else None,
                                         bytes_per_image=bytes_per_image(block) if bytes_per_image else None,
                                         emc_mhz=emc_mhz(block) if emc_mhz else None)
