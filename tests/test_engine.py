"""CPU tests of the TensorRT layer: targets, compatibility rules, cache keys, trtexec text, CUDA error paths.

Everything here runs without tensorrt and without a GPU; the GPU half is tests/test_trt_gpu.py.
"""
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scalablevit import compat, cuda, device, engine, inspector, targets, trt_env
from scalablevit.bundle import check_precision
from scalablevit.targets import Target
from scalablevit.errors import ScalableViTError
from scalablevit.fileio import sha256_file, write_json
from scalablevit.runners import INPUT_NAME, OUTPUT_NAME, Runner

REPO = Path(__file__).resolve().parents[1]


def _target(**overrides) -> Target:
    base = dict(name='t', workspace_mib=1024, batch_min=1, batch_opt=4, batch_max=8)
    return Target(**{**base, **overrides})


def _write_target(tmp_path: Path, **fields) -> Path:
    data = {'name': 'mine', 'workspace_mib': 512, 'batch': {'min': 1, 'opt': 2, 'max': 4}, **fields}
    path = tmp_path / 'mine.json'
    path.write_text(json.dumps({k: v for k, v in data.items() if v is not ...}))
    return path


# ------------------------------------------------------------------------------------------ targets
def test_registered_targets_load_with_their_settings():
    names = targets.list_targets()
    assert {'jetson-orin-nano', 'jetson-agx-orin', 'jetson-agx-orin-dla', 'desktop', 'datacenter'} <= set(names)
    loaded = {n: targets.load_target(n) for n in names}
    assert all(t.name == n for n, t in loaded.items())  # file stem and name agree
    nano = loaded['jetson-orin-nano']
    assert nano.dla_core is None and nano.workspace_mib == 1024 and (nano.batch_min, nano.batch_max) == (1, 8)
    dla = loaded['jetson-agx-orin-dla']
    assert dla.dla_core == 0 and dla.gpu_fallback and dla.batch_min == dla.batch_opt == dla.batch_max
    assert all(not t.tf32 and t.hardware_compatibility_level == 'none' for t in loaded.values())


def test_user_target_file_loads_with_defaults(tmp_path):
    target = targets.load_target(_write_target(tmp_path))
    assert (target.name, target.workspace_mib, target.batch_opt) == ('mine', 512, 2)
    assert target.builder_optimization_level == 3 and target.dla_core is None and not target.version_compatible
    assert targets.load_target(target) is target


def test_unknown_target_name_suggests_the_closest():
    with pytest.raises(ScalableViTError, match="unknown target 'jetson-orin-nan'.*did you mean 'jetson-orin-nano'"):
        targets.load_target('jetson-orin-nan')


def test_missing_target_file_is_named(tmp_path):
    with pytest.raises(ScalableViTError, match='nope.json not found'):
        targets.load_target(tmp_path / 'nope.json')


@pytest.mark.parametrize('fields, message', [
    ({'workspace_mib': '1G'}, r"field 'workspace_mib' must be int, got \"1G\""),
    ({'workspace_mib': True}, r"field 'workspace_mib' must be int, got true"),
    ({'workspace_mib': 0}, r"field 'workspace_mib' must be >= 1"),
    ({'workspace_mib': ...}, r"field 'workspace_mib' is required"),
    ({'batch': {'min': 4, 'opt': 2, 'max': 8}}, r"field 'batch' must satisfy min <= opt <= max \(got 4/2/8\)"),
    ({'batch': {'min': 1, 'max': 8}}, r"field 'batch' needs exactly the keys min, opt, max"),
    ({'batch': {'min': 0, 'opt': 1, 'max': 8}}, r"field 'batch.min' must be >= 1"),
    ({'batch': {'min': 1, 'opt': 1.5, 'max': 8}}, r"field 'batch.opt' must be int"),
    ({'builder_optimization_level': 7}, r"field 'builder_optimization_level' must be 0-5"),
    ({'dla_core': 'zero'}, r"field 'dla_core' must be int or null"),
    ({'dla_core': 0}, r"field 'batch' must have min == opt == max with dla_core set"),
    ({'hardware_compatibility_level': 'ampere'}, r"unknown hardware_compatibility_level .*did you mean 'ampere_plus'"),
    ({'workspace_mb': 512}, r"unknown field in target .*'workspace_mb'.*did you mean 'workspace_mib'"),
    ({'name': 'my target'}, r"field 'name' must be letters"),
])
def test_target_validation_names_the_field(tmp_path, fields, message):
    with pytest.raises(ScalableViTError, match=message):
        targets.load_target(_write_target(tmp_path, **fields))


