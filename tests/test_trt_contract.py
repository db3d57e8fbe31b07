"""The device code held against the real Python API of every TensorRT release it claims (``compat``: 8.6 onwards).

The surfaces in ``tests/data/tensorrt/surfaces/`` are read from NVIDIA's bindings wheels on PyPI by
``tools/trt_surface.py`` (``make trt-surfaces-check`` rebuilds them byte for byte). Two checks per release:

* every tensorrt name the device modules and GPU tests reach, found by walking their AST, exists in that release,
  or sits behind the version rule of ``compat`` that keeps the code path off it (``VERSION_RULES``);
* the build, load, run and self-test paths run end to end against a stand-in ``tensorrt`` generated from the
  surface (``trt_contract.StandIn``): every call checked against the pybind11 signatures, every property write
  against its writability, every result a stand-in of the declared type. CUDA is a host-memory seam (``HostCuda``).

This is a contract test: it proves names, signatures and types, never that TensorRT builds or runs an engine (the
stand-in computes nothing, so validation ends at the accuracy budget: that is asserted). ``test_trt_gpu.py`` is the
real test, on a GPU.
"""
import ctypes
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import trt_contract as tc
from scalablevit.core import compat
from scalablevit.core.errors import ScalableViTError
from scalablevit.core.manifest import PRECISIONS
from scalablevit.core.runners import INPUT_NAME, OUTPUT_NAME
from scalablevit.device import cuda, engine, selftest, trt_env
from scalablevit.device.engine_rules import target_platform_problem
from scalablevit.device.targets import list_targets, load_target, target_from_dict

SURFACES = {p.stem.split('-', 1)[1]: p for p in tc.SURFACES}
VERSIONS = list(SURFACES)

# A use missing from some release -> (the compat rule under which the code reaches it, that rule as a predicate of
# the TensorRT version). The test holds each against the surfaces: missing only where the rule says unreached.
VERSION_RULES = {
    'NetworkDefinitionCreationFlag.STRONGLY_TYPED': (
        "engine._create_network: only where compat.typing_mode is 'flag' (10.x)",
        lambda v: compat.typing_mode(v) == 'flag'),
    'NetworkDefinitionCreationFlag.EXPLICIT_BATCH': (
        'engine._create_network: only for weakly typed networks before 10.x (8.6)',
        lambda v: compat.version(v)[0] < 10),
}
GPUS = {
    'orin': {'name': 'Orin', 'compute_capability': '8.7', 'sm_count': 16, 'total_memory_mib': 62800,
             'integrated': True, 'board': 'NVIDIA Jetson AGX Orin Developer Kit', 'cpu_arch': 'aarch64', 'os': 'Linux'},
    'desktop': {'name': 'NVIDIA GeForce RTX 4090', 'compute_capability': '8.9', 'sm_count': 128,
                'total_memory_mib': 24080, 'integrated': False, 'board': None, 'cpu_arch': 'x86_64', 'os': 'Linux'},
}
FLEET_TARGETS = [{'name': f'fleet-{level}', 'workspace_mib': 1024, 'batch': {'min': 1, 'opt': 2, 'max': 8},
                  'hardware_compatibility_level': level, 'version_compatible': True}
                 for level in ('ampere_plus', 'same_compute_capability')]
CHW = (3, 64, 64)  # the self-test's Fashion-MNIST fixture


# ------------------------------------------------------------------------------------------ static check
def contract_problems(version: str, files=tc.DEVICE_CODE) -> list:
    """Each tensorrt use in ``files`` that this release lacks and no ``VERSION_RULES`` rule keeps off it."""
    surface = tc.load_surface(SURFACES[version])
    problems = []
    for use in tc.find_uses(surface, files):
        if use.name is None:
            if not use.guarded and use.key not in DYNAMIC_USES:
                problems.append(f'{use}: a name computed at run time that no test enumerates')
            continue
        if use.guarded or tc.has_name(surface, use.owner, use.name):
            continue
        rule = VERSION_RULES.get(use.key)
        if rule is None or rule[1](version):
            problems.append(f"TensorRT {version} has no {use.key} ({use.where})" +
                            (f'; the code reaches it there ({rule[0]})' if rule else ''))
    return sorted(set(problems))


def _builder_flags_reached(version: str) -> set:
    """The BuilderFlag names ``engine._configure`` sets on this release: every target and precision it can build."""
    names = set()
    for target in _targets():
        for precision in PRECISIONS:
            if _buildable(target, precision, version, GPUS['orin' if target.dla_core is not None else 'desktop']):
                names.update(engine.builder_flag_names(engine.build_flags(target, precision, version)))
    return names


