"""The host pipeline and deploy/build_engine.py end to end, on the small test config (real ONNX, real modelopt)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from scalablevit.host.pipeline import HostOptions, HostPipeline
from scalablevit.models.checkpoint import save_weights
from scalablevit.models.scalablevit import create_model

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(model='scalable_vit_test', calib_size=16, val_size=8)
CONTRACT_ACCURACY = {'reference': str, 'samples': int, 'top1_agreement': float, 'cosine_mean': float,
                     'cosine_min': float, 'max_abs_diff': float}


@pytest.fixture(scope='module')
def int8_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp('bundle') / 'int8'
    report = HostPipeline(HostOptions(precision='int8', out=out, **SMALL)).run()
    return out, report


def test_report_follows_the_contract(int8_bundle):
    out, report = int8_bundle
    on_disk = json.loads((out / 'report.json').read_text())
    assert on_disk['model'] == 'scalable_vit_test' and on_disk['precision'] == 'int8'
    assert on_disk['backend'] == 'onnxruntime-cpu'
    for key, kind in CONTRACT_ACCURACY.items():
        assert isinstance(on_disk['accuracy'][key], kind), key
    assert on_disk['accuracy']['samples'] == 8
    assert on_disk['accuracy']['top1_reference'] is None and on_disk['accuracy']['top1_candidate'] is None
    lat = on_disk['latency_ms']
    assert lat['batch'] == 1 and 0 < lat['p50'] <= lat['p90'] <= lat['p99']
    assert on_disk['environment']['tools']['onnxruntime']
    assert on_disk['warning'] == 'untrained weights' and on_disk['status'].startswith(('passed', 'not gated'))
    assert set(on_disk['stages']) == {'export', 'data', 'quantize', 'validate'}
    md = (out / 'report.md').read_text()
    assert 'Untrained weights' in md and 'top-1 agreement' in md


def test_manifest_describes_every_artifact(int8_bundle):
    out, _ = int8_bundle
    m = json.loads((out / 'manifest.json').read_text())
    assert m['deploy_onnx'] == 'model.int8.onnx' and m['untrained'] is True and m['weights'] is None
    assert m['input'] == {'name': 'input', 'shape': [None, 3, 224, 224], 'preprocessing': m['input']['preprocessing']}
    assert m['onnx']['fp32']['opset'] == 17 and m['onnx']['int8']['opset'] >= 19
    from scalablevit.core.fileio import sha256_file
    for entry in m['onnx'].values():
        assert sha256_file(out / entry['file']) == entry['sha256']
    assert m['calibration']['count'] == 16 and m['reference']['samples'] == 8
    assert m['quantization']['method'] == 'entropy'
    ref = np.load(out / 'reference.npz')
    assert ref['input'].shape == (8, 3, 224, 224) and ref['logits'].shape == (8, 10)
    assert not list(out.glob('*.tmp')) and not list(out.glob('.*.tmp'))


def test_stage_records_hold_peak_memory_per_stage_and_part(int8_bundle):
    """Each stage record holds its sampled peak RSS and, per part of the stage, seconds, RSS at its start and peak;
    every figure sits under the process's kernel high-water mark and the parts under their stage."""
    out, report = int8_bundle
    stages = json.loads((out / 'manifest.json').read_text())['stages']
    host_peak = report['host']['peak_rss_mb']  # getrusage: the most this process ever held
    parts = {'export': ['model', 'trace', 'simplify', 'save'], 'data': ['images', 'reference logits'],
             'quantize': ['load', 'fp16 ranges', 'int8 calibration', 'fp16 autocast', 'check and save'],
             'validate': ['census', 'onnxruntime']}
    for name, expected in parts.items():
        record = stages[name] if name in stages else report['stages'][name]
        assert 100 < record['peak_rss_mb'] <= host_peak + 1 < 4096, name  # the test model: a few hundred MB of work
        assert list(record['parts']) == expected, name
        for part in record['parts'].values():
            assert 100 < part['start_rss_mb'] <= part['peak_rss_mb'] <= record['peak_rss_mb'] + 0.1, (name, part)
        assert sum(part['seconds'] for part in record['parts'].values()) <= record['seconds'] + 0.05, name
    quantize = stages['quantize']['parts']
    # calibration runs the model with its activations exposed: it holds more than loading the ONNX did
    assert quantize['int8 calibration']['peak_rss_mb'] > quantize['load']['peak_rss_mb']
    assert stages['quantize']['facts']['calibration_batch_size'] == 8  # the test model's activations are small
    md = (out / 'report.md').read_text()
    assert '| quantize > int8 calibration |' in md and '| data > reference logits |' in md


