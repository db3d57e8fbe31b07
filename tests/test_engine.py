"""CPU tests of the TensorRT layer: targets, compatibility rules, cache keys, trtexec text, CUDA error paths.

Everything here runs without tensorrt and without a GPU; the GPU half is tests/test_trt_gpu.py.
"""
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scalablevit.core import compat
from scalablevit.core.manifest import check_precision
from scalablevit.core.errors import ScalableViTError
from scalablevit.core.fileio import sha256_file, write_json
from scalablevit.core.runners import INPUT_NAME, OUTPUT_NAME, Runner
from scalablevit.device import (cuda, engine, engine_rules, inspector, jetson, pipeline as device_pipeline, targets,
                                trt_env)
from scalablevit.device.targets import Target

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


# ------------------------------------------------------------------------------------------ GPU identity
# Real figures: deviceQuery on an AGX Orin 64GB (JetPack 6, 16 SMs, 65893089280 bytes) and an Orin NX 16GB (8 SMs,
# 16136011776 bytes), each quoted in public setup notes; the boards' /proc/device-tree/model strings (AGX: quoted
# with `cat /proc/device-tree/model`; Orin NX: see tests/data/jetson/README.md; Nano Super: the captured file).
AGX_ORIN = {'name': 'Orin', 'compute_capability': '8.7', 'sm_count': 16, 'total_memory_mib': 65893089280 >> 20,
            'board': 'NVIDIA Jetson AGX Orin Developer Kit', 'cpu_arch': 'aarch64', 'os': 'Linux', 'integrated': True}
ORIN_NX = {**AGX_ORIN, 'sm_count': 8, 'total_memory_mib': 16136011776 >> 20,
           'board': 'NVIDIA Jetson Orin NX Engineering Reference Developer Kit Super'}
H100 = {'name': 'NVIDIA H100 80GB HBM3', 'compute_capability': '9.0', 'sm_count': 132, 'total_memory_mib': 81079,
        'board': None, 'cpu_arch': 'x86_64', 'os': 'Linux', 'integrated': False}


def _manifest(trt='10.3.0.30', gpu=AGX_ORIN, vc=False, hw='none', fmt=engine_rules.MANIFEST_FORMAT):
    return {'format': fmt, 'engine': 'model.engine', 'tensorrt_version': trt, 'gpu': gpu,
            'compatibility': {'version_compatible': vc, 'hardware_compatibility_level': hw}}


def test_nano_super_board_model_is_read_from_the_device_tree():
    model = jetson.board_model(str(REPO / 'tests/data/jetson/device_tree_model_orin_nano_super.bin'))
    assert model == 'NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super'


def test_same_tensorrt_and_gpu_identity_is_compatible():
    assert engine_rules.engine_compatibility_problem(_manifest(), '10.3.0.30', dict(AGX_ORIN)) is None


def test_an_engine_of_another_orin_board_is_refused_naming_what_differs():
    problem = engine_rules.engine_compatibility_problem(_manifest(), '10.3.0.30', ORIN_NX)
    assert problem.startswith('engine model.engine was built with TensorRT 10.3.0.30 on Orin (sm_87, 16 SMs, '
                              '62840 MiB, NVIDIA Jetson AGX Orin Developer Kit, aarch64 Linux); this is TensorRT '
                              '10.3.0.30 on Orin (sm_87, 8 SMs, 15388 MiB, NVIDIA Jetson Orin NX Engineering '
                              'Reference Developer Kit Super, aarch64 Linux): rebuild it')
    assert ("the GPU differs (hardware compatibility 'none'): SM count 16 != 8, total memory (MiB) 62840 != 15388, "
            "board 'NVIDIA Jetson AGX Orin Developer Kit' != 'NVIDIA Jetson Orin NX Engineering Reference Developer "
            "Kit Super'") in problem
    assert 'TensorRT versions differ' not in problem and 'compute capability' not in problem