def _levels_reached(version: str) -> set:
    return {compat.HARDWARE_COMPAT[level][0] for level in compat.HARDWARE_COMPAT
            if level != 'none' and compat.hardware_compat_problem(level, version) is None}


# dynamic use -> (the surface class, the names it takes on a release)
DYNAMIC_USES = {'BuilderFlag.<name>': ('BuilderFlag', _builder_flags_reached),
                'HardwareCompatibilityLevel.<member>': ('HardwareCompatibilityLevel', _levels_reached)}


@pytest.mark.parametrize('version', VERSIONS)
def test_every_tensorrt_use_exists_or_sits_behind_its_version_rule(version):
    surface = tc.load_surface(SURFACES[version])
    uses = {u.key for u in tc.find_uses(surface)}
    # the walk sees the whole device path, through objects typed from return types (a floor, not a census)
    assert {'Builder.create_network', 'IBuilderConfig.set_memory_pool_limit', 'INetworkDefinition.get_input',
            'ICudaEngine.get_tensor_profile_shape', 'IExecutionContext.execute_async_v3', 'ParserError.desc',
            'Runtime.deserialize_cuda_engine', 'tensorrt.nptype'} <= uses
    assert contract_problems(version) == []
    for key, (cls, reached) in DYNAMIC_USES.items():
        missing = sorted(n for n in reached(version) if n not in surface['classes'][cls]['members'])
        assert missing == [], f'{key} on TensorRT {version}: {missing}'


@pytest.mark.parametrize('key', sorted(VERSION_RULES))
def test_version_rules_match_the_surfaces(key):
    """Each rule is needed (some release lacks the name) and true (every release the code reaches it has it)."""
    owner, name = key.split('.')
    have = {v: tc.has_name(tc.load_surface(p), owner, name) for v, p in SURFACES.items()}
    reached = {v: VERSION_RULES[key][1](v) for v in VERSIONS}
    assert not all(have.values())
    assert all(have[v] for v in VERSIONS if reached[v]), (have, reached)


def test_surfaces_cover_the_releases_compat_names():
    """The boundaries compat states, read from NVIDIA's own bindings: SAME_COMPUTE_CAPABILITY from 10.9 (absent in
    10.8), AMPERE_PLUS from 8.6, STRONGLY_TYPED from 10.x, no FP16/INT8 builder flags on 11.x."""
    assert {'8.6.1', '10.3.0', '10.8.0.43', '10.9.0.34', '10.16.1.11', '11.4.0.106'} <= set(VERSIONS)
    for version, path in SURFACES.items():
        surface = tc.load_surface(path)
        assert surface['provenance']['version'] == version
        assert version.split('.post')[0] in surface['provenance']['wheel'] and len(surface['provenance']['sha256']) == 64
        classes = surface['classes']
        levels = classes['HardwareCompatibilityLevel']['members']
        for level, (member, _) in compat.HARDWARE_COMPAT.items():
            assert (member in levels) == (compat.hardware_compat_problem(level, version) is None), (version, level)
        creation = classes['NetworkDefinitionCreationFlag']['members']
        assert ('STRONGLY_TYPED' in creation) == (compat.typing_mode(version) != 'weak')
        weak_flags = {'FP16', 'INT8'} & set(classes['BuilderFlag']['members'])
        assert bool(weak_flags) == (compat.typing_mode(version) != 'always'), (version, weak_flags)


# ------------------------------------------------------------------------------------------ stand-in runs
class HostCuda(cuda._Api):
    """The CUDA calls of ``cuda._Api`` over host memory (a seam, not CUDA): copies are real memmoves."""

    name = 'host-memory contract seam'
    packages = ()

    def __init__(self, gpu):
        self.gpu, self.buffers = gpu, {}

    device_count = lambda self: 1  # noqa: E731
    driver_version = runtime_version = lambda self: 12060  # noqa: E731

    def device_info(self, device):
        return {k: self.gpu[k] for k in ('name', 'compute_capability', 'sm_count', 'total_memory_mib', 'integrated')}

    def malloc(self, nbytes):
        array = np.zeros(max(nbytes, 1), np.uint8)
        self.buffers[array.ctypes.data] = array
        return array.ctypes.data

    device_ptr = staticmethod(int)
    free = lambda self, handle: self.buffers.pop(handle)  # noqa: E731
    malloc_host = lambda self, shape, dtype: (np.zeros(shape, dtype), None)  # noqa: E731
    free_host = lambda self, handle: None  # noqa: E731

    def memcpy_htod_async(self, dst, src, nbytes, stream):
        ctypes.memmove(dst, src.ctypes.data, nbytes)

    def memcpy_dtoh_async(self, dst, src, nbytes, stream):
        ctypes.memmove(dst.ctypes.data, src, nbytes)

    stream_create = event_create = lambda self: object()  # noqa: E731
    stream_handle = lambda self, stream: id(stream)  # noqa: E731
    stream_synchronize = stream_destroy = event_synchronize = event_destroy = lambda self, x: None  # noqa: E731
    event_record = lambda self, event, stream: None  # noqa: E731
    event_elapsed_ms = lambda self, start, end: 0.0  # noqa: E731


