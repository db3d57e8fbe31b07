"""INT8 (modelopt Q/DQ) and FP16 (AutoCast) quantization of a real export, checked with onnxruntime.

One module-scoped export of scalable_vit_fmnist (64x64) with deterministic O(1)-scale weights, 32
calibration images and 16 other test images (Fashion-MNIST when installed, else seeded noise).
"""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scalablevit.core.errors import ScalableViTError
from weights_util import fill_weights

onnx = pytest.importorskip('onnx')
pytest.importorskip('modelopt.onnx.quantization')
ort = pytest.importorskip('onnxruntime')

ROOT = Path(__file__).resolve().parents[1]
BIG_MATMUL = re.compile(r'/(qkv|q|k|v|kv|proj|fc1|fc2)/MatMul$')
# Tolerances on 16 test images, random-weight model (trained-model numbers: docs/quantization.md, bench/int8_sweep.py).
INT8_MIN_COSINE_MEAN = 0.98
INT8_MIN_AGREEMENT = 0.8
FP16_MAX_REL_DIFF = 1e-2  # max |fp16 - fp32| / max |fp32| over the logits


def _images(data_cfg, count, offset):
    from scalablevit.data.fmnist import DEFAULT_ROOT, load_fashion_mnist, to_model_input
    if (DEFAULT_ROOT / 'train-images-idx3-ubyte.gz').is_file():
        images, _ = load_fashion_mnist('test')
        return to_model_input(images[offset:offset + count], data_cfg)
    return np.random.default_rng(offset).standard_normal((count, 3, 64, 64)).astype(np.float32)


@pytest.fixture(scope='module')
def fp32(tmp_path_factory):
    from scalablevit.host.export import export_onnx
    from scalablevit.models.scalablevit import create_model
    model = fill_weights(create_model('scalable_vit_fmnist'), seed=0).eval()
    path = tmp_path_factory.mktemp('fp32') / 'model.fp32.onnx'
    export_onnx(model, path)
    return path, _images(model.data_cfg, 32, 0), _images(model.data_cfg, 16, 1000)


@pytest.fixture(scope='module')
def int8(fp32, tmp_path_factory):
    from scalablevit.host.quantize import quantize_qdq
    path, calib, _ = fp32
    out = tmp_path_factory.mktemp('int8') / 'model.int8.onnx'
    info = quantize_qdq(path, out, calib)
    return out, info


def _run(path, images):
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    return session.run(['logits'], {'input': images})[0]


def _dq_inputs(model):
    """{node name: number of inputs produced by DequantizeLinear}."""
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    return {n.name: sum(producers.get(t) == 'DequantizeLinear' for t in n.input) for n in model.graph.node}


# ------------------------------------------------------------------------------------------- INT8
def test_int8_quantizes_every_big_matmul(int8):
    path, info = int8
    model = onnx.load(str(path))
    dq = _dq_inputs(model)
    big = [n.name for n in model.graph.node if n.op_type == 'MatMul' and BIG_MATMUL.search(n.name)]
    assert len(big) == 4 * 4 + 3 * 6 + 5  # IWSA qkv/proj/fc1/fc2; SSA q/k/v/proj/fc1/fc2 (q/kv where sr=1)
    assert all(dq[name] == 2 for name in big), [name for name in big if dq[name] != 2]
    assert info['qdq']['quantized']['MatMul']['quantized'] >= len(big)


def test_int8_default_policy_keeps_its_hazards_out(int8):
    from scalablevit.host.int8_policy import HAZARDS
    model = onnx.load(str(int8[0]))
    dq = _dq_inputs(model)
    hazards = re.compile('|'.join((HAZARDS['residual_add'], HAZARDS['stem_conv'], HAZARDS['attention_bmm'])))
    kept_out = [n.name for n in model.graph.node if hazards.search(n.name)]
    assert len(kept_out) == 8 * 2 + 4 + 1 + 16  # block residuals, PEG residuals, stem, attention matmuls
    assert not [name for name in kept_out if dq[name]]
    assert int8[1]['disable_mha_qdq'] and int8[1]['high_precision_dtype'] == 'fp16'


