"""Precision census, FP16 islands and the TensorRT cost estimate, on real exports and real modelopt models.

The trained Fashion-MNIST model (shipped weights) is exported, quantized INT8 with FP16 elsewhere (the default) and
with FP32 elsewhere, and converted to FP16; the census of each is checked against ``scalablevit.models.complexity`` and
against what the graph holds, and the latency estimate must rank the plans the way a GPU would.
"""
import onnx
import pytest

from scalablevit.core.compare import load_budgets
from scalablevit.core.peaks import load_peaks
from scalablevit.host.census import census, census_violations, layers_of
from scalablevit.host.costmodel import estimate
from scalablevit.host.fusion import groups_of
from scalablevit.models.complexity import model_complexity

MODEL = 'scalable_vit_fmnist'
WEIGHTS = 'scalablevit/models/weights/scalable_vit_fmnist.safetensors'


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """FP32 export, INT8 (FP16 elsewhere), INT8 (FP32 elsewhere) and FP16 of the trained model, with their infos."""
    from scalablevit.data.fmnist import fashion_mnist_sets
    from scalablevit.host.export import export_onnx
    from scalablevit.host.quantize import convert_fp16, quantize_qdq
    from scalablevit.models.scalablevit import create_model
    work = tmp_path_factory.mktemp('census')
    model = create_model(MODEL, weights=WEIGHTS).eval()
    fp32 = work / 'model.fp32.onnx'
    export_onnx(model, fp32)
    calib, _ = fashion_mnist_sets(model.data_cfg, 32, 8)
    infos = {'fp32': {}}
    infos['int8'] = quantize_qdq(fp32, work / 'model.int8.onnx', calib.images, method='max')
    infos['int8_fp32'] = quantize_qdq(fp32, work / 'model.int8_fp32.onnx', calib.images, method='max',
                                       high_precision_dtype='fp32')
    infos['fp16'] = convert_fp16(fp32, work / 'model.fp16.onnx', calibration=calib.images)
    return {name: (onnx.load(str(work / f'model.{name}.onnx')), info) for name, info in infos.items()}


def _census(files, name):
    model, info = files[name]
    return census(layers_of(model), info.get('fp32_islands'))


def test_macs_equal_the_model_complexity(files):
    expected = model_complexity(MODEL, 64)['gmacs'] * 1e9
    for name in files:
        summary = _census(files, name)
        assert summary['macs']['total'] == pytest.approx(expected, rel=0.01), name
        assert sum(summary['mac_share'].values()) == pytest.approx(1.0)


def test_macs_equal_complexity_for_a_config_with_c_ratio_and_mlp_ratios(tmp_path):
    from scalablevit.host.export import export_onnx
    from scalablevit.models.scalablevit import create_model
    export_onnx(create_model('scalable_vit_test').eval(), tmp_path / 'test.onnx')
    summary = census(layers_of(onnx.load(str(tmp_path / 'test.onnx'))))
    assert summary['macs']['total'] == pytest.approx(model_complexity('scalable_vit_test', 224)['gmacs'] * 1e9,
                                                     rel=0.01)


def test_dtypes_of_known_files(files):
    fp32, fp16 = _census(files, 'fp32'), _census(files, 'fp16')
    assert fp32['mac_share']['fp32'] == 1.0 and fp32['weight_bytes']['fp32'] > 3.5e6  # 978k parameters
    assert fp16['mac_share']['fp16'] == 1.0 and fp16['weight_bytes']['fp16'] == pytest.approx(
        fp32['weight_bytes']['fp32'] / 2, rel=0.01)
    assert fp16['ops']['MatMul'] == {'fp8': 0, 'int8': 0, 'fp16': 55, 'fp32': 0}
    int8, (_, info) = _census(files, 'int8'), files['int8']
    quantized = info['qdq']['quantized']
    assert int8['ops']['MatMul']['int8'] == quantized['MatMul']['quantized'] == 39
    assert int8['ops']['Conv']['int8'] == quantized['Conv']['quantized'] == 15
    assert int8['ops']['MatMul']['fp16'] == 16 and int8['ops']['LayerNormalization'] == {'fp8': 0, 'int8': 0,
                                                                                         'fp16': 24, 'fp32': 0}
    assert int8['mac_share']['int8'] > 0.9 and int8['mac_share']['fp32'] == 0.0
    # INT8 weights are stored one byte each: a quarter of their FP32 size
    assert int8['weight_bytes']['int8'] < fp32['weight_bytes']['fp32'] / 3.5


