"""Latency harness over any Runner: warm-up, timed runs, percentiles, throughput, batch sweeps, reports.

Two clocks, reported apart (TensorRT's trtexec does the same with "Latency" vs "GPU Compute Time"):

* end-to-end (``p50``, ``p90`` ...): ``runner.last_inference_time_s``, the backend call with its
  host<->device copies and synchronisation (what an application waits for);
* GPU-only (``gpu_p50`` ...): ``runner.last_gpu_time_s`` when the runner measures it (the TensorRT
  runner's CUDA events around the enqueue); ``None`` for runners without a GPU clock.

Statistics come from ``scalablevit.stats`` (percentiles by linear interpolation, NIST R-7). The
per-batch block fits the report contract ``latency_ms {batch, p50, p90, p99, mean}`` and adds min, max,
std, run count and throughput. Every call is numpy-only; torch, onnxruntime and tensorrt are imported by
``make_runner`` for the backend asked for, so the on-device path needs neither torch nor onnxruntime.
"""
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .bundle import ENGINE_SUFFIXES, Bundle
from .errors import ScalableViTError, unknown_choice
from .fileio import read_json, write_json, write_text
from .runners import INPUT_NAME, Runner
from .costmodel import LIMITS_NOTE
from .stats import latency_stats

logger = logging.getLogger(__name__)

__all__ = ['BenchConfig', 'TimedRuns', 'RunnerSpec', 'time_runs', 'benchmark', 'input_shape_of', 'batch_sweep',
           'bench_entry', 'make_runner', 'file_precision', 'bundle_specs', 'add_speedups', 'render_compare_markdown',
           'render_markdown', 'write_bench_report']

BACKENDS = ('torch', 'onnxruntime', 'tensorrt')
MAX_BATCH_BYTES = 2 << 30  # one benchmark batch of float32 input: 2 GiB (10,700 images at 224 px)
REFERENCE_NAME = 'pytorch-fp32 (reference.npz)'
# An observer sees each batch's timed window and returns fields merged into its block (e.g. power).
Observer = Callable[[int, 'TimedRuns'], Dict[str, Any]]


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


def bench_entry(name: str, backend: str, precision: str, sweep: List[Dict[str, Any]],
                source: Optional[str] = None, **extra: Any) -> Dict[str, Any]:
    """One result row of a report: ``latency_ms`` is the first batch's block, ``sweep`` all of them."""
    return {'name': name, 'backend': backend, 'precision': precision, 'source': source,
            'latency_ms': sweep[0] if sweep else None, 'sweep': sweep, **extra}


# --------------------------------------------------------------------------------------- runners
@dataclass
class RunnerSpec:
    """What to benchmark: a backend, its precision, and the file (ONNX, engine) or model name behind it."""
    backend: str
    precision: str
    path: Optional[Path] = None
    model: Optional[str] = None
    weights: Optional[Path] = None
    name: str = ''

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise unknown_choice('backend', self.backend, BACKENDS)
        if not self.name:
            self.name = f'{self.backend}-{self.precision}'


def file_precision(path: Path, default: str = 'unknown') -> str:
    """The precision of a model file from its content, never its name: an engine's manifest (``<engine>.json``,
    else ``default``) or what an ONNX graph holds (``export.onnx_precision``)."""
    path = Path(path)
    if path.suffix in ENGINE_SUFFIXES:
        from .engine import manifest_path
        sidecar = manifest_path(path)
        return str(read_json(sidecar).get('precision') or default) if sidecar.is_file() else default
    try:
        from .export import load_onnx, onnx_precision
    except ImportError:  # a device without onnx: the precision is not knowable here
        return default
    return onnx_precision(load_onnx(path))


def bundle_specs(bundle: Bundle) -> Tuple[List[RunnerSpec], List[RunnerSpec]]:
    """Runner specs for a bundle's ONNX files (verified, precision from the manifest) and its engines."""
    onnx = [RunnerSpec('onnxruntime', p, f, name=f'onnxruntime-{p}') for p, f in bundle.onnx_files().items()]
    engines = [RunnerSpec('tensorrt', p, f, name=f'tensorrt-{p}-{f.stem}')
               for f in bundle.engines() for p in [file_precision(f, default=bundle.precision)]]
    return onnx, engines


def _torch_model(spec: RunnerSpec, seed: Optional[int]) -> Any:
    import torch
    from .model import create_model
    if seed is not None:
        torch.manual_seed(seed)
    return create_model(spec.model, weights=str(spec.weights) if spec.weights else None)


