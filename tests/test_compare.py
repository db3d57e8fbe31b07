"""Accuracy metrics and the budget gate on hand-made logits with known answers."""
import numpy as np
import pytest

from scalablevit.compare import accuracy_metrics, budget_violations, check_budget, gate_status
from scalablevit.errors import ScalableViTError


def test_metrics_on_known_logits():
    ref = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 0.0, 4.0], [2.0, 1.0, 0.0]])
    cand = ref.copy()
    cand[3] = [0.0, 1.0, 0.5]  # one top-1 flip
    m = accuracy_metrics(ref, cand, labels=np.array([0, 1, 2, 1]))
    assert m['samples'] == 4 and m['top1_agreement'] == 0.75
    assert m['top1_reference'] == 75.0 and m['top1_candidate'] == 100.0
    assert m['max_abs_diff'] == 2.0 and m['cosine_min'] == pytest.approx(1 / np.sqrt(5) / np.sqrt(1.25))
    assert m['nonfinite_samples'] == 0


def test_nan_logits_never_pass_the_gate():
    ref = np.eye(4) * 5
    cand = ref.copy()
    cand[2, 1] = np.nan
    m = accuracy_metrics(ref, cand)
    assert m['nonfinite_samples'] == 1 and np.isfinite(m['cosine_min'])
    broken = budget_violations(m, 'int8')
    assert any('NaN/inf' in b for b in broken)
    assert gate_status(broken, untrained=False).startswith('FAILED')
    with pytest.raises(ScalableViTError, match='exceeds the int8 accuracy budget'):
        check_budget(m, 'int8', 'engine x')


def test_top1_drop_budget_uses_labels():
    labels = np.arange(100) % 10
    ref = np.eye(10)[labels] * 3
    cand = ref.copy()
    cand[:1] = np.roll(cand[:1], 1, axis=1)  # one more error than the reference: 1 pt drop
    m = accuracy_metrics(ref, cand, labels)
    assert m['top1_reference'] - m['top1_candidate'] == pytest.approx(1.0)
    assert any('top-1 drop 1.00 pt > 0.5 pt' in b for b in budget_violations(m, 'int8'))
    assert gate_status(budget_violations(m, 'int8'), untrained=True).startswith('not gated (untrained weights)')