def test_nested_steps_record_what_each_part_allocated():
    """A part that allocates 200 MB records it: its peak is at least that much above its start; the outer step
    keeps the parts in the order they ran."""
    from scalablevit.core.steps import timed_step
    with timed_step('outer') as outer:
        with timed_step('small'):
            pass
        with timed_step('allocates') as inner:
            block = np.ones(200 * 2 ** 20 // 8)  # written, so resident; held until the step ends
    del block
    assert list(outer['parts']) == ['small', 'allocates']
    assert inner['peak_rss_mb'] - inner['start_rss_mb'] >= 190
    assert outer['parts']['allocates']['peak_rss_mb'] == inner['peak_rss_mb'] <= outer['peak_rss_mb']


def test_untrained_int8_graph_still_tracks_fp32(int8_bundle):
    """Random weights, so only numerical closeness is meaningful: the Q/DQ model stays near the FP32 logits."""
    _, report = int8_bundle
    assert report['accuracy']['cosine_mean'] > 0.9


def test_rerun_reuses_finished_stages_and_force_rebuilds(int8_bundle):
    out, first = int8_bundle
    again = HostPipeline(HostOptions(precision='int8', out=out, **SMALL)).run()
    assert all(again['stages'][s]['reused'] for s in ('export', 'data', 'quantize'))
    assert again['accuracy'] == first['accuracy']
    changed = HostPipeline(HostOptions(precision='int8', out=out, int8_method='max', **SMALL)).run()
    assert changed['stages']['export']['reused'] and not changed['stages']['quantize']['reused']


def test_interrupted_run_resumes_after_last_finished_stage(tmp_path, monkeypatch):
    from scalablevit.host import quantize

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(quantize, 'convert_fp16', boom)
    with pytest.raises(KeyboardInterrupt):
        HostPipeline(HostOptions(precision='fp16', out=tmp_path, **SMALL)).run()
    assert (tmp_path / 'model.fp32.onnx').is_file() and not (tmp_path / 'model.fp16.onnx').exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith('.tmp')]
    monkeypatch.undo()
    report = HostPipeline(HostOptions(precision='fp16', out=tmp_path, **SMALL)).run()
    assert report['stages']['export']['reused'] and not report['stages']['quantize']['reused']
    assert report['accuracy']['top1_agreement'] == 1.0


def test_trained_weights_are_hashed_and_gated(tmp_path):
    torch.manual_seed(3)
    model = create_model('scalable_vit_test')
    weights = tmp_path / 'w.safetensors'
    save_weights(model, weights)
    report = HostPipeline(HostOptions(precision='fp32', out=tmp_path / 'b', weights=weights, **SMALL)).run()
    assert report['status'] == 'passed' and 'warning' not in report
    assert report['accuracy']['top1_agreement'] == 1.0 and report['accuracy']['max_abs_diff'] < 1e-4
    manifest = json.loads((tmp_path / 'b' / 'manifest.json').read_text())
    from scalablevit.core.fileio import sha256_file
    assert manifest['weights']['sha256'] == sha256_file(weights)


