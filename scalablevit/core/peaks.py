"""The device peak table (``device_peaks.json``: NVIDIA datasheets): dense math peaks per precision and DRAM
bandwidth of every device a target or a benchmark names. Read by targets, the cost estimate and the roofline.
"""
import functools
import json
import logging
from pathlib import Path
from typing import Any, Dict

from .errors import ScalableViTError, unknown_choice

logger = logging.getLogger(__name__)

__all__ = ['PEAKS_FILE', 'load_peaks', 'device_peak', 'device_limits']

PEAKS_FILE = Path(__file__).with_name('device_peaks.json')
# precision -> (table field, device_limits field, unit, what the peak is)
PEAK_FIELDS = {
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
    """Both ceilings of a table device: dense INT8 TOPS, FP16/FP32 TFLOPS, DRAM GB/s, and where they come from.

    ``gpu_clock_mhz`` / ``mem_clock_mhz`` are the clocks the figures assume (None: not published).
    """
    entry = _entry(device)
    return {'device': device, 'name': entry['name'], 'kind': entry['kind'],
            'int8_tops': float(entry['int8_dense']), 'fp16_tflops': float(entry['fp16_dense']),
            'fp32_tflops': float(entry['fp32']), 'mem_bw_gbs': float(entry['mem_bw_gbs']),
            'gpu_clock_mhz': entry.get('gpu_clock_mhz'), 'mem_clock_mhz': entry.get('mem_clock_mhz'),
            'source': entry['source'], 'mem_bw_source': entry['mem_bw_source'], 'estimate': False}


def device_peak(device: str, precision: str) -> Dict[str, Any]:
    """Peak entry for ``device`` (a table key) at ``precision``; unknown names get the closest suggestion."""
    entry = _entry(device)
    if precision not in PEAK_FIELDS:
        raise unknown_choice('precision', precision, PEAK_FIELDS)
    field, _, unit, kind = PEAK_FIELDS[precision]
    sparse = entry.get(field.replace('_dense', '_sparse')) if field.endswith('_dense') else None
    return {'device': device, 'device_name': entry['name'], 'peak': float(entry[field]), 'peak_sparse': sparse,
            'unit': unit, 'peak_kind': kind, 'peak_clock_mhz': entry.get('gpu_clock_mhz'), 'source': entry['source']}
