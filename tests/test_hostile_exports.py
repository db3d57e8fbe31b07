"""Hostile inputs to the Triton and DeepStream exports (issue 21 items 4, 5, 7, 11, 12), through the command line:
the exit code, the one ``error:`` line, and what is on disk afterwards.

One small bundle for the module (``scalable_vit_test`` FP32, normalization folded so DeepStream can feed it,
untrained); cases that need a hostile manifest or a fake engine edit a copy of it. Engines: TensorRT is not installed
here, so the engine case uses placeholder bytes plus the manifest the device pipeline writes (test_deploy's
``_fake_engine``); only the hash check is exercised, no engine runs.
"""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from scalablevit.core.fileio import write_json
from scalablevit.host.pipeline import HostOptions, HostPipeline
from scalablevit.serve.exportdir import MARKER, PAUSE_ENV
from scalablevit.serve.triton import model_config_text, parse_model_config
from tests.test_deploy import _fake_engine, _read_config

ROOT = Path(__file__).resolve().parents[1]
TRITON = 'deploy/export_triton.py'
DEEPSTREAM = 'deploy/export_deepstream.py'
NAME = 'scalable_vit_test_fp32_onnx'
INT32_MAX = 2 ** 31 - 1


@pytest.fixture(scope='module')
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp('hostile') / 'b'
    HostPipeline(HostOptions(model='scalable_vit_test', precision='fp32', out=out, calib_size=8, val_size=8,
                             fold_normalization=True)).run()
    return out


def _run(*args: str, env: dict = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def _one_error(result: subprocess.CompletedProcess, *parts: str) -> str:
    """The run failed with exit 1, printed nothing on stdout and exactly one ``error:`` line holding ``parts``."""
    assert result.returncode == 1, result.stderr
    assert result.stdout == ''
    lines = [line for line in result.stderr.splitlines() if not line[:2].isdigit()]  # log lines start with a time
    assert len(lines) == 1 and lines[0].startswith('error: '), result.stderr
    assert all(p in lines[0] for p in parts), lines[0]
    return lines[0]


def _snapshot(folder: Path) -> dict:
    """Every path under ``folder`` with the sha256 of its bytes (None for a folder)."""
    return {p.relative_to(folder).as_posix(): None if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob('*'))}


def _edited(bundle: Path, tmp_path: Path, edit) -> Path:
    """A copy of the bundle whose manifest ``edit(manifest)`` changed."""
    copy = tmp_path / 'edited'
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / 'manifest.json').read_text())
    edit(manifest)
    write_json(copy / 'manifest.json', manifest)
    return copy


def _max_batch(repo: Path, name: str = NAME) -> int:
    return parse_model_config((repo / name / 'config.pbtxt').read_text()).max_batch_size


# ------------------------------------------------------------------------------------------------ Triton: item 4
def test_triton_refuses_another_models_entry_and_keeps_it(bundle, tmp_path):
    repo = tmp_path / 'repo'
    (repo / 'resnet' / '2').mkdir(parents=True)
    (repo / 'resnet' / '2' / 'model.onnx').write_bytes(b'another model')
    (repo / 'resnet' / 'config.pbtxt').write_text('name: "resnet"\n')
    (repo / 'resnet' / 'notes.txt').write_text('mine\n')
    before = _snapshot(repo)
    _one_error(_run(TRITON, bundle, '--repo', repo, '--name', 'resnet'),
               f'{repo / "resnet"} was not written by export_triton (it holds 2/, config.pbtxt, notes.txt)',
               'nothing was changed')
    assert _snapshot(repo) == before


def test_triton_replaces_its_own_entry_only_when_it_holds_nothing_else(bundle, tmp_path):
    repo = tmp_path / 'repo'
    assert _run(TRITON, bundle, '--repo', repo).returncode == 0
    assert _max_batch(repo) == 64  # desktop
    entry = repo / NAME
    marker = json.loads((entry / MARKER).read_text())
    assert marker['tool'] == 'export_triton' and marker['files'] == ['1/', '1/model.onnx', 'config.pbtxt',
                                                                    'labels.txt']
    (entry / '2').mkdir()
    (entry / '2' / 'model.onnx').write_bytes(b'a version the user added')
    (entry / 'README').write_text('user notes\n')
    before = _snapshot(repo)
    _one_error(_run(TRITON, bundle, '--repo', repo, '--target', 'jetson-orin-nano'),
               'holds what export_triton did not write (2/, README)')
    assert _snapshot(repo) == before
    shutil.rmtree(entry / '2')
    (entry / 'README').unlink()
    assert _run(TRITON, bundle, '--repo', repo, '--target', 'jetson-orin-nano').returncode == 0
    assert _max_batch(repo) == 8 and sorted(p.name for p in repo.iterdir()) == [NAME]


