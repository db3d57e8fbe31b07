"""report.json (a contract other tools read) and report.md (for people).

report.json keeps these fields (more may be added):
  model, precision, backend,
  accuracy {reference, samples, top1_agreement, cosine_mean, cosine_min, max_abs_diff, top1_reference, top1_candidate},
           plus the gate's evidence: top1_agreement_bound, and with labels paired (flip counts), top1_drop and
           top1_drop_bound (compare.py),
  latency_ms {batch, p50, p90, p99, mean} | null,
  environment {...}
"""
import datetime
import importlib.metadata
import logging
import os
import platform
import resource
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

from .fileio import human_size, write_json, write_text

logger = logging.getLogger(__name__)

UNTRAINED = 'untrained weights'
_TOOLS = ('torch', 'onnx', 'onnxruntime', 'nvidia-modelopt', 'onnxslim', 'tensorrt', 'cuda-python', 'pycuda', 'numpy')


def tool_versions(names: Iterable[str] = _TOOLS) -> Dict[str, Optional[str]]:
    """Installed versions of the tools that shape an artifact (None when absent), without importing them."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def environment(extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Where a result was produced: Python, OS, CPU count, tool versions, plus ``extra`` (e.g. TensorRT, GPU)."""
    return {
        'python': platform.python_version(),
        'platform': platform.platform(),
        'machine': platform.machine(),
        'cpu_count': os.cpu_count(),
        'tools': {k: v for k, v in tool_versions().items() if v},
        **(extra or {}),
    }


