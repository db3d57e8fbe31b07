"""The TensorRT latency estimate: fusion grouping on real exports, the attention-fusion and cache rules, and the
estimate held against the committed published engines (fit reproducible, error as the README states).

The fusion rules are TensorRT's documented ones (``scalablevit.host.fusion.RULES``); the graphs are ScalableViT S
exported here and timm models from ``bench/published/graphs`` (structure-only ONNX, weights stripped).
"""
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from scalablevit.benchmarks import cost_check
from scalablevit.core.peaks import device_limits, load_peaks
from scalablevit.host.census import census, layers_of
from scalablevit.host.costmodel import BANDWIDTH_FRACTION, CACHE_SHARE, FIT_FILE, estimate, load_fit
from scalablevit.host.fusion import Group, group_summary, groups_of

GRAPHS = cost_check.DATA_DIR / 'graphs'


@pytest.fixture(scope='module')
def small(tmp_path_factory):
    """ScalableViT S (random weights: fusion depends on the graph, not on trained values), FP32 ONNX."""
    from scalablevit.host.export import export_onnx
    from scalablevit.models.scalablevit import create_model
    path = tmp_path_factory.mktemp('costmodel') / 'small.onnx'
    export_onnx(create_model('scalable_vit_small').eval(), path)
    return onnx.load(str(path))


def _reference(name):
    return onnx.load(str(GRAPHS / name), load_external_data=False)


def test_scalablevit_small_fuses_every_attention_and_epilogue(small):
    """S has 2 + 2 + 20 + 2 blocks, each one attention (SSA or IWSA) scaled on Q before q @ k^T: all 26 fuse in
    FP16; every LayerNormalization is one kernel; no pointwise op that is a GEMM's only reader is left alone."""
    groups = groups_of(small, assume='fp16')
    summary = group_summary(groups)
    assert summary['attention_blocks'] == summary['attention_fused'] == 26
    assert summary['by_kind']['norm'] == sum(n.op_type == 'LayerNormalization' for n in small.graph.node)
    assert summary['kernels'] < 0.6 * summary['onnx_nodes']
    assert sum(g.macs for g in groups) == census(layers_of(small))['macs']['total']  # every MAC in one kernel
    owner = {name: g for g in groups for name in g.nodes}
    assert len(owner) == sum(len(g.nodes) for g in groups)  # no node in two kernels
    for node in small.graph.node:
        if node.op_type in ('Conv', 'MatMul', 'Gemm'):
            assert node.name in owner, node.name
    gemm_epilogues = [g for g in groups if g.kind == 'gemm' and 'epilogue' in g.rules]
    assert len(gemm_epilogues) >= 2 * 26  # bias (+ GELU, + residual Add) after the MLP's two Linear layers
    # FP32: TensorRT's fused attention takes FP16/BF16 (or 8-bit) operands, so none fuses
    fp32 = group_summary(groups_of(small))
    assert fp32['attention_fused'] == 0 and fp32['rules']['attention_fp32'] == 26 * 3


def test_a_timm_swin_fuses_its_attention_with_the_bias_add_and_resnet_its_epilogues():
    """Swin-B/384 adds a relative position bias between q @ k^T and Softmax (an add mask: fused, 2 + 2 + 18 + 2
    blocks); ResNet-50's BatchNorm-folded convolutions take every ReLU and residual Add as epilogues."""
    swin = group_summary(groups_of(_reference('swin_base_patch4_window12_384-384.onnx'), assume='fp16'))
    assert swin['attention_blocks'] == swin['attention_fused'] == 24
    resnet = groups_of(_reference('resnet50-224.onnx'), assume='int8')
    kinds = group_summary(resnet)['by_kind']
    assert kinds['conv'] == 53 and 'pointwise' not in kinds, kinds
    assert all(g.dtype == 'int8' for g in resnet if g.kind == 'conv')


def _attention_graph(scale_after_bmm1: bool, dtype=TensorProto.FLOAT16):
    """Q (1, 4, 64, 32), K^T (1, 4, 32, 64), V (1, 4, 64, 32) -> softmax(scaled Q K^T) V."""
    np_dtype = np.float16 if dtype == TensorProto.FLOAT16 else np.float32
    scale = numpy_helper.from_array(np.array(32 ** -0.5, np_dtype), 'scale')
    nodes = [helper.make_node('MatMul', ['qs' if not scale_after_bmm1 else 'q', 'kt'], ['s'], name='bmm1'),
             helper.make_node('Softmax', ['ss' if scale_after_bmm1 else 's'], ['p'], axis=-1, name='softmax'),
             helper.make_node('MatMul', ['p', 'v'], ['out'], name='bmm2')]
    nodes.insert(0 if not scale_after_bmm1 else 1,
                 helper.make_node('Mul', ['q', 'scale'], ['qs'], name='scale_q') if not scale_after_bmm1 else
                 helper.make_node('Mul', ['s', 'scale'], ['ss'], name='scale_s'))
    graph = helper.make_graph(
        nodes, 'attention',
        [helper.make_tensor_value_info('q', dtype, [1, 4, 64, 32]), helper.make_tensor_value_info('kt', dtype, [1, 4, 32, 64]),
         helper.make_tensor_value_info('v', dtype, [1, 4, 64, 32])],
        [helper.make_tensor_value_info('out', dtype, [1, 4, 64, 32])], [scale])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])