def test_other_tensorrt_version_is_refused_with_the_full_story():
    problem = engine_rules.engine_compatibility_problem(_manifest(), '10.7.0.23', H100)
    assert 'this is TensorRT 10.7.0.23 on NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 81079 MiB, x86_64 Linux)' in problem
    assert 'not version-compatible' in problem and "GPU 'Orin' != 'NVIDIA H100 80GB HBM3'" in problem
    assert "CPU architecture 'aarch64' != 'x86_64'" in problem
    with pytest.raises(ScalableViTError, match='rebuild it'):
        engine_rules.check_engine_compatible(_manifest(), '10.3.0.31', AGX_ORIN)


def test_a_manifest_without_the_full_identity_is_refused():
    old = {**_manifest(fmt='scalablevit-engine/1'), 'gpu': {'name': 'Orin', 'compute_capability': '8.7'}}
    problem = engine_rules.engine_compatibility_problem(old, '10.3.0.30', AGX_ORIN)
    assert "format 'scalablevit-engine/1'" in problem and problem.endswith('rebuild it')


@pytest.mark.parametrize('built, running, ok', [
    ('10.3.0.30', '10.7.0.23', True),     # newer runtime, same major
    ('10.7.0.23', '10.3.0.30', False),    # older runtime never
    ('10.3.0.30', '11.4.1.1', True),      # 10 -> 11 is a supported hop
    ('8.6.2.3', '10.3.0.30', True),       # 8 -> 10 is a supported hop
    ('8.6.2.3', '11.4.1.1', False),       # 8 -> 11 is not
    ('8.5.2.2', '8.6.2.3', False),        # version compatibility starts at 8.6
])
def test_version_compatible_opt_in(built, running, ok):
    problem = engine_rules.engine_compatibility_problem(_manifest(trt=built, vc=True), running, AGX_ORIN)
    assert (problem is None) == ok


def test_version_strings_of_different_length_compare_equal():
    assert engine_rules.engine_compatibility_problem(_manifest(trt='10.3.0'), '10.3.0.0', AGX_ORIN) is None


A10 = {**H100, 'name': 'NVIDIA A10', 'compute_capability': '8.6', 'sm_count': 72, 'total_memory_mib': 22731}
L40S = {**H100, 'name': 'NVIDIA L40S', 'compute_capability': '8.9', 'sm_count': 142, 'total_memory_mib': 45589}
T4 = {**H100, 'name': 'Tesla T4', 'compute_capability': '7.5', 'sm_count': 40, 'total_memory_mib': 15095}


@pytest.mark.parametrize('level, built, here, ok, named', [
    ('none', A10, {**A10, 'sm_count': 84}, False, 'SM count 72 != 84'),    # same name and cc, another SKU
    ('same_compute_capability', A10, {**A10, 'name': 'NVIDIA A40', 'sm_count': 84}, True, ''),
    ('same_compute_capability', A10, L40S, False, "compute capability '8.6' != '8.9'"),
    ('same_compute_capability', A10, {**A10, 'cpu_arch': 'aarch64'}, False, "CPU architecture 'x86_64' != 'aarch64'"),
    ('ampere_plus', A10, H100, True, ''),
    ('ampere_plus', A10, T4, False, 'compute capability 7.5 is older than Ampere'),
])
def test_hardware_compatibility_levels(level, built, here, ok, named):
    problem = engine_rules.engine_compatibility_problem(_manifest('10.9.0.34', built, hw=level), '10.9.0.34', here)
    assert (problem is None) == ok
    if not ok:
        assert f"hardware compatibility '{level}'): " in problem and named in problem


def test_incomplete_manifest_is_named():
    with pytest.raises(ScalableViTError, match="engine manifest is missing 'compatibility'"):
        engine_rules.engine_compatibility_problem({'engine': 'e', 'tensorrt_version': '10.0', 'gpu': {}}, '10.0', H100)


