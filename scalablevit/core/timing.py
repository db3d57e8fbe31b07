"""Latency harness over any Runner: warm-up, timed runs, percentiles, throughput, batch sweeps, reports.

Two clocks, reported apart (TensorRT's trtexec does the same with "Latency" vs "GPU Compute Time"):

* end-to-end (``p50``, ``p90`` ...): ``runner.last_inference_time_s``, the backend call with its
  host<->device copies and synchronisation (what an application waits for);
* GPU-only (``gpu_p50`` ...): ``runner.last_gpu_time_s`` when the runner measures it (the TensorRT
  runner's CUDA events around the enqueue); ``None`` for runners without a GPU clock.

Statistics come from ``scalablevit.core.stats`` (percentiles by linear interpolation, NIST R-7). The
per-batch block fits the report contract ``latency_ms {batch, p50, p90, p99, mean}`` and adds min, max,
std, run count and throughput. Every call is numpy-only; torch, onnxruntime and tensorrt are imported by
``make_runner`` for the backend asked for, so the on-device path needs neither torch nor onnxruntime.
"""
import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import ScalableViTError
from .runners import INPUT_NAME, Runner
from .stats import latency_stats

logger = logging.getLogger(__name__)

# An observer sees each batch's timed window and returns fields merged into its block (e.g. power).
Observer = Callable[[int, 'TimedRuns'], Dict[str, Any]]

__all__ = ['BenchConfig', 'TimedRuns', 'time_runs', 'benchmark', 'input_shape_of', 'batch_sweep']
MAX_BATCH_BYTES = 2 << 30  # one benchmark batch of float32 input: 2 GiB (10,700 images at 224 px)


@dataclass
class BenchConfig:
    """How long to warm up and measure: each phase runs until BOTH its count and its seconds are reached.

    ``repeats`` timed windows (each after its own warm-up) per batch size: the block reports the median of their
    p50s with min and max, the spread a published figure needs.
    """
    warmup: int = 10
    warmup_s: float = 0.0
    iters: int = 50
    min_s: float = 0.0
    repeats: int = 1
    seed: int = 0
    log_every_s: float = 10.0

    @staticmethod
    def add_arguments(parser: Any, warmup: int = 10, warmup_s: float = 0.0, iters: int = 50,
                      min_s: float = 0.0) -> None:
        """The timing flags every benchmark CLI shares, with that CLI's defaults; ``from_args`` reads them."""
        parser.add_argument('--warmup', type=int, default=warmup, help=f'warm-up runs per batch (default: {warmup})')
        parser.add_argument('--warmup-s', type=float, default=warmup_s,
                            help=f'and at least this many warm-up seconds (default: {warmup_s:g})')
        parser.add_argument('--iters', type=int, default=iters, help=f'timed runs per batch (default: {iters})')
        parser.add_argument('--min-seconds', type=float, default=min_s,
                            help=f'and at least this many timed seconds (default: {min_s:g})')
        parser.add_argument('--repeat', type=int, default=1,
                            help='timed windows per batch size: the median p50 with min-max (default: 1)')

    @classmethod
    def from_args(cls, args: Any) -> 'BenchConfig':
        """From the bench CLIs' common flags (--warmup, --warmup-s, --iters, --min-seconds, --repeat), validated."""
        return cls(warmup=args.warmup, warmup_s=args.warmup_s, iters=args.iters, min_s=args.min_seconds,
                   repeats=args.repeat).validate()

    def validate(self) -> 'BenchConfig':
        if self.iters < 1 or self.repeats < 1:
            raise ScalableViTError(f'--iters and --repeat must be at least 1 (got {self.iters}, {self.repeats})')
        if self.warmup < 0 or self.warmup_s < 0 or self.min_s < 0:
            raise ScalableViTError('--warmup, --warmup-s and --min-seconds must not be negative')
        return self


@dataclass
class TimedRuns:
    """Raw timings of one batch size: per-run seconds and the monotonic window they were taken in."""
    batch: int
    e2e_s: List[float]
    gpu_s: Optional[List[float]]
    start: float
    end: float
    warmup_runs: int
    timed_s: Optional[float] = None  # time inside the timed loops (repeats: their sum, not the warm-ups between)

    @property
    def images_per_s(self) -> float:
        """Images over the wall time of the timed loops (gaps between runs included): energy's denominator."""
        return len(self.e2e_s) * self.batch / max(self.timed_s or self.end - self.start, 1e-12)


# --------------------------------------------------------------------------------------- statistics
_GPU_KEYS = ('p50', 'p90', 'p99', 'mean', 'min', 'max', 'std', 'throughput_ips')


def _gpu_block(timed: TimedRuns) -> Dict[str, Any]:
    if not timed.gpu_s:
        return {'gpu_' + k: None for k in _GPU_KEYS}
    stats = latency_stats([t * 1000 for t in timed.gpu_s], timed.batch, prefix='gpu_')
    stats.pop('gpu_runs')
    return stats


# --------------------------------------------------------------------------------------- timing loop
def _input(shape: Sequence[int], batch: int, seed: int) -> np.ndarray:
    """One seeded N(0, 1) float32 batch: content does not change a ViT's latency, shape does."""
    return np.random.default_rng(seed).standard_normal((batch, *shape), dtype=np.float32)