def test_attention_fuses_only_with_the_scale_before_the_first_matmul():
    ours = groups_of(_attention_graph(scale_after_bmm1=False))
    attention = [g for g in ours if g.kind == 'attention']
    assert len(attention) == 1 and attention[0].attention['fused'] and attention[0].attention['head_size'] == 32
    assert set(attention[0].nodes) == {'bmm1', 'softmax', 'bmm2'}
    assert 's' not in attention[0].outputs and 'p' not in attention[0].outputs  # the scores stay on chip
    after = groups_of(_attention_graph(scale_after_bmm1=True))
    assert not [g for g in after if g.kind == 'attention']
    assert [g.kind for g in after] == ['gemm', 'softmax', 'gemm']
    assert after[0].attention == {'fused': False, 'rule': 'attention_scale_after_bmm1', 'heads': 4, 'seq_q': 64,
                                  'seq_kv': 64, 'head_size': 32}
    assert 'scale_s' in after[0].nodes  # the scale still runs as the first MatMul's epilogue
    fp32 = groups_of(_attention_graph(scale_after_bmm1=False, dtype=TensorProto.FLOAT))
    assert [g.attention['rule'] for g in fp32 if g.attention] == ['attention_fp32']
    # the fused kernel moves only Q, K, V and the output: less DRAM traffic than the three unfused kernels
    device = dict(device_limits('jetson-orin-nano-8gb'), l2_mb=0)
    fused, unfused = estimate(ours, device), estimate(after, device)
    assert fused['memory_ms'] < unfused['memory_ms'] and fused['latency_ms'] < unfused['latency_ms']


def test_a_tensor_within_the_cache_share_never_reaches_dram():
    device = device_limits('rtx-4090')
    on_chip = int(device['l2_mb'] * 1e6 * CACHE_SHARE)
    fits = Group(kind='pointwise', nodes=['a'], op_types=['Add'], dtype='fp16', inputs={'x': on_chip},
                 outputs={'y': on_chip})
    spills = Group(kind='pointwise', nodes=['a'], op_types=['Add'], dtype='fp16', inputs={'x': on_chip + 2},
                   outputs={'y': on_chip + 2})
    assert estimate([fits], device)['memory_ms'] == 0
    assert estimate([spills], device)['memory_ms'] == pytest.approx(
        2 * (on_chip + 2) / (device['mem_bw_gbs'] * 1e9 * BANDWIDTH_FRACTION) * 1e3)
    # at batch 8 the same tensor is 8 times larger and spills
    assert estimate([fits], device, batch=8)['memory_ms'] > 0


def test_estimate_orders_precisions_on_a_compute_bound_gemm():
    def gemm(dtype):
        return Group(kind='gemm', nodes=['mm'], op_types=['MatMul'], dtype=dtype, macs=4_000_000_000,
                     weight_bytes={'fp32': 4, 'fp16': 2, 'int8': 1}[dtype] * 1_000, gemm_shape=(1, 4096, 4096, 256))
    for device in load_peaks():
        fp32, fp16, int8 = (estimate([gemm(d)], device) for d in ('fp32', 'fp16', 'int8'))
        assert fp32['latency_ms'] > fp16['latency_ms'] > int8['latency_ms'], device
        assert fp32['bound']['compute'] == 1 and fp32['estimate'] is True


def test_small_gemms_leave_sms_idle():
    """A GEMM with fewer 64 x 64 output tiles than the GPU has SMs runs at that fraction of the peak."""
    device = device_limits('h100-sxm')  # 132 SMs
    def gemm(m):
        return Group(kind='gemm', nodes=['mm'], op_types=['MatMul'], dtype='fp16', macs=m * 4096 * 4096,
                     gemm_shape=(1, m, 4096, 4096))
    third, full = estimate([gemm(64)], device), estimate([gemm(64 * 3)], device)  # 64 tiles vs 192 tiles
    # a third of the work on 64 of the 132 SMs: 132 / 192 of the full GEMM's time, not a third of it
    assert third['compute_ms'] == pytest.approx(full['compute_ms'] * 132 / 192)