def test_int8_zero_points_all_zero_int8(int8):
    from onnx import numpy_helper
    model = onnx.load(str(int8[0]))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    consts = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node if n.op_type == 'Constant'}
    qdq = [n for n in model.graph.node if n.op_type in ('QuantizeLinear', 'DequantizeLinear')]
    assert len(qdq) > 100
    for node in qdq:
        zp = inits.get(node.input[2], consts.get(node.input[2]))
        assert zp is not None and zp.dtype == np.int8 and not zp.any(), node.name


def test_int8_opset_metadata_and_info(int8, fp32):
    from scalablevit.host.export import read_metadata
    path, info = int8
    model = onnx.load(str(path))
    opset = next(o.version for o in model.opset_import if o.domain in ('', 'ai.onnx'))
    assert info['opset'] == opset >= 19  # modelopt's minimum for Q/DQ: TensorRT >= 10
    meta = read_metadata(model)
    assert meta['model'] == 'scalable_vit_fmnist' and meta['precision'] == 'int8' and meta['opset'] == str(opset)
    assert info['calibration_images'] == 32 and info['policy'] == 'default' and info['method'] == 'entropy'
    assert info['size_bytes'] == path.stat().st_size


def test_int8_agrees_with_fp32_on_onnxruntime(int8, fp32):
    from scalablevit.core.compare import accuracy_metrics
    path, _, images = fp32
    m = accuracy_metrics(_run(path, images), _run(int8[0], images))
    assert m['cosine_mean'] >= INT8_MIN_COSINE_MEAN and m['top1_agreement'] >= INT8_MIN_AGREEMENT, m


def test_int8_leaves_only_the_output_file(int8, fp32):
    assert sorted(p.name for p in int8[0].parent.iterdir()) == ['model.int8.onnx']
    assert sorted(p.name for p in fp32[0].parent.iterdir()) == ['model.fp32.onnx']


def test_int8_exclusions_are_honoured(fp32, tmp_path):
    from scalablevit.host.quantize import quantize_qdq
    path, calib, _ = fp32
    out = tmp_path / 'excluded.onnx'
    info = quantize_qdq(path, out, calib, method='max', policy='none', exclude_op_types=['Add', 'Conv'],
                         exclude_nodes=[r'^/stages\.3\.'])
    model = onnx.load(str(out))
    dq = _dq_inputs(model)
    excluded = [n.name for n in model.graph.node if n.op_type in ('Add', 'Conv') or n.name.startswith('/stages.3.')]
    assert excluded and not [name for name in excluded if dq[name]]
    still = [n.name for n in model.graph.node if BIG_MATMUL.search(n.name) and not n.name.startswith('/stages.3.')]
    assert still and all(dq[name] == 2 for name in still)
    assert info['qdq']['quantized']['Conv']['quantized'] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ['excluded.onnx']


def _qdq_scales(path):
    """{Q/DQ node: its scale's values}: what calibration decided."""
    from onnx import numpy_helper
    model = onnx.load(str(path))
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return {n.name: weights[n.input[1]] for n in model.graph.node
            if n.op_type in ('QuantizeLinear', 'DequantizeLinear') and n.input[1] in weights}


def test_int8_from_stored_images_has_the_scales_of_the_array(int8, fp32, tmp_path):
    """Calibration read a batch at a time from the stored set (the pipeline's way) gives bit-identical Q/DQ scales,
    FP16 islands and calibration hash to calibration on the array in memory; the batch chosen from the model size
    is 8 for this small model, the batch every calibration used before it was chosen."""
    from scalablevit.data.store import ImageSet, StoredImages
    from scalablevit.host.int8_policy import DEFAULT_CALIB_BATCH
    from scalablevit.host.quantize import quantize_qdq
    path, calib, _ = fp32
    stored = ImageSet(calib, 'test', [str(i) for i in range(len(calib))]).save_npz(tmp_path / 'calib.npz')
    info = quantize_qdq(path, tmp_path / 'stored.onnx', StoredImages(stored))
    assert info['calibration_batch_size'] == int8[1]['calibration_batch_size'] == DEFAULT_CALIB_BATCH == 8
    assert info['calibration_sha256'] == int8[1]['calibration_sha256']
    assert info['fp32_islands'] == int8[1]['fp32_islands']
    ours, theirs = _qdq_scales(tmp_path / 'stored.onnx'), _qdq_scales(int8[0])
    assert len(ours) > 100 and ours.keys() == theirs.keys()
    assert all(np.array_equal(ours[k], theirs[k]) for k in ours)


