"""The benchmark CLIs' harness: which runners a bundle offers, how each is made, and the latency and
comparison reports (markdown, JSON, plots). torch, onnxruntime and tensorrt are imported by ``make_runner`` for the
backend asked for only.
"""
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple


from ..core.bundle import ENGINE_SUFFIXES, Bundle
from ..core.errors import ScalableViTError, unknown_choice
from ..core.fileio import write_json, write_text
from ..core.runners import Runner
from ..host.costmodel import limits_note
from ..host.census import DTYPES

logger = logging.getLogger(__name__)

__all__ = ['RunnerSpec', 'bench_entry', 'make_runner', 'file_precision', 'bundle_specs', 'add_speedups',
           'add_latency_estimate', 'render_compare_markdown', 'render_markdown', 'write_bench_report']

BACKENDS = ('torch', 'onnxruntime', 'tensorrt')
REFERENCE_NAME = 'pytorch-fp32 (reference.npz)'


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
    weights_sha256: Optional[str] = None  # what a bundle recorded: the weights loaded must carry it
    name: str = ''

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise unknown_choice('backend', self.backend, BACKENDS)
        if not self.name:
            self.name = f'{self.backend}-{self.precision}'


def file_precision(path: Path, default: str = 'unknown') -> str:
    """The precision of a model file from its content, never its name: an engine's manifest (``<engine>.json``,
    else ``default``; checked as every reader checks it) or what an ONNX graph holds (``export.onnx_precision``)."""
    path = Path(path)
    if path.suffix in ENGINE_SUFFIXES:
        from ..device.engine import manifest_path, read_engine_manifest
        if not manifest_path(path).is_file():
            return default
        return str(read_engine_manifest(path, complete=False).get('precision') or default)
    try:
        from ..host.export import load_onnx, onnx_precision
    except ImportError:  # a device without onnx: the precision is not knowable here
        return default
    return onnx_precision(load_onnx(path))


def bundle_specs(bundle: Bundle) -> Tuple[List[RunnerSpec], List[RunnerSpec]]:
    """Runner specs for a bundle's ONNX files (verified, each held against what the manifest says of the model,
    precision from the manifest) and its engines."""
    from ..host.export import check_bundle_onnx
    files = bundle.onnx_files()
    for precision, copy in files.items():
        check_bundle_onnx(copy, bundle.manifest, bundle.file(bundle.manifest['onnx'][precision]['file']))
    onnx = [RunnerSpec('onnxruntime', p, f, name=f'onnxruntime-{p}') for p, f in files.items()]
    engines = [RunnerSpec('tensorrt', p, f, name=f'tensorrt-{p}-{f.stem}')
               for f in bundle.engines() for p in [file_precision(f, default=bundle.precision)]]
    return onnx, engines


def _torch_model(spec: RunnerSpec, seed: Optional[int]) -> Any:
    import torch
    from ..models.scalablevit import create_model
    if seed is not None:
        torch.manual_seed(seed)
    return create_model(spec.model, weights=str(spec.weights) if spec.weights else None,
                        weights_sha256=spec.weights_sha256)


def make_runner(spec: RunnerSpec, torch_device: str = 'cpu', providers: Sequence[str] = ('CPUExecutionProvider',),
                threads: Optional[int] = None, cuda_graph: bool = False, seed: Optional[int] = None) -> Runner:
    """An inactive Runner for ``spec``; the backend's framework is imported here and nowhere earlier."""
    from ..host.runners import OnnxRuntimeRunner, TorchRunner
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
    from ..device.trt_runner import TrtRunner  # imported only when an engine is benchmarked
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
         f"speed-up vs {report['baseline']}", 'MACs FP8/INT8/FP16/FP32 (%)', 'TensorRT estimate ms']
    lines = [f"# {report['model']}: backends and precisions", '', '| ' + ' | '.join(head) + ' |',
             '|---|---|---|' + '---:|' * (len(head) - 3)]
    for r in report['rows']:
        acc = r['accuracy'] or {}
        cells = [r['backend'], r['precision'], r['file'] or '-'] + \
            ([_pct(acc.get('top1_candidate'))] if labelled else []) + \
            [_pct(acc.get('top1_agreement'), 100), '-' if not acc else f"{acc['cosine_min']:.6f}",
             f"{r['latency_ms']['p50']:.3f}", f"{r['latency_ms']['throughput_ips']:.1f}", f"{r['speedup']:.2f}x"]
        plan = r.get('precision_plan')
        cells += ['/'.join(f"{100 * plan['mac_share'].get(d, 0):.0f}" for d in DTYPES),
                  f"{plan['estimate']['latency_ms']:.3f}"] if plan else ['-', '-']
        lines.append('| ' + ' | '.join(cells) + ' |')
    estimates = [r['precision_plan']['estimate'] for r in report['rows'] if r.get('precision_plan')]
    if estimates:
        lines += ['', f"TensorRT estimate: {estimates[0]['device_name']}, batch {estimates[0]['batch']}, from the "
                      f"ONNX alone ({limits_note()})"]
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
    if any(b.get('estimate_ms') for b in blocks):
        cols += [('estimate ms', lambda b: _fmt(b.get('estimate_ms'), '.3f')),
                 ('p50 / estimate', lambda b: _fmt(b['p50'] / b['estimate_ms'], '.2f') if b.get('estimate_ms') else '-')]
    return cols


def add_latency_estimate(entries: List[Dict[str, Any]], manifest: Optional[Dict[str, Any]], device: Optional[str],
                         notes: List[str]) -> None:
    """The bundle's latency estimate for ``device`` beside each TensorRT block of the bundle's precision at a batch
    the estimate covers, so a benchmark checks the estimate (and the estimate's error band is in the notes)."""
    recorded = (manifest or {}).get('latency_estimate')
    if not recorded or device not in recorded['ms']:
        return
    for entry in entries:
        if entry['backend'] != 'tensorrt' or entry['precision'] != manifest['precision']:
            continue
        for block in entry['sweep']:
            block['estimate_ms'] = recorded['ms'][device].get(str(block['batch']))
    notes.append(f"estimate ms: the bundle's TensorRT latency estimate for {device} ({recorded['error_band']})")


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
        from ..core.plots import plot_latency_vs_batch
        paths['png'] = plot_latency_vs_batch(report['results'], out_dir / f'{stem}_vs_batch.png',
                                             title=f"{report.get('model') or ''} latency vs batch".strip())
    write_json(paths['json'], report)
    write_text(paths['md'], render_markdown(report, title))
    logger.info('report written: %s', ', '.join(str(p) for p in paths.values() if p))
    return paths
