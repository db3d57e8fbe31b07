"""Accuracy metrics between a reference and a candidate runner's logits, and the per-precision budget gate.

The metrics are the ``accuracy`` block of the report contract (see docs/pipeline.md): top-1 agreement, cosine
similarity of the logit vectors (mean and worst sample), max |diff|, and top-1 against labels when given.

The gate decides by evidence, not by one image. Agreement and the top-1 drop are rates measured on a sample, so
each comes with a 95 % confidence bound: Clopper-Pearson (exact binomial) for the agreement; for the drop, the
paired flips (images only the reference gets right, images only the candidate gets right) each get a 97.5 %
Clopper-Pearson interval and the drop's bound is their difference (>= 95 % together, Bonferroni). A budget
broken by the measured figure but not by its whole bound is "not enough images to decide" (a warning, more
images settle it); broken by the whole bound, it fails. The worst cosine and non-finite logits are properties of
single images, not estimates: they are decided as measured.
"""
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .errors import ScalableViTError, unknown_choice

logger = logging.getLogger(__name__)

BUDGETS_FILE = Path(__file__).with_name('accuracy_budgets.json')
CONFIDENCE = 0.95
UNDECIDED = 'not enough images to decide'


def binomial_interval(k: int, n: int, confidence: float = CONFIDENCE) -> Tuple[float, float]:
    """Clopper-Pearson interval of a proportion ``k``/``n``: exact, never narrower than the truth."""
    if not 0 <= k <= n or n == 0:
        raise ValueError(f'binomial interval needs 0 <= k <= n, n > 0 (got k={k}, n={n})')
    tail = (1 - confidence) / 2
    log_fact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1)))])
    i = np.arange(n + 1)
    log_comb = log_fact[n] - log_fact[i] - log_fact[n - i]

    def cdf(p: float, upto: int) -> float:  # P(X <= upto) for X ~ Binomial(n, p), in log space for large n
        with np.errstate(divide='ignore'):
            logs = log_comb[:upto + 1] + i[:upto + 1] * np.log(p) + (n - i[:upto + 1]) * np.log1p(-p)
        top = logs.max()
        return float(np.exp(top) * np.exp(logs - top).sum())

    def solve(f, target: float) -> float:  # f decreasing in p on (0, 1): bisection to double precision
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if f(mid) > target else (lo, mid)
        return (lo + hi) / 2
    lower = 0.0 if k == 0 else solve(lambda p: cdf(p, k - 1), 1 - tail)   # P(X >= k | lower) = tail
    upper = 1.0 if k == n else solve(lambda p: cdf(p, k), tail)           # P(X <= k | upper) = tail
    return lower, upper


def paired_flips(ref_right: np.ndarray, cand_right: np.ndarray) -> Dict[str, int]:
    """How the reference and the candidate agree with the labels, image by image."""
    return {'both_right': int((ref_right & cand_right).sum()), 'reference_only': int((ref_right & ~cand_right).sum()),
            'candidate_only': int((~ref_right & cand_right).sum()), 'both_wrong': int((~ref_right & ~cand_right).sum())}