def _loop(runner: Runner, feed: Dict[str, np.ndarray], count: int, seconds: float, what: str,
          log_every_s: float) -> Tuple[List[float], List[float], float, float]:
    """Run until ``count`` runs and ``seconds`` have passed; per-run end-to-end and GPU seconds."""
    e2e: List[float] = []
    gpu: List[float] = []
    start = last_log = time.monotonic()
    while len(e2e) < count or time.monotonic() - start < seconds:
        runner.infer(feed)
        e2e.append(runner.last_inference_time_s)
        gpu_time = getattr(runner, 'last_gpu_time_s', None)
        if gpu_time is not None:
            gpu.append(gpu_time)
        now = time.monotonic()
        if log_every_s and now - last_log >= log_every_s:
            last_log = now
            logger.info('%s: %d runs in %.0f s, running p50 %.2f ms', what, len(e2e), now - start,
                        float(np.median(e2e)) * 1000)
    return e2e, gpu, start, time.monotonic()


def time_runs(runner: Runner, input_shape: Sequence[int], batch: int, config: BenchConfig) -> TimedRuns:
    """Warm up, then time ``runner`` on one seeded batch of ``(batch, *input_shape)`` float32."""
    feed = {INPUT_NAME: _input(input_shape, batch, config.seed)}
    what = f'{runner.name} batch {batch}'
    warm, _, _, _ = _loop(runner, feed, config.warmup, config.warmup_s, what + ' warm-up', config.log_every_s)
    e2e, gpu, start, end = _loop(runner, feed, config.iters, config.min_s, what, config.log_every_s)
    if gpu and len(gpu) != len(e2e):
        logger.warning('%s: GPU time missing for %d of %d runs; GPU statistics use the rest',
                       what, len(e2e) - len(gpu), len(e2e))
    return TimedRuns(batch, e2e, gpu or None, start, end, len(warm))


def _merge(repeats: List[TimedRuns]) -> TimedRuns:
    """The repeats as one window (for the pooled statistics and the power observer)."""
    gpu = [t for r in repeats for t in (r.gpu_s or [])]
    return TimedRuns(repeats[0].batch, [t for r in repeats for t in r.e2e_s], gpu or None, repeats[0].start,
                     repeats[-1].end, sum(r.warmup_runs for r in repeats), sum(r.end - r.start for r in repeats))


def benchmark(runner: Runner, input_shape: Sequence[int], batch: int, config: BenchConfig,
              observer: Optional[Observer] = None) -> Dict[str, Any]:
    """One latency block: the contract fields, min/max/std/throughput, and ``gpu_*`` (None without a GPU clock).

    With ``config.repeats`` > 1 the statistics pool every run, and ``repeat_p50`` lists each window's p50 with
    ``p50_median``, ``p50_min``, ``p50_max`` across them.
    """
    repeats = [time_runs(runner, input_shape, batch, config) for _ in range(config.repeats)]
    timed = _merge(repeats)
    block = latency_stats([t * 1000 for t in timed.e2e_s], batch)
    block.update(_gpu_block(timed))
    per_window = [float(np.median(r.e2e_s)) * 1000 for r in repeats]
    block.update(repeats=len(repeats), repeat_p50=per_window, p50_median=float(np.median(per_window)),
                 p50_min=min(per_window), p50_max=max(per_window))
    block['warmup_runs'] = timed.warmup_runs
    block['measured_s'] = timed.timed_s
    if observer is not None:
        block.update(observer(batch, timed))
    gpu = f", GPU p50 {block['gpu_p50']:.3f} ms" if block['gpu_p50'] is not None else ''
    logger.info('%s batch %d: p50 %.3f ms, p99 %.3f ms, %.1f img/s (%d runs)%s', runner.name, batch,
                block['p50'], block['p99'], block['throughput_ips'], block['runs'], gpu)
    return block


def input_shape_of(runner: Runner, default: Optional[Sequence[int]] = None) -> Tuple[int, ...]:
    """``default`` (C, H, W) when given, else the active runner's static input dims (an engine or fixed ONNX)."""
    if default:
        return tuple(int(d) for d in default)
    shape = runner.input_metadata()[INPUT_NAME][1][1:]
    if any(d is None for d in shape):
        raise ScalableViTError(f'{runner.name}: the model input size is dynamic {shape}; pass --input-size')
    return tuple(shape)


def batch_sweep(runner: Runner, input_shape: Sequence[int], batches: Sequence[int], config: BenchConfig,
                observer: Optional[Observer] = None) -> List[Dict[str, Any]]:
    """``benchmark`` at every batch size, in the order given (the first one is the report's headline)."""
    config.validate()
    if not batches or any(int(b) < 1 for b in batches):
        raise ScalableViTError(f'batch sizes must be positive integers (got {list(batches)})')
    for b in batches:
        check_batch(int(b), input_shape)
    return [benchmark(runner, input_shape, int(b), config, observer) for b in batches]


def check_batch(batch: int, input_shape: Sequence[Any], flag: str = '--batch') -> None:
    """Refuse a batch whose float32 input alone exceeds MAX_BATCH_BYTES, before anything is allocated."""
    per_image = 4 * math.prod(int(d) for d in input_shape if d is not None)
    if batch * per_image > MAX_BATCH_BYTES:
        raise ScalableViTError(f"{flag} {batch}: {batch:,} images of {'x'.join(str(d) for d in input_shape)} "
                               f"float32 are {batch * per_image / 2**30:.1f} GiB, beyond the "
                               f"{MAX_BATCH_BYTES >> 30} GiB cap per batch (at most {MAX_BATCH_BYTES // per_image:,})")


def config_dict(config: BenchConfig) -> Dict[str, Any]:
    return asdict(config)