def test_dla_target_refuses_hardware_compatibility(tmp_path):
    path = _write_target(tmp_path, dla_core=1, batch={'min': 2, 'opt': 2, 'max': 2},
                         hardware_compatibility_level='ampere_plus')
    with pytest.raises(ScalableViTError, match="'hardware_compatibility_level' must be 'none' with dla_core"):
        targets.load_target(path)


def test_target_comments_are_ignored(tmp_path):
    assert targets.load_target(_write_target(tmp_path, _doc='why these numbers')).name == 'mine'


# ------------------------------------------------------------------------------------------ compatibility
def _manifest(trt='10.3.0.30', gpu='Orin', cc='8.7', vc=False, hw='none'):
    return {'engine': 'model.engine', 'tensorrt_version': trt, 'gpu': {'name': gpu, 'compute_capability': cc},
            'compatibility': {'version_compatible': vc, 'hardware_compatibility_level': hw}}


def test_same_tensorrt_and_gpu_is_compatible():
    assert engine.engine_compatibility_problem(_manifest(), '10.3.0.30', 'Orin', '8.7') is None


def test_other_tensorrt_version_is_refused_with_the_full_story():
    problem = engine.engine_compatibility_problem(_manifest(), '10.7.0.23', 'NVIDIA H100 80GB HBM3', '9.0')
    assert problem.startswith('engine model.engine was built with TensorRT 10.3.0.30 on Orin (sm_87); this is '
                              'TensorRT 10.7.0.23 on NVIDIA H100 80GB HBM3 (sm_90): rebuild it')
    assert 'not version-compatible' in problem and 'GPU differs' in problem
    with pytest.raises(ScalableViTError, match='rebuild it'):
        engine.check_engine_compatible(_manifest(), '10.3.0.31', 'Orin', '8.7')


@pytest.mark.parametrize('built, running, ok', [
    ('10.3.0.30', '10.7.0.23', True),     # newer runtime, same major
    ('10.7.0.23', '10.3.0.30', False),    # older runtime never
    ('10.3.0.30', '11.4.1.1', True),      # 10 -> 11 is a supported hop
    ('8.6.2.3', '10.3.0.30', True),       # 8 -> 10 is a supported hop
    ('8.6.2.3', '11.4.1.1', False),       # 8 -> 11 is not
    ('8.5.2.2', '8.6.2.3', False),        # version compatibility starts at 8.6
])
def test_version_compatible_opt_in(built, running, ok):
    problem = engine.engine_compatibility_problem(_manifest(trt=built, vc=True), running, 'Orin', '8.7')
    assert (problem is None) == ok


def test_version_strings_of_different_length_compare_equal():
    assert engine.engine_compatibility_problem(_manifest(trt='10.3.0'), '10.3.0.0', 'Orin', '8.7') is None


@pytest.mark.parametrize('level, gpu, cc, ok', [
    ('none', 'NVIDIA A10', '8.7', False),              # same cc, other GPU model
    ('none', 'Orin', '8.6', False),
    ('same_compute_capability', 'NVIDIA A10', '8.7', True),
    ('same_compute_capability', 'Orin', '8.9', False),
    ('ampere_plus', 'NVIDIA H100', '9.0', True),
    ('ampere_plus', 'Tesla T4', '7.5', False),
])
def test_hardware_compatibility_levels(level, gpu, cc, ok):
    problem = engine.engine_compatibility_problem(_manifest(hw=level), '10.3.0.30', gpu, cc)
    assert (problem is None) == ok
    if not ok:
        assert f"hardware compatibility '{level}'" in problem


def test_incomplete_manifest_is_named():
    with pytest.raises(ScalableViTError, match="engine manifest is missing 'compatibility'"):
        engine.engine_compatibility_problem({'engine': 'e', 'tensorrt_version': '10.0', 'gpu': {}}, '10.0', 'g', '8.0')


def test_loading_refuses_an_engine_without_manifest(tmp_path):
    (tmp_path / 'model.engine').write_bytes(b'plan')
    with pytest.raises(ScalableViTError, match='no manifest model.engine.json beside engine'):
        engine.read_engine_manifest(tmp_path / 'model.engine')


