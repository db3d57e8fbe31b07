"""INT8 and FP8 activation calibration: batch-independent ranges of exactly the tensors a Q/DQ graph quantizes, on
every core.

modelopt's ONNX INT8 path calibrates with onnxruntime's calibrators, which (1) expose and histogram every input and
output of every MatMul/Conv/Gemm, quantized or not, in Python on one core, and (2) for ``entropy`` set each
tensor's histogram range from the first batch and only add whole bins later, so the scales depend on the
calibration batch (modelopt issue #619; onnxruntime's default is also only 128 bins, too few for its KL search to
move the threshold below the maximum). Here, instead:

* the tensors are the activation inputs of the QuantizeLinear nodes of the Q/DQ graph modelopt placed, and nothing
  else (ScalableViT-S: 13 M values per image instead of about 80 M);
* one pass over the images; per tensor the maximum of |x| and a histogram of |x| over ``NUM_BINS`` bins on the
  range [0, 2^e), e the smallest exponent above every value seen. When a batch exceeds the range, e grows and bins
  merge in pairs; with a power-of-two range every value's bin is exact (a multiplication by a power of two), and
  bin k at e + 1 is bins 2k and 2k + 1 at e, so the final histogram is that of all images at once, bit for bit,
  whatever the batch size or order;
* the tensors of a batch are reduced on a thread pool (numpy releases the GIL) while onnxruntime runs the next one;
* methods: ``max`` (the maximum of |x|), ``entropy`` (TensorRT's calibration: the threshold whose 128-level
  quantization of the histogram loses the least information, KL divergence), ``percentile`` (the
  ``PERCENTILE`` quantile of |x|, read off the histogram).

A scale is threshold / 127 (symmetric INT8, as modelopt and onnxruntime compute it; threshold / 448 for FP8 E4M3),
written into the graph's scale initializer; weights keep modelopt's per-channel scales.
"""
import concurrent.futures
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np

from ..core.errors import ScalableViTError

logger = logging.getLogger(__name__)

__all__ = ['METHODS', 'NUM_BINS', 'TensorHistogram', 'quantized_activations', 'fixed_thresholds', 'calibrate',
           'threshold', 'scales_of']

METHODS = ('max', 'entropy', 'percentile')
NUM_BINS = 4096  # over [0, 2^e): the values seen fill at least the lower half
ENTROPY_LEVELS = 128  # the positive INT8 levels a threshold is quantized to (TensorRT's entropy calibration)
ENTROPY_STRIDE = 4  # candidate thresholds every 4 bins: 512 candidates over the full histogram
PERCENTILE = 99.99
INT8_MAX = 127
# What the scales depend on beyond the images and the method: part of the quantize stage key.
CALIBRATOR = ('scalablevit.host.calibrate/1', NUM_BINS, ENTROPY_LEVELS, ENTROPY_STRIDE, PERCENTILE)