def test_loading_refuses_an_engine_without_manifest(tmp_path):
    (tmp_path / 'model.engine').write_bytes(b'plan')
    with pytest.raises(ScalableViTError, match='no manifest model.engine.json beside engine'):
        engine.read_engine_manifest(tmp_path / 'model.engine')


# ------------------------------------------------------------------------------------------ platform checks
GPU_H100 = H100
GPU_ORIN = AGX_ORIN


def test_dla_target_on_a_gpu_without_dla_is_refused():
    with pytest.raises(ScalableViTError, match=r'asks for DLA core 0 but NVIDIA H100 80GB HBM3 \(sm_90\) with '
                                               r'TensorRT 10.7.0 has no DLA'):
        engine_rules.check_target_platform(targets.load_target('jetson-agx-orin-dla'), 'int8', '10.7.0', GPU_H100, 0)


def test_dla_core_out_of_range_and_releases_without_dla_are_explained():
    dla1 = _target(dla_core=1, batch_opt=1, batch_max=1)
    with pytest.raises(ScalableViTError, match=r'has only 1 DLA core\(s\)'):
        engine_rules.check_target_platform(dla1, 'fp16', '10.3.0.30', GPU_ORIN, 1)
    for version in ('11.0.0.114', '11.2.0', '11.4.0'):  # refused even where the builder would report cores
        with pytest.raises(ScalableViTError, match=r'TensorRT 11.0-11.4.0 have no DLA support on Jetson'):
            engine_rules.check_target_platform(dla1, 'fp16', version, GPU_ORIN, 2)
    for version in ('10.16.0.72', '10.16.1'):  # JetPack 7.2
        with pytest.raises(ScalableViTError, match=r'TensorRT 10.16 \(JetPack 7.2\) has no DLA on Orin .*'
                                                   r'Orin DLA is not supported at this time'):
            engine_rules.check_target_platform(dla1, 'int8', version, GPU_ORIN, 2)
    with pytest.raises(ScalableViTError) as err:  # 11.4.1 has DLA again: the plain reason
        engine_rules.check_target_platform(dla1, 'fp16', '11.4.1', GPU_ORIN, 0)
    assert 'has no DLA' in str(err.value) and '11.0-11.4.0' not in str(err.value)
    for version in ('8.6.2.3', '10.3.0.30', '10.15.1', '10.17.0', '11.4.1'):
        assert engine_rules.target_platform_problem(dla1, 'fp16', version, GPU_ORIN, 2) is None  # AGX Orin: two cores


def test_dla_refuses_fp32_and_hardware_compat_refuses_jetson_old_gpus_and_old_tensorrt():
    with pytest.raises(ScalableViTError, match='DLA, which runs FP16 and INT8 only'):
        engine_rules.check_target_platform(_target(dla_core=0, batch_opt=1, batch_max=1), 'fp32', '10.3.0', GPU_ORIN, 2)
    with pytest.raises(ScalableViTError, match='hardware compatibility is not supported on Jetson'):
        engine_rules.check_target_platform(_target(hardware_compatibility_level='ampere_plus'), 'fp16', '10.3.0',
                                     GPU_ORIN, 2)
    with pytest.raises(ScalableViTError, match="'ampere_plus' needs an Ampere"):
        engine_rules.check_target_platform(_target(hardware_compatibility_level='ampere_plus'), 'fp16', '10.3.0', T4, 0)
    same_cc = _target(hardware_compatibility_level='same_compute_capability')
    with pytest.raises(ScalableViTError, match=r"'same_compute_capability' needs TensorRT >= 10.9 "
                                               r'\(HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY\), this is '
                                               r'TensorRT 10.8.0.43'):
        engine_rules.check_target_platform(same_cc, 'fp16', '10.8.0.43', GPU_H100, 0)
    assert engine_rules.target_platform_problem(same_cc, 'fp16', '10.9.0.34', GPU_H100, 0) is None
    with pytest.raises(ScalableViTError, match='too old'):
        engine_rules.check_target_platform(_target(), 'fp32', '8.5.2', GPU_H100, 0)