# ------------------------------------------------------------------------------------------ platform checks
GPU_H100 = {'name': 'NVIDIA H100 80GB HBM3', 'compute_capability': '9.0', 'integrated': False}
GPU_ORIN = {'name': 'Orin', 'compute_capability': '8.7', 'integrated': True}


def test_dla_target_on_a_gpu_without_dla_is_refused():
    with pytest.raises(ScalableViTError, match=r'asks for DLA core 0 but NVIDIA H100 80GB HBM3 \(sm_90\) with '
                                               r'TensorRT 10.7.0 has no DLA'):
        engine.check_target_platform(targets.load_target('jetson-agx-orin-dla'), 'int8', '10.7.0', GPU_H100, 0)


def test_dla_core_out_of_range_and_trt11_gap_are_explained():
    dla1 = _target(dla_core=1, batch_opt=1, batch_max=1)
    with pytest.raises(ScalableViTError, match=r'has only 1 DLA core\(s\)'):
        engine.check_target_platform(dla1, 'fp16', '10.3.0', GPU_ORIN, 1)
    for version in ('11.2.0', '11.4.0'):
        with pytest.raises(ScalableViTError, match=r'TensorRT 11.0-11.4.0 have no DLA support on Jetson'):
            engine.check_target_platform(dla1, 'fp16', version, GPU_ORIN, 0)
    with pytest.raises(ScalableViTError) as err:  # 11.4.1 has DLA again: the plain reason, no gap hint
        engine.check_target_platform(dla1, 'fp16', '11.4.1', GPU_ORIN, 0)
    assert 'has no DLA' in str(err.value) and '11.0-11.4.0' not in str(err.value)
    engine.check_target_platform(dla1, 'fp16', '10.3.0', GPU_ORIN, 2)  # AGX Orin: two cores


def test_dla_refuses_fp32_and_hardware_compat_refuses_jetson_and_old_gpus():
    with pytest.raises(ScalableViTError, match='DLA, which runs FP16 and INT8 only'):
        engine.check_target_platform(_target(dla_core=0, batch_opt=1, batch_max=1), 'fp32', '10.3.0', GPU_ORIN, 2)
    with pytest.raises(ScalableViTError, match='hardware compatibility is not supported on Jetson'):
        engine.check_target_platform(_target(hardware_compatibility_level='ampere_plus'), 'fp16', '10.3.0',
                                     GPU_ORIN, 2)
    with pytest.raises(ScalableViTError, match="'ampere_plus' needs an Ampere"):
        engine.check_target_platform(_target(hardware_compatibility_level='ampere_plus'), 'fp16', '10.3.0',
                                     {'name': 'Tesla T4', 'compute_capability': '7.5', 'integrated': False}, 0)
    with pytest.raises(ScalableViTError, match='too old'):
        engine.check_target_platform(_target(), 'fp32', '8.5.2', GPU_H100, 0)


def test_int8_and_high_opsets_need_tensorrt_10():
    with pytest.raises(ScalableViTError, match=r'INT8 bundles need TensorRT >= 10 \(JetPack >= 6.1\)'):
        compat.check_onnx_opset(19, 'int8', '8.6.2.3')
    with pytest.raises(ScalableViTError, match='opset 18 but TensorRT 8.6.2.3 parses opset <= 17'):
        compat.check_onnx_opset(18, 'fp16', '8.6.2.3')
    compat.check_onnx_opset(17, 'fp16', '8.6.2.3')
    compat.check_onnx_opset(19, 'int8', '10.3.0.30')


# ------------------------------------------------------------------------------------------ flags, trtexec, keys
def test_build_flags_follow_the_tensorrt_generation():
    assert engine.build_flags(_target(), 'int8', '10.3.0')[:2] == ['strongly_typed', 'no_tf32']
    assert engine.build_flags(_target(), 'int8', '11.4.1')[0] == 'strongly_typed'
    assert engine.build_flags(_target(), 'int8', '8.6.2')[:3] == ['weakly_typed', 'int8', 'fp16']
    flags = engine.build_flags(_target(dla_core=1, batch_opt=1, batch_max=1, version_compatible=True, tf32=True),
                               'fp16', '10.3.0')
    assert flags == ['strongly_typed', 'profiling_verbosity=detailed', 'dla_core=1', 'gpu_fallback',
                     'version_compatible']
    with pytest.raises(ScalableViTError, match="unknown precision 'bf16'"):  # checked where a bundle is read
        check_precision('bf16')


