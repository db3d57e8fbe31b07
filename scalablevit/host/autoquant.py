"""``--int8-policy auto``: move the fewest layers out of INT8 or FP8 that bring the model within its accuracy budget.

Written for INT8 below; an FP8 bundle (``--precision fp8``) runs the same search on its FP8 Q/DQ graph with FP8's
budget: nothing in it depends on the format but the names in its messages.

One calibration, then graph rewrites:

1. modelopt calibrates once with the start policy's exclusions and AutoCast makes all that is not INT8 FP16 (FP32
   only in the islands a rule of ``fp16_rules`` names): ``quantize.quantize_qdq``'s deployable graph. A layer
   leaves INT8 by having its inputs rerouted around their Q/DQ pairs in that graph
   (``quantize.moved_out_of_qdq``, the rewrite every exclusion gets); it then runs in the dtype AutoCast gave it,
   FP16 or, in an island, FP32. This is sound because onnxruntime calibrates every tensor's range on the FP32
   graph alone: a tensor's scale does not depend on which other layers are quantized, so the rewritten graph
   computes what a fresh calibration with that exclusion gives (a test holds the two against each other), and a
   step costs a rewrite and an evaluation. modelopt's ``calibration_cache_path`` would not spare the
   calibration: modelopt 0.47 still runs onnxruntime's calibration over the reader and only overwrites the scales
   from the cache afterwards.
2. Sensitivity, once: the start graph and the FP32 graph run side by side on ``SENSITIVITY_IMAGES`` calibration
   images (``divergence.measure``); an INT8 node's sensitivity is its local error, the relative error of its output
   minus the largest relative error of the tensors it reads: the error the node adds itself.
3. Forward: move the most sensitive INT8 layer out, evaluate on the bundle's held-out reference set against the
   gate's budget (accuracy_budgets.json, tightened by ``--int8-target``); repeat until the budget is met. A move
   that brings the logits no closer to FP32 (mean cosine) is undone, so useless moves do not pile up.
4. Prune: give each moved layer but the last back to INT8, least sensitive first, and keep it INT8 when the
   budget still holds. What stays moved is the exclusion set.

Every evaluation is a step of the report (layer, its sensitivity, accuracy after, INT8 share of MACs). The search
stops after ``MAX_STEPS`` evaluations or before a step would end past ``TIME_LIMIT_S``; when the budget is not met
by then it says so in one line and returns the best candidate it evaluated, so the bundle shows how close it got.
"""
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..core.errors import ScalableViTError

logger = logging.getLogger(__name__)

__all__ = ['MAX_STEPS', 'TIME_LIMIT_S', 'SENSITIVITY_IMAGES', 'parse_target', 'target_budget', 'AutoResult',
           'search']

MAX_STEPS = 40
TIME_LIMIT_S = 600.0
SENSITIVITY_IMAGES = 32
EVAL_BATCH = 32
# --int8-target key -> (budget field, largest value, factor to the budget's unit)
_TARGETS = {'agreement': ('min_top1_agreement', 100.0, 0.01), 'drop': ('max_top1_drop', 100.0, 1.0),
            'cosine': ('min_cosine_min', 1.0, 1.0)}

# build(moved nodes) -> (deployable ModelProto, rerouted inputs)
Build = Callable[[List[str]], Tuple[Any, int]]


# --------------------------------------------------------------------------------------- the target
def parse_target(text: Optional[str]) -> Optional[str]:
    """``--int8-target``: comma-separated ``agreement=99.5`` (top-1 agreement, %), ``drop=0.2`` (top-1 drop against
    labels, points) and ``cosine=0.99`` (worst-image cosine of the logits). Returns the normalized text (the
    manifest's and the stage key's form) or None."""
    if text is None or not str(text).strip():
        return None
    values = {}
    for part in str(text).split(','):
        key, sep, value = part.partition('=')
        key = key.strip()
        if not sep or key not in _TARGETS:
            raise ScalableViTError(f"--int8-target '{text}': expected agreement=PERCENT, drop=POINTS and/or "
                                   f"cosine=WORST_COSINE, e.g. 'agreement=99.5,drop=0.2'")
        if key in values:
            raise ScalableViTError(f"--int8-target '{text}': {key} is given twice; give each target once")
        try:
            number = float(value)
        except ValueError:
            raise ScalableViTError(f"--int8-target '{text}': '{value.strip()}' is not a number") from None
        high = _TARGETS[key][1]
        if not (0.0 <= number <= high):
            raise ScalableViTError(f"--int8-target '{text}': {key} must be between 0 and {high:g}")
        values[key] = number
    return ','.join(f'{k}={values[k]:g}' for k in _TARGETS if k in values)


def target_budget(budget: Dict[str, float], target: Optional[str]) -> Dict[str, float]:
    """The precision's budget tightened by ``target`` (a target looser than the budget changes nothing)."""
    tightened = dict(budget)
    for part in (target.split(',') if target else ()):
        key, _, value = part.partition('=')
        field_name, _, scale = _TARGETS[key]
        wanted = round(float(value) * scale, 9)
        tighter = min if field_name.startswith('max_') else max
        tightened[field_name] = tighter(budget[field_name], wanted)
    return tightened