# ------------------------------------------------------------------------------------------ the CLI
def run_cli(*args, cwd=None):
    env = {**os.environ, 'PYTHONPATH': str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / 'deploy' / 'build_engine.py'), *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=600)


def test_cli_without_tensorrt_completes_host_bundle_and_says_so(tmp_path):
    out = tmp_path / 'b'
    res = run_cli('--model', 'test', '--precision', 'fp32', '--calib-size', '4', '--val-size', '4', '--out', str(out))
    assert res.returncode == 0, res.stderr
    skip = [line for line in res.stdout.splitlines() if line.startswith('TensorRT stage skipped')]
    assert len(skip) == 1 and f'--bundle {out}' in skip[0] and 'tensorrt not importable' in skip[0]
    assert (out / 'report.json').is_file()
    strict = run_cli('--bundle', str(out), '--require-engine')
    assert strict.returncode == 1
    assert strict.stderr.strip().splitlines()[-1].startswith('error: TensorRT stage needed')


def _bad_inputs(tmp_path):
    empty = tmp_path / 'empty'
    empty.mkdir()
    garbage = tmp_path / 'garbage.pth'
    garbage.write_bytes(b'\x00not weights at all')
    blocker = tmp_path / 'a-file'
    blocker.write_text('x')
    base = ['--model', 'test', '--calib-size', '4', '--val-size', '4']
    return [
        (base + ['--precision', 'int4'], "unknown precision 'int4'"),
        (base + ['--opset', '16'], 'opset 16 is not supported'),
        (base + ['--int8-policy', 'defualt'], "did you mean 'default'"),
        (base + ['--weights', str(tmp_path / 'missing.pth')], 'weights file not found'),
        (base + ['--weights', str(garbage)], 'not a checkpoint'),
        (base + ['--calib', str(empty)], 'no images found'),
        (base + ['--input-size', '230'], 'multiples of 224'),
        (base + ['--out', str(blocker / 'sub')], 'not writable'),
        (base + ['--model', 'scalable_vit_smal'], "did you mean 'scalable_vit_small'"),
        (base + ['--target', 'jetson-orin-nan'], "did you mean 'jetson-orin-nano'"),
        (base + ['--batch', '8', '4', '16'], 'min <= opt <= max'),
    ]


def test_cli_bad_inputs_fail_with_one_clear_line(tmp_path):
    for args, expected in _bad_inputs(tmp_path):
        out = tmp_path / ('out-' + str(abs(hash(tuple(args)))))
        if '--out' not in args:
            args = args + ['--out', str(out)]
        res = run_cli(*args)
        last = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else ''
        assert res.returncode == 1, (args, res.stderr[-2000:])
        assert last.startswith('error: ') and expected in last, (args, last)
        assert 'Traceback' not in res.stderr, args
        leftovers = [p.name for p in out.rglob('*') if p.suffix in ('.onnx', '.npz', '.tmp')] if out.exists() else []
        assert not leftovers, (args, leftovers)


def test_device_mode_runs_without_torch_onnx_or_modelopt(int8_bundle):
    """A Jetson often has only tensorrt, numpy and a CUDA binding: --bundle mode must not import the host stack."""
    out, _ = int8_bundle
    blocked = "import sys, runpy\nfor m in ('torch', 'onnx', 'onnxruntime', 'modelopt'):\n    sys.modules[m] = None\n" \
              f"sys.argv = ['build_engine.py', '--bundle', {str(out)!r}, '--target', 'jetson-orin-nano']\n" \
              f"runpy.run_path({str(ROOT / 'deploy' / 'build_engine.py')!r}, run_name='__main__')\n"
    res = subprocess.run([sys.executable, '-c', blocked], capture_output=True, text=True, timeout=120,
                         env={**os.environ, 'PYTHONPATH': str(ROOT)})
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.startswith('TensorRT stage skipped: tensorrt not importable')
    assert '--target jetson-orin-nano' in res.stdout
