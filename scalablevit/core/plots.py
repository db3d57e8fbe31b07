"""PNG plots for benchmark reports: latency vs batch per runner, and accuracy vs latency.

matplotlib is optional (a Jetson image often lacks it): it is imported here, with the Agg backend, only
when a plot is drawn; without it each function logs a note and returns None instead of a path.
PNGs are written atomically like every other artifact.
"""
import logging
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from .fileio import atomic_path

logger = logging.getLogger(__name__)

__all__ = ['plot_latency_vs_batch', 'plot_accuracy_vs_latency']


def _pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend, or None (with a logged note) when matplotlib is absent."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        logger.info('matplotlib not installed: plots skipped (JSON and markdown reports are complete)')
        return None
    return plt


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format='png', dpi=120, bbox_inches='tight')
    return path


def _label(entry: Dict[str, Any]) -> str:
    return entry.get('name') or f"{entry['backend']} {entry['precision']}"


def plot_latency_vs_batch(entries: Sequence[Dict[str, Any]], path: Path, title: str = 'Latency vs batch'
                          ) -> Optional[Path]:
    """Left: p50 latency per batch (bars reach p90); right: throughput. One line per runner/precision."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, (ax_lat, ax_thr) = plt.subplots(1, 2, figsize=(11, 4.2))
    all_batches = sorted({b['batch'] for e in entries for b in e['sweep']})
    for entry in entries:
        sweep = sorted(entry['sweep'], key=lambda b: b['batch'])
        batches = [b['batch'] for b in sweep]
        p50 = [b['p50'] for b in sweep]
        up = [b['p90'] - b['p50'] for b in sweep]
        ax_lat.errorbar(batches, p50, yerr=[[0] * len(up), up], marker='o', capsize=3, label=_label(entry))
        ax_thr.plot(batches, [b['throughput_ips'] for b in sweep], marker='o', label=_label(entry))
    for ax, ylabel in ((ax_lat, 'latency p50 (ms), bar to p90'), (ax_thr, 'throughput (images/s)')):
        ax.set_xlabel('batch size')
        ax.set_ylabel(ylabel)
        ax.set_xscale('log', base=2)
        ax.set_xticks(all_batches, [str(b) for b in all_batches])
        ax.minorticks_off()
        ax.grid(True, alpha=0.3)
    ax_lat.legend(fontsize=8)
    fig.suptitle(title)
    try:
        return _save(fig, Path(path))
    finally:
        plt.close(fig)


def plot_accuracy_vs_latency(rows: Sequence[Dict[str, Any]], path: Path, metric: str = 'top1_agreement',
                             metric_label: str = 'top-1 agreement with PyTorch FP32 (%)',
                             title: str = 'Accuracy vs latency') -> Optional[Path]:
    """Scatter of p50 latency (x) against an accuracy metric in % (y), one labelled point per row."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for row in rows:
        lat, acc = row.get('latency_ms') or {}, row.get('accuracy') or {}
        value = acc.get(metric)
        if lat.get('p50') is None or value is None:
            continue
        y = value * 100 if metric == 'top1_agreement' else value
        ax.scatter([lat['p50']], [y], s=40)
        ax.annotate(_label(row), (lat['p50'], y), textcoords='offset points', xytext=(5, 4), fontsize=8)
    ax.set_xlabel('latency p50 (ms)')
    ax.set_ylabel(metric_label)
    ax.grid(True, alpha=0.3)
    ax.set_title(title)
    try:
        return _save(fig, Path(path))
    finally:
        plt.close(fig)