@dataclass
class TensorHistogram:
    """|x| of one tensor over every image so far: its maximum and a histogram on [0, 2^exponent)."""

    counts: np.ndarray = field(default_factory=lambda: np.zeros(NUM_BINS, dtype=np.int64))
    exponent: Optional[int] = None  # None: nothing but zeros seen yet
    amax: float = 0.0

    def add(self, values: np.ndarray) -> None:
        magnitude = np.abs(values.ravel()).astype(np.float32, copy=False)
        top = float(magnitude.max()) if magnitude.size else 0.0
        if not np.isfinite(top):
            raise ScalableViTError(f'calibration met a non-finite activation ({top}): the model overflows on these '
                                   'images')
        self.amax = max(self.amax, top)
        if top > 0:
            self._grow(int(np.frexp(top)[1]))  # top < 2^exponent
        if self.exponent is None:
            self.counts[0] += magnitude.size
            return
        # bin = floor(|x| * NUM_BINS / 2^e): a power-of-two factor, so exact in float32
        index = np.multiply(magnitude, np.float32(np.ldexp(NUM_BINS, -self.exponent))).astype(np.int64)
        self.counts += np.bincount(index, minlength=NUM_BINS)

    def _grow(self, exponent: int) -> None:
        if self.exponent is None:
            self.exponent = exponent
        while exponent > self.exponent:  # double the range: bins 2k and 2k + 1 become bin k
            self.counts = np.concatenate([self.counts.reshape(-1, 2).sum(axis=1),
                                          np.zeros(NUM_BINS // 2, dtype=np.int64)])
            self.exponent += 1

    def edges(self) -> np.ndarray:
        return np.ldexp(np.arange(NUM_BINS + 1, dtype=np.float64), (self.exponent or 0) - int(np.log2(NUM_BINS)))


def threshold(hist: TensorHistogram, method: str) -> float:
    """The calibration threshold of one tensor (its scale is threshold / 127)."""
    if method == 'max' or hist.exponent is None:
        return hist.amax
    counts, edges = hist.counts, hist.edges()
    if method == 'percentile':
        cdf = np.cumsum(counts) / counts.sum()
        return float(min(edges[int(np.searchsorted(cdf, PERCENTILE / 100.0)) + 1], hist.amax))
    if method == 'entropy':
        return float(min(edges[_entropy_bins(counts)], hist.amax))
    raise ScalableViTError(f'unknown calibration method {method!r} (one of {", ".join(METHODS)})')


def _entropy_bins(counts: np.ndarray) -> int:
    """The number of histogram bins below the entropy threshold: the candidate i whose reference distribution p
    (bins [0, i), everything above folded into bin i - 1) differs least, in KL divergence, from q, its quantization
    to ENTROPY_LEVELS levels (each level's count spread evenly over its non-empty bins). The first bin (|x| near
    0, mostly exact zeros after ReLU-like ops and padding) is set to its neighbour's count, as TensorRT does.

    Every candidate at once, from prefix sums: q is constant on a level's non-empty bins, so with P = sum p and
    Q = sum q, KL(p/P || q/Q) = (sum p log p - sum_level S log(S / n) - tail log q_last) / P - log P + log Q, where
    S and n are a level's count and non-empty bins (tests/test_calibrate.py holds it to the bin-by-bin definition)."""
    hist = counts.astype(np.float64)
    hist[0] = hist[1]
    used = int(np.flatnonzero(hist)[-1]) + 1 if hist.any() else 1
    if used <= ENTROPY_LEVELS:
        return used
    candidates = np.arange(ENTROPY_LEVELS, used + 1, ENTROPY_STRIDE)
    total = hist.sum()
    below = np.concatenate([[0.0], np.cumsum(hist)])  # below[k]: the count of bins [0, k)
    nonempty = np.concatenate([[0], np.cumsum(hist > 0)])
    plogp = np.concatenate([[0.0], np.cumsum(_xlogx(hist))])
    # level g of candidate i: the bins b with (b * LEVELS) // i == g, [ceil(g i / LEVELS), ceil((g + 1) i / LEVELS))
    edges = -((-np.arange(ENTROPY_LEVELS + 1)[None, :] * candidates[:, None]) // ENTROPY_LEVELS)
    level_sum, level_bins = np.diff(below[edges], axis=1), np.diff(nonempty[edges], axis=1)
    log_q = np.log(np.where(level_bins > 0, level_sum, 1.0) / np.maximum(level_bins, 1))  # 0 where a level is empty
    tail, last = total - below[candidates], hist[candidates - 1]
    p_log_p = plogp[candidates - 1] + _xlogx(last + tail)
    p_log_q = (level_sum * log_q).sum(axis=1) + tail * log_q[:, -1]
    with np.errstate(divide='ignore'):
        divergence = (p_log_p - p_log_q) / total - np.log(total) + np.log(total - tail)
    divergence[(last == 0) & (tail > 0)] = np.inf  # the tail lands in an empty bin, where q is 0
    if not np.isfinite(divergence).any():  # every value in the top 1/32 of the range: nothing to compare, keep all
        return used
    return int(candidates[int(np.argmin(divergence))])


def _xlogx(x: np.ndarray) -> np.ndarray:
    return x * np.log(np.where(x > 0, x, 1.0))


def quantized_activations(qdq_model: Any) -> List[str]:
    """The activation tensors a Q/DQ graph quantizes: the inputs of its QuantizeLinear nodes that are not weights."""
    weights = {t.name for t in qdq_model.graph.initializer}
    seen: Dict[str, None] = {}
    for node in qdq_model.graph.node:
        if node.op_type == 'QuantizeLinear' and node.input[0] not in weights:
            seen.setdefault(node.input[0])
    return list(seen)


def fixed_thresholds(qdq_model: Any, tensors: Sequence[str]) -> Dict[str, float]:
    """Tensors whose range is known without data: a Softmax output is a probability, [0, 1] (onnxruntime and
    modelopt fix it the same way), whatever the images."""
    wanted = set(tensors)
    return {n.output[0]: 1.0 for n in qdq_model.graph.node if n.op_type == 'Softmax' and n.output[0] in wanted}


def calibrate(fp32_file: Path, tensors: Sequence[str], batches: Iterable[np.ndarray], input_name: str,
              advance: Callable[[int], None] = lambda n: None, provider: str = 'CPUExecutionProvider'
              ) -> Dict[str, TensorHistogram]:
    """Histograms of ``tensors`` of the FP32 model in ``fp32_file`` over ``batches``: the model runs with those
    tensors as extra outputs, and each batch's tensors are reduced on a thread pool while the next batch runs."""
    import onnx
    import onnxruntime as ort
    model = onnx.load(str(fp32_file))
    outputs = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.ValueInfoProto(name=t) for t in tensors if t not in outputs)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=[provider])
    del model
    hists = {t: TensorHistogram() for t in tensors}
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        pending: List[concurrent.futures.Future] = []
        for batch in batches:
            values = session.run(list(tensors), {input_name: batch})
            for done in pending:  # the previous batch's reductions, overlapped with this batch's run
                done.result()
            pending = [pool.submit(hists[t].add, v) for t, v in zip(tensors, values)]
            advance(len(batch))
        for done in pending:
            done.result()
    return hists


def scales_of(hists: Dict[str, TensorHistogram], method: str, fixed: Optional[Dict[str, float]] = None,
              qmax: float = INT8_MAX) -> Dict[str, float]:
    """tensor -> scale: threshold / ``qmax`` (127 for INT8, 448 for FP8 E4M3: ``qdq.QDQ_FORMATS``), ``fixed``
    thresholds as given; a tensor that was zero everywhere gets the smallest positive scale.

    The thresholds do not depend on the format: ``entropy`` is TensorRT's INT8 KL search for both, as modelopt's
    FP8 path calibrates INT8 and rescales by 448 / 127."""
    found = {t: threshold(h, method) for t, h in hists.items()}
    return {t: max(v, np.finfo(np.float32).tiny) / qmax for t, v in {**found, **(fixed or {})}.items()}
