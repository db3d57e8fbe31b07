"""Accuracy metrics between a reference and a candidate runner's logits, and the per-precision budget gate.

The metrics are the ``accuracy`` block of the report contract (see README): top-1 agreement, cosine
similarity of the logit vectors (mean and worst sample), max |diff|, and top-1 against labels when given.
"""
import json
import logging
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from .errors import ScalableViTError, unknown_choice

logger = logging.getLogger(__name__)

BUDGETS_FILE = Path(__file__).with_name('accuracy_budgets.json')


def accuracy_metrics(reference: np.ndarray, candidate: np.ndarray, labels: Optional[np.ndarray] = None,
                     reference_name: str = 'torch-fp32') -> Dict[str, Any]:
    """Compare two (N, classes) logit arrays; ``labels`` (N,) adds top-1 of both against ground truth (in %)."""
    if reference.shape != candidate.shape or reference.ndim != 2:
        raise ScalableViTError(f'cannot compare logits of shape {candidate.shape} with reference {reference.shape}')
    ref = reference.astype(np.float64)
    cand = candidate.astype(np.float64)
    # A NaN/inf row would make every comparison below False and slip through the gate: count it, then score it
    # as a miss (zero logits: cosine 0, agreement only by chance of argmax 0).
    nonfinite = ~np.isfinite(cand).all(axis=1)
    cand = np.where(nonfinite[:, None], 0.0, cand)
    ref_top1, cand_top1 = ref.argmax(1), cand.argmax(1)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    cosine = (ref * cand).sum(1) / np.maximum(norms, 1e-30)
    metrics = {
        'reference': reference_name,
        'samples': int(len(ref)),
        'top1_agreement': float((ref_top1 == cand_top1).mean()),
        'cosine_mean': float(cosine.mean()),
        'cosine_min': float(cosine.min()),
        'max_abs_diff': float(np.abs(ref - cand).max()),
        'top1_reference': None,
        'top1_candidate': None,
        'nonfinite_samples': int(nonfinite.sum()),
    }
    if labels is not None:
        labels = np.asarray(labels)
        metrics['top1_reference'] = float((ref_top1 == labels).mean() * 100)
        metrics['top1_candidate'] = float((cand_top1 == labels).mean() * 100)
    return metrics


def load_budgets(path: Path = BUDGETS_FILE) -> Dict[str, Dict[str, float]]:
    return {k: v for k, v in json.loads(Path(path).read_text()).items() if not k.startswith('_')}


def budget_violations(metrics: Dict[str, Any], precision: str, budget: Optional[Dict[str, float]] = None) -> list:
    """Human-readable list of the budget rules ``metrics`` breaks for ``precision`` (empty = within budget).

    ``budget`` replaces the precision's entry of accuracy_budgets.json (a tighter ``--int8-target``)."""
    budgets = load_budgets()
    if precision not in budgets:
        raise unknown_choice('precision', precision, budgets)
    budget = budget or budgets[precision]
    broken = []
    if metrics.get('nonfinite_samples'):
        broken.append(f"{metrics['nonfinite_samples']} samples with NaN/inf logits")
    if metrics['top1_agreement'] < budget['min_top1_agreement']:
        broken.append(f"top-1 agreement {metrics['top1_agreement']:.4f} < {budget['min_top1_agreement']}")
    if metrics['cosine_min'] < budget['min_cosine_min']:
        broken.append(f"worst cosine {metrics['cosine_min']:.5f} < {budget['min_cosine_min']}")
    if metrics.get('top1_reference') is not None:
        drop = metrics['top1_reference'] - metrics['top1_candidate']
        if drop > budget['max_top1_drop']:
            broken.append(f"top-1 drop {drop:.2f} pt > {budget['max_top1_drop']} pt")
    return broken


def gate_status(violations: list, untrained: bool) -> str:
    """The accuracy gate's verdict as reports show it; random weights are reported but never gated."""
    if not violations:
        return 'passed'
    if untrained:
        return 'not gated (untrained weights): ' + '; '.join(violations)
    return 'FAILED: ' + '; '.join(violations)


def check_budget(metrics: Dict[str, Any], precision: str, what: str) -> None:
    """Raise ScalableViTError when ``metrics`` exceed the precision's accuracy budget."""
    broken = budget_violations(metrics, precision)
    if broken:
        raise ScalableViTError(f'{what} exceeds the {precision} accuracy budget: ' + '; '.join(broken))
    logger.info('%s within the %s accuracy budget (agreement %.4f, worst cosine %.5f)', what, precision,
                metrics['top1_agreement'], metrics['cosine_min'])
