"""Hostile flags and sidecar files, each through the command line: exit code, the one ``error:`` line, and nothing
left behind (no output folder, the bundle byte for byte as it was).

Covered: ``--input-size`` has one check in every tool (``scalablevit.cli.check_input_size``); engine batch profiles
and target workspaces are bounded where the target is loaded or ``--batch`` parsed; ``--threads`` is a range and
``--providers`` names providers onnxruntime has; engine manifests (``<engine>.json``) are checked by the one reader
every consumer uses; a JSON file nested past Python's recursion limit is one line.
"""
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scalablevit.cli import MAX_THREADS_PER_CPU, available_providers
from scalablevit.core.errors import ScalableViTError
from scalablevit.device import engine_rules
from scalablevit.device.targets import MAX_ENGINE_BATCH, MAX_WORKSPACE_MIB, load_target, target_from_dict
from test_reliability import ROOT, build, cli, failed, manifest, passed, snapshot

TINY = ['--model', 'test', '--calib-size', '2', '--val-size', '2']
DESKTOP = ROOT / 'scalablevit' / 'device' / 'targets' / 'desktop.json'
DEEP = '[' * 100_000
OUT_NAME = {'deploy/export_onnx.py': 'x.onnx', 'calib/make_calib.py': 'c.npz', 'bench/latency.py': '',
            'bench/jetson_bench.py': ''}  # build_engine's --out is not given: device mode


@pytest.fixture(scope='module')
def bundle(tmp_path_factory):
    """One FP32 bundle of the test model (224 px), shared: every case below must leave it as it was."""
    out = tmp_path_factory.mktemp('flags') / 'bundle'
    passed(build(*TINY, '--precision', 'fp32', '--out', out))
    return out


@pytest.fixture(scope='module')
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp('photo') / 'photo.png'
    Image.fromarray(np.full((40, 60, 3), 128, np.uint8)).save(path)
    return path


def refused(before: dict, bundle: Path, script: str, *args) -> str:
    """Run ``script`` expecting exit 1 with one error line; the bundle must be unchanged. Returns the line."""
    line = failed(cli(script, *args))
    assert snapshot(bundle) == before, (script, args)
    return line


# ------------------------------------------------------------------------------------------- 1. --input-size
@pytest.mark.parametrize('script, args, size, message', [
    ('deploy/export_onnx.py', ['--model', 'test'], '4480', '--input-size 4480 does not fit scalable_vit_test'),
    ('bench/latency.py', ['--model', 'test', '--torch', '--no-onnx'], '4480', 'up to 4096'),
    ('bench/latency.py', ['--model', 'test', '--torch', '--no-onnx'], '-5', '--input-size -5 does not fit'),
    ('bench/latency.py', ['--model', 'test', '--torch', '--no-onnx'], '0', '--input-size 0 does not fit'),
    ('calib/make_calib.py', ['--model', 'test'], '225', 'it takes positive multiples of 224 up to 4096'),
    ('calib/make_calib.py', ['--model', 'test'], '4480', '--input-size 4480 does not fit scalable_vit_test'),
    ('bench/jetson_bench.py', ['--model', 'test', '--onnx', '{onnx}'], '225', '--input-size 225 does not fit'),
    ('bench/jetson_bench.py', ['--onnx', '{onnx}'], '4480', '--input-size 4480 is not a side from 1 to 4096'),
    ('deploy/build_engine.py', ['--bundle', '{bundle}'], '4480', '--input-size 4480 does not fit scalable_vit_test'),
])
def test_every_input_size_flag_has_the_one_check(bundle, tmp_path, script, args, size, message):
    out = tmp_path / 'out'
    args = [a.format(onnx=bundle / 'model.fp32.onnx', bundle=bundle) for a in args]
    out_flag = ['--out', out / OUT_NAME[script]] if script in OUT_NAME else []
    line = refused(snapshot(bundle), bundle, script, *args, '--input-size', size, *out_flag)
    assert message in line
    assert not out.exists()


# ------------------------------------------------------------------------------------------- 2. batch, workspace
def _target_file(tmp_path: Path, **fields) -> Path:
    data = {**json.loads(DESKTOP.read_text()), **fields}
    path = tmp_path / 'target.json'
    path.write_text(json.dumps(data))
    return path