# --------------------------------------------------------------------------------------- the search
@dataclass
class AutoResult:
    """What the search chose and every step that led there."""

    model: Any
    rerouted: int
    moved: List[str]
    met: bool
    message: str
    budget: Dict[str, float]
    steps: List[Dict[str, Any]] = field(default_factory=list)
    sensitivity: Dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def record(self) -> Dict[str, Any]:
        """JSON-ready facts for the manifest and the report."""
        return {'met': self.met, 'message': self.message, 'moved': list(self.moved), 'budget': self.budget,
                'steps': self.steps, 'evaluations': len(self.steps), 'seconds': round(self.seconds, 1),
                'max_steps': MAX_STEPS, 'time_limit_s': TIME_LIMIT_S, 'sensitivity_images': SENSITIVITY_IMAGES,
                'sensitivity': {k: round(v, 6) for k, v in self.sensitivity.items()}}


@dataclass
class _Candidate:
    moved: List[str]
    model: Any
    rerouted: int
    metrics: Dict[str, Any]
    violations: List[str]
    quantized_share: float  # MACs in the Q/DQ format (INT8 or FP8)


class _Search:
    """The state of one search: the build function, the evaluation set, the budget, the clock and the steps."""

    def __init__(self, build: Build, evaluation: Dict[str, np.ndarray], budget: Dict[str, float], fmt: str):
        self.build, self.evaluation, self.budget, self.fmt = build, evaluation, budget, fmt
        self.start = time.perf_counter()
        self.steps: List[Dict[str, Any]] = []
        self.last_step_s = 0.0
        self.best: Optional[_Candidate] = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def out_of_bounds(self) -> Optional[str]:
        """Why no further step may start (None: go on): the step count, or a step that would end past the limit."""
        if len(self.steps) >= MAX_STEPS:
            return f'{MAX_STEPS} evaluations'
        if self.elapsed() + self.last_step_s > TIME_LIMIT_S:
            return f'the {TIME_LIMIT_S:.0f} s limit'
        return None

    def try_moved(self, moved: List[str], action: str, node: Optional[str], sensitivity: Optional[float],
                  base_share: Optional[float]) -> _Candidate:
        """Build and evaluate one candidate; record it as a step."""
        began = time.perf_counter()
        model, rerouted = self.build(list(moved))
        metrics, violations = _evaluate(model, self.evaluation, self.budget, self.fmt)
        share = _quantized_share(model)
        cand = _Candidate(list(moved), model, rerouted, metrics, violations, share)
        self.last_step_s = time.perf_counter() - began
        drop = (None if metrics.get('top1_reference') is None
                else metrics['top1_reference'] - metrics['top1_candidate'])
        self.steps.append({
            'step': len(self.steps), 'action': action, 'node': node, 'sensitivity': sensitivity,
            'moved': len(moved), 'top1_agreement': metrics['top1_agreement'], 'cosine_min': metrics['cosine_min'],
            'top1_candidate': metrics['top1_candidate'], 'top1_drop': drop, 'quantized_mac_share': share,
            'quantized_mac_share_lost': 0.0 if base_share is None else base_share - share, 'met': not violations,
            'violations': violations, 'seconds': round(self.last_step_s, 2)})
        logger.info('auto step %d (%s%s): agreement %.2f %%, %s MACs %.1f %%, %s in %.1f s', len(self.steps) - 1,
                    action, f' {node}' if node else '', metrics['top1_agreement'] * 100, self.fmt.upper(),
                    share * 100,
                    'within budget' if not violations else 'over budget: ' + '; '.join(violations),
                    self.last_step_s)
        if self.best is None or _score(cand) > _score(self.best):
            self.best = cand
        return cand


def _score(cand: _Candidate) -> Tuple[bool, float, float, int]:
    """Better: within budget, then higher agreement, then higher worst-image cosine, then fewer layers moved."""
    return (not cand.violations, cand.metrics['top1_agreement'], cand.metrics['cosine_min'], -len(cand.moved))


def _evaluate(model: Any, evaluation: Dict[str, np.ndarray], budget: Dict[str, float], fmt: str
              ) -> Tuple[Dict[str, Any], List[str]]:
    """Accuracy of ``model`` (onnxruntime CPU) on the reference set against its FP32 logits, and what it breaks."""
    from ..core.compare import accuracy_metrics, budget_violations
    from ..core.runners import run_batches
    from .runners import OnnxRuntimeRunner
    with OnnxRuntimeRunner(model.SerializeToString(), name=f'onnxruntime-{fmt}-auto') as runner:
        logits = run_batches(runner, evaluation['input'], batch_size=EVAL_BATCH)
    metrics = accuracy_metrics(evaluation['logits'], logits, evaluation.get('labels'), reference_name='pytorch-fp32')
    return metrics, budget_violations(metrics, fmt, budget=budget)


