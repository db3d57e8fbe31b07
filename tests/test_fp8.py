"""FP8 (E4M3) bundles on real exported models: the trained Fashion-MNIST ScalableViT through the host pipeline.

What an FP8 bundle must be, checked on the files themselves: Q/DQ with FLOAT8E4M3FN zero points of 0 and scales
of the calibrated threshold over 448 (INT8's over 127); Q/DQ on the layers its INT8 twin quantizes less the convs
TensorRT has no FP8 kernel for; a census that counts FP8 MACs; a gate that passes the trained model and fails a broken
file; the outlier-channel model that INT8 max calibration collapses on; refusals where no FP8 tensor core exists
(every Orin, DLA, TensorRT 8.6). Built on 256 TRAIN images to calibrate and 1,000 TEST images to validate.
"""
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from scalablevit.core.errors import ScalableViTError

pytest.importorskip('modelopt.onnx.quantization')
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tools'))
SMALL = dict(model='scalable_vit_fmnist', calib_size=256, val_size=1000)
FLOAT8E4M3FN = 17  # onnx.TensorProto.FLOAT8E4M3FN
FP8_MAX, INT8_MAX = 448.0, 127.0

pytestmark = pytest.mark.usefixtures('fashion_mnist_installed')


def _build(out, precision, **options):
    from scalablevit.host.pipeline import HostOptions, HostPipeline
    return HostPipeline(HostOptions(precision=precision, out=out, **{**SMALL, **options})).run()


@pytest.fixture(scope='module')
def bundles(tmp_path_factory):
    """An FP8 bundle (default calibration: max) and its INT8 twin calibrated the same way on the same images."""
    out = tmp_path_factory.mktemp('fp8')
    return {'fp8': (out / 'fp8', _build(out / 'fp8', 'fp8')),
            'int8': (out / 'int8', _build(out / 'int8', 'int8', int8_method='max'))}


def _model(bundles, precision):
    import onnx
    return onnx.load(str(bundles[precision][0] / f'model.{precision}.onnx'))


def _scales(model):
    """Q input tensor -> scale array, for every QuantizeLinear (activations and weights)."""
    from onnx import numpy_helper
    inits = {t.name: t for t in model.graph.initializer}
    return {n.input[0]: numpy_helper.to_array(inits[n.input[1]]).astype(np.float64)
            for n in model.graph.node if n.op_type == 'QuantizeLinear'}


# ------------------------------------------------------------------------------------------ the file
def test_fp8_qdq_are_e4m3_with_zero_points_of_zero(bundles):
    from onnx import numpy_helper

    from scalablevit.host.export import onnx_precision, read_metadata
    from scalablevit.host.qdq import check_zero_points, opset_of, qdq_format
    model = _model(bundles, 'fp8')
    inits = {t.name: t for t in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ('QuantizeLinear', 'DequantizeLinear')]
    assert qdq and all(inits[n.input[2]].data_type == FLOAT8E4M3FN for n in qdq)
    assert not any(numpy_helper.to_array(inits[n.input[2]]).astype(np.float32).any() for n in qdq)
    assert check_zero_points(model, fmt='fp8') == len(qdq)
    assert qdq_format(model) == onnx_precision(model) == 'fp8' and opset_of(model) >= 19
    assert read_metadata(model)['quantization.format'] == 'fp8'
    assert qdq_format(_model(bundles, 'int8')) == 'int8'
    with pytest.raises(ScalableViTError, match='TensorRT needs int8 0'):
        check_zero_points(model, fmt='int8')
    # every Q reads FP16 with an FP16 scale and every DQ writes FP16 (TensorRT issue 4832: a mixed FP32/FP16 Q/DQ
    # fails the strongly typed build on sm_87; FP16 throughout is what builds)
    from scalablevit.host.export import infer_shapes
    graph = infer_shapes(model).graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.input, *graph.value_info, *graph.output)}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    sides = {(types.get(n.input[0] if n.op_type == 'QuantizeLinear' else n.output[0]), types.get(n.input[1]))
             for n in qdq}
    assert sides == {(10, 10)}  # TensorProto.FLOAT16


