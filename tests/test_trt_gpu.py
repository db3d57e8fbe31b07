"""TensorRT on a real GPU, from the fixtures shipped in the package (no torch, onnx or modelopt needed).

FP32/FP16/INT8 engines of the trained Fashion-MNIST model against the fixtures' onnxruntime logits (same ONNX) and
PyTorch logits (accuracy budgets), dynamic batch, CUDA graphs, the engine manifest and its refusals, the bundle
build with its cache and budget gate, DLA. Skipped with the reason (``trt_env.trt_status()``) where tensorrt or a
CUDA device is missing; ``SCALABLEVIT_REQUIRE_GPU=1`` turns those skips into failures. Needs on the GPU machine:
numpy, tensorrt and cuda-python (or pycuda: then the CUDA-graph test skips with the reason).
"""
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from scalablevit.core import compat
from scalablevit.core.bundle import Bundle
from scalablevit.core.compare import accuracy_metrics, check_budget
from scalablevit.core.errors import ScalableViTError
from scalablevit.core.fileio import sha256_file, write_json
from scalablevit.core.runners import INPUT_NAME, OUTPUT_NAME
from scalablevit.device import cuda, engine, engine_rules, pipeline as device_pipeline, trt_env
from scalablevit.device.selftest import extract_fixture, same_graph_violations
from scalablevit.device.targets import load_target

TRT_OK, TRT_REASON = trt_env.trt_status()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not TRT_OK, reason=TRT_REASON)]

BATCH = {'min': 1, 'opt': 2, 'max': 8}


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope='module')
def env() -> trt_env.TensorRT:
    return trt_env.open_tensorrt()


@pytest.fixture(scope='module')
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp('trt')


@pytest.fixture(scope='module')
def bundles(work) -> dict:
    return extract_fixture(work / 'fixtures')


@pytest.fixture(scope='module')
def reference(bundles) -> dict:
    return Bundle.open(bundles['fp32']).reference()


@pytest.fixture(scope='module')
def cache_dir(work) -> Path:
    return work / 'timing-cache'


@pytest.fixture(scope='module')
def target_file(work) -> Path:
    """A small, quick-to-build target (batch 1..8, optimization level 1), also exercising user target files."""
    path = work / 'gpu-test.json'
    write_json(path, {'name': 'gpu-test', 'workspace_mib': 1024, 'batch': BATCH, 'builder_optimization_level': 1})
    return path


def _build(bundles, precision, target, work, cache_dir, env, name=None) -> tuple:
    bundle = Bundle.open(bundles[precision])
    onnx, entry = bundle.deploy_onnx()
    path = work / (name or f'model.{precision}.engine')
    manifest = engine.build_engine(onnx, path, target, precision, chw=bundle.input_shape, onnx_opset=entry['opset'],
                                   timing_cache_dir=cache_dir, onnx_sha256=entry['sha256'], env=env)
    return path, manifest


def _tensorrt(engine_path, images, batch=(1, 8), **kwargs) -> np.ndarray:
    from scalablevit.device.trt_runner import TrtRunner
    with TrtRunner(engine_path, **kwargs) as runner:
        return device_pipeline.run_padded(runner, images, *batch)


def _compare(precision, logits, reference, weakly_typed) -> None:
    """Against onnxruntime on the same ONNX (tight) and against PyTorch FP32 (the precision's budget)."""
    same = accuracy_metrics(reference[f'onnxruntime_{precision}'], logits, reference_name=f'onnxruntime-{precision}')
    vs_torch = accuracy_metrics(reference['logits'], logits, reference['labels'], reference_name='pytorch-fp32')
    print(f'{precision} engine vs onnxruntime: {same}\nvs PyTorch: {vs_torch}')
    assert same_graph_violations(same, precision, weakly_typed) == []
    check_budget(vs_torch, precision, f'TensorRT {precision} engine vs PyTorch FP32')


@pytest.fixture(scope='module')
def fp32_engine(bundles, target_file, work, cache_dir, env) -> Path:
    return _build(bundles, 'fp32', target_file, work, cache_dir, env)[0]