def test_islands_name_every_fp32_mac_and_the_gate_holds_the_rest(files):
    budgets = load_budgets()
    for name in ('int8', 'int8_fp32', 'fp16'):
        precision = 'int8' if name.startswith('int8') else name
        assert census_violations(_census(files, name), precision, budgets[precision]) == [], name
    fp32_elsewhere = _census(files, 'int8_fp32')
    assert fp32_elsewhere['mac_share']['fp32'] > 0.05
    assert {c['island'] for c in fp32_elsewhere['fp32_compute']} == {'requested'}
    # the same file without the record of who asked for FP32: its FP32 MatMuls are named by no rule
    unnamed = census(layers_of(files['int8_fp32'][0]))
    broken = census_violations(unnamed, 'int8', budgets['int8'])
    # 16 attention MatMuls, the stem and 2 more Convs modelopt left FP32, the Gemm head
    assert len(broken) == 1 and 'FP32 MACs outside the named FP32 islands (20 node(s), e.g. /' in broken[0]


def test_range_rule_makes_islands_and_int8_islands_keep_their_qdq_fused(files, tmp_path, monkeypatch):
    """A range limit of 20 flags real tensors of this model: they stay FP32, named with their measured values, and
    an island that is an INT8 MatMul still reads its DequantizeLinear directly (no Cast breaks TensorRT's fusion)."""
    from scalablevit.data.fmnist import fashion_mnist_sets
    from scalablevit.host import fp16_rules
    from scalablevit.host.qdq import quantized_nodes
    from scalablevit.host.quantize import quantize_qdq
    from scalablevit.models.scalablevit import data_config
    monkeypatch.setattr(fp16_rules, 'RANGE_LIMIT', 20.0)
    fp32 = tmp_path / 'model.fp32.onnx'
    onnx.save(files['fp32'][0], str(fp32))
    calib, _ = fashion_mnist_sets(data_config(MODEL), 32, 8)
    info = quantize_qdq(fp32, tmp_path / 'int8.onnx', calib.images, method='max')
    islands = info['fp32_islands']
    ranged = {n: i for n, i in islands.items() if i['rule'] == 'fp16_range'}
    assert ranged and all(i['value'] > 20.0 and i['limit'] == 20.0 for i in ranged.values())
    model = onnx.load(str(tmp_path / 'int8.onnx'))
    int8_islands = set(ranged) & set(quantized_nodes(model))
    assert int8_islands, 'the limit should catch at least one INT8 MatMul/Conv output'
    dtypes = {layer.name: layer.dtype for layer in layers_of(model)}  # INT8 compute, FP32 output for those
    assert all(dtypes[name] == ('int8' if name in int8_islands else 'fp32') for name in islands)
    assert info['qdq']['quantized_total'] == files['int8'][1]['qdq']['quantized_total']
    assert census_violations(census(layers_of(model), islands), 'int8', load_budgets()['int8']) == []


def test_fp32_elsewhere_is_estimated_slower_than_fp16_elsewhere(files):
    """The INT8 plan this project shipped before (FP32 outside INT8) against the new default, on every device."""
    new, old = groups_of(files['int8'][0]), groups_of(files['int8_fp32'][0])
    for device in load_peaks():
        for batch in (1, 8):
            assert estimate(new, device, batch)['latency_ms'] < estimate(old, device, batch)['latency_ms'], device