def test_scales_are_the_int8_thresholds_over_448(bundles):
    """Same images, same method (max): every tensor both files quantize has threshold = scale x 448 in FP8 and
    scale x 127 in INT8, activations (our calibration) and per-channel weights (modelopt's) alike."""
    manifest = json.loads((bundles['fp8'][0] / 'manifest.json').read_text())
    assert manifest['quantization']['method'] == 'max' and manifest['quantization']['format'] == 'fp8'
    fp8, int8 = _scales(_model(bundles, 'fp8')), _scales(_model(bundles, 'int8'))
    shared = sorted(set(fp8) & set(int8))
    assert len(shared) >= 0.8 * len(fp8)
    for tensor in shared:  # each scale is stored FP16 (AutoCast: the dtype of what it quantizes), rounded 2^-11
        np.testing.assert_allclose(fp8[tensor] * FP8_MAX, int8[tensor] * INT8_MAX, rtol=2 * 2 ** -11, err_msg=tensor)


def test_fp8_quantizes_its_int8_twins_layers_less_the_convs_without_fp8_kernels(bundles):
    """modelopt's FP8 placement (TensorRT's FP8 limits: no depthwise/grouped FP8 conv, no filter over 32 taps, no
    channels <= 16) on the same policy: every MatMul the INT8 twin quantizes is FP8, the convs left out are those."""
    from scalablevit.host.qdq import quantized_nodes
    fp8_model, int8_model = _model(bundles, 'fp8'), _model(bundles, 'int8')
    fp8, int8 = set(quantized_nodes(fp8_model)), set(quantized_nodes(int8_model))
    assert fp8 <= int8
    nodes = {n.name: n for n in int8_model.graph.node}
    assert all(nodes[n].op_type == 'Conv' for n in int8 - fp8)
    inits = {t.name: tuple(t.dims) for t in fp8_model.graph.initializer}
    producers = {o: n for n in fp8_model.graph.node for o in n.output}

    def weight_shape(node):  # the initializer behind the weight's Q/DQ or Cast
        tensor = node.input[1]
        while tensor in producers and producers[tensor].op_type in ('QuantizeLinear', 'DequantizeLinear', 'Cast'):
            tensor = producers[tensor].input[0]
        return inits[tensor]
    shapes = {n.name: weight_shape(n) for n in fp8_model.graph.node if n.op_type == 'Conv'}
    for name in int8 - fp8:
        out_ch, in_ch, *kernel = shapes[name]
        assert in_ch <= 16 or out_ch <= 16 or np.prod(kernel) > 32, name  # depthwise convs have in_ch 1
    assert any(shapes[n][1] == 1 for n in int8 - fp8)  # LIM / PEG / reduction: the depthwise ones
    for name in fp8 & set(shapes):
        out_ch, in_ch, *kernel = shapes[name]
        assert in_ch > 16 and out_ch > 16 and np.prod(kernel) <= 32, name


def test_census_counts_fp8_macs(bundles):
    from scalablevit.host.census import census, layers_of
    fp8_layers, int8_layers = layers_of(_model(bundles, 'fp8')), layers_of(_model(bundles, 'int8'))
    fp8, int8 = census(fp8_layers), census(int8_layers)
    assert fp8['macs']['total'] == int8['macs']['total'] and fp8['macs']['int8'] == 0 == int8['macs']['fp8']
    moved = {la.name for la in int8_layers if la.dtype == 'int8'} - {la.name for la in fp8_layers if la.dtype == 'fp8'}
    assert fp8['macs']['fp8'] == int8['macs']['int8'] - sum(la.macs for la in int8_layers if la.name in moved)
    assert 0.5 < fp8['mac_share']['fp8'] < int8['mac_share']['int8']
    assert fp8['weight_bytes']['fp8'] == sum(la.weight_bytes for la in fp8_layers if la.dtype == 'fp8')
    int8_weights = {la.name: la.weight_bytes for la in int8_layers}  # one byte a weight in either format
    one_byte = [la for la in fp8_layers if la.dtype == 'fp8' and la.op_type == 'MatMul' and la.weight_bytes]
    assert one_byte and all(la.weight_bytes == int8_weights[la.name] for la in one_byte)
    report = bundles['fp8'][1]
    assert report['census']['mac_share']['fp8'] == pytest.approx(fp8['mac_share']['fp8'])
    markdown = (bundles['fp8'][0] / 'report.md').read_text()
    assert '| op type | FP8 | FP16 | FP32 |' in markdown and 'not FP8 runs FP16' in markdown