# ------------------------------------------------------------------------------------------ builds vs references
def test_fp32_engine_matches_onnxruntime_and_pytorch(fp32_engine, reference, cache_dir, env):
    manifest = json.loads(engine.manifest_path(fp32_engine).read_text())
    assert manifest['tensorrt_version'] == env.version and manifest['precision'] == 'fp32'
    assert manifest['engine_sha256'] == sha256_file(fp32_engine)
    assert manifest['input']['profile'] == {k: [b, 3, 64, 64] for k, b in BATCH.items()}
    assert {k: manifest['gpu'][k] for k in engine_rules.IDENTITY_FIELDS} == {k: env.gpu[k] for k in engine_rules.IDENTITY_FIELDS}
    assert manifest['layers']['total'] > 0 and manifest['layers']['dla'] == 0 and manifest['layers']['dla_layers'] == []
    assert manifest['trtexec'].startswith('trtexec --onnx=') and '--noTF32' in manifest['trtexec']
    assert manifest['builder_flags'] == []  # FP32: no precision flag, strongly typed or not
    timing = engine.timing_cache_path(cache_dir, env.gpu, env.version)
    assert timing.name == manifest['timing_cache'] and timing.stat().st_size > 0
    _compare('fp32', _tensorrt(fp32_engine, reference['input']), reference, weakly_typed=False)  # no FP16 flag


def test_dynamic_batch_gpu_time_and_profile_limit(fp32_engine, reference):
    from scalablevit.device.trt_runner import TrtRunner
    images = reference['input']
    with TrtRunner(fp32_engine) as runner:
        assert runner.input_metadata() == {INPUT_NAME: (np.dtype(np.float32), (None, 3, 64, 64))}
        for n in (1, 3, 8):
            out = runner.infer({INPUT_NAME: images[:n]})[OUTPUT_NAME]
            assert out.shape == (n, 10) and np.isfinite(out).all()
            assert 0 < runner.last_gpu_time_s <= runner.last_inference_time_s
        with pytest.raises(ScalableViTError, match='outside the engine profile'):
            runner.infer({INPUT_NAME: images[:9]})


def test_cuda_graph_replay_matches_plain_enqueue(fp32_engine, reference):
    from scalablevit.device.trt_runner import TrtRunner
    if cuda.api().name != 'cuda-python':
        with pytest.raises(ScalableViTError, match='CUDA graphs need the cuda-python binding'):
            TrtRunner(fp32_engine, cuda_graph=True).activate()
        pytest.skip(f'CUDA-graph replay needs cuda-python; this process uses {cuda.api().name} '
                    f'(set {cuda.BINDING_ENV}=cuda-python with cuda-python installed)')
    images = reference['input']
    plain = _tensorrt(fp32_engine, images[:8])
    with TrtRunner(fp32_engine, cuda_graph=True) as runner:
        for n in (2, 2, 3, 2):  # replay, new shape (re-capture), back again
            out = runner.infer({INPUT_NAME: images[:n]})[OUTPUT_NAME]
            np.testing.assert_allclose(out, plain[:n], rtol=1e-5, atol=1e-5)


def test_fp16_engine_weakly_typed_on_8_6_strongly_typed_after(bundles, reference, target_file, work, cache_dir, env):
    path, manifest = _build(bundles, 'fp16', target_file, work, cache_dir, env)
    weak = env.major < 10  # TensorRT 8.6 (JetPack 6.0) has no strong typing
    assert manifest['build_flags'][0] == ('weakly_typed' if weak else 'strongly_typed')
    assert manifest['builder_flags'] == (['FP16'] if weak else [])
    assert ('--fp16' in manifest['trtexec']) == weak and ('--stronglyTyped' in manifest['trtexec']) == (env.major == 10)
    _compare('fp16', _tensorrt(path, reference['input']), reference, weakly_typed=weak)


def test_int8_engine_or_its_refusal_on_8_6(bundles, reference, target_file, work, cache_dir, env):
    if env.major < 10:
        with pytest.raises(ScalableViTError, match=r'INT8 bundles need TensorRT >= 10 \(JetPack >= 6.1\)'):
            _build(bundles, 'int8', target_file, work, cache_dir, env)
        return
    path, manifest = _build(bundles, 'int8', target_file, work, cache_dir, env)
    assert manifest['build_flags'][0] == 'strongly_typed' and manifest['builder_flags'] == []
    _compare('int8', _tensorrt(path, reference['input']), reference, weakly_typed=False)