# ------------------------------------------------------------------------------------------- FP16
def test_the_faster_autocast_cleanup_converts_to_the_same_bytes(fp32):
    """AutoCast with our linear dead-end cleanup writes exactly the model modelopt's own quadratic one does."""
    from modelopt.onnx.autocast import convert_to_mixed_precision
    from modelopt.onnx.autocast.precisionconverter import PrecisionConverter

    from scalablevit.host.qdq import exact_patterns
    from scalablevit.host.quantize import _to_fp16
    assert '_cleanup_no_consumer_nodes' in PrecisionConverter.__dict__  # else the replacement no longer applies
    keep = [n.name for n in onnx.load(str(fp32[0])).graph.node if n.op_type == 'Softmax']
    theirs = convert_to_mixed_precision(onnx_path=str(fp32[0]), low_precision_type='fp16',
                                        nodes_to_exclude=exact_patterns(keep), keep_io_types=True, data_max=np.inf,
                                        providers=['cpu'])
    ours = _to_fp16(fp32[0], keep)
    assert ours.SerializeToString() == theirs.SerializeToString()
    assert sum(n.op_type == 'Cast' for n in ours.graph.node) > 10


def test_fp16_float32_io_and_agreement(fp32, tmp_path):
    from scalablevit.host.quantize import convert_fp16, fp32_compute_nodes
    path, calib, images = fp32
    out = tmp_path / 'model.fp16.onnx'
    info = convert_fp16(path, out, keep_fp32_op_types=['Softmax'], calibration=calib[:8])
    model = onnx.load(str(out))
    for value in (*model.graph.input, *model.graph.output):
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT, value.name
    kept = set(fp32_compute_nodes(model))
    softmax = [n.name for n in model.graph.node if n.op_type == 'Softmax']
    assert softmax and set(softmax) <= kept
    assert any(n.op_type == 'MatMul' and n.name not in kept for n in model.graph.node)  # really FP16
    ref, got = _run(path, images), _run(out, images)
    assert got.dtype == np.float32
    assert np.abs(got - ref).max() / np.abs(ref).max() < FP16_MAX_REL_DIFF
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.9
    assert info['opset'] >= 17 and sorted(p.name for p in tmp_path.iterdir()) == ['model.fp16.onnx']


# ------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize('kwargs, message', [
    (dict(calibration=np.zeros((0, 3, 64, 64), np.float32)), 'empty'),
    (dict(calibration=np.zeros((4, 3, 32, 32), np.float32)), r'shape \(4, 3, 32, 32\)'),
    (dict(calibration=np.zeros((4, 3, 64, 64), np.uint8)), 'uint8'),
    (dict(calibration=np.full((4, 3, 64, 64), np.nan, np.float32)), 'NaN'),
    (dict(method='minmax'), "did you mean 'max'"),
    (dict(policy='defualt'), "did you mean 'default'"),
    (dict(calibration_device='gpu'), 'calibration device'),
    (dict(exclude_op_types=['Softmaxx']), "did you mean 'Softmax'"),
    (dict(exclude_nodes=['/stages.9.']), 'matches no node'),
    (dict(exclude_nodes=['(']), 'not a valid regular expression'),
    (dict(high_precision_dtype='bf16'), 'high-precision dtype'),
])
def test_int8_bad_input_is_one_clear_error(fp32, tmp_path, kwargs, message):
    from scalablevit.host.quantize import quantize_qdq
    path, calib, _ = fp32
    args = {'calibration': calib[:4], **kwargs}
    out = tmp_path / 'model.int8.onnx'
    with pytest.raises(ScalableViTError, match=message):
        quantize_qdq(path, out, args.pop('calibration'), **args)
    assert not list(tmp_path.iterdir())


