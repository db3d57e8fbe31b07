"""The one timed-step logger: every pipeline stage logs its start, and its finish with seconds and artifact sizes.

    with timed_step('export', [bundle / 'model.fp32.onnx']) as step:
        ...
    step['seconds']  # the step's wall time, for the manifest and the report

One line each (``export: started`` / ``export: done in 11.2 s, peak RSS 2.1 GB, saved model.fp32.onnx (122.4 MB)``),
so a pipeline log shows every stage exactly once. A step that fails logs nothing more: its error is what the user sees.

The peak resident memory of each step is the kernel's own high-water mark (``VmHWM``), reset when the step starts
(``/proc/self/clear_refs`` = 5, Linux >= 4.0): the step's true peak, native allocations (onnxruntime, torch)
included, at no cost. Where that is unavailable (not Linux) the step records None.
"""
import contextlib
import logging
import time
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Sequence

from .fileio import human_size

logger = logging.getLogger(__name__)

__all__ = ['timed_step']


@contextlib.contextmanager
def timed_step(name: str, outputs: Sequence[Path] = (), log: Optional[logging.Logger] = None,
               detail: str = '') -> Iterator[Dict[str, Any]]:
    """Time the block and log it; ``outputs`` are listed with their sizes when the block succeeds.

    The yielded dict gets ``seconds``; the block may set ``detail`` (a short summary appended to the done line).
    """
    log = log or logger
    step: Dict[str, Any] = {'name': name, 'detail': detail}
    log.info('%s: started', name)
    _reset_peak_rss()
    start = time.perf_counter()
    yield step
    step['seconds'] = time.perf_counter() - start
    step['peak_rss_mb'] = peak_rss_mb()
    saved = ', '.join(f'{Path(p).name} ({human_size(Path(p).stat().st_size)})' for p in outputs if Path(p).is_file())
    memory = [f"peak RSS {human_size(step['peak_rss_mb'] * 2 ** 20)}"] if step['peak_rss_mb'] else []
    parts = [f'done in {step["seconds"]:.1f} s'] + memory + ([f'saved {saved}'] if saved else []) + \
        ([step['detail']] if step['detail'] else [])
    log.info('%s: %s', name, ', '.join(parts))


def _reset_peak_rss() -> None:
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
    except OSError:  # not Linux, or a kernel before 4.0: peak_rss_mb then reports the process's lifetime peak
        pass


def peak_rss_mb() -> Optional[float]:
    """The process's resident high-water mark in MiB since the last reset (``VmHWM``); None off Linux."""
    try:
        with open('/proc/self/status') as f:
            line = next(line for line in f if line.startswith('VmHWM:'))
    except (OSError, StopIteration):
        return None
    return round(int(line.split()[1]) / 1024, 1)