def test_int8_and_high_opsets_need_tensorrt_10():
    with pytest.raises(ScalableViTError, match=r'INT8 bundles need TensorRT >= 10 \(JetPack >= 6.1\)'):
        compat.check_onnx_opset(19, 'int8', '8.6.2.3')
    with pytest.raises(ScalableViTError, match='opset 18 but TensorRT 8.6.2.3 parses opset <= 17'):
        compat.check_onnx_opset(18, 'fp16', '8.6.2.3')
    compat.check_onnx_opset(17, 'fp16', '8.6.2.3')
    compat.check_onnx_opset(19, 'int8', '10.3.0.30')
    assert compat.onnx_opset_problem(19, 'int8', '10.3.0.30') is None


# ------------------------------------------------------------------------------------------ flags, trtexec, keys
def test_build_flags_follow_the_tensorrt_generation():
    assert engine.build_flags(_target(), 'int8', '10.3.0') == ['strongly_typed', 'no_tf32',
                                                                'profiling_verbosity=detailed']
    assert engine.build_flags(_target(), 'int8', '11.4.1')[0] == 'strongly_typed'
    assert engine.build_flags(_target(), 'int8', '8.6.2')[:3] == ['weakly_typed', 'int8', 'fp16']
    dla = _target(dla_core=1, batch_opt=1, batch_max=1, version_compatible=True, tf32=True)
    assert engine.build_flags(dla, 'fp16', '10.3.0') == ['weakly_typed', 'fp16', 'profiling_verbosity=detailed',
                                                         'dla_core=1', 'prefer_precision_constraints', 'gpu_fallback',
                                                         'version_compatible']
    assert engine.build_flags(dla, 'int8', '11.4.1.1') == ['strongly_typed', 'profiling_verbosity=detailed',
                                                           'dla_core=1', 'gpu_fallback', 'version_compatible']
    no_fallback = _target(dla_core=0, batch_opt=1, batch_max=1, gpu_fallback=False)
    assert engine.build_flags(no_fallback, 'int8', '10.3.0')[-1] == 'direct_io'
    assert engine.builder_flag_names(engine.build_flags(dla, 'int8', '10.3.0')) == [
        'INT8', 'FP16', 'PREFER_PRECISION_CONSTRAINTS', 'GPU_FALLBACK', 'VERSION_COMPATIBLE']
    with pytest.raises(ScalableViTError, match="unknown precision 'bf16'"):  # checked where a bundle is read
        check_precision('bf16')


def _trtexec_sets(command: str, trt_major: int) -> set:
    """The BuilderFlags trtexec sets for ``command``: a transcription of NVIDIA/TensorRT samples/common,
    release/8.6, 10.3, 10.7, 10.16 (sampleOptions.cpp: --stronglyTyped disables --fp16/--int8; sampleEngines.cpp:
    precision flags, then the --useDLACore block: PREFER_PRECISION_CONSTRAINTS, GPU_FALLBACK or DIRECT_IO, and
    FP16 unless --int8) and release/11.1 (the DLA block sets only GPU_FALLBACK or DIRECT_IO). Raises where the
    TensorRT 10.x builder rejects FP16 on a strongly typed network (NVIDIA/TensorRT issues 4228, 4253)."""
    args = set(shlex.split(command))
    strong = '--stronglyTyped' in args
    sets = {name for opt, name in (('--fp16', 'FP16'), ('--int8', 'INT8'), ('--fp8', 'FP8'))
            if opt in args and not strong}
    sets |= {'VERSION_COMPATIBLE'} if '--versionCompatible' in args else set()
    if any(a.startswith('--useDLACore=') for a in args):
        sets.add('GPU_FALLBACK' if '--allowGPUFallback' in args else 'DIRECT_IO')
        if trt_major < 11:
            sets.add('PREFER_PRECISION_CONSTRAINTS')
            if '--int8' not in args or strong:
                sets.add('FP16')
    if strong and 'FP16' in sets and trt_major == 10:
        raise ValueError('Parameter check failed, condition: !config.getFlag(BuilderFlag::kFP16)')
    return sets