def test_engine_batch_and_workspace_are_bounded_before_anything_else(bundle, tmp_path):
    before = snapshot(bundle)
    for batch, shown in (('1 1 99999999999', '99999999999'), ('0 1 1', '0'), ('1 x 2', 'x')):
        line = refused(before, bundle, 'deploy/build_engine.py', '--bundle', bundle, '--batch', *batch.split())
        assert f'argument --batch: must be an integer from 1 to {MAX_ENGINE_BATCH}' in line and f'got {shown}' in line
    huge = _target_file(tmp_path, batch={'min': 1, 'opt': 1, 'max': 10 ** 12})
    line = refused(before, bundle, 'deploy/build_engine.py', '--bundle', bundle, '--target', huge)
    assert f"field 'batch.max' (an engine profile batch) must be an integer from 1 to {MAX_ENGINE_BATCH}" in line
    for workspace, message in ((10 ** 20, f"'workspace_mib' (at most 1 TiB) must be an integer from 1 to "
                                          f'{MAX_WORKSPACE_MIB}, got {10 ** 20}'),
                               (1e20, "field 'workspace_mib' must be int, got 1e+20")):
        path = _target_file(tmp_path, workspace_mib=workspace)
        assert message in refused(before, bundle, 'deploy/build_engine.py', '--bundle', bundle, '--target', path)


def test_target_bounds_at_load():
    data = json.loads(DESKTOP.read_text())
    with pytest.raises(ScalableViTError, match=f'from 1 to {MAX_WORKSPACE_MIB}, got {MAX_WORKSPACE_MIB + 1}'):
        target_from_dict({**data, 'workspace_mib': MAX_WORKSPACE_MIB + 1})
    with pytest.raises(ScalableViTError, match="field 'dla_core' must be an integer from 0 to 2147483647"):
        target_from_dict({**data, 'dla_core': 2 ** 40, 'batch': {'min': 1, 'opt': 1, 'max': 1}})
    assert load_target('desktop').workspace_mib == 4096  # the shipped targets stay within every bound


# ------------------------------------------------------------------------------------------- 3. threads, providers
def test_threads_and_providers_are_checked_by_every_tool_that_has_them(bundle, tmp_path):
    before = snapshot(bundle)
    out = tmp_path / 'r'
    most = MAX_THREADS_PER_CPU * (os.cpu_count() or 1)
    for threads in ('100000', '-1', '0', str(most + 1)):
        for script, args in (('bench/latency.py', ['--bundle', bundle, '--out', out]),
                             ('bench/compare_bundle.py', [bundle, '--out', out])):
            line = refused(before, bundle, script, *args, '--threads', threads)
            assert f'argument --threads: must be an integer from 1 to {most}' in line and f'got {threads}' in line
    for script, args in (('bench/latency.py', ['--bundle', bundle, '--out', out]),
                         ('bench/compare_bundle.py', [bundle, '--out', out]),
                         ('bench/jetson_bench.py', ['--onnx', bundle / 'model.fp32.onnx', '--out', out])):
        line = refused(before, bundle, script, *args, '--providers', 'CPUExecutionProvider', 'Bogus')
        assert "argument --providers: onnxruntime here has no provider 'Bogus'" in line
        assert 'CPUExecutionProvider' in line.split('available: ')[1]
    assert not out.exists() and 'CPUExecutionProvider' in available_providers()


# ------------------------------------------------------------------------------------------- 4. engine manifests
def _engine(bundle: Path, tmp_path: Path, content: bytes = b'not a plan', **edit) -> Path:
    """A copy of ``bundle`` holding placeholder engine bytes with the manifest the builder writes (``edit``
    replaces fields; ``record=`` the whole JSON text)."""
    copy = tmp_path / 'b'
    shutil.copytree(bundle, copy)
    engine = copy / 'engines' / 'model.fp32.desktop.abc.engine'
    engine.parent.mkdir()
    engine.write_bytes(content)
    record = {'format': engine_rules.MANIFEST_FORMAT, 'engine': engine.name,
              'engine_sha256': hashlib.sha256(content).hexdigest(), 'engine_bytes': len(content),
              'tensorrt_version': '10.3.0', 'gpu': {}, 'compatibility': {}, 'target': {'name': 'desktop'},
              'precision': 'fp32',
              'onnx': {'file': 'model.fp32.onnx', 'sha256': manifest(copy)['onnx']['fp32']['sha256']},
              'input': {'name': 'input', 'profile': {'min': [1, 3, 224, 224], 'opt': [4, 3, 224, 224],
                                                     'max': [8, 3, 224, 224]}}}
    text = edit.pop('record', None)
    record.update(edit)
    record = {k: v for k, v in record.items() if v is not None}
    (engine.parent / (engine.name + '.json')).write_text(text if text is not None else json.dumps(record))
    return engine


PROFILE_8_5 = {'min': [1, 3, 224, 224], 'opt': [8.5, 3, 224, 224], 'max': [16, 3, 224, 224]}