def scenario(layers=2, dla_cores=2):
    """Values of the declared types that steer the code down its success path: one (N, 3, 64, 64) input 'input',
    one output 'logits' (N, 10), Q/DQ layers, inspector JSON. Shapes of the context follow its last set_input_shape."""
    def last_shape(trt, this, name):
        shapes = [args[1] for call, args, _ in trt.calls if call == 'IExecutionContext.set_input_shape']
        return tuple(shapes[-1]) if name == INPUT_NAME else (shapes[-1][0], 10)

    def profile(trt, this, name, index):  # the engine's profile is the one the build set
        sets = [args[1:] for call, args, _ in trt.calls if call == 'IOptimizationProfile.set_shape']
        return [tuple(shape) for shape in sets[-1]] if sets else [(1, *CHW), (2, *CHW), (8, *CHW)]
    return {
        'INetworkDefinition.num_inputs': 1, 'INetworkDefinition.num_layers': layers,
        'ITensor.name': INPUT_NAME, 'ITensor.shape': (-1, *CHW),
        'ILayer.type': lambda trt, this, *a: trt.module.LayerType.QUANTIZE,
        'Builder.num_DLA_cores': dla_cores,
        'EngineInspector.get_engine_information': json.dumps({'Layers': [{'Name': 'conv', 'LayerType': 'CaskConvolution',
                                                                          'Inputs': [{'Format/Datatype': 'Half'}]}]}),
        'ICudaEngine.num_io_tensors': 2,
        'ICudaEngine.get_tensor_name': lambda trt, this, i: [INPUT_NAME, OUTPUT_NAME][i],
        'ICudaEngine.get_tensor_mode': lambda trt, this, n: trt.module.TensorIOMode.INPUT if n == INPUT_NAME
        else trt.module.TensorIOMode.OUTPUT,
        'ICudaEngine.get_tensor_dtype': lambda trt, this, n: trt.module.DataType.FLOAT,
        'ICudaEngine.get_tensor_shape': lambda trt, this, n: (-1, *CHW) if n == INPUT_NAME else (-1, 10),
        'ICudaEngine.get_tensor_profile_shape': profile,
        'IExecutionContext.get_tensor_shape': last_shape,
    }


@pytest.fixture
def standin(request, monkeypatch):
    """(stand-in, trt_env.TensorRT) for ``request.param`` = (version, gpu name), installed as ``tensorrt``."""
    version, gpu = request.param
    trt = tc.StandIn(tc.load_surface(SURFACES[version]), scenario())
    monkeypatch.setitem(sys.modules, 'tensorrt', trt.module)
    monkeypatch.setattr(cuda, '_API', HostCuda(GPUS[gpu]))
    monkeypatch.setattr(trt_env, '_TRT_LOGGER', None)  # one logger per module: a fresh one for this stand-in
    return trt, trt_env.TensorRT(trt.module, version, GPUS[gpu])


def _targets():
    return [load_target(n) for n in list_targets()] + [target_from_dict(t) for t in FLEET_TARGETS]


def _buildable(target, precision, version, gpu) -> bool:
    opset = 19 if precision in ('int8', 'fp8') else 17
    return compat.onnx_opset_problem(opset, precision, version) is None and \
        target_platform_problem(target, precision, version, gpu, 2) is None


BUILDS = [(v, t.name, p) for v in VERSIONS for t in _targets() for p in PRECISIONS
          if _buildable(t, p, v, GPUS['orin' if t.dla_core is not None or 'jetson' in t.name else 'desktop'])]


@pytest.mark.parametrize('standin,target,precision',
                         [((v, 'orin' if 'jetson' in t else 'desktop'), t, p) for v, t, p in BUILDS],
                         indirect=['standin'], ids=[f'{v}-{t}-{p}' for v, t, p in BUILDS])
