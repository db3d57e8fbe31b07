"""Accuracy metrics and the budget gate on hand-made logits with known answers."""
import numpy as np
import pytest

from scalablevit.core.compare import accuracy_metrics, budget_violations, check_budget, gate_status
from scalablevit.core.errors import ScalableViTError


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


def _flipped(n: int, lost: int, won: int = 0):
    """Logits of ``n`` images over 10 classes: the reference is right on all but the first ``won`` images, which
    the candidate gets right, and the candidate loses the next ``lost``. Flips are small logit changes on a
    common offset, so the worst cosine (> 0.99) stays within every budget and only the flips count."""
    labels = np.arange(n) % 10
    wrong = (labels + 1) % 10
    ref = np.full((n, 10), 10.0)
    ref[np.arange(n), np.where(np.arange(n) < won, wrong, labels)] += 3
    cand = ref.copy()
    cand[np.arange(won), labels[:won]] += 3.1
    cand[np.arange(won, won + lost), wrong[won:won + lost]] += 3.1
    return ref, cand, labels


def test_clopper_pearson_matches_its_closed_forms():
    """With no success (or no failure) the exact interval has a closed form: 1 - (a/2)^(1/n) and (a/2)^(1/n)."""
    from scalablevit.core.compare import binomial_interval
    for n in (1, 7, 100, 10000):
        assert binomial_interval(0, n) == pytest.approx((0.0, 1 - 0.025 ** (1 / n)), rel=1e-9)
        assert binomial_interval(n, n) == pytest.approx((0.025 ** (1 / n), 1.0), rel=1e-9)
    # symmetric in k <-> n - k, and brackets the estimate
    lo, hi = binomial_interval(3, 40)
    assert binomial_interval(37, 40) == pytest.approx((1 - hi, 1 - lo), rel=1e-9) and lo < 3 / 40 < hi
    with pytest.raises(ValueError):
        binomial_interval(5, 4)


def test_one_flipped_image_of_100_is_not_enough_to_decide():
    from scalablevit.core.compare import UNDECIDED, budget_verdict
    m = accuracy_metrics(*_flipped(100, lost=1))
    assert m['paired'] == {'both_right': 99, 'reference_only': 1, 'candidate_only': 0, 'both_wrong': 0}
    assert m['top1_drop'] == pytest.approx(1.0)
    lo, hi = m['top1_drop_bound']
    assert lo < 0.5 < 1.0 < hi  # the bound spans the 0.5 pt budget: one image cannot decide it
    verdict = budget_verdict(m, 'int8')
    assert verdict.failed == [] and any('top-1 drop 1.00 pt > 0.5 pt' in u for u in verdict.undecided)
    status = gate_status(verdict.failed, False, verdict.undecided)
    assert status.startswith(UNDECIDED) and '95 % bound' in status
    check_budget(m, 'int8', 'engine x')  # a warning, not an error


def test_a_two_point_drop_on_10000_images_fails():
    from scalablevit.core.compare import budget_verdict
    m = accuracy_metrics(*_flipped(10000, lost=250, won=50))
    assert m['top1_drop'] == pytest.approx(2.0) and m['top1_drop_bound'][0] > 0.5
    verdict = budget_verdict(m, 'int8')
    assert any('top-1 drop 2.00 pt' in f for f in verdict.failed)
    assert gate_status(verdict.failed, False, verdict.undecided).startswith('FAILED')
    with pytest.raises(ScalableViTError, match='top-1 drop 2.00 pt'):
        check_budget(m, 'int8', 'engine x')


def test_agreement_is_decided_by_its_bound():
    from scalablevit.core.compare import budget_verdict
    few = accuracy_metrics(*_flipped(100, lost=2)[:2])    # 98 % on 100 images: the bound reaches 99 %
    many = accuracy_metrics(*_flipped(10000, lost=200)[:2])  # 98 % on 10,000: it does not
    assert few['top1_agreement_bound'][1] >= 0.99 > many['top1_agreement_bound'][1]
    assert budget_verdict(few, 'int8').failed == [] and budget_verdict(few, 'int8').undecided
    assert budget_verdict(many, 'int8').failed and budget_verdict(many, 'int8').undecided == []