def test_fp8_engine_or_its_refusal(bundles, reference, target_file, work, cache_dir, env):
    """FP8 where the GPU has FP8 tensor cores (compute capability >= 8.9) and TensorRT >= 10.2; elsewhere (every
    Orin) the one-line refusal before the parse, naming the GPU."""
    from scalablevit.core import compat
    problem = compat.onnx_opset_problem(19, 'fp8', env.version) or \
        compat.fp8_problem(env.gpu['compute_capability'], env.gpu['name'])
    if problem:
        with pytest.raises(ScalableViTError, match='FP8'):
            _build(bundles, 'fp8', target_file, work, cache_dir, env)
        return
    path, manifest = _build(bundles, 'fp8', target_file, work, cache_dir, env)
    assert manifest['build_flags'][0] == 'strongly_typed' and manifest['builder_flags'] == []
    _compare('fp8', _tensorrt(path, reference['input']), reference, weakly_typed=False)


def test_same_compute_capability_engine_or_its_refusal(bundles, reference, target_file, work, cache_dir, env):
    fleet = dataclasses.replace(load_target(target_file), name='fleet',
                                hardware_compatibility_level='same_compute_capability')
    cores = env.trt.Builder(trt_env.trt_logger(env.trt)).num_DLA_cores
    problem = engine_rules.target_platform_problem(fleet, 'fp32', env.version, env.gpu, cores)
    if problem:  # TensorRT < 10.9, or a Jetson: refused before the ONNX is parsed
        with pytest.raises(ScalableViTError, match='hardware compatibility'):
            _build(bundles, 'fp32', fleet, work, cache_dir, env, name='fleet.engine')
        return
    path, manifest = _build(bundles, 'fp32', fleet, work, cache_dir, env, name='fleet.engine')
    assert manifest['compatibility']['hardware_compatibility_level'] == 'same_compute_capability'
    assert '--hardwareCompatibilityLevel=sameComputeCapability' in manifest['trtexec']
    _compare('fp32', _tensorrt(path, reference['input']), reference, weakly_typed=False)


def test_tensor_types_numpy_cannot_hold_are_named(env):
    from scalablevit.device.trt_runner import numpy_dtype
    trt = env.trt
    assert numpy_dtype(trt, trt.float32, 'input') == np.float32
    for name in ('bfloat16', 'fp8'):  # no numpy type: tensorrt.nptype raises a bare TypeError
        if hasattr(trt, name):
            with pytest.raises(ScalableViTError, match="engine tensor 'logits' has TensorRT type"):
                numpy_dtype(trt, getattr(trt, name), 'logits')


# ------------------------------------------------------------------------------------------ manifest checks
def test_manifest_mismatch_is_refused_naming_what_differs(work, fp32_engine, env):
    from scalablevit.device.trt_runner import TrtRunner
    copy = work / 'edited' / fp32_engine.name
    copy.parent.mkdir()
    shutil.copy(fp32_engine, copy)
    manifest = json.loads(engine.manifest_path(fp32_engine).read_text())
    cases = [({'tensorrt_version': '9.9.9'}, r'was built with TensorRT 9.9.9 on .*: rebuild it'),
             ({'gpu': {**manifest['gpu'], 'sm_count': manifest['gpu']['sm_count'] + 1}}, r'SM count \d+ != \d+'),
             ({'gpu': {**manifest['gpu'], 'board': 'NVIDIA Jetson AGX Orin Developer Kit'}},
              r"board 'NVIDIA Jetson AGX Orin Developer Kit' != "),
             ({'gpu': {**manifest['gpu'], 'total_memory_mib': 1}}, r'total memory \(MiB\) 1 != '),
             ({'format': 'scalablevit-engine/1'}, r"format 'scalablevit-engine/1'.*rebuild it")]
    for change, message in cases:
        write_json(engine.manifest_path(copy), {**manifest, **change})
        with pytest.raises(ScalableViTError, match=message):
            engine.load_engine(copy, env=env)
    with pytest.raises(ScalableViTError, match='rebuild it'):
        TrtRunner(copy).activate()
    write_json(engine.manifest_path(copy), manifest)
    copy.write_bytes(copy.read_bytes()[:-16] + bytes(16))
    with pytest.raises(ScalableViTError, match='does not match the sha256 in its manifest'):
        engine.load_engine(copy, env=env)
    garbage = copy.with_name('garbage.engine')
    garbage.write_bytes(b'not a TensorRT plan' * 64)
    with pytest.raises(ScalableViTError, match='cannot deserialize'):
        engine.load_engine(garbage, check_manifest=False, env=env)


