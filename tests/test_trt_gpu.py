"""TensorRT on a real GPU: build FP32/FP16/INT8 engines of scalable_vit_test, run them against onnxruntime,
engine-cache reuse, manifest refusal, the bundle build and its accuracy gate.

Skipped with the reason (``trt_env.trt_status()``) where tensorrt or a CUDA device is missing. Needs on the
GPU machine: tensorrt, cuda-python (or pycuda), torch, onnx, onnxruntime and, for FP16/INT8, modelopt.
"""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from scalablevit import device, engine, targets, trt_env
from scalablevit.compare import accuracy_metrics, check_budget
from scalablevit.errors import ScalableViTError
from scalablevit.fileio import sha256_file, write_json
from scalablevit.runners import INPUT_NAME, OUTPUT_NAME, OnnxRuntimeRunner, run_batches

TRT_OK, TRT_REASON = trt_env.trt_status()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not TRT_OK, reason=TRT_REASON)]

MODEL = 'scalable_vit_test'
CHW = (3, 224, 224)
SAMPLES = 6


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope='module')
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp('trt')


@pytest.fixture(scope='module')
def cache_dir(work) -> Path:
    return work / 'timing-cache'


@pytest.fixture(scope='module')
def target_file(work) -> Path:
    """A small, quick-to-build target (batch 1..4, optimization level 1), also exercising user target files."""
    path = work / 'gpu-test.json'
    write_json(path, {'name': 'gpu-test', 'workspace_mib': 1024, 'batch': {'min': 1, 'opt': 2, 'max': 4},
                      'builder_optimization_level': 1})
    return path


@pytest.fixture(scope='module')
def model():
    torch = pytest.importorskip('torch')
    from scalablevit.model import create_model
    torch.manual_seed(0)
    return create_model(MODEL).eval()


@pytest.fixture(scope='module')
def images() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((SAMPLES, *CHW), dtype=np.float32)


@pytest.fixture(scope='module')
def fp32_onnx(work, model) -> dict:
    pytest.importorskip('onnx')
    from scalablevit.export import export_onnx
    return export_onnx(model, work / 'model.fp32.onnx', opset=17)


@pytest.fixture(scope='module')
def fp32_engine(work, fp32_onnx, target_file, cache_dir) -> Path:
    path = work / 'model.fp32.engine'
    engine.build_engine(fp32_onnx['path'], path, target_file, 'fp32', chw=CHW, onnx_opset=fp32_onnx['opset'],
                        timing_cache_dir=cache_dir)
    return path


def _onnxruntime(onnx_path, images) -> np.ndarray:
    pytest.importorskip('onnxruntime')
    with OnnxRuntimeRunner(str(onnx_path)) as runner:
        return run_batches(runner, images, 2)


def _tensorrt(engine_path, images, **kwargs) -> np.ndarray:
    from scalablevit.trt_runner import TrtRunner
    with TrtRunner(engine_path, **kwargs) as runner:
        return device.run_padded(runner, images, 1, 4)


# ------------------------------------------------------------------------------------------ builds vs onnxruntime
def test_fp32_engine_matches_onnxruntime(fp32_engine, fp32_onnx, images, cache_dir):
    import tensorrt as trt
    manifest = json.loads(engine.manifest_path(fp32_engine).read_text())
    assert manifest['tensorrt_version'] == trt.__version__ and manifest['precision'] == 'fp32'
    assert manifest['engine_sha256'] == sha256_file(fp32_engine)
    assert manifest['input']['profile'] == {'min': [1, *CHW], 'opt': [2, *CHW], 'max': [4, *CHW]}
    assert manifest['layers']['total'] > 0 and manifest['layers']['dla'] == 0
    assert manifest['trtexec'].startswith('trtexec --onnx=') and '--noTF32' in manifest['trtexec']
    timing = engine.timing_cache_path(cache_dir, manifest['gpu']['name'], manifest['gpu']['compute_capability'],
                                      trt.__version__)
    assert timing.is_file() and timing.stat().st_size > 0
    metrics = accuracy_metrics(_onnxruntime(fp32_onnx['path'], images), _tensorrt(fp32_engine, images),
                               reference_name='onnxruntime-fp32')
    check_budget(metrics, 'fp32', 'TensorRT FP32 engine vs onnxruntime')