def test_the_old_strongly_typed_dla_command_is_what_tensorrt_10_rejects():
    with pytest.raises(ValueError, match='kFP16'):
        _trtexec_sets('trtexec --onnx=m.onnx --stronglyTyped --useDLACore=0 --allowGPUFallback', 10)


@pytest.mark.parametrize('version', ['8.6.2.3', '10.3.0.30', '10.16.0.72', '11.4.1.1'])
def test_the_printed_trtexec_command_sets_what_the_build_sets(version):
    major = compat.version(version)[0]
    variants = [targets.load_target(n) for n in targets.list_targets()] + [
        _target(dla_core=1, batch_opt=1, batch_max=1, gpu_fallback=False), _target(version_compatible=True)]
    for target in variants:
        for precision in ('fp16', 'int8') if target.dla_core is not None else ('fp32', 'fp16', 'int8', 'fp8'):
            flags = engine.build_flags(target, precision, version)  # (FP32 on DLA is refused before any build)
            command = engine.trtexec_command('m.onnx', 'm.engine', target, precision, version, flags=flags)
            assert _trtexec_sets(command, major) == set(engine.builder_flag_names(flags)), (target.name, precision)
            assert ('--noTF32' in command) == ('no_tf32' in flags)


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
                                             '10.3.0.30', chw=(3, 448, 448)))
    assert {'--useDLACore=0', '--allowGPUFallback', '--int8', '--fp16', '--optShapes=input:1x3x448x448'} <= set(dla)
    assert '--stronglyTyped' not in dla  # TensorRT 10.x DLA: weakly typed, as trtexec builds it
    dla11 = shlex.split(engine.trtexec_command('m.onnx', 'm.engine', targets.load_target('jetson-agx-orin-dla'),
                                               'int8', '11.4.1.1'))
    assert {'--useDLACore=0', '--allowGPUFallback'} <= set(dla11) and not {'--int8', '--fp16'} & set(dla11)
    fleet = _target(version_compatible=True, hardware_compatibility_level='same_compute_capability')
    fleet_args = shlex.split(engine.trtexec_command('m.onnx', 'm.engine', fleet, 'fp32', '10.9.0.34'))
    assert {'--versionCompatible', '--hardwareCompatibilityLevel=sameComputeCapability'} <= set(fleet_args)


def test_network_typing_per_release_and_device():
    cases = {('8.6.2.3', False): 'weak', ('8.6.2.3', True): 'weak', ('10.3.0.30', False): 'flag',
             ('10.3.0.30', True): 'weak', ('11.1.0.106', False): 'always', ('11.4.1.1', True): 'always'}
    assert {k: compat.network_typing(*k) for k in cases} == cases