def make_runner(spec: RunnerSpec, torch_device: str = 'cpu', providers: Sequence[str] = ('CPUExecutionProvider',),
                threads: Optional[int] = None, cuda_graph: bool = False, seed: Optional[int] = None) -> Runner:
    """An inactive Runner for ``spec``; the backend's framework is imported here and nowhere earlier."""
    from .runners import OnnxRuntimeRunner, TorchRunner
    if spec.backend == 'torch':
        if not spec.model:
            raise ScalableViTError('a torch benchmark needs a model name (--model)')
        if threads:
            import torch
            torch.set_num_threads(threads)
        return TorchRunner(lambda: _torch_model(spec, seed), device=torch_device, name=spec.name)
    if spec.path is None or not Path(spec.path).is_file():
        raise ScalableViTError(f'{spec.path}: file not found')
    if spec.backend == 'onnxruntime':
        return OnnxRuntimeRunner(str(spec.path), providers=providers, threads=threads, name=spec.name)
    from .trt_runner import TrtRunner  # imported only when an engine is benchmarked
    return TrtRunner(Path(spec.path), cuda_graph=cuda_graph, name=spec.name)


def add_speedups(rows: List[Dict[str, Any]]) -> str:
    """Speed-up of every row over the baseline (torch FP32, else the first FP32 row); returns its name."""
    base = next((r for r in rows if r['backend'] == 'torch'), None) or \
        next((r for r in rows if r['precision'] == 'fp32'), rows[0])
    for row in rows:
        row['speedup'] = base['latency_ms']['p50'] / row['latency_ms']['p50']
    return base['name']


def _pct(value: Optional[float], scale: float = 1.0) -> str:
    return '-' if value is None else f'{value * scale:.2f}'


def render_compare_markdown(report: Dict[str, Any]) -> str:
    labelled = report['labelled']
    head = ['backend', 'precision', 'file'] + (['top-1 (%)'] if labelled else []) + \
        ['agreement vs FP32 (%)', 'worst cosine', f"p50 ms (batch {report['batch']})", 'img/s',
         f"speed-up vs {report['baseline']}", 'MACs INT8/FP16/FP32 (%)', 'TensorRT estimate ms']
    lines = [f"# {report['model']}: backends and precisions", '', '| ' + ' | '.join(head) + ' |',
             '|---|---|---|' + '---:|' * (len(head) - 3)]
    for r in report['rows']:
        acc = r['accuracy'] or {}
        cells = [r['backend'], r['precision'], r['file'] or '-'] + \
            ([_pct(acc.get('top1_candidate'))] if labelled else []) + \
            [_pct(acc.get('top1_agreement'), 100), '-' if not acc else f"{acc['cosine_min']:.6f}",
             f"{r['latency_ms']['p50']:.3f}", f"{r['latency_ms']['throughput_ips']:.1f}", f"{r['speedup']:.2f}x"]
        plan = r.get('precision_plan')
        cells += ['/'.join(f"{100 * plan['mac_share'][d]:.0f}" for d in ('int8', 'fp16', 'fp32')),
                  f"{plan['estimate']['latency_ms']:.3f}"] if plan else ['-', '-']
        lines.append('| ' + ' | '.join(cells) + ' |')
    estimates = [r['precision_plan']['estimate'] for r in report['rows'] if r.get('precision_plan')]
    if estimates:
        lines += ['', f"TensorRT estimate: {estimates[0]['device_name']}, batch {estimates[0]['batch']}, from the "
                      f"ONNX alone ({LIMITS_NOTE})"]
    if report.get('untrained'):
        lines += ['', '> Untrained (random) weights: agreement shows the deployed graphs compute the PyTorch '
                      'function; it says nothing about task accuracy.']
    lines += ['', f"{report['samples']} reference images; accuracy against {REFERENCE_NAME}. Latency: end-to-end "
              f"backend call, {report['config']['iters']} timed runs after {report['config']['warmup']} warm-up."]
    lines += [f'- {n}' for n in report['notes']]
    return '\n'.join(lines) + '\n'


# --------------------------------------------------------------------------------------- reports
def _fmt(value: Any, spec: str = '.2f') -> str:
    if value is None:
        return '-'
    if isinstance(value, float) and not math.isfinite(value):
        return 'inf' if value > 0 else '-'
    return format(value, spec) if isinstance(value, (int, float)) else str(value)