# ------------------------------------------------------------------------------------------ the gate
def test_the_fp8_bundle_passes_its_gate_and_carries_its_estimates(bundles):
    from scalablevit.core.compare import budget_violations, load_budgets
    path, report = bundles['fp8']
    assert report['status'] == 'passed' and report['precision'] == 'fp8'
    assert budget_violations(report['accuracy'], 'fp8') == []
    manifest = json.loads((path / 'manifest.json').read_text())
    assert manifest['precision'] == 'fp8' and manifest['onnx']['fp8']['opset'] >= 19
    assert manifest['quantization']['min_tensorrt'] == '10.2'
    estimated = set(manifest['latency_estimate']['ms'])  # only GPUs with FP8 tensor cores
    assert {'h100-sxm', 'rtx-4090', 'l4'} <= estimated and not any(d.startswith('jetson') for d in estimated)
    assert 'a100' not in estimated and 't4' not in estimated
    assert load_budgets()['fp8']['min_top1_agreement'] >= 0.99


def test_a_broken_fp8_file_fails_the_gate(bundles):
    """Activation scales 64x too small: every activation above 448 x scale saturates. The gate's budget (the same file
    the engine build reads) catches it; a zero point of another format is refused by the file check."""
    from onnx import numpy_helper

    from scalablevit.core.bundle import Bundle
    from scalablevit.core.compare import accuracy_metrics, budget_verdict, check_budget
    from scalablevit.core.runners import run_batches
    from scalablevit.host.qdq import check_zero_points, qdq_format
    from scalablevit.host.runners import OnnxRuntimeRunner
    model = _model(bundles, 'fp8')
    inits = {t.name: t for t in model.graph.initializer}
    activation_scales = {n.input[1] for n in model.graph.node  # per-tensor: activations (weights are per channel)
                         if n.op_type in ('QuantizeLinear', 'DequantizeLinear') and not inits[n.input[1]].dims}
    for name in activation_scales:  # each once, whether a Q and its DQ share it or not
        value = numpy_helper.to_array(inits[name])
        inits[name].CopyFrom(numpy_helper.from_array((value / 64).astype(value.dtype), name))
    ref = Bundle.open(bundles['fp8'][0]).reference()
    with OnnxRuntimeRunner(model.SerializeToString(), name='broken-fp8') as runner:
        logits = run_batches(runner, ref['input'], batch_size=50)
    metrics = accuracy_metrics(ref['logits'], logits, ref.get('labels'))
    assert budget_verdict(metrics, 'fp8').failed  # the host gate (host.pipeline._validate)
    with pytest.raises(ScalableViTError, match='fp8'):  # the engine gate (device.pipeline.validate_engine)
        check_budget(metrics, 'fp8', 'TensorRT fp8 engine')
    zero_point = next(t for t in model.graph.initializer if t.data_type == FLOAT8E4M3FN)
    zero_point.CopyFrom(numpy_helper.from_array(np.zeros(tuple(zero_point.dims), np.int8), zero_point.name))
    with pytest.raises(ScalableViTError, match='zero point is element type 3'):
        check_zero_points(model, 'broken', fmt='fp8')
    with pytest.raises(ScalableViTError, match='mix or miss formats'):
        qdq_format(model)


def test_fp8_rescues_the_outlier_model_int8_max_collapses_on_and_auto_searches_fp8(tmp_path):
    """tools/massive_activations.py's three 200x LayerNorm channels: with max calibration INT8's uniform grid loses
    every small value of those tensors (tests/test_autoquant.py: the gate fails), FP8's relative grid keeps 3
    mantissa bits at every magnitude. Built with --int8-policy auto: the one search path, on FP8's budget."""
    from massive_activations import build

    from scalablevit.models.checkpoint import save_weights
    model, _ = build()
    weights = tmp_path / 'fmnist_massive.safetensors'
    save_weights(model, weights)
    report = _build(tmp_path / 'outliers-fp8', 'fp8', weights=weights, int8_method='max', int8_policy='auto')
    assert report['status'] == 'passed' and report['accuracy']['top1_agreement'] >= 0.99
    auto = report['int8_auto']
    assert auto['met'] and auto['message'].startswith('FP8 budget met') and auto['steps'][0]['action'] == 'start'
    assert auto['budget'] == json.loads((ROOT / 'scalablevit/core/accuracy_budgets.json').read_text())['fp8']