def _interrupted(bundle: Path, repo: Path, signum: int) -> subprocess.CompletedProcess:
    """An export to ``repo`` that gets ``signum`` while it waits just before swapping its entry in."""
    proc = subprocess.Popen([sys.executable, TRITON, str(bundle), '--repo', str(repo), '--target',
                             'jetson-orin-nano'], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, PAUSE_ENV: '600'})
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith('paused before swap'):
            break
    assert seen and seen[-1].startswith('paused before swap'), ''.join(seen)
    proc.send_signal(signum)
    out, err = proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, ''.join(seen) + err)


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGKILL])
def test_triton_entry_is_old_or_new_whole_when_killed_at_the_swap(bundle, tmp_path, signum):
    repo = tmp_path / 'repo'
    assert _run(TRITON, bundle, '--repo', repo).returncode == 0
    before = _snapshot(repo / NAME)
    result = _interrupted(bundle, repo, signum)
    assert result.returncode == (143 if signum == signal.SIGTERM else -signal.SIGKILL), result.stderr
    assert _snapshot(repo / NAME) == before and _max_batch(repo) == 64  # the old entry, whole
    leftovers = [p.name for p in repo.iterdir() if p.name != NAME]
    if signum == signal.SIGTERM:
        assert 'error: terminated' in result.stderr and leftovers == []  # cleanup ran on the way out
    else:
        assert len(leftovers) == 1 and leftovers[0].startswith(f'.{NAME}.export-')
    result = _run(TRITON, bundle, '--repo', repo, '--target', 'jetson-orin-nano')
    assert result.returncode == 0, result.stderr
    assert _max_batch(repo) == 8 and sorted(p.name for p in repo.iterdir()) == [NAME]  # SIGKILL's staging swept


def test_triton_rewrite_without_rename_exchange(bundle, tmp_path, monkeypatch):
    """The fallback for file systems without RENAME_EXCHANGE: two renames, same result, nothing left over."""
    from scalablevit.serve import exportdir
    from scalablevit.serve.triton import export_triton
    repo = tmp_path / 'repo'
    export_triton(bundle, repo)
    monkeypatch.setattr(exportdir, '_exchange', lambda a, b: False)
    export_triton(bundle, repo, target='jetson-orin-nano')
    assert _max_batch(repo) == 8 and sorted(p.name for p in repo.iterdir()) == [NAME]
    assert json.loads((repo / NAME / MARKER).read_text())['max_batch_size'] == 8


# ------------------------------------------------------------------------------------------------ Triton: item 5
def test_triton_refuses_a_truncated_engine(bundle, tmp_path):
    copy = tmp_path / 'b'
    shutil.copytree(bundle, copy)
    engine = _fake_engine(copy)
    engine.write_bytes(engine.read_bytes()[:10])  # truncated after its manifest was written
    repo = tmp_path / 'repo'
    _one_error(_run(TRITON, engine, '--repo', repo, '--name', 'fmnist'),
               f'engine {engine} does not match the engine_sha256 of its manifest', '10 bytes): rebuild it')
    assert not repo.exists()  # refused when opened: no repository, no entry, no staging folder


# ------------------------------------------------------------------------------------------------ Triton: item 7
def _target_file(tmp_path: Path, batch_max: int, batch_min: int = 1) -> Path:
    path = tmp_path / f'target_{batch_min}_{batch_max}.json'
    data = json.loads((ROOT / 'scalablevit' / 'device' / 'targets' / 'desktop.json').read_text())
    data['batch'] = {'min': batch_min, 'opt': batch_min, 'max': batch_max}
    path.write_text(json.dumps(data))
    return path


def _output_list(m):
    m['output']['name'] = ['logits', 'probs']


def _huge_dims(m):
    m['input']['shape'] = [None, 3, 10 ** 30, 224]


def _eleven_classes(m):
    m['output']['num_classes'] = 11


