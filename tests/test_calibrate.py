"""INT8 activation calibration (scalablevit.host.calibrate): batch-independent by construction, the scales of
modelopt's own max calibration on the same data, entropy and percentile thresholds where the distribution puts them,
and the pipeline's INT8 gate at every calibration batch."""
import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from scalablevit.core.numerics import UNIT_ROUNDOFF, rounding_depth
from scalablevit.host.calibrate import (NUM_BINS, TensorHistogram, quantized_activations, scales_of, threshold)
from scalablevit.host.pipeline import HostOptions, HostPipeline
from scalablevit.host.quantize import quantize_int8
from scalablevit.models.scalablevit import model_config
from test_quantize import fp32  # noqa: F401 (the fixture: a random-weight fmnist ONNX and its images)


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
    quantize_int8(fp32_onnx, ours, images, method='max', policy='none', high_precision_dtype='fp32', batch_size=3)
    mine, reference = _activation_scales(ours), _activation_scales(theirs)
    assert set(mine) == set(reference) and len(mine) > 20
    # The same data and method; what may differ is how onnxruntime computed each activation (its calibration graph
    # fuses ops that ours, which reads other outputs, does not): FP32 kernels' rounding through at most the model's
    # depth (core.numerics), plus the scale's own division.
    bound = rounding_depth(model_config('fmnist')['depths']) * UNIT_ROUNDOFF['fp32'] + 2 ** -23
    for tensor, scale in mine.items():
        assert scale == pytest.approx(reference[tensor], rel=bound), tensor


@pytest.mark.parametrize('method', ['max', 'entropy', 'percentile'])
def test_every_method_gives_the_same_scales_at_any_batch(fp32, tmp_path, method):  # noqa: F811
    fp32_onnx, images = fp32[0], fp32[1][:8]
    files = []
    for batch in (1, 2, 8):
        files.append(tmp_path / f'{batch}.onnx')
        quantize_int8(fp32_onnx, files[-1], images, method=method, batch_size=batch)
    scales = [_activation_scales(f) for f in files]
    assert scales[0] == scales[1] == scales[2] and len(scales[0]) > 20


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