def drop_interval(flips: Dict[str, int], confidence: float = CONFIDENCE) -> Tuple[float, float]:
    """Bound of the top-1 drop (points, reference minus candidate) from the paired flips (module docstring)."""
    n = sum(flips.values())
    each = 1 - (1 - confidence) / 2  # Bonferroni: two intervals at 97.5 % hold together with >= 95 %
    lost_lo, lost_hi = binomial_interval(flips['reference_only'], n, each)
    won_lo, won_hi = binomial_interval(flips['candidate_only'], n, each)
    return (lost_lo - won_hi) * 100, (lost_hi - won_lo) * 100


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
    agree = int((ref_top1 == cand_top1).sum())
    metrics = {
        'reference': reference_name,
        'samples': int(len(ref)),
        'top1_agreement': agree / len(ref),
        'top1_agreement_bound': list(binomial_interval(agree, len(ref))),
        'confidence': CONFIDENCE,
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
        flips = paired_flips(ref_top1 == labels, cand_top1 == labels)
        metrics['paired'] = flips
        metrics['top1_drop'] = (flips['reference_only'] - flips['candidate_only']) / len(ref) * 100
        metrics['top1_drop_bound'] = list(drop_interval(flips))
    return metrics


def load_budgets(path: Path = BUDGETS_FILE) -> Dict[str, Dict[str, float]]:
    return {k: v for k, v in json.loads(Path(path).read_text()).items() if not k.startswith('_')}


@dataclass
class Verdict:
    """The gate's finding: ``failed`` rules are broken beyond the sample's bound, ``undecided`` ones only by the
    measured figure (within its bound: more images decide them)."""
    failed: List[str] = field(default_factory=list)
    undecided: List[str] = field(default_factory=list)


def budget_verdict(metrics: Dict[str, Any], precision: str, budget: Optional[Dict[str, float]] = None) -> Verdict:
    """Check ``metrics`` against the precision's budget (or ``budget``, e.g. a tighter ``--int8-target``)."""
    budgets = load_budgets()
    if precision not in budgets:
        raise unknown_choice('precision', precision, budgets)
    budget = budget or budgets[precision]
    verdict = Verdict()
    if metrics.get('nonfinite_samples'):
        verdict.failed.append(f"{metrics['nonfinite_samples']} samples with NaN/inf logits")
    agreement, floor = metrics['top1_agreement'], budget['min_top1_agreement']
    if agreement < floor:
        bound = metrics.get('top1_agreement_bound')
        (verdict.undecided if bound and bound[1] >= floor else verdict.failed).append(
            f"top-1 agreement {agreement:.4f} < {floor}" + (f' (95 % bound {bound[0]:.4f}-{bound[1]:.4f})'
                                                             if bound else ''))
    if metrics['cosine_min'] < budget['min_cosine_min']:
        verdict.failed.append(f"worst cosine {metrics['cosine_min']:.5f} < {budget['min_cosine_min']}")
    if metrics.get('top1_reference') is not None:
        drop = metrics['top1_reference'] - metrics['top1_candidate']
        if drop > budget['max_top1_drop']:
            bound = metrics.get('top1_drop_bound')
            (verdict.undecided if bound and bound[0] <= budget['max_top1_drop'] else verdict.failed).append(
                f"top-1 drop {drop:.2f} pt > {budget['max_top1_drop']} pt" + (
                    f' (95 % bound {bound[0]:+.2f} to {bound[1]:+.2f} pt)' if bound else ''))
    return verdict


def budget_violations(metrics: Dict[str, Any], precision: str, budget: Optional[Dict[str, float]] = None) -> list:
    """Every budget rule the measured figures break, decided or not (what a search must bring to zero)."""
    verdict = budget_verdict(metrics, precision, budget)
    return verdict.failed + verdict.undecided


def gate_status(violations: list, untrained: bool, undecided: Optional[list] = None) -> str:
    """The accuracy gate's verdict as reports show it; random weights are reported but never gated."""
    undecided = list(undecided or [])
    if not violations and not undecided:
        return 'passed'
    if untrained:
        return 'not gated (untrained weights): ' + '; '.join(violations + undecided)
    if violations:
        return 'FAILED: ' + '; '.join(violations + undecided)
    return f'{UNDECIDED}: ' + '; '.join(undecided)


def check_budget(metrics: Dict[str, Any], precision: str, what: str) -> None:
    """Raise ScalableViTError when ``metrics`` exceed the precision's accuracy budget beyond their bound."""
    verdict = budget_verdict(metrics, precision)
    if verdict.failed:
        raise ScalableViTError(f'{what} exceeds the {precision} accuracy budget: ' + '; '.join(verdict.failed))
    if verdict.undecided:
        logger.warning('%s: %s (%s)', what, UNDECIDED, '; '.join(verdict.undecided))
        return
    logger.info('%s within the %s accuracy budget (agreement %.4f, worst cosine %.5f)', what, precision,
                metrics['top1_agreement'], metrics['cosine_min'])