def test_dynamic_batch_gpu_time_and_profile_limit(fp32_engine, images):
    from scalablevit.trt_runner import TrtRunner
    with TrtRunner(fp32_engine) as runner:
        assert runner.input_metadata() == {INPUT_NAME: (np.dtype(np.float32), (None, *CHW))}
        for n in (1, 3, 4):
            out = runner.infer({INPUT_NAME: images[:n]})[OUTPUT_NAME]
            assert out.shape == (n, 10) and np.isfinite(out).all()
            assert 0 < runner.last_gpu_time_s <= runner.last_inference_time_s
        with pytest.raises(ScalableViTError, match='outside the engine profile'):
            runner.infer({INPUT_NAME: np.zeros((5, *CHW), np.float32)})


def test_cuda_graph_replay_matches_plain_enqueue(fp32_engine, images):
    pytest.importorskip('cuda.bindings.runtime', reason='CUDA graphs need cuda-python')
    from scalablevit.trt_runner import TrtRunner
    plain = _tensorrt(fp32_engine, images)
    with TrtRunner(fp32_engine, cuda_graph=True) as runner:
        for n in (2, 2, 3, 2):  # replay, new shape (re-capture), back again
            out = runner.infer({INPUT_NAME: images[:n]})[OUTPUT_NAME]
            np.testing.assert_allclose(out, plain[:n], rtol=1e-5, atol=1e-5)


def test_fp16_engine_matches_onnxruntime(work, fp32_onnx, images, target_file, cache_dir):
    pytest.importorskip('modelopt')
    from scalablevit.quantize import convert_fp16
    fp16 = convert_fp16(fp32_onnx['path'], work / 'model.fp16.onnx')
    path = work / 'model.fp16.engine'
    manifest = engine.build_engine(fp16['path'], path, target_file, 'fp16', chw=CHW, onnx_opset=fp16['opset'],
                                   timing_cache_dir=cache_dir)
    assert 'strongly_typed' in manifest['build_flags']
    trt_out = _tensorrt(path, images)
    same_graph = accuracy_metrics(_onnxruntime(fp16['path'], images), trt_out, reference_name='onnxruntime-fp16')
    vs_fp32 = accuracy_metrics(_onnxruntime(fp32_onnx['path'], images), trt_out, reference_name='onnxruntime-fp32')
    print('fp16 engine vs onnxruntime fp16:', same_graph, '\nvs onnxruntime fp32:', vs_fp32)
    assert same_graph['cosine_min'] > 0.999 and vs_fp32['cosine_min'] > 0.99


def test_int8_qdq_engine_builds_and_runs(work, fp32_onnx, images, target_file, cache_dir):
    pytest.importorskip('modelopt')
    from scalablevit.quantize import quantize_int8
    calib = np.random.default_rng(1).standard_normal((16, *CHW), dtype=np.float32)
    int8 = quantize_int8(fp32_onnx['path'], work / 'model.int8.onnx', calib, method='max')
    path = work / 'model.int8.engine'
    engine.build_engine(int8['path'], path, target_file, 'int8', chw=CHW, onnx_opset=int8['opset'],
                        timing_cache_dir=cache_dir)
    trt_out = _tensorrt(path, images)
    metrics = accuracy_metrics(_onnxruntime(int8['path'], images), trt_out, reference_name='onnxruntime-int8')
    print('int8 engine vs onnxruntime int8:', metrics)
    assert np.isfinite(trt_out).all() and metrics['cosine_mean'] > 0.9


# ------------------------------------------------------------------------------------------ manifest checks
def test_manifest_mismatch_is_refused(work, fp32_engine):
    from scalablevit.trt_runner import TrtRunner
    copy = work / 'edited' / fp32_engine.name
    copy.parent.mkdir()
    shutil.copy(fp32_engine, copy)
    manifest = json.loads(engine.manifest_path(fp32_engine).read_text())
    write_json(engine.manifest_path(copy), {**manifest, 'tensorrt_version': '9.9.9'})
    with pytest.raises(ScalableViTError, match=r'was built with TensorRT 9.9.9 on .*: rebuild it'):
        engine.load_engine(copy)
    with pytest.raises(ScalableViTError, match='rebuild it'):
        TrtRunner(copy).activate()
    write_json(engine.manifest_path(copy), {**manifest, 'gpu': {**manifest['gpu'], 'name': 'Orin'}})
    with pytest.raises(ScalableViTError, match='the GPU differs'):
        engine.load_engine(copy)
    write_json(engine.manifest_path(copy), manifest)
    copy.write_bytes(copy.read_bytes()[:-16] + bytes(16))
    with pytest.raises(ScalableViTError, match='does not match the sha256 in its manifest'):
        engine.load_engine(copy)
    garbage = copy.with_name('garbage.engine')
    garbage.write_bytes(b'not a TensorRT plan' * 64)
    with pytest.raises(ScalableViTError, match='cannot deserialize'):
        engine.load_engine(garbage, check_manifest=False)