def test_trtexec_command_for_tensorrt_10(tmp_path):
    cache = tmp_path / 'my caches' / 'orin.timing'
    cmd = engine.trtexec_command('b/model.int8.onnx', 'b/engines/m.engine', targets.load_target('jetson-orin-nano'),
                                 'int8', '10.3.0.30', 'input', (3, 224, 224), cache)
    args = shlex.split(cmd)
    assert args[:3] == ['trtexec', '--onnx=b/model.int8.onnx', '--saveEngine=b/engines/m.engine']
    for expected in ['--minShapes=input:1x3x224x224', '--optShapes=input:1x3x224x224', '--maxShapes=input:8x3x224x224',
                     '--stronglyTyped', '--memPoolSize=workspace:1024M', '--builderOptimizationLevel=3',
                     f'--timingCacheFile={cache}', '--noTF32', '--profilingVerbosity=detailed']:
        assert expected in args
    assert not any(a in args for a in ('--int8', '--fp16', '--useDLACore=0', '--versionCompatible'))


def test_trtexec_command_for_tensorrt_11_8_6_and_dla():
    cmd11 = shlex.split(engine.trtexec_command('m.onnx', 'm.engine', targets.load_target('desktop'), 'fp16', '11.4.1'))
    assert '--stronglyTyped' not in cmd11 and '--fp16' not in cmd11 and '--maxShapes=input:64x3x224x224' in cmd11
    cmd86 = shlex.split(engine.trtexec_command('m.onnx', 'm.engine', targets.load_target('jetson-orin-nano'),
                                               'fp16', '8.6.2.3'))
    assert '--fp16' in cmd86 and '--stronglyTyped' not in cmd86
    dla = shlex.split(engine.trtexec_command('m.onnx', 'm.engine', targets.load_target('jetson-agx-orin-dla'), 'int8',
                                             '10.3.0', chw=(3, 448, 448)))
    assert {'--useDLACore=0', '--allowGPUFallback', '--optShapes=input:1x3x448x448'} <= set(dla)
    fleet = _target(version_compatible=True, hardware_compatibility_level='same_compute_capability')
    fleet_args = shlex.split(engine.trtexec_command('m.onnx', 'm.engine', fleet, 'fp32', '10.7.0'))
    assert {'--versionCompatible', '--hardwareCompatibilityLevel=sameComputeCapability'} <= set(fleet_args)


def test_cache_key_changes_with_every_field():
    args = dict(onnx_sha256='a' * 64, target=_target(), precision='int8', trt_version='10.3.0.30', gpu='Orin',
                cc='8.7', build_flags=['strongly_typed', 'no_tf32'])
    key = engine.engine_cache_key(**args)
    assert len(key) == 16 and key == engine.engine_cache_key(**args)
    assert key == engine.engine_cache_key(**{**args, 'build_flags': ['no_tf32', 'strongly_typed']})
    assert key == engine.engine_cache_key(**{**args, 'target': _target(notes='only a comment')})
    variants = {'onnx_sha256': 'b' * 64, 'precision': 'fp16', 'trt_version': '10.3.0.31', 'gpu': 'Orin (nvgpu)',
                'cc': '8.6', 'build_flags': ['strongly_typed']}
    keys = {name: engine.engine_cache_key(**{**args, name: value}) for name, value in variants.items()}
    target_changes = dict(name='u', workspace_mib=2048, batch_min=2, batch_opt=8, batch_max=16,
                          builder_optimization_level=5, dla_core=0, gpu_fallback=False, tf32=True,
                          version_compatible=True, hardware_compatibility_level='ampere_plus')
    for field, value in target_changes.items():
        keys[f'target.{field}'] = engine.engine_cache_key(**{**args, 'target': _target(**{field: value})})
    assert key not in keys.values() and len(set(keys.values())) == len(keys)


def test_timing_cache_file_is_per_gpu_cc_and_version(tmp_path):
    a = engine.timing_cache_path(tmp_path, 'NVIDIA H100 80GB HBM3', '9.0', '10.7.0.23')
    assert a.parent == tmp_path and a.name == 'nvidia-h100-80gb-hbm3-sm90-trt10.7.0.23.timing'
    assert a != engine.timing_cache_path(tmp_path, 'NVIDIA H100 80GB HBM3', '9.0', '10.8.0.43')
    assert a != engine.timing_cache_path(tmp_path, 'Orin', '8.7', '10.7.0.23')