def test_the_committed_fit_is_what_the_command_computes_and_its_error_is_stated():
    """bench/cost_model_check.py refits on the committed fitting half: the same parameters as cost_fit.json, and
    the same checking-half error the README and every report quote."""
    committed = load_fit()
    result = cost_check.run_check(refit=True)
    for cls, params in committed['classes'].items():
        assert result['classes'][cls]['launch_us'] == params['launch_us'], cls
        assert result['classes'][cls]['compute_fraction'] == params['compute_fraction'], cls
    assert result['check'] == pytest.approx(committed['check'])
    split = json.loads((cost_check.DATA_DIR / 'split.json').read_text())
    assert not set(split['fit']) & set(split['check'])
    assert {r['id'] for r in result['checking']} == set(split['check']) - _excluded()
    assert json.loads(FIT_FILE.read_text())['check']['n'] == len(result['checking'])


def _excluded():
    figures = json.loads((cost_check.DATA_DIR / 'latencies.json').read_text())['figures']
    return {f['id'] for f in figures if f.get('excluded')}


@pytest.fixture(scope='module')
def bundle(tmp_path_factory):
    """An INT8 bundle of the test config (real modelopt): what its report, manifest and device readers carry."""
    from scalablevit.host.pipeline import HostOptions, HostPipeline
    out = tmp_path_factory.mktemp('estimate') / 'int8'
    HostPipeline(HostOptions(model='scalable_vit_test', precision='int8', out=out, calib_size=8, val_size=4)).run()
    return out


def test_a_bundle_carries_the_estimate_with_its_error_band_for_every_device(bundle):
    """report.json: the target's device with the per-kernel table; manifest: every table device, so the device's
    engine report and benchmarks put the estimate beside what they measure (without onnx on the device)."""
    from scalablevit.benchmarks.harness import add_latency_estimate
    from scalablevit.device.pipeline import _latency_estimate
    report = json.loads((bundle / 'report.json').read_text())
    rows = report['cost_estimate']['rows']
    assert [(r['device'], r['batch']) for r in rows] == [('rtx-4090', 1), ('rtx-4090', 8)]  # the desktop target
    kernels = rows[0]['kernels']
    assert len(kernels) == rows[0]['fusion']['kernels'] and sum(k['ms'] for k in kernels) == pytest.approx(
        rows[0]['latency_ms'])
    assert {k['bound'] for k in kernels} <= {'compute', 'memory', 'launch'}
    assert all(r['fp32_latency_ms'] > r['latency_ms'] for r in rows)  # INT8 + FP16 beats the FP32 ONNX
    band = load_fit()['check']
    assert f"on {band['n']} published TensorRT engines" in report['cost_estimate']['note']
    assert 'TensorRT latency ESTIMATE for target desktop' in (bundle / 'report.md').read_text()
    manifest = json.loads((bundle / 'manifest.json').read_text())
    recorded = manifest['latency_estimate']
    assert set(recorded['ms']) == set(load_peaks()) and recorded['ms']['rtx-4090']['1'] == pytest.approx(
        rows[0]['latency_ms'], abs=1e-4)
    # the engine report on an L4 and on an AGX Orin 64GB: matched by GPU name, by board and memory
    from scalablevit.core.bundle import Bundle
    opened = Bundle.open(bundle)
    l4 = _latency_estimate({'gpu': {'name': 'NVIDIA L4'}, 'layers': {'total': 57}}, opened)
    assert l4['device'] == 'l4' and l4['engine_layers'] == 57 and l4['ms'] == recorded['ms']['l4']
    orin = _latency_estimate({'gpu': {'name': 'Orin', 'board': 'NVIDIA Jetson AGX Orin Developer Kit',
                                      'total_memory_mib': 62800}}, opened)
    assert orin['device'] == 'jetson-agx-orin-64gb'
    assert _latency_estimate({'gpu': {'name': 'NVIDIA GeForce RTX 3060'}}, opened) is None  # not in the table
    # a benchmark of the bundle's engine: estimate and measured / estimate per batch the estimate covers
    entries = [{'backend': 'tensorrt', 'precision': 'int8', 'sweep': [{'batch': 1, 'p50': 1.0}, {'batch': 4, 'p50': 3.0}]},
               {'backend': 'onnxruntime', 'precision': 'int8', 'sweep': [{'batch': 1, 'p50': 9.0}]}]
    notes = []
    add_latency_estimate(entries, manifest, 'l4', notes)
    assert entries[0]['sweep'][0]['estimate_ms'] == recorded['ms']['l4']['1']
    assert entries[0]['sweep'][1]['estimate_ms'] is None and 'estimate_ms' not in entries[1]['sweep'][0]
    assert notes and recorded['error_band'] in notes[0]
