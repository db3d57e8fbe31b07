"""INT8 activation calibration (scalablevit.host.calibrate): batch-independent by construction, the scales of
modelopt's own max calibration on the same data, entropy and percentile thresholds where the distribution puts them,
and the pipeline's INT8 gate at every calibration batch."""
import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from scalablevit.core.numerics import UNIT_ROUNDOFF, rounding_depth
from scalablevit.host.calibrate import (ENTROPY_LEVELS, ENTROPY_STRIDE, METHODS, NUM_BINS, TensorHistogram,
                                        _entropy_bins, calibrate, quantized_activations, scales_of, threshold)
from scalablevit.host.pipeline import HostOptions, HostPipeline
from scalablevit.host.quantize import quantize_qdq
from scalablevit.models.scalablevit import model_config
from test_quantize import _qdq_scales, fp32  # noqa: F401 (the fixture: a random-weight fmnist ONNX and its images)


def _histogram(values: np.ndarray, batch: int) -> TensorHistogram:
    hist = TensorHistogram()
    for start in range(0, len(values), batch):
        hist.add(values[start:start + batch])
    return hist


def test_the_histogram_does_not_depend_on_the_batch_or_the_order():
    rng = np.random.default_rng(0)
    # a heavy tail, a value exactly on a power of two, exact zeros: what merges and edges must get right
    values = np.concatenate([rng.standard_t(2, size=(64, 500)).astype(np.float32), np.full((1, 500), 4.0, np.float32),
                             np.zeros((1, 500), np.float32)])
    whole = _histogram(values, len(values))
    for batch in (1, 2, 7, 64):
        for order in (values, values[::-1]):
            part = _histogram(order, batch)
            assert np.array_equal(part.counts, whole.counts) and part.exponent == whole.exponent
            assert part.amax == whole.amax
    # the histogram is that of all values on [0, 2^e): the bins np.histogram gives on the same edges
    assert np.array_equal(whole.counts, np.histogram(np.abs(values), whole.edges())[0])
    assert whole.counts.sum() == values.size and whole.amax < 2.0 ** whole.exponent <= 2 * whole.amax


def test_thresholds_sit_where_the_distribution_puts_them():
    rng = np.random.default_rng(1)
    gauss = _histogram(rng.normal(size=200_000).astype(np.float32), 10_000)
    uniform = _histogram(rng.uniform(-1, 1, size=200_000).astype(np.float32), 10_000)
    assert threshold(gauss, 'max') == pytest.approx(np.abs(gauss.amax))
    # entropy clips a Gaussian's tail, ignores a few far outliers entirely, and keeps a uniform distribution whole
    assert 2.5 < threshold(gauss, 'entropy') < gauss.amax
    outliers = _histogram(np.concatenate([rng.normal(size=200_000), np.full(10, 50.0)]).astype(np.float32), 10_000)
    assert outliers.amax == 50.0 and threshold(outliers, 'entropy') < 10.0
    assert threshold(uniform, 'entropy') > 0.95 * uniform.amax
    # the 99.99th percentile of |N(0, 1)| is 3.89; one bin of the histogram is the resolution
    bin_width = 2.0 ** gauss.exponent / NUM_BINS
    assert abs(threshold(gauss, 'percentile') - 3.8906) < 2 * bin_width + 0.05
    zeros = _histogram(np.zeros((4, 8), np.float32), 2)
    assert all(threshold(zeros, m) == 0.0 for m in ('max', 'entropy', 'percentile'))
    assert scales_of({'z': zeros}, 'max')['z'] > 0  # a dead tensor still gets a valid (tiny) scale


def _kl_by_definition(hist: np.ndarray, i: int) -> float:
    """KL(p || q) of candidate ``i`` bin by bin, as TensorRT's entropy calibration defines it."""
    p = hist[:i].copy()
    p[-1] += hist[i:].sum()
    levels = (np.arange(i) * ENTROPY_LEVELS) // i
    nonzero = hist[:i] > 0
    q = np.zeros(i)
    for level in range(ENTROPY_LEVELS):
        bins = (levels == level) & nonzero
        if bins.any():
            q[bins] = hist[:i][levels == level].sum() / bins.sum()
    mask = p > 0
    if np.any(q[mask] == 0):  # data where q has nothing (also when every bin below i is empty)
        return np.inf
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


@pytest.mark.parametrize('shape', ['gauss', 'heavy tail', 'far outliers', 'zero spike', 'narrow'])
def test_the_entropy_search_minimizes_the_divergence_as_defined(shape):
    """The prefix-sum search picks the candidate the bin-by-bin KL divergence picks."""
    rng = np.random.default_rng(len(shape))
    values = {'gauss': rng.normal(size=100_000), 'heavy tail': rng.standard_t(2, size=100_000),
              'far outliers': np.concatenate([rng.normal(size=100_000), 80 * rng.normal(size=20)]),
              'zero spike': np.concatenate([rng.normal(size=50_000), np.zeros(400_000)]),
              'narrow': rng.uniform(0.9, 1.0, size=10_000)}[shape]
    hist = _histogram(values.astype(np.float32)[None], 1)
    counts = hist.counts.astype(np.float64)
    counts[0] = counts[1]
    used = int(np.flatnonzero(counts)[-1]) + 1
    chosen = _entropy_bins(hist.counts)
    divergences = {i: _kl_by_definition(counts, i) for i in range(ENTROPY_LEVELS, used + 1, ENTROPY_STRIDE)}
    best = min(divergences, key=divergences.get)
    assert divergences[chosen] == pytest.approx(divergences[best], rel=1e-9, abs=1e-12), (chosen, best)
    if shape == 'narrow':  # every value in the top tenth: clipping only loses information
        assert chosen == used