def _quantized_share(model: Any) -> float:
    from .census import census, layers_of
    share = census(layers_of(model))['mac_share']
    return share['int8'] + share['fp8']


def _sensitivity(fp32: Any, candidate: Any, images: Any) -> Dict[str, float]:
    """Local error of every quantized node of ``candidate`` on ``images`` (an array or a ``data.StoredImages``,
    at most SENSITIVITY_IMAGES of them read)."""
    from ..data.store import image_batches
    from .divergence import local_errors, measure
    picks = None
    if len(images) > SENSITIVITY_IMAGES:  # evenly spread over the set, deterministic
        picks = np.linspace(0, len(images) - 1, SENSITIVITY_IMAGES).round().astype(int).tolist()
    found, metrics = measure(fp32, candidate, np.concatenate(list(image_batches(images, SENSITIVITY_IMAGES, picks))))
    return local_errors(found, metrics)


def search(build: Build, fp32: Any, calibration: Any, evaluation: Dict[str, np.ndarray],
           budget: Dict[str, float], fmt: str = 'int8') -> AutoResult:
    """The fewest layers to move out of INT8 for ``budget`` (see the module docstring); never raises on a miss.

    ``build(moved)`` returns the deployable graph with ``moved`` (node names) out of INT8 and the number of inputs
    it rerouted; ``evaluation`` is the reference set: 'input', FP32 'logits', optional 'labels'; ``fmt`` the Q/DQ
    format ('int8' or 'fp8'), for the messages and the budget's name.
    """
    state = _Search(build, evaluation, budget, fmt)
    name = fmt.upper()
    current = state.try_moved([], 'start', None, None, None)
    base_share = current.quantized_share
    sensitivity: Dict[str, float] = {}
    stop = None
    if current.violations:
        sensitivity = _sensitivity(fp32, current.model, calibration)
        ranked = sorted(sensitivity, key=lambda n: -sensitivity[n])
        logger.info('auto: %d %s layers ranked by local error on %d images; most sensitive: %s', len(ranked), name,
                    min(len(calibration), SENSITIVITY_IMAGES),
                    ', '.join(f'{n} ({sensitivity[n]:.3g})' for n in ranked[:3]))
        current, stop = _forward(state, current, ranked, sensitivity, base_share)
        if not current.violations:
            current, stop = _prune(state, current, sensitivity, base_share)
    chosen = current if not current.violations else state.best
    met = not chosen.violations
    if met:
        message = (f'{name} budget met after moving {len(chosen.moved)} layer(s) out of {name} '
                   f"({len(state.steps)} evaluations, {state.elapsed():.0f} s): agreement "
                   f"{chosen.metrics['top1_agreement'] * 100:.2f} %, {name} MACs {chosen.quantized_share * 100:.1f} %")
    else:
        message = (f'{name} budget not met within the bound ({stop or f"every {name} layer tried"}): best agreement '
                   f"{chosen.metrics['top1_agreement'] * 100:.2f} % after moving {len(chosen.moved)} layer(s); "
                   f"still over: {'; '.join(chosen.violations)}")
    (logger.info if met else logger.warning)('auto: %s', message)
    return AutoResult(model=chosen.model, rerouted=chosen.rerouted, moved=chosen.moved, met=met, message=message,
                      budget=budget, steps=state.steps, sensitivity=sensitivity, seconds=state.elapsed())


def _forward(state: _Search, current: _Candidate, ranked: Sequence[str], sensitivity: Dict[str, float],
             base_share: float) -> Tuple[_Candidate, Optional[str]]:
    """Move layers out of INT8, most sensitive first, until the budget holds or a bound is reached.

    A move that does not bring the logits closer to FP32 (mean cosine over the reference set, a continuous measure
    where agreement moves by single images) is undone: the layer stays INT8 and the next one is tried.
    """
    for node in ranked:
        stop = state.out_of_bounds()
        if stop:
            return current, stop
        trial = state.try_moved(current.moved + [node], 'move', node, sensitivity[node], base_share)
        if not trial.violations:
            return trial, None
        if trial.metrics['cosine_mean'] > current.metrics['cosine_mean']:
            current = trial
        else:
            state.steps[-1]['action'] = 'move, undone (no gain)'
    return current, None


def _prune(state: _Search, current: _Candidate, sensitivity: Dict[str, float], base_share: float
           ) -> Tuple[_Candidate, Optional[str]]:
    """Give moved layers back to INT8, least sensitive first, while the budget holds (the last move was needed)."""
    for node in sorted(current.moved[:-1], key=lambda n: sensitivity[n]):
        stop = state.out_of_bounds()
        if stop:
            return current, stop
        trial = state.try_moved([n for n in current.moved if n != node], f'back to {state.fmt.upper()}', node,
                                sensitivity[node], base_share)
        if not trial.violations:
            current = trial
    return current, None