# ------------------------------------------------------------------------------------------ where FP8 runs
@pytest.mark.parametrize('target,message', [
    ('jetson-orin-nano', r'target jetson-orin-nano: Jetson Orin Nano .*compute capability 8\.7\) has no FP8 tensor'),
    ('jetson-agx-orin', r'compute capability 8\.7\) has no FP8 tensor cores: FP8 needs compute capability >= 8\.9'),
    ('jetson-agx-orin-dla', r'uses DLA, which runs FP16 and INT8 only'),
])
def test_an_fp8_bundle_for_an_orin_target_is_refused_before_any_work(target, message, tmp_path):
    from scalablevit.cli import build_engine
    with pytest.raises(ScalableViTError, match=message):
        build_engine.main(['--model', 'fmnist', '--precision', 'fp8', '--target', target,
                           '--out', str(tmp_path / 'b')])
    assert not (tmp_path / 'b').exists()


def test_an_fp8_bundle_taken_to_an_orin_is_refused_in_device_mode(bundles):
    from scalablevit.cli import build_engine
    with pytest.raises(ScalableViTError, match='compute capability 8.7'):
        build_engine.main(['--bundle', str(bundles['fp8'][0]), '--target', 'jetson-orin-nano'])


GPU = {'name': 'NVIDIA GeForce RTX 3090', 'compute_capability': '8.6', 'sm_count': 82, 'integrated': False}


@pytest.mark.parametrize('cc,trt,problem', [
    ('8.6', '10.3.0', r'cannot build an FP8 engine here: NVIDIA GeForce RTX 3090 \(compute capability 8\.6\) has no'),
    ('7.5', '10.3.0', r'it runs FP32, FP16 and INT8'),
    ('8.9', '10.3.0', None), ('9.0', '11.4.0', None), ('11.0', '10.16.1', None),
])
def test_the_engine_build_refuses_fp8_on_a_gpu_without_fp8(cc, trt, problem):
    from scalablevit.device.engine_rules import target_platform_problem
    from scalablevit.device.targets import load_target
    found = target_platform_problem(load_target('desktop'), 'fp8', trt, {**GPU, 'compute_capability': cc}, 0)
    assert (found is None) if problem is None else re.search(problem, found)


def test_fp8_needs_tensorrt_10_2_strongly_typed():
    from scalablevit.core import compat
    assert compat.onnx_opset_problem(19, 'fp8', '8.6.1') == ('FP8 bundles need TensorRT >= 10.2 (strongly typed FP8 '
                                                             'Q/DQ on convolutions and GEMMs), this is TensorRT 8.6.1')
    assert compat.onnx_opset_problem(19, 'fp8', '10.0.1') and compat.onnx_opset_problem(19, 'fp8', '10.2.0') is None


def test_the_peak_table_has_fp8_exactly_where_fp8_tensor_cores_are():
    from scalablevit.core import compat
    from scalablevit.core.peaks import device_limits, device_peak, load_peaks
    for key, entry in load_peaks().items():
        has = compat.version(entry['compute_capability'])[:2] >= compat.FP8_MIN_COMPUTE_CAPABILITY
        assert ('fp8_dense' in entry) == has == (device_limits(key)['fp8_tflops'] is not None), key
        if has:  # FP8 runs at the INT8 rate or, on GeForce with FP32 accumulate, half of it
            assert entry['fp8_dense'] in (entry['int8_dense'], entry['int8_dense'] / 2) and entry['fp8_source'], key
    assert device_peak('h100-sxm', 'fp8')['peak'] == 1979
    with pytest.raises(ScalableViTError, match=r'Jetson Orin Nano 8GB .*compute capability 8\.7\) has no FP8'):
        device_peak('jetson-orin-nano-8gb', 'fp8')


