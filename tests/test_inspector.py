"""Per-layer precision from real engine-inspector JSON, set against what the ONNX asked for (tests/data/tensorrt)."""
import json
from collections import Counter
from pathlib import Path

from scalablevit.device.inspector import layer_precisions, precision_mismatches, tensor_dtype

DATA = Path(__file__).parent / 'data' / 'tensorrt'


def _layers(name):
    return layer_precisions((DATA / name).read_text())


def test_dtype_words_of_both_vocabularies():
    assert tensor_dtype({'Format/Datatype': 'Channel major FP16 format where channel % 8 == 0'}) == 'fp16'
    assert tensor_dtype({'Format/Datatype': 'Thirty-two wide channel vectorized row major Int8 format.'}) == 'int8'
    assert tensor_dtype({'Format/Datatype': 'Row major linear FP32'}) == 'fp32'
    assert tensor_dtype({'Format/Datatype': 'Half'}) == 'fp16' and tensor_dtype({'Datatype': 'Float'}) == 'fp32'
    assert tensor_dtype({'Format/Datatype': 'Row major linear BFloat16 format'}) == 'bf16'
    assert tensor_dtype({'Name': 'no dtype at LAYER_NAMES_ONLY'}) is None


def test_fp16_engine_of_tensorrt_10():
    layers = _layers('resnet18_fp16_trt10.4_rtx3060.graph.json')
    assert len(layers) == 26
    assert Counter(la['precision'] for la in layers) == {'fp16': 25, None: 1}  # the shape_call has no tensors
    conv = next(la for la in layers if la['name'] == '/conv1/Conv + /relu/Relu')
    assert conv['type'] == 'CaskConvolution' and conv['onnx_nodes'] == ['/conv1/Conv', '/relu/Relu']
    head = next(la for la in layers if la['type'] == 'kgen')
    assert head['precision'] == 'fp16' and head['onnx_nodes'] == ['/fc/Gemm']


def test_int8_engine_of_tensorrt_8():
    layers = _layers('mobilenet_qat_int8_trt8.graph.json')
    assert Counter(la['precision'] for la in layers) == {'int8': 53, 'fp16': 15, 'fp32': 5}
    assert all(la['onnx_nodes'] == [] for la in layers)  # no Metadata before TensorRT 10


def test_layers_run_above_the_onnx_precision_are_flagged():
    layers = _layers('resnet18_fp16_trt10.4_rtx3060.graph.json')
    asked_int8 = {'/conv1/Conv': 'int8', '/fc/Gemm': 'fp16', '/maxpool/MaxPool': 'fp32'}
    flagged = precision_mismatches(layers, asked_int8)
    assert flagged == [{'layer': '/conv1/Conv + /relu/Relu', 'type': 'CaskConvolution', 'onnx_node': '/conv1/Conv',
                        'onnx_dtype': 'int8', 'engine_precision': 'fp16'}]
    assert precision_mismatches(layers, {'/conv1/Conv': 'fp16', '/fc/Gemm': 'fp16'}) == []


def test_layer_names_only_output_has_no_precisions():
    info = json.dumps({'Layers': ['{ForeignNode[/Conv...]}', 'Reformat'], 'Bindings': ['input', 'logits']})
    assert [la['precision'] for la in layer_precisions(info)] == [None, None]


def test_engine_report_flags_layers_above_the_onnx_precision(tmp_path):
    """The device pipeline's check on a real TensorRT 10.4 engine description and a census asking INT8 for one conv."""
    from scalablevit.core.bundle import Bundle
    from scalablevit.core.report import render_markdown
    from scalablevit.device.pipeline import _engine_precision
    engine_manifest = {'layers': {'per_layer': _layers('resnet18_fp16_trt10.4_rtx3060.graph.json')}}
    bundle = Bundle(tmp_path, {'census': {'node_dtypes': {'/conv1/Conv': 'int8', '/fc/Gemm': 'fp16'}}})
    checked = _engine_precision(engine_manifest, bundle)
    assert checked['compared'] and checked['layers'] == {'fp16': 25, 'unknown': 1}
    assert [f['onnx_node'] for f in checked['higher_than_onnx']] == ['/conv1/Conv']
    report = {'model': 'resnet18', 'precision': 'int8', 'backend': 'tensorrt', 'environment': {},
              'accuracy': {'reference': 'torch-fp32', 'samples': 1, 'top1_agreement': 1.0, 'cosine_mean': 1.0,
                           'cosine_min': 1.0, 'max_abs_diff': 0.0}, 'engine_precision': checked}
    text = render_markdown(report)
    assert '1 layer(s) run at a higher precision than the ONNX asked for' in text
    assert '| `/conv1/Conv + /relu/Relu` | CaskConvolution | `/conv1/Conv` | INT8 | FP16 |' in text
    assert not _engine_precision({'layers': {}}, bundle)['compared']