def test_profile_shapes_and_layer_device_counts():
    assert engine.profile_shapes(_target(), (3, 224, 224)) == {'min': (1, 3, 224, 224), 'opt': (4, 3, 224, 224),
                                                               'max': (8, 3, 224, 224)}
    info = {'Layers': [{'Name': '{ForeignNode[/blocks...]}', 'LayerType': 'DLA'},
                       {'Name': 'attn', 'LayerType': 'Myelin'}, {'Name': 'head', 'LayerType': 'CaskGemm'}]}
    assert inspector.count_layer_devices(json.dumps(info)) == {'total': 3, 'dla': 1, 'gpu': 2}
    assert inspector.count_layer_devices({'Layers': ['names only']}) == {'total': 1, 'dla': 0, 'gpu': 1}


# ------------------------------------------------------------------------------------------ bundles (before TensorRT)
def _bundle(tmp_path: Path, onnx_bytes: bytes = b'onnx model bytes') -> Path:
    bundle = tmp_path / 'bundle'
    bundle.mkdir()
    (bundle / 'model.fp32.onnx').write_bytes(onnx_bytes)
    rng = np.random.default_rng(0)
    np.savez(bundle / 'reference.npz', input=rng.standard_normal((2, 3, 224, 224), dtype=np.float32),
             logits=rng.standard_normal((2, 10), dtype=np.float32))
    write_json(bundle / 'manifest.json', {
        'model': 'scalable_vit_test', 'precision': 'fp32', 'deploy_onnx': 'model.fp32.onnx',
        'onnx': {'fp32': {'file': 'model.fp32.onnx', 'sha256': sha256_file(bundle / 'model.fp32.onnx'), 'opset': 17}},
        'input': {'name': 'input', 'shape': [None, 3, 224, 224]}, 'output': {'name': 'logits', 'num_classes': 10},
        'reference': {'file': 'reference.npz', 'sha256': sha256_file(bundle / 'reference.npz'), 'samples': 2},
        'untrained': True})
    return bundle


def test_bundle_with_a_modified_onnx_is_refused_before_building(tmp_path):
    bundle = _bundle(tmp_path)
    (bundle / 'model.fp32.onnx').write_bytes(b'someone else\'s model')
    with pytest.raises(ScalableViTError, match=r'ONNX .*model.fp32.onnx does not match the bundle manifest'):
        device.build_bundle_engine(bundle, 'desktop')
    assert not (bundle / 'engines').exists()


def test_bundle_with_a_modified_reference_or_bad_manifest_is_refused(tmp_path):
    bundle = _bundle(tmp_path)
    np.savez(bundle / 'reference.npz', input=np.zeros((1, 3, 224, 224), np.float32), logits=np.zeros((1, 10)))
    with pytest.raises(ScalableViTError, match=r'reference .*reference.npz does not match the bundle manifest'):
        device.build_bundle_engine(bundle, 'desktop')
    manifest = json.loads((bundle / 'manifest.json').read_text())
    write_json(bundle / 'manifest.json', {**manifest, 'deploy_onnx': 'model.int8.onnx'})
    with pytest.raises(ScalableViTError, match="deploy_onnx 'model.int8.onnx' has no entry"):
        device.build_bundle_engine(bundle, 'desktop')
    del manifest['reference']
    write_json(bundle / 'manifest.json', manifest)
    with pytest.raises(ScalableViTError, match="bundle manifest .* is missing 'reference'"):
        device.build_bundle_engine(bundle, 'desktop')


@pytest.mark.skipif(trt_env.trt_status()[0], reason='TensorRT and a GPU are present: the build would start')
def test_bundle_build_without_tensorrt_says_why(tmp_path):
    with pytest.raises(ScalableViTError, match='TensorRT is not usable here: (tensorrt not importable|no CUDA)'):
        device.build_bundle_engine(_bundle(tmp_path), 'desktop')


class _ScaleRunner(Runner):
    """A numpy model (logits = per-image mean times class index) that records the batch sizes it sees."""

    backend = 'numpy'

    def __init__(self):
        super().__init__()
        self.batches = []

    def _activate_impl(self):
        pass

    def _input_metadata_impl(self):
        return {INPUT_NAME: (np.dtype(np.float32), (None, 3, None, None))}

    def _infer_impl(self, feed):
        x = feed[INPUT_NAME]
        self.batches.append(len(x))
        return {OUTPUT_NAME: x.mean(axis=(1, 2, 3))[:, None] * np.arange(4, dtype=np.float32)}