@pytest.mark.parametrize('args, edit, message', [
    (['--name', 'x"\nplatform: "tensorrt_plan'], None, "model name 'x\"\\nplatform: \"tensorrt_plan' is not usable"),
    (['--name', 'm\ninstance_group [ {{ kind: KIND_CPU }} ]'], None, 'is not usable'),
    (['--name', ''], None, "model name '' is not usable"),
    (['--name', '.hidden'], None, "not starting with '.'"),
    (['--name', '../escape'], None, "model name '../escape' is not usable"),
    (['--name', 'a' * 129], None, '1 to 128 letters'),
    (['--target', '{huge}'], None, 'max_batch_size (the batch maximum) must be an integer from 1 to 2147483647, '
                                   'got 1000000000000'),
    (['--target', '{min2}'], None, 'target batch range 2..64 does not start at 1'),
    ([], _output_list, "'output': field 'name' must be a string, got [\"logits\", \"probs\"]"),
    ([], _huge_dims, f'input.shape must be [null, 3, S, S] with S in 1..4096 (got [null, 3, {10 ** 30}, 224])'),
    ([], _eleven_classes, "num_classes 10 is not the output's 11"),
])
def test_triton_refuses_an_invalid_config(bundle, tmp_path, args, edit, message):
    source = _edited(bundle, tmp_path, edit) if edit else bundle
    huge, min2 = _target_file(tmp_path, 10 ** 12), _target_file(tmp_path, 64, batch_min=2)
    repo = tmp_path / 'repo'
    _one_error(_run(TRITON, source, '--repo', repo, *[a.format(huge=huge, min2=min2) for a in args]), message)
    assert not repo.exists()


def test_triton_config_escapes_strings_and_reparses():
    name = 'in"put\\ with "quotes"'
    text = model_config_text('m', 'onnxruntime', 8, 2, name, [3, 224, 224], 'logits', 10, notes=['a\nb'])
    cfg = parse_model_config(text)
    assert cfg.input[0].name == name and cfg.max_batch_size == 8 and len(cfg.instance_group) == 1
    assert text.startswith('# a b\nname: "m"\n')
    assert list(cfg.input[0].dims) == [3, 224, 224] and list(cfg.output[0].dims) == [10]


# ------------------------------------------------------------------------------------------------ DeepStream: 11
@pytest.mark.parametrize('args, message', [
    (['--classifier-threshold', '2'], 'from 0 to below 1 (nvinfer labels an object only when its top probability '
                                      'is above it), got 2.0'),
    (['--classifier-threshold', '1'], 'got 1.0'),
    (['--classifier-threshold', 'nan'], 'got nan'),
    (['--classifier-threshold', '-0.5'], 'got -0.5'),
    (['--process-mode', 'secondary', '--operate-on-gie-id', '-1'],
     f'--operate-on-gie-id must be an integer from 1 to {INT32_MAX}, got -1'),
    (['--process-mode', 'secondary', '--operate-on-gie-id', '2'], "--operate-on-gie-id 2 is this classifier's own"),
    (['--process-mode', 'secondary', '--gie-id', '5', '--operate-on-gie-id', '5'], 'own --gie-id'),
    (['--gie-id', '0'], f'--gie-id (gie-unique-id) must be an integer from 1 to {INT32_MAX}, got 0'),
    (['--gie-id', str(2 ** 32)], f'got {2 ** 32}'),
    (['--operate-on-gie-id', '3'], '--operate-on-gie-id is for --process-mode secondary'),
    (['--target', '{huge}'], f'batch-size (the batch maximum) must be an integer from 1 to {INT32_MAX}, '
                             'got 1000000000000'),
])
def test_deepstream_refuses_options_out_of_nvinfer_range(bundle, tmp_path, args, message):
    huge = _target_file(tmp_path, 10 ** 12)
    out = tmp_path / 'ds'
    _one_error(_run(DEEPSTREAM, bundle, '--out', out, *[a.format(huge=huge) for a in args]), message)
    assert not out.exists()


def _unfolded(mean, std):
    def edit(m):
        m['input']['preprocessing'].update(normalize_in_model=False, mean=mean, std=std)
    return edit