def test_entropy_keeps_the_maximum_when_no_threshold_can_be_compared():
    """Values all in the top 1/32 of the range leave every candidate's low bins empty: no finite divergence."""
    hist = _histogram(np.full((1, 100), 7.9, np.float32), 1)
    assert threshold(hist, 'entropy') == threshold(hist, 'max') == pytest.approx(7.9)


def _activation_scales(path) -> dict:
    model = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return {n.input[0]: inits[n.input[1]].item() for n in model.graph.node
            if n.op_type == 'QuantizeLinear' and n.input[0] in quantized_activations(model)}


def test_max_scales_are_modelopts_own_on_the_same_data(fp32, tmp_path):  # noqa: F811
    """modelopt's max calibration over every image (its own onnxruntime calibrator) and ours give the same scale for
    every quantized activation: ours differs in which tensors it reads and how fast, not in the result."""
    from modelopt.onnx.quantization import quantize
    fp32_onnx, images = fp32[0], fp32[1][:8]
    theirs = tmp_path / 'modelopt.onnx'
    quantize(str(fp32_onnx), quantize_mode='int8', calibration_method='max', calibration_data=images,
             calibration_eps=['cpu'], high_precision_dtype='fp32', output_path=str(theirs))
    ours = tmp_path / 'ours.onnx'
    quantize_qdq(fp32_onnx, ours, images, method='max', policy='none', high_precision_dtype='fp32', batch_size=3)
    mine, reference = _activation_scales(ours), _activation_scales(theirs)
    assert set(mine) == set(reference) and len(mine) > 20
    # The same data and method; what may differ is how onnxruntime computed each activation (its calibration graph
    # fuses ops that ours, which reads other outputs, does not): FP32 kernels' rounding through at most the model's
    # depth (core.numerics), plus the scale's own division.
    bound = rounding_depth(model_config('fmnist')['depths']) * UNIT_ROUNDOFF['fp32'] + 2 ** -23
    for tensor, scale in mine.items():
        assert scale == pytest.approx(reference[tensor], rel=bound), tensor


def test_the_graph_and_every_scale_are_the_same_at_any_batch(fp32, tmp_path):  # noqa: F811
    """Batches 1, 3 (a ragged last batch) and 8: the same Q/DQ graph (modelopt's GEMV exclusions are decided at a
    probe batch, not on the first calibration batch) and the same scales, bit for bit, with the default method."""
    fp32_onnx, images = fp32[0], fp32[1][:16]
    models = []
    for batch in (1, 3, 8):
        quantize_qdq(fp32_onnx, tmp_path / f'{batch}.onnx', images, batch_size=batch)
        models.append(onnx.load(str(tmp_path / f'{batch}.onnx')))
    graphs = [[(n.op_type, n.name, tuple(n.input)) for n in m.graph.node] for m in models]
    assert graphs[0] == graphs[1] == graphs[2]
    scales = [{node: values.tobytes() for node, values in _qdq_scales(tmp_path / f'{batch}.onnx').items()}
              for batch in (1, 3, 8)]
    assert scales[0] == scales[1] == scales[2] and len(scales[0]) > 100


def test_every_method_reads_one_histogram_that_does_not_depend_on_the_batch(fp32):  # noqa: F811
    """The histograms onnxruntime's activations give are the same at batches 1 and 8, so is every method's scale."""
    fp32_onnx, images = fp32[0], fp32[1][:16]
    model = onnx.load(str(fp32_onnx), load_external_data=False)
    weights = {t.name for t in model.graph.initializer}
    tensors = sorted({t for n in model.graph.node if n.op_type == 'MatMul' for t in n.input if t not in weights})
    runs = [calibrate(fp32_onnx, tensors, (images[i:i + b] for i in range(0, len(images), b)), 'input')
            for b in (1, 8)]
    assert len(tensors) > 40
    for t in tensors:
        assert np.array_equal(runs[0][t].counts, runs[1][t].counts), t
        assert (runs[0][t].exponent, runs[0][t].amax) == (runs[1][t].exponent, runs[1][t].amax), t
    for method in METHODS:
        assert scales_of(runs[0], method) == scales_of(runs[1], method), method


def test_the_int8_gate_passes_on_fashion_mnist_at_every_calibration_batch(fashion_mnist_installed, tmp_path):
    """Through the pipeline, at calibration batches 1, 2 and 8: the same INT8 file each time, and its gate passes."""
    reports = []
    for batch in (1, 2, 8):
        out = tmp_path / f'batch{batch}'
        reports.append(HostPipeline(HostOptions(model='fmnist', precision='int8', out=out, calib_size=64,
                                                val_size=1000, calib_batch=batch)).run())
        assert reports[-1]['status'] == 'passed', reports[-1]['status']
        quantization = json.loads((out / 'manifest.json').read_text())['quantization']
        assert quantization['method'] == 'entropy' and quantization['calibration_batch_size'] == batch
    assert len({r['accuracy']['top1_candidate'] for r in reports}) == 1
    assert len({tuple(f['sha256'] for f in r['files']) for r in reports}) == 1  # the very same INT8 ONNX
