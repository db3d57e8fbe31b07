"""Achieved math throughput against the device's peak: how much of the GPU a benchmark actually used.

achieved (T-ops/s) = model MACs per image x 2 x throughput (images/s) / 1e12, set against the dense peak
for the engine's precision from ``device_peaks.json`` (NVIDIA datasheets; sparse figures are kept for
reference but a dense network cannot reach them). A ViT at batch 1 is far from compute bound, so a
few percent is normal; the figure says how much headroom batching or fusion could still buy.

numpy-free and torch-free: the MAC count is a number the caller passes (``--gmacs``, the bundle
manifest's ``gmacs``), or ``model_gmacs`` asks ``scalablevit.complexity`` (torch) on the host.
"""
import json
import logging
import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from .errors import ScalableViTError, unknown_choice

logger = logging.getLogger(__name__)

__all__ = ['PEAKS_FILE', 'load_peaks', 'device_peak', 'achieved_tera_ops', 'roofline', 'detect_device',
           'detect_local_device', 'model_gmacs', 'resolve_gmacs', 'add_roofline']

PEAKS_FILE = Path(__file__).with_name('device_peaks.json')
# precision -> (peak field, unit, what the peak is)
PEAK_FIELDS = {
    'int8': ('int8_dense', 'TOPS', 'dense INT8 tensor-core peak'),
    'fp16': ('fp16_dense', 'TFLOPS', 'dense FP16 tensor-core peak'),
    'fp32': ('fp32', 'TFLOPS', 'FP32 CUDA-core peak'),
}


def load_peaks(path: Path = PEAKS_FILE) -> Dict[str, Dict[str, Any]]:
    """The device table: key -> {name, int8_dense, fp16_dense, fp32, *_sparse, gpu_clock_mhz?, source}."""
    try:
        return json.loads(Path(path).read_text())['devices']
    except (OSError, ValueError, KeyError) as e:
        raise ScalableViTError(f'{path}: unreadable device peak table ({e})') from e


def device_peak(device: str, precision: str) -> Dict[str, Any]:
    """Peak entry for ``device`` (a table key) at ``precision``; unknown names get the closest suggestion."""
    peaks = load_peaks()
    if device not in peaks:
        raise unknown_choice('device', device, peaks)
    if precision not in PEAK_FIELDS:
        raise unknown_choice('precision', precision, PEAK_FIELDS)
    field, unit, kind = PEAK_FIELDS[precision]
    entry = peaks[device]
    sparse = entry.get(field.replace('_dense', '_sparse')) if field.endswith('_dense') else None
    return {'device': device, 'device_name': entry['name'], 'peak': float(entry[field]), 'peak_sparse': sparse,
            'unit': unit, 'peak_kind': kind, 'peak_clock_mhz': entry.get('gpu_clock_mhz'), 'source': entry['source']}


def achieved_tera_ops(gmacs: float, throughput_ips: float) -> float:
    """Tera-ops/s a model of ``gmacs`` GMACs per image reaches at ``throughput_ips`` images/s (1 MAC = 2 ops)."""
    if gmacs <= 0 or throughput_ips < 0:
        raise ScalableViTError(f'roofline needs positive GMACs and throughput (got {gmacs}, {throughput_ips})')
    return gmacs * 2.0 * throughput_ips / 1e3


def roofline(gmacs: float, throughput_ips: float, device: Optional[str], precision: str,
             gpu_clock_mhz: Optional[float] = None) -> Dict[str, Any]:
    """Achieved T(FL)OPS, and with a known ``device`` its peak and the utilisation (a fraction).

    ``gpu_clock_mhz`` (the clock the GPU actually ran at, e.g. from ``jetson_clocks --show``) also gives
    ``peak_at_clock``: the datasheet peak scaled to that clock, since lower power modes cap the GPU clock.
    """
    result: Dict[str, Any] = {'gmacs': float(gmacs), 'precision': precision,
                              'achieved': achieved_tera_ops(gmacs, throughput_ips),
                              'unit': PEAK_FIELDS.get(precision, ('', 'Tops/s', ''))[1]}
    if device is None or precision not in PEAK_FIELDS:
        return {**result, 'device': device, 'peak': None, 'utilization': None}
    peak = device_peak(device, precision)
    result.update(peak, utilization=result['achieved'] / peak['peak'])
    if gpu_clock_mhz and peak['peak_clock_mhz']:
        at_clock = peak['peak'] * float(gpu_clock_mhz) / peak['peak_clock_mhz']
        result.update(gpu_clock_mhz=float(gpu_clock_mhz), peak_at_clock=at_clock,
                      utilization_at_clock=result['achieved'] / at_clock)
    return result