@pytest.mark.parametrize('edit, message', [
    (_unfolded([0.5] * 3, [0, 0, 0]), 'std must be three finite numbers, each above 0, in [0.001, 1] (statistics of '
                                      '0..1 pixels), got [0, 0, 0]'),
    (_unfolded([float('nan')] * 3, [0.5] * 3), 'mean must be three finite numbers, in [0, 1] (statistics of 0..1 '
                                               'pixels), got [NaN, NaN, NaN]'),
    (_unfolded([-0.5] * 3, [0.5] * 3), 'got [-0.5, -0.5, -0.5]'),
    (_unfolded([0.5] * 3, 'abc'), 'input.preprocessing: field \'std\' must be an array, got "abc"'),
])
def test_deepstream_refuses_a_normalization_nvinfer_cannot_take(bundle, tmp_path, edit, message):
    out = tmp_path / 'ds'
    _one_error(_run(DEEPSTREAM, _edited(bundle, tmp_path, edit), '--out', out), message)
    assert not out.exists()


def test_a_forged_marker_is_refused(bundle, tmp_path):
    entry = tmp_path / 'repo' / NAME
    entry.mkdir(parents=True)
    write_json(entry / MARKER, {'tool': 'export_triton', 'files': [['config.pbtxt']]})
    before = _snapshot(entry)
    _one_error(_run(TRITON, bundle, '--repo', tmp_path / 'repo'), 'was not written by export_triton')
    assert _snapshot(entry) == before


def test_deepstream_folder_is_ours_whole_or_refused(bundle, tmp_path):
    out = tmp_path / 'ds'
    out.mkdir()
    (out / 'my_pipeline.txt').write_text('a user file\n')
    _one_error(_run(DEEPSTREAM, bundle, '--out', out), f'{out} was not written by export_deepstream',
               'my_pipeline.txt')
    assert _snapshot(out) == {'my_pipeline.txt': hashlib.sha256(b'a user file\n').hexdigest()}
    (out / 'my_pipeline.txt').unlink()
    result = _run(DEEPSTREAM, bundle, '--out', out, '--process-mode', 'secondary', '--gie-id', '4',
                  '--classifier-threshold', '0.25')
    assert result.returncode == 0, result.stderr
    props = _read_config(out / 'config_infer_scalable_vit_test.txt')
    assert (props['gie-unique-id'], props['operate-on-gie-id'], props['classifier-threshold']) == ('4', '1', '0.25')
    # rewriting our own folder: the new one replaces it whole (a primary has no operate-on-gie-id line)
    assert _run(DEEPSTREAM, bundle, '--out', out).returncode == 0
    props = _read_config(out / 'config_infer_scalable_vit_test.txt')
    assert props['gie-unique-id'] == '1' and 'operate-on-gie-id' not in props
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ['config_infer_scalable_vit_test.txt', 'deepstream.json', 'labels.txt', 'model.fp32.probs.onnx', MARKER])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith('.')] == []


# ------------------------------------------------------------------------------------------------ item 12
def _untrained(m):
    m['untrained'] = False


@pytest.mark.parametrize('untrained', [True, False])
def test_exports_warn_about_and_record_untrained_weights(bundle, tmp_path, untrained):
    source = bundle if untrained else _edited(bundle, tmp_path, _untrained)
    triton = _run(TRITON, source, '--repo', tmp_path / 'repo')
    deepstream = _run(DEEPSTREAM, source, '--out', tmp_path / 'ds')
    for result, tool in ((triton, 'export_triton'), (deepstream, 'export_deepstream')):
        assert result.returncode == 0, result.stderr
        warnings = [line for line in result.stderr.splitlines() if ' WARNING ' in line]
        assert len(warnings) == int(untrained), result.stderr
        assert not untrained or f'{tool}: bundle {source} has UNTRAINED (random) weights' in warnings[0]
    config = (tmp_path / 'repo' / NAME / 'config.pbtxt').read_text()
    assert ('# UNTRAINED: random weights' in config) == untrained
    assert parse_model_config(config).name == NAME
    assert json.loads((tmp_path / 'repo' / NAME / MARKER).read_text())['untrained'] is untrained
    assert json.loads((tmp_path / 'ds' / 'deepstream.json').read_text())['untrained'] is untrained
    assert json.loads((tmp_path / 'ds' / MARKER).read_text())['untrained'] is untrained
    assert ('# UNTRAINED' in (tmp_path / 'ds' / 'config_infer_scalable_vit_test.txt').read_text()) == untrained