def test_cache_key_changes_with_every_field():
    args = dict(onnx_sha256='a' * 64, target=_target(), precision='int8', trt_version='10.3.0.30', gpu=AGX_ORIN,
                build_flags=['strongly_typed', 'no_tf32'])
    key = engine.engine_cache_key(**args)
    assert len(key) == 16 and key == engine.engine_cache_key(**args)
    assert key == engine.engine_cache_key(**{**args, 'build_flags': ['no_tf32', 'strongly_typed']})
    assert key == engine.engine_cache_key(**{**args, 'target': _target(notes='only a comment')})
    assert key == engine.engine_cache_key(**{**args, 'gpu': {**AGX_ORIN, 'integrated': None}})  # not identity
    variants = {'onnx_sha256': 'b' * 64, 'precision': 'fp16', 'trt_version': '10.3.0.31', 'gpu': ORIN_NX,
                'build_flags': ['strongly_typed']}
    keys = {name: engine.engine_cache_key(**{**args, name: value}) for name, value in variants.items()}
    for field, value in (('name', 'Orin (nvgpu)'), ('compute_capability', '8.6'), ('sm_count', 8),
                         ('total_memory_mib', 62841), ('board', None), ('cpu_arch', 'x86_64'), ('os', 'Windows')):
        keys[f'gpu.{field}'] = engine.engine_cache_key(**{**args, 'gpu': {**AGX_ORIN, field: value}})
    target_changes = dict(name='u', workspace_mib=2048, batch_min=2, batch_opt=8, batch_max=16,
                          builder_optimization_level=5, dla_core=0, gpu_fallback=False, tf32=True,
                          version_compatible=True, hardware_compatibility_level='ampere_plus')
    for field, value in target_changes.items():
        keys[f'target.{field}'] = engine.engine_cache_key(**{**args, 'target': _target(**{field: value})})
    assert key not in keys.values() and len(set(keys.values())) == len(keys)


def test_timing_cache_file_is_per_gpu_identity_and_version(tmp_path):
    a = engine.timing_cache_path(tmp_path, H100, '10.7.0.23')
    assert a.parent == tmp_path and re.fullmatch(r'nvidia-h100-80gb-hbm3-sm90-trt10\.7\.0\.23-[0-9a-f]{8}\.timing', a.name)
    assert a == engine.timing_cache_path(tmp_path, {**H100, 'integrated': True}, '10.7.0.23')
    assert a != engine.timing_cache_path(tmp_path, H100, '10.8.0.43')
    agx, nx = (engine.timing_cache_path(tmp_path, g, '10.3.0.30') for g in (AGX_ORIN, ORIN_NX))
    assert agx != nx and agx.name.startswith('orin-sm87-trt10.3.0.30-') and nx.name.startswith('orin-sm87-trt10.3.0.30-')


# Real build-log messages: NVIDIA's sampleCudla README (release/10.16), a TensorRT 8.5 trtexec log on Orin
# (jetson_dla_tutorial write-up, model_bn.log) and a TensorRT 8.2 build (no layer type before the name).
BUILD_LOG = """[I] [TRT] --------------- Layers running on DLA:
[I] [TRT] [DlaLayer] {ForeignNode[(Unnamed Layer* 0) [ElementWise]]},
[I] [TRT] --------------- Layers running on GPU:
[08/31/2023-07:07:49] [I] [TRT] ---------- Layers Running on DLA ----------
[08/31/2023-07:07:49] [I] [TRT] [DlaLayer] {ForeignNode[/cnn/cnn.0/Conv.../cnn/cnn.11/Relu]}
[08/31/2023-07:07:49] [I] [TRT] [DlaLayer] {ForeignNode[/linear/Gemm]}
[08/31/2023-07:07:49] [I] [TRT] ---------- Layers Running on GPU ----------
[08/31/2023-07:07:49] [I] [TRT] [GpuLayer] POOLING: /pool/GlobalAveragePool
[08/31/2023-07:07:49] [I] [TRT] [GpuLayer] SHUFFLE: reshape_after_/linear/Gemm
[09/23/2025-01:35:17] [TRT] [I] [GpuLayer] PWN(PWN(Sigmoid_1), Mul_2)"""