# ------------------------------------------------------------------------------------------ bundles
def test_bundle_engine_build_cache_and_force(bundles, target_file, cache_dir, env):
    first = device_pipeline.build_bundle_engine(bundles['fp32'], target_file, timing_cache_dir=cache_dir, env=env)
    assert first.parent == bundles['fp32'] / 'engines' and first.name.startswith('model.fp32.gpu-test.')
    report_path = first.with_name(first.stem + '.report.json')
    report = json.loads(report_path.read_text())
    assert report['backend'] == 'tensorrt' and report['precision'] == 'fp32' and report['latency_ms'] is None
    assert report['accuracy']['samples'] == 64 and report['accuracy']['reference'] == 'torch-fp32'
    assert report['accuracy']['cosine_min'] > 0.9999 and report['budget']['passed'] and report['budget']['enforced']
    assert not report['engine']['reused']
    built_at = first.stat().st_mtime_ns

    again = device_pipeline.build_bundle_engine(bundles['fp32'], target_file, timing_cache_dir=cache_dir, env=env)
    assert again == first and first.stat().st_mtime_ns == built_at
    assert json.loads(report_path.read_text())['engine']['reused']

    forced = device_pipeline.build_bundle_engine(bundles['fp32'], target_file, force=True, timing_cache_dir=cache_dir, env=env)
    assert forced == first and first.stat().st_mtime_ns > built_at
    assert not json.loads(report_path.read_text())['engine']['reused']


def test_bundle_engine_over_budget_fails_and_is_not_kept(bundles, work, target_file, cache_dir, env):
    bundle = work / 'wrong-reference'
    shutil.copytree(bundles['fp32'], bundle, ignore=shutil.ignore_patterns('engines'))
    with np.load(bundle / 'reference.npz') as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays['logits'] = np.random.default_rng(2).standard_normal(arrays['logits'].shape).astype(np.float32)
    np.savez(bundle / 'reference.npz', **arrays)  # not this model's outputs
    manifest = json.loads((bundle / 'manifest.json').read_text())
    manifest['reference']['sha256'] = sha256_file(bundle / 'reference.npz')
    write_json(bundle / 'manifest.json', manifest)
    with pytest.raises(ScalableViTError, match='exceeds the fp32 accuracy budget'):
        device_pipeline.build_bundle_engine(bundle, target_file, timing_cache_dir=cache_dir, env=env)
    assert not list((bundle / 'engines').glob('*.engine'))
    reports = list((bundle / 'engines').glob('*.report.json'))
    assert len(reports) == 1 and not json.loads(reports[0].read_text())['budget']['passed']


# ------------------------------------------------------------------------------------------ DLA
def test_dla_engines_run_layers_on_dla_or_are_refused(bundles, reference, work, cache_dir, env):
    target = load_target('jetson-agx-orin-dla')
    cores = env.trt.Builder(trt_env.trt_logger(env.trt)).num_DLA_cores
    problem = engine_rules.target_platform_problem(target, 'fp16', env.version, env.gpu, cores)
    if problem:  # no DLA here (a desktop GPU, Orin Nano, TensorRT 10.16 or 11.0-11.4.0): refused before the build
        print('DLA refused:', problem)
        with pytest.raises(ScalableViTError, match='DLA'):
            _build(bundles, 'fp16', target, work, cache_dir, env, name='dla.fp16.engine')
        return
    weak = compat.network_typing(env.version, dla=True) == 'weak'
    for precision in ('fp16', 'int8') if env.major >= 10 else ('fp16',):
        path, manifest = _build(bundles, precision, target, work, cache_dir, env, name=f'dla.{precision}.engine')
        layers = manifest['layers']
        print(f'{precision} on DLA:', layers, manifest['trtexec'])
        assert layers['dla'] >= 1 and layers['dla_layers'], 'no layer runs on DLA'
        assert ('weakly_typed' in manifest['build_flags']) == weak and 'GPU_FALLBACK' in manifest['builder_flags']
        assert ('FP16' in manifest['builder_flags']) == weak and '--useDLACore=0' in manifest['trtexec']
        _compare(precision, _tensorrt(path, reference['input'], batch=(1, 1)), reference, weakly_typed=weak)