def test_the_estimate_runs_fp8_kernels_at_the_fp8_peak_and_refuses_orin(bundles):
    from scalablevit.host.costmodel import estimate
    from scalablevit.host.fusion import groups_of
    groups = groups_of(_model(bundles, 'fp8'))
    assert {g.dtype for g in groups if g.macs} >= {'fp8', 'fp16'}
    h100 = estimate(groups, 'h100-sxm', 8)
    assert h100['by_dtype_ms']['fp8'] > 0 and h100['latency_ms'] > 0
    with pytest.raises(ScalableViTError, match='has no FP8 tensor cores'):
        estimate(groups, 'jetson-agx-orin-64gb')


def test_the_self_test_bound_for_fp8_is_the_format_step_on_top_of_fp16():
    from scalablevit.core import numerics
    from scalablevit.device import selftest
    depths = selftest.FIXTURE_DEPTHS
    relative = numerics.rounding_depth(depths) * 2 ** -11 + 2 ** -3
    assert numerics.min_cosine('fp8', depths) == pytest.approx(1 - relative ** 2 / 2)
    assert selftest.SAME_GRAPH_MIN_COSINE['fp8'] == pytest.approx(numerics.min_cosine('fp8', depths))
    assert numerics.min_cosine('fp8', depths) < numerics.min_cosine('int8', depths)


# ------------------------------------------------------------------------------------------ serving
def test_deepstream_and_triton_exports_of_an_fp8_bundle_say_how_it_runs(bundles, tmp_path):
    """nvinfer has no FP8 network-mode and its own build is weakly typed: the config sets FP16, names an engine
    built strongly typed by trtexec and says why. Triton serves the FP8 ONNX with FP32 IO and says where it runs."""
    from scalablevit.serve.deepstream import NETWORK_MODE, export_deepstream
    from scalablevit.serve.triton import export_triton
    path = bundles['fp8'][0]
    record = export_deepstream(path, tmp_path / 'ds')
    props = record['properties']
    assert record['precision'] == 'fp8' and props['network-mode'] == str(NETWORK_MODE['fp16'])
    assert props['model-engine-file'].endswith('_fp8.engine') and '--stronglyTyped' in record['engine_build']
    text = (tmp_path / 'ds' / record['config']).read_text()
    assert 'FP8 (explicit Q/DQ' in text and record['engine_build'] in text
    assert record['probs_onnx']['checked_images'] > 0  # the softmax graph, run against the FP8 ONNX itself
    triton = export_triton(path, tmp_path / 'repo')
    assert triton['name'] == 'scalable_vit_fmnist_fp8_onnx' and triton['precision'] == 'fp8'
    assert 'FP8 (E4M3) Q/DQ inside, FP32 IO' in (tmp_path / 'repo' / triton['name'] / 'config.pbtxt').read_text()


# ------------------------------------------------------------------------------------------ divergence
def test_the_divergence_report_reads_fp8_steps_and_clipping(bundles):
    """E4M3's step is relative: 2^-3 of the value's power of two (3 mantissa bits), 2^-9 scale once subnormal."""
    from scalablevit.core.bundle import Bundle
    from scalablevit.host.divergence import divergence_report, quantizer_step, render_markdown
    assert quantizer_step('fp8', 1.0, 3.0) == 0.25 and quantizer_step('fp8', 2.0, 448.0) == 32.0
    assert quantizer_step('fp8', 1.0, 1e-4) == 2 ** -9 and quantizer_step('int8', 0.5, 100.0) == 0.5
    path = bundles['fp8'][0]
    images = Bundle.open(path).reference()['input'][:16]
    report = divergence_report(path / 'model.fp32.onnx', path / 'model.fp8.onnx', images)
    assert report['format'] == 'fp8' and report['quantized_nodes']
    normal = [r for r in report['nodes'] if r['step'] and r['fp32_median_abs'] >= 2 ** -6 * r['scale']]
    assert normal and all(2 ** -4 < r['step_over_median'] <= 2 ** -3 for r in normal)
    assert '## FP8 nodes adding the most error' in render_markdown(report)