def test_run_padded_respects_the_profile_and_drops_padding():
    images = np.random.default_rng(1).standard_normal((7, 3, 4, 4), dtype=np.float32)
    expected = images.mean(axis=(1, 2, 3))[:, None] * np.arange(4, dtype=np.float32)
    with _ScaleRunner() as runner:
        np.testing.assert_allclose(device.run_padded(runner, images, 1, 3), expected, rtol=1e-6)
        assert runner.batches == [3, 3, 1]
        runner.batches.clear()
        np.testing.assert_allclose(device.run_padded(runner, images, 4, 4), expected, rtol=1e-6)  # DLA: fixed batch
        assert runner.batches == [4, 4]


# ------------------------------------------------------------------------------------------ environment, CUDA errors
def test_trt_status_says_tensorrt_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, 'tensorrt', None)
    ok, reason = trt_env.trt_status()
    assert not ok and reason.startswith('tensorrt not importable (')


def test_trt_status_reason_on_this_machine():
    ok, reason = trt_env.trt_status()
    if ok:
        pytest.skip(f'TensorRT is usable here: {reason}')
    assert reason.startswith(('tensorrt not importable (', 'no CUDA device (', 'no CUDA binding ('))


def _cudart():
    return pytest.importorskip('cuda.bindings.runtime', reason='cuda-python is not installed')


@pytest.fixture
def cuda_python(monkeypatch):
    """Force the cuda-python binding; skip where a CUDA device would make the calls succeed."""
    _cudart()
    monkeypatch.setenv(cuda.BINDING_ENV, 'cuda-python')
    monkeypatch.setattr(cuda, '_API', None)
    if cuda.cuda_status()[0]:
        pytest.skip('a CUDA device answers here: the driver-less error paths cannot be exercised')


def test_checker_names_the_call_and_returns_values():
    rt = _cudart()
    with pytest.raises(cuda.CudaError, match=r'cudaMemcpyAsync failed: cudaErrorInvalidValue \(invalid argument\)'):
        cuda.check('cudaMemcpyAsync', (rt.cudaError_t.cudaErrorInvalidValue,))
    assert cuda.check('cudaStreamSynchronize', (rt.cudaError_t.cudaSuccess,)) is None
    assert cuda.check('cudaGetDeviceCount', (rt.cudaError_t.cudaSuccess, 2)) == 2
    assert cuda.check('cudaStreamEndCapture', (rt.cudaError_t.cudaSuccess, 'g', 'x')) == ('g', 'x')
    assert issubclass(cuda.CudaError, ScalableViTError)


def test_cuda_python_without_a_driver_raises_named_errors(cuda_python):
    with pytest.raises(ScalableViTError, match='^cudaGetDeviceCount failed: '):
        cuda.device_count()
    with pytest.raises(ScalableViTError, match='^cudaMalloc failed: '):
        cuda.DeviceBuffer(1024)
    with pytest.raises(ScalableViTError, match='^cudaMallocHost failed: '):
        cuda.PinnedHostBuffer((2, 3), np.float32)
    with pytest.raises(ScalableViTError, match='^cudaStreamCreate failed: '):
        cuda.Stream()
    ok, reason = cuda.cuda_status()
    assert not ok and reason.startswith('no CUDA device (cudaGetDeviceCount failed: ')


def test_unknown_cuda_binding_is_refused(monkeypatch):
    monkeypatch.setenv(cuda.BINDING_ENV, 'cupy')
    with pytest.raises(ScalableViTError, match=r"unknown CUDA binding .*'cupy'"):
        cuda.binding_name()


def test_device_modules_import_without_torch_or_onnxruntime():
    code = ("import sys; sys.modules['torch'] = None; sys.modules['onnxruntime'] = None; "
            "sys.modules['modelopt'] = None; sys.modules['onnx'] = None; "
            "import scalablevit.device, scalablevit.engine, scalablevit.trt_runner, scalablevit.cuda, scalablevit.bundle; "
            "print(scalablevit.targets.load_target('jetson-orin-nano').name)")
    env = {**os.environ, 'PYTHONPATH': str(REPO)}
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'jetson-orin-nano'