def _jetson_key(board_model: str, mem_total_gb: Optional[float], super_mode: bool) -> Optional[str]:
    model = board_model.lower()
    if 'agx orin' in model:
        if mem_total_gb is None:
            return None
        return 'jetson-agx-orin-64gb' if mem_total_gb > 40 else 'jetson-agx-orin-32gb'
    if 'orin nano' in model:
        if mem_total_gb is None:
            return None
        size = '8gb' if mem_total_gb > 5 else '4gb'
        return f'jetson-orin-nano-{size}' + ('-super' if super_mode else '')
    return None


def detect_device(gpu_name: Optional[str] = None, board_model: Optional[str] = None,
                  mem_total_gb: Optional[float] = None, power_mode: Optional[str] = None) -> Optional[str]:
    """Table key for this machine, or None when unsure (then pass --device-peak explicitly).

    Desktop GPUs match their CUDA device name; Jetson modules (whose GPU is just "Orin") match the
    device-tree board model plus total memory, and "Super" figures need a *SUPER nvpmodel mode.
    """
    if board_model:
        key = _jetson_key(board_model, mem_total_gb, bool(power_mode and 'SUPER' in power_mode.upper()))
        if key:
            return key
    if gpu_name:
        for key, entry in load_peaks().items():
            if any(re.search(re.escape(m), gpu_name, re.IGNORECASE) for m in entry.get('match', ())):
                return key
    return None


def model_gmacs(model_or_name: Union[str, Any], input_size: Optional[int] = None) -> float:
    """GMACs per image from ``scalablevit.complexity`` (needs torch: a host-side helper)."""
    try:
        from .complexity import model_complexity
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
            return model_gmacs(model, input_size), 'scalablevit.complexity'
        except (ImportError, ScalableViTError) as e:
            logger.info('no MAC count (%s): roofline omitted (pass --gmacs)', e)
    return None, 'unavailable'


def cuda_device_name() -> Optional[str]:
    """CUDA device 0's name (through ``scalablevit.cuda``: cuda-python or pycuda), None without a device."""
    from .cuda import cuda_status, device_info
    ok, _ = cuda_status()
    return device_info(0)['name'] if ok else None


def detect_local_device(explicit: Optional[str] = None, jetson: Optional[Dict[str, Any]] = None) -> Optional[str]:
    """``explicit`` (validated), else this machine's table key: Jetson board facts or the CUDA device name."""
    if explicit:
        device_peak(explicit, 'fp16')  # raises with the closest name on a typo
        return explicit
    if jetson is None:
        from .jetson import jetson_info
        jetson = jetson_info()
    if jetson.get('is_jetson'):
        return detect_device(board_model=jetson.get('board_model'), mem_total_gb=jetson.get('mem_total_gb'),
                             power_mode=(jetson.get('nvpmodel') or {}).get('mode_name'))
    return detect_device(gpu_name=cuda_device_name())


def add_roofline(entries: List[Dict[str, Any]], gmacs: Optional[float], device: Optional[str],
                 clock_mhz: Optional[Callable[[Dict[str, Any]], Optional[float]]] = None) -> None:
    """Attach ``roofline`` to every block of every result entry (nothing without a MAC count)."""
    if not gmacs:
        return
    for entry in entries:
        for block in entry['sweep']:
            clock = clock_mhz(block) if clock_mhz else None
            block['roofline'] = roofline(gmacs, block['throughput_ips'], device, entry['precision'], clock)