def test_missing_or_foreign_onnx_is_one_clear_error(tmp_path, fp32):
    from scalablevit.host.quantize import convert_fp16, quantize_qdq
    calib = fp32[1][:4]
    with pytest.raises(ScalableViTError, match='file not found'):
        quantize_qdq(tmp_path / 'missing.onnx', tmp_path / 'out.onnx', calib)
    junk = tmp_path / 'junk.onnx'
    junk.write_bytes(b'not a model')
    with pytest.raises(ScalableViTError, match='not a valid ONNX'):
        convert_fp16(junk, tmp_path / 'out.onnx')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['junk.onnx']


def test_cuda_calibration_never_falls_back_to_cpu(fp32, tmp_path):
    from scalablevit.host.quantize import quantize_qdq
    if 'CUDAExecutionProvider' in ort.get_available_providers():
        pytest.skip('onnxruntime has CUDA here; the refusal path needs a CPU-only onnxruntime')
    with pytest.raises(ScalableViTError, match='CUDAExecutionProvider'):
        quantize_qdq(fp32[0], tmp_path / 'out.onnx', fp32[1][:4], calibration_device='cuda')


def test_already_quantized_input_is_refused(int8, fp32, tmp_path):
    from scalablevit.host.quantize import quantize_qdq
    with pytest.raises(ScalableViTError, match='already quantized'):
        quantize_qdq(int8[0], tmp_path / 'again.onnx', fp32[1][:4])


# ------------------------------------------------------------------------------------------- CLI
def test_cli_fp16_prints_info_and_bad_precision_is_one_line(fp32, tmp_path):
    script = ROOT / 'deploy' / 'quantize.py'
    out = tmp_path / 'cli.fp16.onnx'
    done = subprocess.run([sys.executable, str(script), '--onnx', str(fp32[0]), '--precision', 'fp16',
                           '--out', str(out)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)['precision'] == 'fp16' and out.is_file()
    bad = subprocess.run([sys.executable, str(script), '--onnx', str(fp32[0]), '--precision', 'int4'],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 1 and bad.stderr.strip().splitlines()[-1].startswith("error: unknown precision 'int4'")


def test_layernorms_at_risk_of_fp16_overflow_stay_fp32(fp32, tmp_path, monkeypatch):
    """A limit of 0 marks every LayerNorm as at risk: both paths must then keep them all FP32, named by the rule."""
    from scalablevit.host import fp16_rules
    from scalablevit.host import quantize
    monkeypatch.setattr(fp16_rules, 'LAYERNORM_LIMIT', 0.0)
    path, calib, images = fp32
    layernorms = {n.name for n in onnx.load(str(path)).graph.node if n.op_type == 'LayerNormalization'}
    info = quantize.convert_fp16(path, tmp_path / 'fp16.onnx', calibration=calib[:8])
    by_rule = {n for n, i in info['fp32_islands'].items() if i['rule'] == 'layernorm_variance'}
    assert by_rule == layernorms and len(layernorms) == 24
    assert all(info['fp32_islands'][n]['value'] > 0 for n in layernorms)
    assert layernorms <= set(quantize.fp32_compute_nodes(onnx.load(str(tmp_path / 'fp16.onnx'))))
    info = quantize.quantize_qdq(path, tmp_path / 'int8.onnx', calib[:8], method='max', high_precision_dtype='fp16')
    assert set(info['fp32_islands']) == layernorms and info['high_precision_dtype'] == 'fp16'
    model = onnx.load(str(tmp_path / 'int8.onnx'))
    assert layernorms <= set(quantize.fp32_compute_nodes(model))
    assert np.isfinite(_run(tmp_path / 'int8.onnx', images)).all()
