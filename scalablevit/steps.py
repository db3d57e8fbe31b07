"""The one timed-step logger: every pipeline stage logs its start, and its finish with seconds and artifact sizes.

    with timed_step('export', [bundle / 'model.fp32.onnx']) as step:
        ...
    step['seconds']  # the step's wall time, for the manifest and the report

One line each (``export: started`` / ``export: done in 11.2 s, saved model.fp32.onnx (122.4 MB)``), so a
pipeline log shows every stage exactly once. A step that fails logs nothing more: its error is what the user sees.
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
    start = time.perf_counter()
    yield step
    step['seconds'] = time.perf_counter() - start
    saved = ', '.join(f'{Path(p).name} ({human_size(Path(p).stat().st_size)})' for p in outputs if Path(p).is_file())
    parts = [f'done in {step["seconds"]:.1f} s'] + ([f'saved {saved}'] if saved else []) + \
        ([step['detail']] if step['detail'] else [])
    log.info('%s: %s', name, ', '.join(parts))