def test_build_load_and_run_against_the_surface(standin, target, precision, tmp_path):
    """Build (every target and precision compat allows on the release), load with the manifest check, run."""
    trt, env = standin
    target = next(t for t in _targets() if t.name == target)
    onnx = tmp_path / 'model.onnx'
    onnx.write_bytes(b'not parsed: the stand-in parser accepts any file')
    manifest = engine.build_engine(onnx, tmp_path / 'model.engine', target, precision, chw=CHW,
                                   onnx_opset=19 if precision in ('int8', 'fp8') else 17, timing_cache_dir=tmp_path, env=env)
    called = {name for name, _, _ in trt.calls}
    assert {'Builder.create_network', 'OnnxParser.parse_from_file', 'IOptimizationProfile.set_shape',
            'Builder.build_serialized_network', 'Runtime.deserialize_cuda_engine'} <= called
    flags = [args[0].name for name, args, _ in trt.calls if name == 'IBuilderConfig.set_flag']
    assert flags == manifest['builder_flags']
    assert manifest['layers']['total'] == 1
    from scalablevit.device.trt_runner import TrtRunner  # noqa: PLC0415
    batch = min(2, target.batch_max)
    with TrtRunner(lambda: engine.load_engine(tmp_path / 'model.engine', env=env)) as runner:
        out = runner.infer({INPUT_NAME: np.ones((batch, *CHW), np.float32)})[OUTPUT_NAME]
    assert out.shape == (batch, 10) and out.dtype == np.float32
    assert ('IExecutionContext.set_input_shape', (INPUT_NAME, (batch, *CHW)), {}) in trt.calls
    assert any(name == 'IExecutionContext.execute_async_v3' for name, _, _ in trt.calls)


@pytest.mark.parametrize('standin', [(v, 'orin') for v in VERSIONS], indirect=True, ids=VERSIONS)
def test_self_test_reaches_the_accuracy_budget(standin, tmp_path):
    """The self-test's every applicable check builds, loads and runs through the stand-in and fails exactly where a
    stand-in must: its zero logits exceed the accuracy budget (no TypeError, no traceback)."""
    with pytest.raises(ScalableViTError, match='device checks failed'):
        selftest.run_self_test(selftest.SelfTestOptions(out=tmp_path, warmup=1, iters=2))
    report = json.loads((tmp_path / selftest.REPORT_NAME).read_text())
    ran = [c for c in report['checks'] if c['status'] != 'not applicable']
    assert ran and report['tensorrt']['version'] == standin[1].version
    for check in ran:
        assert 'traceback' not in check and 'accuracy budget' in check['reason'], check


# ------------------------------------------------------------------------------------------ mutations
MUTATIONS = {
    'name': ('builder.create_builder_config()', 'builder.create_config()'),
    'signature': ('config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, target.workspace_mib << 20)',
                  'config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, f"{target.workspace_mib}M")'),
}


def _mutant(tmp_path, which) -> Path:
    source = Path(engine.__file__).read_text()
    old, new = MUTATIONS[which]
    assert source.count(old) == 1
    path = tmp_path / 'engine.py'
    path.write_text(source.replace(old, new))
    return path


def test_a_broken_name_in_engine_py_fails_the_static_check(tmp_path):
    mutant = _mutant(tmp_path, 'name')
    line = next(i for i, text in enumerate(mutant.read_text().splitlines(), 1) if 'builder.create_config()' in text)
    for version in VERSIONS:
        assert contract_problems(version, [mutant]) == \
            [f'TensorRT {version} has no Builder.create_config (engine.py:{line})']


@pytest.mark.parametrize('standin', [('10.3.0', 'desktop')], indirect=True)
def test_a_broken_call_signature_in_engine_py_fails_the_stand_in_run(standin, tmp_path):
    """The mutant module runs against the stand-in: the wrong argument type is named with the real signature."""
    module = types.ModuleType('scalablevit.device._engine_mutant')
    module.__package__ = 'scalablevit.device'
    exec(compile(_mutant(tmp_path, 'signature').read_text(), 'engine.py', 'exec'), module.__dict__)
    onnx = tmp_path / 'model.onnx'
    onnx.write_bytes(b'x')
    with pytest.raises(tc.ContractError, match=r"set_memory_pool_limit\(\): incompatible arguments .* 'pool_size' "
                                               r'is str, wants int'):
        module.build_engine(onnx, tmp_path / 'm.engine', 'desktop', 'fp16', chw=CHW, timing_cache_dir=tmp_path,
                            env=standin[1])
