"""The cost estimate held against published TensorRT latencies: fit on one half, measure the error on the other.

Data (``bench/published``): ``latencies.json`` (each figure with its model, input size, batch, precision, device,
conditions and source), ``split.json`` (which figures fit and which check, committed before any fit, made by
``make_split``), ``graphs/`` (structure-only ONNX of each model, weights stripped: ``make_reference_graphs.py``).

``fit`` searches only the per-device-class parameters (launch overhead, compute fraction) on the fitting half,
minimising the mean squared log ratio estimate / published; ``check`` reports the ratio on the checking half.
The fusion rules, cache rule, occupancy rule and bandwidth fraction are fixed before the data is seen.
"""
import hashlib
import json
import logging
import math
import statistics
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from ..core.errors import ScalableViTError
from ..core.peaks import device_limits

logger = logging.getLogger(__name__)

__all__ = ['DATA_DIR', 'load_figures', 'make_split', 'split_of', 'figure_estimate', 'fit', 'check', 'summary', 'render',
           'run_check']

DATA_DIR = Path(__file__).resolve().parents[2] / 'bench' / 'published'
CLASSES = ('jetson', 'gpu')
# the search grid: launch overhead per kernel (us) and the fraction of the datasheet math peak kernels reach
LAUNCH_US = tuple(round(0.5 * i, 1) for i in range(1, 41))  # 0.5 .. 20 us
COMPUTE_FRACTION = tuple(round(0.05 * i, 2) for i in range(2, 21))  # 0.10 .. 1.00


def device_class(device: str) -> str:
    from ..host.costmodel import device_class as of_limits
    return of_limits(device_limits(device))


def load_figures(data: Path = DATA_DIR) -> List[Dict[str, Any]]:
    """The published figures that have a reference graph and a device in the peak table."""
    try:
        figures = json.loads((data / 'latencies.json').read_text())['figures']
    except (OSError, ValueError, KeyError) as e:
        raise ScalableViTError(f'{data}/latencies.json: unreadable ({e})') from e
    usable = []
    for f in figures:
        if f.get('excluded'):
            continue
        graph = data / 'graphs' / f"{f['model']}-{f['input_size']}.onnx"
        if not graph.is_file():
            raise ScalableViTError(f"{f['id']}: no reference graph {graph.name} in {data}/graphs")
        device_limits(f['device'])  # an unknown device fails with the closest name
        usable.append({**f, 'graph': graph})
    return usable


def _cluster(figure: Dict[str, Any]) -> str:
    """Figures of one model family on one device (e.g. three MLPerf rounds) land on the same side of the split."""
    return f"{figure.get('family') or figure['model']}@{figure['device']}"


