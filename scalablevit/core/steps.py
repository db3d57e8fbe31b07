"""The one timed-step logger: every pipeline stage logs its start, and its finish with seconds and artifact sizes.

    with timed_step('export', [bundle / 'model.fp32.onnx']) as step:
        ...
    step['seconds']  # the step's wall time, for the manifest and the report

One line each (``export: started`` / ``export: done in 11.2 s, peak RSS 2.1 GB, saved model.fp32.onnx (122.4 MB)``),
so a pipeline log shows every stage exactly once. A step that fails logs nothing more: its error is what the user sees.

Steps nest: a ``timed_step`` opened while another runs (in the same thread or task) is a part of it, logged as
``quantize > calibration: done in ...`` and recorded under the outer step's ``parts``
(``{name: {'seconds', 'start_rss_mb', 'peak_rss_mb'}}``, in the order they ran; the RSS at its start
tells what the part added from what it inherited), so a stage record says where its time and memory
went (the FP16 range pass, modelopt's calibration, AutoCast, the save) without a second mechanism.

The peak resident memory of each step comes from sampling the process's RSS (``/proc/self/statm``, every 20 ms,
native allocations of onnxruntime and torch included) in a small thread while the step runs. The kernel's
high-water mark is not reset for it: that would also change what ``/usr/bin/time`` and ``getrusage`` report for the
whole run. Off Linux the step records None.
"""
import contextlib
import contextvars
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

from .fileio import human_size

logger = logging.getLogger(__name__)

__all__ = ['timed_step', 'rss_mb', 'release_memory']

# The innermost open step and its RSS sampler (a part's peak is folded into its outer step's, so a stage's peak is
# never below one of its parts' even where the two samplers saw different moments).
_OPEN: 'contextvars.ContextVar[Optional[Tuple[Dict[str, Any], _RssSampler]]]' = contextvars.ContextVar(
    'scalablevit_step', default=None)


@contextlib.contextmanager
def timed_step(name: str, outputs: Sequence[Path] = (), log: Optional[logging.Logger] = None,
               detail: str = '') -> Iterator[Dict[str, Any]]:
    """Time the block and log it; ``outputs`` are listed with their sizes when the block succeeds.

    The yielded dict gets ``seconds``, ``start_rss_mb`` and ``peak_rss_mb``, and ``parts`` when steps ran inside
    it; the block may set ``detail`` (a short summary appended to the done line).
    """
    log = log or logger
    outer, outer_sampler = _OPEN.get() or (None, None)
    label = f"{outer['label']} > {name}" if outer else name
    step: Dict[str, Any] = {'name': name, 'label': label, 'detail': detail}
    log.info('%s: started', label)
    sampler = _RssSampler()
    step['start_rss_mb'] = None if sampler.peak is None else round(sampler.peak, 1)
    token = _OPEN.set((step, sampler))
    start = time.perf_counter()
    try:
        yield step
    finally:
        step['peak_rss_mb'] = sampler.stop()
        _OPEN.reset(token)
    step['seconds'] = time.perf_counter() - start
    if outer is not None:
        outer_sampler.fold(step['peak_rss_mb'])
        outer.setdefault('parts', {})[name] = {'seconds': round(step['seconds'], 2), 'start_rss_mb':
                                               step['start_rss_mb'], 'peak_rss_mb': step['peak_rss_mb']}
    saved = ', '.join(f'{Path(p).name} ({human_size(Path(p).stat().st_size)})' for p in outputs if Path(p).is_file())
    memory = [f"peak RSS {human_size(step['peak_rss_mb'] * 2 ** 20)}"] if step['peak_rss_mb'] else []
    parts = [f'done in {step["seconds"]:.1f} s'] + memory + ([f'saved {saved}'] if saved else []) + \
        ([step['detail']] if step['detail'] else [])
    log.info('%s: %s', label, ', '.join(parts))


def release_memory() -> None:
    """Collect garbage and hand the heap's free pages back to the OS (glibc ``malloc_trim``; elsewhere only the
    collection), so the next step's peak does not stack on memory the last one freed but the allocator kept:
    onnxruntime and protobuf free their buffers into malloc's heap, which otherwise shrinks only from its top."""
    import ctypes
    import ctypes.util
    import gc
    gc.collect()
    libc = ctypes.util.find_library('c')
    trim = getattr(ctypes.CDLL(libc), 'malloc_trim', None) if libc else None
    if trim is not None:
        trim(0)


_PAGE_MB = os.sysconf('SC_PAGE_SIZE') / 2 ** 20 if hasattr(os, 'sysconf') else None


def rss_mb() -> Optional[float]:
    """The process's resident memory now, in MiB (None off Linux)."""
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * _PAGE_MB
    except (OSError, IndexError, ValueError, TypeError):
        return None


class _RssSampler:
    """The largest RSS seen every ``interval_s`` from construction to ``stop()``, in a daemon thread."""

    def __init__(self, interval_s: float = 0.02):
        self.peak = rss_mb()
        self._folded = 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval_s,), daemon=True)
        if self.peak is not None:
            self._thread.start()

    def _run(self, interval_s: float) -> None:
        while not self._done.wait(interval_s):
            self.peak = max(self.peak, rss_mb() or 0.0)

    def fold(self, peak: Optional[float]) -> None:
        """Count a peak another sampler saw within this one's time (a part's)."""
        if peak is not None:  # kept apart from ``peak``, which the sampling thread writes
            self._folded = max(self._folded, peak)

    def stop(self) -> Optional[float]:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()
        now = rss_mb()
        return None if self.peak is None else round(max(self.peak, now or 0.0, self._folded), 1)
