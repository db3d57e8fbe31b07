"""The device peak table (``device_peaks.json``: NVIDIA datasheets): dense math peaks per precision and DRAM
bandwidth of every device a target or a benchmark names. Read by targets, the cost estimate and the roofline.
"""
import functools
import json
import logging
import re
from pathlib import Path
from typing import Any, Dict, Optional

from .errors import ScalableViTError, unknown_choice

logger = logging.getLogger(__name__)

__all__ = ['PEAKS_FILE', 'load_peaks', 'device_peak', 'device_limits', 'detect_device']

PEAKS_FILE = Path(__file__).with_name('device_peaks.json')
# precision -> (table field, device_limits field, unit, what the peak is)
PEAK_FIELDS = {
    'fp8': ('fp8_dense', 'fp8_tflops', 'TFLOPS', 'dense FP8 (E4M3) tensor-core peak'),
    'int8': ('int8_dense', 'int8_tops', 'TOPS', 'dense INT8 tensor-core peak'),
    'fp16': ('fp16_dense', 'fp16_tflops', 'TFLOPS', 'dense FP16 tensor-core peak'),
    'fp32': ('fp32', 'fp32_tflops', 'TFLOPS', 'FP32 CUDA-core peak'),
}
Limits = Dict[str, Any]


@functools.lru_cache(maxsize=None)
def _read_peaks(path: str) -> Dict[str, Dict[str, Any]]:
    try:
        return json.loads(Path(path).read_text())['devices']
    except (OSError, ValueError, KeyError) as e:
        raise ScalableViTError(f'{path}: unreadable device peak table ({e})') from e


def load_peaks(path: Path = PEAKS_FILE) -> Dict[str, Dict[str, Any]]:
    """The device table: key -> {name, int8_dense, fp16_dense, fp32, mem_bw_gbs, *_sparse, source, ...}."""
    return _read_peaks(str(path))


def _entry(device: str) -> Dict[str, Any]:
    peaks = load_peaks()
    if device not in peaks:
        raise unknown_choice('device', device, peaks)
    return peaks[device]


def device_limits(device: str) -> Limits:
    """Both ceilings of a table device: dense INT8 TOPS, FP8/FP16/FP32 TFLOPS, DRAM GB/s, and where they come from.

    ``fp8_tflops`` is None on a GPU without FP8 tensor cores (compute capability < 8.9: ``compute_capability``).

    ``gpu_clock_mhz`` / ``mem_clock_mhz`` are the clocks the figures assume (None: not published); ``sms`` and
    ``l2_mb`` (streaming multiprocessors, L2 cache) feed the cost estimate's occupancy and cache rules.
    """
    entry = _entry(device)
    return {'device': device, 'name': entry['name'], 'kind': entry['kind'],
            'compute_capability': entry['compute_capability'],
            'fp8_tflops': float(entry['fp8_dense']) if 'fp8_dense' in entry else None,
            'int8_tops': float(entry['int8_dense']), 'fp16_tflops': float(entry['fp16_dense']),
            'fp32_tflops': float(entry['fp32']), 'mem_bw_gbs': float(entry['mem_bw_gbs']),
            'gpu_clock_mhz': entry.get('gpu_clock_mhz'), 'mem_clock_mhz': entry.get('mem_clock_mhz'),
            'sms': entry.get('sms'), 'l2_mb': entry.get('l2_mb'), 'host_link_gbs': entry.get('host_link_gbs'),
            'source': entry['source'], 'mem_bw_source': entry['mem_bw_source'], 'estimate': False}


def device_peak(device: str, precision: str) -> Dict[str, Any]:
    """Peak entry for ``device`` (a table key) at ``precision``; unknown names get the closest suggestion."""
    entry = _entry(device)
    if precision not in PEAK_FIELDS:
        raise unknown_choice('precision', precision, PEAK_FIELDS)
    field, _, unit, kind = PEAK_FIELDS[precision]
    if field not in entry:
        from .compat import fp8_problem
        raise ScalableViTError(fp8_problem(entry['compute_capability'], entry['name']) or
                               f"{entry['name']} has no {kind} in {PEAKS_FILE.name}")
    sparse = entry.get(field.replace('_dense', '_sparse')) if field.endswith('_dense') else None
    return {'device': device, 'device_name': entry['name'], 'peak': float(entry[field]), 'peak_sparse': sparse,
            'unit': unit, 'peak_kind': kind, 'peak_clock_mhz': entry.get('gpu_clock_mhz'), 'source': entry['source']}


def _jetson_key(board_model: str, mem_total_gb: Optional[float], super_mode: bool) -> Optional[str]:
    """Table key of a Jetson module from its device-tree model and memory; None when unsure.

    "Super" comes from the nvpmodel mode name (``MAXN_SUPER``) or the board model (JetPack >= 6.2 device trees
    end in "... Developer Kit Super"): the key names the module's ceiling, lower modes scale by clock.
    """
    model = board_model.lower()
    if mem_total_gb is None or 'industrial' in model:  # AGX Orin Industrial has its own clocks: not in the table
        return None
    suffix = '-super' if super_mode or re.search(r'\bsuper\b', model) else ''
    if 'agx orin' in model:
        return 'jetson-agx-orin-64gb' if mem_total_gb > 40 else 'jetson-agx-orin-32gb'
    if 'orin nx' in model:
        return f"jetson-orin-nx-{'16gb' if mem_total_gb > 10 else '8gb'}{suffix}"
    if 'orin nano' in model:
        return f"jetson-orin-nano-{'8gb' if mem_total_gb > 5 else '4gb'}{suffix}"
    return None


def _gpu_name_key(name: str) -> str:
    """CUDA device name compared exactly: 'NVIDIA GeForce RTX 4090' -> 'GEFORCE RTX 4090'."""
    name = ' '.join(name.split()).upper()
    return name[len('NVIDIA '):] if name.startswith('NVIDIA ') else name


def detect_device(gpu_name: Optional[str] = None, board_model: Optional[str] = None,
                  mem_total_gb: Optional[float] = None, power_mode: Optional[str] = None) -> Optional[str]:
    """Table key for this machine, or None when unsure (then pass --device-peak explicitly).

    Desktop GPUs match a listed CUDA device name exactly, so an L40S is never taken for an L4, nor an
    RTX 4090 Laptop GPU / 4090 D for an RTX 4090, nor an H200 NVL for an H200 SXM. Jetson modules (whose GPU
    is just "Orin") match the device-tree board model plus total memory.
    """
    if board_model:
        key = _jetson_key(board_model, mem_total_gb, bool(power_mode and 'SUPER' in power_mode.upper()))
        if key:
            return key
    if gpu_name:
        wanted = _gpu_name_key(gpu_name)
        for key, entry in load_peaks().items():
            if wanted in {_gpu_name_key(m) for m in entry.get('match', ())}:
                return key
    return None