def _columns(entries: Sequence[Dict[str, Any]]) -> List[Tuple[str, Callable[[Dict[str, Any]], str]]]:
    """Table columns: the latency ones always, GPU/power/roofline ones when any block has them."""
    blocks = [b for e in entries for b in e['sweep']]
    cols: List[Tuple[str, Callable[[Dict[str, Any]], str]]] = [
        ('batch', lambda b: str(b['batch'])), ('p50 ms', lambda b: _fmt(b['p50'], '.3f')),
        ('p90 ms', lambda b: _fmt(b['p90'], '.3f')), ('p99 ms', lambda b: _fmt(b['p99'], '.3f')),
        ('mean ms', lambda b: _fmt(b['mean'], '.3f')), ('img/s', lambda b: _fmt(b['throughput_ips'], '.1f'))]
    if any(b.get('repeats', 1) > 1 for b in blocks):
        cols.insert(2, ('p50 ms, median (min-max) of repeats',
                        lambda b: f"{b['p50_median']:.3f} ({b['p50_min']:.3f}-{b['p50_max']:.3f}), n={b['repeats']}"))
    if any(b.get('gpu_p50') is not None for b in blocks):
        cols += [('GPU p50 ms', lambda b: _fmt(b.get('gpu_p50'), '.3f'))]
    if any(b.get('power') for b in blocks):
        cols += [('GPU W', lambda b: _fmt((b.get('power') or {}).get('gpu_power_w'))),
                 ('total W', lambda b: _fmt((b.get('power') or {}).get('total_power_w'))),
                 ('mJ/img', lambda b: _fmt((b.get('power') or {}).get('energy_mj_per_img')))]
    if any(b.get('roofline') for b in blocks):
        cols += [('achieved T(FL)OPS', lambda b: _fmt((b.get('roofline') or {}).get('achieved'), '.4g')),
                 ('% of peak', lambda b: _fmt(100 * b['roofline']['utilization'], '.1f')
                  if (b.get('roofline') or {}).get('utilization') is not None else '-')]
    if any((b.get('roofline') or {}).get('bound') for b in blocks):
        cols += [('bound', lambda b: (b.get('roofline') or {}).get('bound') or '-')]
    if any((b.get('roofline') or {}).get('warnings') for b in blocks):
        cols += [('check', lambda b: 'ABOVE PEAK' if (b.get('roofline') or {}).get('warnings') else '')]
    return cols


def render_markdown(report: Dict[str, Any], title: str = 'Latency') -> str:
    """A readable table (one row per runner and batch) plus the settings that produced it."""
    entries = report['results']
    cols = _columns(entries)
    lines = [f"# {title}: {report.get('model') or 'model'}", '',
             '| runner | precision | ' + ' | '.join(c for c, _ in cols) + ' |',
             '|---|---|' + '---:|' * len(cols)]
    for e in entries:
        for b in e['sweep']:
            lines.append(f"| {e['name']} | {e['precision']} | " + ' | '.join(f(b) for _, f in cols) + ' |')
    cfg = report.get('config', {})
    lines += ['', f"Input {report.get('input_shape')}; warm-up {cfg.get('warmup')} runs / {cfg.get('warmup_s')} s, "
              f"timed {cfg.get('iters')} runs / {cfg.get('min_s')} s minimum per batch, {cfg.get('repeats', 1)} "
              'repeat(s). Latency = end-to-end backend call (host<->device copies included); GPU p50 = GPU-only time '
              'where the runner measures it. Roofline: achieved MAC rate against the device peak (for CPU runs an '
              'estimate from the SIMD width, cores and clock); ABOVE PEAK marks a figure the device cannot reach.']
    lines += [f'- {note}' for note in report.get('notes', [])]
    return '\n'.join(lines) + '\n'


def write_bench_report(out_dir: Path, report: Dict[str, Any], stem: str = 'latency', plots: bool = True,
                       title: str = 'Latency') -> Dict[str, Optional[Path]]:
    """Write ``<stem>.json``, ``<stem>.md`` and the latency-vs-batch PNG (skipped with a note without matplotlib)."""
    out_dir = Path(out_dir)
    paths: Dict[str, Optional[Path]] = {'json': out_dir / f'{stem}.json', 'md': out_dir / f'{stem}.md', 'png': None}
    if plots:
        from .plots import plot_latency_vs_batch
        paths['png'] = plot_latency_vs_batch(report['results'], out_dir / f'{stem}_vs_batch.png',
                                             title=f"{report.get('model') or ''} latency vs batch".strip())
    write_json(paths['json'], report)
    write_text(paths['md'], render_markdown(report, title))
    logger.info('report written: %s', ', '.join(str(p) for p in paths.values() if p))
    return paths


def config_dict(config: BenchConfig) -> Dict[str, Any]:
    return asdict(config)