def test_layer_placement_from_the_build_log_and_layer_device_counts():
    placed = inspector.layer_placement(BUILD_LOG.splitlines())
    assert placed == {'dla': ['{ForeignNode[(Unnamed Layer* 0) [ElementWise]]}',
                              '{ForeignNode[/cnn/cnn.0/Conv.../cnn/cnn.11/Relu]}', '{ForeignNode[/linear/Gemm]}'],
                      'gpu': ['POOLING: /pool/GlobalAveragePool', 'SHUFFLE: reshape_after_/linear/Gemm',
                              'PWN(PWN(Sigmoid_1), Mul_2)']}
    assert inspector.layer_placement(['[DlaLayer] {ForeignNode[a]}']) == {'dla': ['{ForeignNode[a]}'], 'gpu': []}
    info = {'Layers': [{'Name': '{ForeignNode[/cnn/cnn.0/Conv.../cnn/cnn.11/Relu]}', 'LayerType': 'kgen'},
                       {'Name': 'attn', 'LayerType': 'Myelin'}, {'Name': 'head', 'LayerType': 'CaskGemm'}]}
    assert inspector.count_layer_devices(json.dumps(info)) == {'total': 3, 'dla': 0, 'gpu': 3}
    assert inspector.count_layer_devices(info, placed['dla']) == {'total': 3, 'dla': 1, 'gpu': 2}
    assert inspector.count_layer_devices({'Layers': [{'Name': 'x', 'LayerType': 'DLA'}]}) == {'total': 1, 'dla': 1,
                                                                                             'gpu': 0}
    assert inspector.count_layer_devices({'Layers': ['names only']}) == {'total': 1, 'dla': 0, 'gpu': 1}


def test_profile_shapes():
    assert engine.profile_shapes(_target(), (3, 224, 224)) == {'min': (1, 3, 224, 224), 'opt': (4, 3, 224, 224),
                                                               'max': (8, 3, 224, 224)}


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
        device_pipeline.build_bundle_engine(bundle, 'desktop')
    assert not (bundle / 'engines').exists()


def test_bundle_with_a_modified_reference_or_bad_manifest_is_refused(tmp_path):
    bundle = _bundle(tmp_path)
    np.savez(bundle / 'reference.npz', input=np.zeros((1, 3, 224, 224), np.float32), logits=np.zeros((1, 10)))
    with pytest.raises(ScalableViTError, match=r'reference .*reference.npz does not match the bundle manifest'):
        device_pipeline.build_bundle_engine(bundle, 'desktop')
    manifest = json.loads((bundle / 'manifest.json').read_text())
    write_json(bundle / 'manifest.json', {**manifest, 'deploy_onnx': 'model.int8.onnx'})
    with pytest.raises(ScalableViTError, match="an fp32 bundle must deploy 'model.fp32.onnx' from its onnx entry"):
        device_pipeline.build_bundle_engine(bundle, 'desktop')
    del manifest['reference']
    write_json(bundle / 'manifest.json', manifest)
    with pytest.raises(ScalableViTError, match="bundle manifest .* is missing 'reference'"):
        device_pipeline.build_bundle_engine(bundle, 'desktop')


@pytest.mark.skipif(trt_env.trt_status()[0], reason='TensorRT and a GPU are present: the build would start')
def test_bundle_build_without_tensorrt_says_why(tmp_path):
    with pytest.raises(ScalableViTError, match='TensorRT is not usable here: (tensorrt not importable|no CUDA)'):
        device_pipeline.build_bundle_engine(_bundle(tmp_path), 'desktop')


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
        np.testing.assert_allclose(device_pipeline.run_padded(runner, images, 1, 3), expected, rtol=1e-6)
        assert runner.batches == [3, 3, 1]
        runner.batches.clear()
        np.testing.assert_allclose(device_pipeline.run_padded(runner, images, 4, 4), expected, rtol=1e-6)  # DLA: fixed batch
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
            "import importlib, pkgutil, scalablevit.device as d; "
            "[importlib.import_module(m.name) for m in pkgutil.iter_modules(d.__path__, 'scalablevit.device.')]; "
            "from scalablevit.device.targets import load_target; print(load_target('jetson-orin-nano').name)")
    env = {**os.environ, 'PYTHONPATH': str(REPO)}
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'jetson-orin-nano'