@pytest.mark.parametrize('content, edit, message', [
    (b'not a plan', {'record': '[1,2]'}, 'not an engine manifest (a JSON object is expected, got an array)'),
    (b'not a plan', {'record': 'null'}, 'not an engine manifest (a JSON object is expected, got null)'),
    (b'not a plan', {'record': DEEP}, 'not readable JSON (nested too deeply)'),
    (b'not a plan', {'precision': 'int2'}, "unknown precision in engine manifest"),
    (b'not a plan', {'input': {'name': 'input', 'profile': PROFILE_8_5}},
     f'input.profile.opt batch must be an integer from 1 to {MAX_ENGINE_BATCH}, got 8.5'),
    (b'', {'engine_bytes': None}, 'is empty (0 bytes): no TensorRT plan is; rebuild it'),
    (b'', {}, 'is empty (0 bytes): no TensorRT plan is; rebuild it'),
    (b'not a plan', {'engine_bytes': -1}, 'engine_bytes must be a byte count, got -1'),
])
def test_every_engine_manifest_consumer_refuses_a_bad_one(bundle, photo, tmp_path, content, edit, message):
    engine = _engine(bundle, tmp_path, content, **edit)
    copy = engine.parent.parent
    before = snapshot(copy)
    out = tmp_path / 'out'
    for script, args in (('bench/compare_bundle.py', [copy, '--no-torch', '--out', out]),
                         ('bench/latency.py', ['--engine', engine, '--input-size', '224', '--out', out]),
                         ('bench/jetson_bench.py', ['--engine', engine, '--out', out]),
                         ('deploy/export_triton.py', [engine, '--repo', out]),
                         ('deploy/export_deepstream.py', [engine, '--out', out]),
                         ('deploy/predict.py', [photo, '--engine', engine])):
        line = refused(before, copy, script, *args)
        assert message in line and f'{engine}' in line, (script, line)
        assert not out.exists()


def test_engine_manifest_schema_names_the_field():
    good = {'engine': 'e.engine', 'engine_sha256': '0' * 64, 'precision': 'int8',
            'input': {'profile': {'min': [1, 3, 64, 64], 'opt': [2, 3, 64, 64], 'max': [4, 3, 64, 64]}}}
    assert engine_rules.check_engine_manifest(good, 'm') is good
    bad = [({'engine_sha256': 'abc'}, 'engine_sha256 must be 64 lowercase hex digits'),
           ({'engine': '../e.engine'}, 'engine must be a file name'),
           ({'engine_bytes': True}, "field 'engine_bytes' must be an integer, got true"),
           ({'gpu': []}, "field 'gpu' must be an object, got []"),
           ({'compatibility': {'version_compatible': 'yes'}}, 'version_compatible must be true or false'),
           ({'compatibility': {'hardware_compatibility_level': 'all'}}, "unknown hardware_compatibility_level"),
           ({'target': {'dla_core': 2 ** 40}}, 'target.dla_core must be an integer from 0 to 2147483647'),
           ({'target': {'batch': {'max': 10 ** 12}}},
            f'target.batch.max must be an integer from 1 to {MAX_ENGINE_BATCH}'),
           ({'input': {'profile': {'min': [1, 3, 64, 64], 'opt': [1, 3, 64, 64]}}}, 'exactly min, opt, max'),
           ({'input': {'profile': {**good['input']['profile'], 'min': [8, 3, 64, 64]}}}, 'min <= opt <= max'),
           ({'input': {'profile': {**good['input']['profile'], 'max': [4, 3, 32, 32]}}}, 'must share C, H, W'),
           ({'input': {'profile': {**good['input']['profile'], 'max': [4, 3, 10 ** 9, 64]}}}, 'dimension must be'),
           ({'tensorrt_version': 'abc'}, "'abc' is not a version number")]
    for edit, message in bad:
        with pytest.raises(ScalableViTError) as info:
            engine_rules.check_engine_manifest({**good, **edit}, 'm')
        assert message in str(info.value), (edit, str(info.value))


# ------------------------------------------------------------------------------------------- 5. deep JSON
def test_json_nested_past_the_recursion_limit_is_one_line(bundle, photo, tmp_path):
    copy = tmp_path / 'b'
    shutil.copytree(bundle, copy)
    (copy / 'manifest.json').write_text(DEEP)
    before = snapshot(copy)
    for script, args in (('deploy/predict.py', [photo, '--bundle', copy]),
                         ('bench/compare_bundle.py', [copy, '--out', tmp_path / 'out']),
                         ('deploy/build_engine.py', ['--bundle', copy])):
        line = refused(before, copy, script, *args)
        assert line == f'error: {copy}/manifest.json: not readable JSON (nested too deeply)', (script, line)
    target = tmp_path / 'deep.json'
    target.write_text(DEEP)
    line = refused(snapshot(bundle), bundle, 'deploy/build_engine.py', '--bundle', bundle, '--target', target)
    assert line == f'error: {target}: not readable JSON (nested too deeply)'
    assert not (tmp_path / 'out').exists()