def utc_now() -> str:
    """The current UTC time as reports and manifests record it."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')


def peak_rss_mb() -> float:
    """Peak resident memory of this process and its finished children, in MB (Linux reports KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    scale = 1 / 1024 if sys.platform != 'darwin' else 1 / 1024 / 1024
    return max(own, children) * scale


def make_report(model: str, precision: str, backend: str, accuracy: Dict[str, Any],
                latency_ms: Optional[Dict[str, Any]], untrained: bool,
                environment_extra: Optional[Dict[str, Any]] = None, **extra: Any) -> Dict[str, Any]:
    """The one builder of report.json (host validation and engine validation alike): the contract fields,
    ``warning`` for random weights, ``created_at``, and ``extra`` fields (status, stages, engine, ...)."""
    report = {'model': model, 'precision': precision, 'backend': backend, 'accuracy': accuracy,
              'latency_ms': latency_ms, 'environment': environment(environment_extra), 'created_at': utc_now()}
    if untrained:
        report['warning'] = UNTRAINED
    report.update(extra)
    return report


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return 'n/a'
    if isinstance(value, float):
        return f'{value:.{digits}f}'
    return str(value)


def _bound(bound: Optional[List[float]]) -> str:
    """A rate's 95 % confidence bound, in %, as the accuracy table prints it beside the figure."""
    return f' (95 % bound {bound[0] * 100:.2f}-{bound[1] * 100:.2f} %)' if bound else ''


def render_markdown(report: Dict[str, Any]) -> str:
    acc = report['accuracy']
    lines = [f"# {report['model']} {report['precision'].upper()} on {report['backend']}", '']
    if report.get('warning') == UNTRAINED:
        lines += ['> **Untrained weights** (random initialisation): accuracy numbers below only show that the '
                  'deployed graph computes the same function as PyTorch; they say nothing about task accuracy.', '']
    status = report.get('status')
    if status:
        lines += [f'**Accuracy gate:** {status}', '']
    lines += [f"## Accuracy against {acc['reference']} ({acc['samples']} held-out images)", '',
              '| metric | value |', '|---|---|',
              f"| top-1 agreement | {acc['top1_agreement'] * 100:.2f} %{_bound(acc.get('top1_agreement_bound'))} |",
              f"| cosine similarity, mean | {_fmt(acc['cosine_mean'], 6)} |",
              f"| cosine similarity, worst image | {_fmt(acc['cosine_min'], 6)} |",
              f"| max abs logit difference | {_fmt(acc['max_abs_diff'], 5)} |"]
    if acc.get('top1_reference') is not None:
        lines += [f"| top-1 vs labels, reference | {acc['top1_reference']:.2f} % |",
                  f"| top-1 vs labels, {report['precision']} | {acc['top1_candidate']:.2f} % |"]
        flips = acc.get('paired')
        if flips:
            lo, hi = acc['top1_drop_bound']
            lines += [f"| top-1 drop | {acc['top1_drop']:+.2f} pt (95 % bound {lo:+.2f} to {hi:+.2f} pt) |",
                      f"| images right only in the reference / only in {report['precision']} | "
                      f"{flips['reference_only']} / {flips['candidate_only']} (both right {flips['both_right']}, "
                      f"both wrong {flips['both_wrong']}) |"]
    lat = report.get('latency_ms')
    if lat:
        lines += ['', f"## Latency (batch {lat['batch']}, {report['backend']})", '',
                  '| p50 | p90 | p99 | mean |', '|---|---|---|---|',
                  f"| {lat['p50']:.2f} ms | {lat['p90']:.2f} ms | {lat['p99']:.2f} ms | {lat['mean']:.2f} ms |"]
    lines += _auto_markdown(report.get('int8_auto'))
    lines += _census_markdown(report.get('census'), report['precision'])
    lines += _estimate_markdown(report.get('cost_estimate'))
    lines += _engine_precision_markdown(report.get('engine_precision'))
    lines += _latency_estimate_markdown(report.get('latency_estimate'))
    stages = report.get('stages')
    if stages:
        lines += ['', '## Stages', '', '| stage | seconds | peak RSS | reused |', '|---|---:|---:|---|']
        for name, s in stages.items():
            lines.append(_stage_row(name, s, 'yes' if s.get('reused') else 'no'))
            lines += [_stage_row(f'{name} > {part}', p, '') for part, p in (s.get('parts') or {}).items()]
    files = report.get('files')
    if files:
        lines += ['', '## Files', '', '| file | size | sha256 |', '|---|---|---|']
        lines += [f"| {f['file']} | {human_size(f['bytes'])} | `{f['sha256'][:16]}…` |" for f in files]
    env = report['environment']
    facts = [f'{k} {v}' for k, v in env.items() if isinstance(v, (str, int, float)) and k != 'platform']
    facts += [f'{k} {v}' for k, v in env.get('tools', {}).items()]
    gpu = env.get('gpu')
    if isinstance(gpu, dict):
        facts.append(f"GPU {gpu.get('name')} (sm_{str(gpu.get('compute_capability', '')).replace('.', '')})")
    lines += ['', '## Environment', '', f"{env.get('platform', '')}: " + ', '.join(facts)]
    return '\n'.join(lines) + '\n'


def _stage_row(name: str, stage: Dict[str, Any], reused: str) -> str:
    """One row of the stages table: seconds and peak RSS (of the stage, or of one of its parts)."""
    memory = human_size(stage['peak_rss_mb'] * 2 ** 20) if stage.get('peak_rss_mb') else '-'
    return f"| {name} | {stage['seconds']:.1f} | {memory} | {reused} |"


def _census_markdown(census: Optional[Dict[str, Any]], precision: str) -> List[str]:
    """The precision census as tables: ops per dtype, MACs / weights / activations per dtype, FP32 islands."""
    if not census:
        return []
    dtypes = tuple(d for d in census['mac_share'] if d in ('fp16', 'fp32') or census['macs'][d])  # 8-bit if used
    lines = ['', '## Precision census of the deployed ONNX (what a strongly typed TensorRT engine runs, batch 1)', '',
             '| op type | ' + ' | '.join(d.upper() for d in dtypes) + ' |', '|---|' + '---:|' * len(dtypes)]
    for op, counts in census['ops'].items():
        lines.append(f'| {op} | ' + ' | '.join(str(counts[d] or '') for d in dtypes) + ' |')
    lines += ['', '| per dtype | ' + ' | '.join(d.upper() for d in dtypes) + ' |', '|---|' + '---:|' * len(dtypes),
              '| share of MACs | ' + ' | '.join(f"{100 * census['mac_share'][d]:.1f} %" for d in dtypes) + ' |',
              '| GMACs | ' + ' | '.join(f"{census['macs'][d] / 1e9:.3f}" for d in dtypes) + ' |',
              '| weights | ' + ' | '.join(human_size(census['weight_bytes'][d]) for d in dtypes) + ' |',
              '| activations | ' + ' | '.join(human_size(census['activation_bytes'][d]) for d in dtypes) + ' |']
    islands = census.get('islands') or {}
    if islands:
        lines += ['', f'FP32 islands ({len(islands)}), each kept FP32 by a rule:', '',
                  '| node | rule | measured | limit |', '|---|---|---:|---:|']
        lines += [f"| `{name}` | {i['rule']} | {_fmt(i.get('value'), 1)} | {_fmt(i.get('limit'), 0)} |"
                  for name, i in list(islands.items())[:40]]
        if len(islands) > 40:
            lines.append(f'| ... {len(islands) - 40} more (report.json) | | | |')
    elif precision != 'fp32':
        lines += ['', f'No FP32 island: every op that is not {precision.upper()} runs FP16.' if precision != 'fp16'
                  else 'No FP32 island: every op runs FP16.']
    outside = census['fp32_macs_outside_islands']
    if precision != 'fp32' and outside:
        lines += ['', f'**{outside / 1e6:.1f} M FP32 MACs outside the named islands** (the census gate).']
    return lines


def _auto_markdown(auto: Optional[Dict[str, Any]]) -> List[str]:
    """The steps of an INT8 auto policy's search (scalablevit.host.autoquant), one row per evaluation."""
    if not auto:
        return []
    budget = auto['budget']
    lines = ['', '## INT8 auto policy: layers moved out of INT8', '', f"**{auto['message']}**", '',
             f"Budget: top-1 agreement >= {budget['min_top1_agreement'] * 100:g} %, top-1 drop <= "
             f"{budget['max_top1_drop']:g} pt, worst cosine >= {budget['min_cosine_min']:g}; search bound "
             f"{auto['max_steps']} evaluations, {auto['time_limit_s']:.0f} s. Sensitivity: the local error a layer "
             f"adds (divergence from FP32 on {auto['sensitivity_images']} calibration images).", '',
             '| step | action | layer | sensitivity | moved | agreement | top-1 | worst cosine | INT8 MACs '
             '| INT8 MACs lost | budget | s |', '|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|']
    for st in auto['steps']:
        top1 = 'n/a' if st['top1_candidate'] is None else f"{st['top1_candidate']:.2f} %"
        layer = f"`{st['node']}`" if st['node'] else ''
        lines.append(f"| {st['step']} | {st['action']} | {layer} "
                     f"| {_fmt(st['sensitivity'], 4)} | {st['moved']} | {st['top1_agreement'] * 100:.2f} % | {top1} "
                     f"| {st['cosine_min']:.4f} | {st['quantized_mac_share'] * 100:.1f} % "
                     f"| {st['quantized_mac_share_lost'] * 100:.1f} pt | {'met' if st['met'] else 'over'} "
                     f"| {st['seconds']:.1f} |")
    if auto['moved']:
        lines += ['', 'Kept out of INT8 by the search: ' + ', '.join(f'`{n}`' for n in auto['moved'])]
    return lines


def _estimate_markdown(estimate: Optional[Dict[str, Any]]) -> List[str]:
    """The host report's latency estimate on the target's device: the deployed plan beside its FP32 ONNX."""
    if not estimate or not estimate.get('rows'):
        return []
    lines = ['', f"## TensorRT latency ESTIMATE for target {estimate['target']}", '', f"> {estimate['note']}", '',
             '| device | batch | estimate ms | FP32 ONNX ms | launch ms | compute ms | memory ms | kernels (compute / '
             'memory / launch-bound) | attention fused |', '|---|---:|---:|---:|---:|---:|---:|---|---|']
    for r in estimate['rows']:
        b, f = r['bound'], r['fusion']
        lines.append(f"| {r['device_name']} | {r['batch']} | {r['latency_ms']:.3f} | {r['fp32_latency_ms']:.3f} | "
                     f"{r['launch_ms']:.3f} | {r['compute_ms']:.3f} | {r['memory_ms']:.3f} | {f['kernels']} "
                     f"({b['compute']} / {b['memory']} / {b['launch']}) from {f['onnx_nodes']} ONNX nodes | "
                     f"{f['attention_fused']} of {f['attention_blocks']} |")
    lines += ['', 'The per-kernel table (what fused with what, which bound, its time) is in report.json '
                  '(`cost_estimate.rows[].kernels`).']
    return lines


def _latency_estimate_markdown(estimate: Optional[Dict[str, Any]]) -> List[str]:
    """The host's latency estimate for this GPU beside the engine TensorRT built (its layer count)."""
    if not estimate:
        return []
    return ['', '## Latency ESTIMATE for this GPU (from the ONNX, on the host)', '',
            f"{estimate['device']}: {estimate['ms']['1']:.3f} ms at batch 1, {estimate['ms']['8']:.3f} ms at batch 8 "
            f"({estimate['error_band']}). The estimate assumed {estimate['estimated_kernels']} kernels "
            f"({estimate['attention_fused']} of {estimate['attention_blocks']} attention blocks fused); TensorRT built "
            f"{estimate['engine_layers']} layers. Benchmark the engine (bench/latency.py, bench/jetson_bench.py) "
            'for its latency.']


def _engine_precision_markdown(engine: Optional[Dict[str, Any]]) -> List[str]:
    """TensorRT's per-layer precision (engine inspector) and the layers it runs above the ONNX precision."""
    if not engine:
        return []
    counts = ', '.join(f'{n} {p.upper()}' for p, n in sorted(engine['layers'].items()))
    lines = ['', '## Precision TensorRT runs (engine inspector)', '', f'Engine layers: {counts or "none read"}.']
    flagged = engine['higher_than_onnx']
    if not engine['compared']:
        lines += ['', 'Not compared with the ONNX: the engine or the bundle carries no per-layer precision.']
    elif flagged:
        lines += ['', f'**{len(flagged)} layer(s) run at a higher precision than the ONNX asked for:**', '',
                  '| engine layer | type | ONNX node | ONNX | engine |', '|---|---|---|---|---|']
        lines += [f"| `{f['layer']}` | {f['type']} | `{f['onnx_node']}` | {f['onnx_dtype'].upper()} | "
                  f"{f['engine_precision'].upper()} |" for f in flagged[:40]]
    else:
        lines += ['', 'No layer runs at a higher precision than the ONNX asked for.']
    return lines


def write_report(out_dir: Path, report: Dict[str, Any], stem: str = 'report') -> Path:
    """Write ``<stem>.json`` and ``<stem>.md`` atomically; returns the JSON path."""
    out_dir = Path(out_dir)
    json_path = out_dir / f'{stem}.json'
    write_json(json_path, report)
    write_text(out_dir / f'{stem}.md', render_markdown(report))
    logger.info('report written: %s and %s.md', json_path, stem)
    return json_path
