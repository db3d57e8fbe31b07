"""Latency statistics shared by the host validation and the benchmark harness (numpy only).

Percentiles use linear interpolation between order statistics (numpy's default, NIST method R-7).
"""
import math
from typing import Any, Dict, Sequence

import numpy as np

from .errors import ScalableViTError

__all__ = ['PERCENTILES', 'latency_stats']

PERCENTILES = (50, 90, 99)


def latency_stats(times_ms: Sequence[float], batch: int, prefix: str = '') -> Dict[str, Any]:
    """p50/p90/p99/mean/min/max/std (ms), run count and throughput (images/s) of per-run times in ms.

    Without ``prefix`` the block starts with ``batch`` (the report contract's ``latency_ms``); with one
    (e.g. ``gpu_``) only the prefixed statistics are returned, to be merged into such a block.
    """
    values = np.asarray(list(times_ms), dtype=np.float64)
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise ScalableViTError(f'latency statistics need finite timings (got {values.size} values)')
    if batch < 1:
        raise ScalableViTError(f'batch must be at least 1 (got {batch})')
    p50, p90, p99 = (float(v) for v in np.percentile(values, PERCENTILES))
    mean = float(values.mean())
    stats = {'p50': p50, 'p90': p90, 'p99': p99, 'mean': mean, 'min': float(values.min()),
             'max': float(values.max()), 'std': float(values.std()), 'runs': int(values.size),
             'throughput_ips': batch * 1000.0 / mean if mean > 0 else math.inf}
    block = {prefix + k: v for k, v in stats.items()}
    return {'batch': int(batch), **block} if not prefix else block