def make_split(figures: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Fitting and checking halves: clusters ordered by the SHA-256 of their name, alternating, per device class."""
    split: Dict[str, List[str]] = {'fit': [], 'check': []}
    for cls in CLASSES:
        clusters = sorted({_cluster(f) for f in figures if device_class(f['device']) == cls},
                          key=lambda c: hashlib.sha256(c.encode()).hexdigest())
        for i, cluster in enumerate(clusters):
            side = 'fit' if i % 2 == 0 else 'check'
            split[side] += [f['id'] for f in figures if _cluster(f) == cluster]
    return {'rule': 'clusters (model family @ device) sorted by sha256 of their name, alternately fit / check within '
                    'each device class (jetson, gpu); made before any fit', **split}


_GROUPS: Dict[Tuple[str, str], Any] = {}


def _groups(graph: Path, precision: str) -> Any:
    """The kernels of a reference graph built the way the figure's engine was (``--fp16`` / ``--int8``)."""
    import onnx
    from ..host.fusion import groups_of
    key = (str(graph), precision)
    if key not in _GROUPS:
        model = onnx.load(str(graph), load_external_data=False)  # weights stripped: shapes only
        _GROUPS[key] = groups_of(model, assume=None if precision == 'fp32' else precision)
    return _GROUPS[key]


def _transfer_ms(figure: Dict[str, Any], groups: Any, limits: Dict[str, Any], launch_us: float) -> float:
    """Copying the input in and the logits out, when the figure includes it: PCIe, or DRAM on a Jetson."""
    from ..host.costmodel import BANDWIDTH_FRACTION
    if not figure.get('includes_transfer'):
        return 0.0
    link = limits.get('host_link_gbs') or limits['mem_bw_gbs'] / 2  # a Jetson copy reads and writes DRAM
    ends = groups[0].inputs, groups[-1].outputs
    nbytes = sum(sum(side.values()) for side in ends) * figure['batch']
    return (nbytes / (link * 1e9 * BANDWIDTH_FRACTION) + 2 * launch_us * 1e-6) * 1e3


def figure_estimate(figure: Dict[str, Any], params: Dict[str, Dict[str, float]]) -> float:
    """The estimate (ms) of one published figure's engine under ``params`` ({class: {launch_us, compute_fraction}})."""
    from ..host.costmodel import estimate
    groups = _groups(figure['graph'], figure['precision'])
    limits = device_limits(figure['device'])
    fit = {'classes': params}
    ms = estimate(groups, limits, figure['batch'], fit=fit)['latency_ms']
    return ms + _transfer_ms(figure, groups, limits, params[device_class(figure['device'])]['launch_us'])


def _loss(figures: Iterable[Dict[str, Any]], params: Dict[str, Dict[str, float]]) -> float:
    logs = [math.log(figure_estimate(f, params) / f['latency_ms']) for f in figures]
    return sum(x * x for x in logs) / len(logs)


def fit(figures: Sequence[Dict[str, Any]], split: Dict[str, Any]) -> Dict[str, Dict[str, float]]:
    """Per device class, the grid point of (launch_us, compute_fraction) with the least squared log error on the
    fitting half."""
    fitting = [f for f in figures if f['id'] in set(split['fit'])]
    params: Dict[str, Dict[str, float]] = {}
    for cls in CLASSES:
        mine = [f for f in fitting if device_class(f['device']) == cls]
        if not mine:
            raise ScalableViTError(f'no fitting figure for device class {cls}')
        best = None
        for launch in LAUNCH_US:
            for fraction in COMPUTE_FRACTION:
                trial = {c: {'launch_us': launch, 'compute_fraction': fraction} for c in CLASSES}
                loss = _loss(mine, trial)
                if best is None or loss < best[0]:
                    best = (loss, launch, fraction)
        params[cls] = {'launch_us': best[1], 'compute_fraction': best[2], 'fitted_on': len(mine),
                       'rms_log_error': math.sqrt(best[0])}
        logger.info('%s: launch %.1f us, compute fraction %.2f (%d figures)', cls, best[1], best[2], len(mine))
    return params


def check(figures: Sequence[Dict[str, Any]], split: Dict[str, Any], params: Dict[str, Dict[str, float]],
          side: str = 'check') -> List[Dict[str, Any]]:
    """Estimate / published for every figure of one side of the split."""
    rows = []
    for f in figures:
        if f['id'] not in set(split[side]):
            continue
        ms = figure_estimate(f, params)
        rows.append({'id': f['id'], 'model': f['model'], 'input_size': f['input_size'], 'device': f['device'],
                     'precision': f['precision'], 'batch': f['batch'], 'published_ms': f['latency_ms'],
                     'estimate_ms': ms, 'ratio': ms / f['latency_ms'], 'error_pct': (ms / f['latency_ms'] - 1) * 100,
                     'conditions': f.get('conditions', ''), 'source': f.get('source_url', '')})
    return rows


def summary(rows: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    errors = [abs(r['error_pct']) for r in rows]
    return {'n': len(rows), 'median_abs_pct': statistics.median(errors) if errors else None,
            'max_abs_pct': max(errors) if errors else None,
            'within_30_pct': sum(e <= 30 for e in errors)}


def render(params: Dict[str, Dict[str, float]], fitting: Sequence[Dict[str, Any]],
           checking: Sequence[Dict[str, Any]]) -> str:
    lines = ['# The TensorRT cost estimate against published engines', '',
             'Fitted on the fitting half (per device class: launch overhead per kernel, fraction of the datasheet '
             'math peak), checked on the other half. Ratio = estimate / published.', '',
             '| class | launch (us) | compute fraction | fitting figures | rms log error |', '|---|---:|---:|---:|---:|']
    lines += [f"| {c} | {p['launch_us']:.1f} | {p['compute_fraction']:.2f} | {p['fitted_on']} | "
              f"{p['rms_log_error']:.3f} |" for c, p in params.items()]
    for title, rows in (('Checking half', checking), ('Fitting half (for reference)', fitting)):
        s = summary(rows)
        lines += ['', f'## {title}: median |error| {s["median_abs_pct"]:.0f} %, worst {s["max_abs_pct"]:.0f} %, '
                      f'{s["within_30_pct"]} of {s["n"]} within 30 %', '',
                  '| figure | model | size | device | precision | batch | published ms | estimate ms | ratio |',
                  '|---|---|---:|---|---|---:|---:|---:|---:|']
        lines += [f"| {r['id']} | {r['model']} | {r['input_size']} | {r['device']} | {r['precision']} | {r['batch']} | "
                  f"{r['published_ms']:.3f} | {r['estimate_ms']:.3f} | {r['ratio']:.2f} |" for r in rows]
    return '\n'.join(lines) + '\n'


def split_of(data: Path = DATA_DIR) -> Dict[str, Any]:
    try:
        return json.loads((data / 'split.json').read_text())
    except (OSError, ValueError) as e:
        raise ScalableViTError(f'{data}/split.json: unreadable ({e})') from e


def run_check(data: Path = DATA_DIR, refit: bool = True, fit_file: Optional[Path] = None) -> Dict[str, Any]:
    """Fit (or read the committed fit) and check: everything ``bench/cost_model_check.py`` prints."""
    from ..host.costmodel import FIT_FILE, load_fit
    figures = load_figures(data)
    split = split_of(data)
    params = fit(figures, split) if refit else load_fit(fit_file or FIT_FILE)['classes']
    checking = check(figures, split, params, 'check')
    fitting = check(figures, split, params, 'fit')
    return {'classes': params, 'check': summary(checking), 'fit_side': summary(fitting),
            'checking': checking, 'fitting': fitting, 'split_rule': split['rule']}