# ------------------------------------------------------------------------------------------ bundles
def _make_bundle(root: Path, fp32_onnx: dict, images: np.ndarray, logits: np.ndarray, untrained: bool) -> Path:
    bundle = root / f"bundle-{'untrained' if untrained else 'trained'}"
    bundle.mkdir()
    shutil.copy(fp32_onnx['path'], bundle / 'model.fp32.onnx')
    np.savez(bundle / 'reference.npz', input=images, logits=logits.astype(np.float32))
    write_json(bundle / 'manifest.json', {
        'model': MODEL, 'precision': 'fp32', 'deploy_onnx': 'model.fp32.onnx',
        'onnx': {'fp32': {'file': 'model.fp32.onnx', 'sha256': sha256_file(bundle / 'model.fp32.onnx'),
                          'opset': fp32_onnx['opset']}},
        'input': {'name': INPUT_NAME, 'shape': [None, *CHW]}, 'output': {'name': OUTPUT_NAME, 'num_classes': 10},
        'reference': {'file': 'reference.npz', 'sha256': sha256_file(bundle / 'reference.npz'),
                      'samples': len(images)},
        'untrained': untrained})
    return bundle


def _torch_logits(model, images) -> np.ndarray:
    import torch
    with torch.inference_mode():
        return model(torch.from_numpy(images)).numpy()


def test_bundle_engine_build_cache_and_force(work, model, fp32_onnx, images, target_file, cache_dir):
    bundle = _make_bundle(work, fp32_onnx, images, _torch_logits(model, images), untrained=True)
    first = device.build_bundle_engine(bundle, target_file, timing_cache_dir=cache_dir)
    assert first.parent == bundle / 'engines' and first.name.startswith('model.fp32.gpu-test.')
    report_path = first.with_name(first.stem + '.report.json')
    report = json.loads(report_path.read_text())
    assert report['backend'] == 'tensorrt' and report['precision'] == 'fp32' and report['latency_ms'] is None
    assert report['accuracy']['samples'] == SAMPLES and report['accuracy']['reference'] == 'torch-fp32'
    assert report['accuracy']['cosine_min'] > 0.9999 and report['budget']['passed']
    assert not report['engine']['reused']
    built_at = first.stat().st_mtime_ns

    again = device.build_bundle_engine(bundle, target_file, timing_cache_dir=cache_dir)
    assert again == first and first.stat().st_mtime_ns == built_at
    assert json.loads(report_path.read_text())['engine']['reused']

    forced = device.build_bundle_engine(bundle, target_file, force=True, timing_cache_dir=cache_dir)
    assert forced == first and first.stat().st_mtime_ns > built_at
    assert not json.loads(report_path.read_text())['engine']['reused']


def test_bundle_engine_over_budget_fails_and_is_not_kept(work, fp32_onnx, images, target_file, cache_dir):
    wrong = np.random.default_rng(2).standard_normal((SAMPLES, 10), dtype=np.float32)  # not this model's outputs
    bundle = _make_bundle(work, fp32_onnx, images, wrong, untrained=False)
    with pytest.raises(ScalableViTError, match='exceeds the fp32 accuracy budget'):
        device.build_bundle_engine(bundle, target_file, timing_cache_dir=cache_dir)
    assert not list((bundle / 'engines').glob('*.engine'))
    reports = list((bundle / 'engines').glob('*.report.json'))
    assert len(reports) == 1 and not json.loads(reports[0].read_text())['budget']['passed']


def test_dla_build_reports_layer_devices(work, fp32_onnx, cache_dir):
    import tensorrt as trt
    if trt.Builder(trt_env.trt_logger(trt)).num_DLA_cores == 0:
        pytest.skip('this GPU has no DLA (Jetson AGX Orin has two)')
    pytest.importorskip('modelopt')
    from scalablevit.quantize import convert_fp16
    fp16 = convert_fp16(fp32_onnx['path'], work / 'model.dla.fp16.onnx')
    manifest = engine.build_engine(fp16['path'], work / 'model.dla.engine', 'jetson-agx-orin-dla', 'fp16', chw=CHW,
                                   timing_cache_dir=cache_dir)
    layers = manifest['layers']
    assert layers['total'] == layers['dla'] + layers['gpu'] and 'dla_eligible_network_layers' in layers
