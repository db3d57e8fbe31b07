"""--int8-policy auto on real quantized models: the trained Fashion-MNIST ScalableViT with outlier channels.

The model is the shipped one with three LayerNorm output channels made 200x larger and the Linear reading each
scaled back (tools/massive_activations.py: the same function in FP32, channels of |x| ~800-1500). With max
calibration (the outlier channel sets every scale of its tensor) the fixed default policy fails the gate and auto
moves the Linears that read the outliers to FP16; entropy calibration, the default, clips the outliers and passes
without moving anything. Built through the host pipeline (deploy/build_engine.py's path) on 256 TRAIN images to
calibrate and 1,000 TEST images to validate, so each build takes seconds.
"""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from scalablevit.core.errors import ScalableViTError

pytest.importorskip('modelopt.onnx.quantization')
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tools'))
SMALL = dict(model='scalable_vit_fmnist', calib_size=256, val_size=1000)
# the Linears reading the amplified LayerNorm channels (tools/massive_activations.SITES)
OUTLIER_READERS = {'/stages.2.0/attn/qkv/MatMul', '/stages.2.1/mlp/fc1/MatMul', '/stages.3.1/mlp/fc1/MatMul'}


pytestmark = pytest.mark.usefixtures('fashion_mnist_installed')


@pytest.fixture(scope='module')
def massive_weights(tmp_path_factory):
    from massive_activations import build
    from scalablevit.models.checkpoint import save_weights
    model, channels = build()
    path = tmp_path_factory.mktemp('massive') / 'fmnist_massive.safetensors'
    save_weights(model, path)
    return path, channels


def _build(out, weights, policy, **options):
    from scalablevit.host.pipeline import HostOptions, HostPipeline
    return HostPipeline(HostOptions(precision='int8', out=out, weights=weights, int8_policy=policy, **SMALL,
                                    **options)).run()


@pytest.fixture(scope='module')
def fixed_and_auto(massive_weights, tmp_path_factory):
    out = tmp_path_factory.mktemp('bundles')
    weights, _ = massive_weights
    return (_build(out / 'default', weights, 'default', int8_method='max'),
            _build(out / 'auto', weights, 'auto', int8_method='max'), out / 'auto')


def test_entropy_calibration_passes_the_outlier_model_without_a_search(massive_weights, tmp_path):
    report = _build(tmp_path / 'entropy', massive_weights[0], 'default')
    assert report['status'] == 'passed' and report['accuracy']['top1_agreement'] >= 0.99


def test_outlier_model_keeps_its_accuracy(massive_weights):
    """The construction changes no prediction in FP32: same top-1 on the test images as the shipped weights."""
    import torch
    from scalablevit.data.fmnist import fashion_mnist_sets
    from scalablevit.models.scalablevit import create_model
    weights, channels = massive_weights
    assert set(channels) == {'stages.2.0.norm1', 'stages.2.1.norm2', 'stages.3.1.norm2'}
    from massive_activations import WEIGHTS
    shipped = create_model('scalable_vit_fmnist', weights=str(WEIGHTS))
    built = create_model('scalable_vit_fmnist', weights=str(weights))
    _, test = fashion_mnist_sets(built.data_cfg, 1, 500, seed=0)
    x = torch.from_numpy(test.images)
    with torch.inference_mode():
        a, b = shipped.eval()(x), built.eval()(x)
    assert (a.argmax(1) == b.argmax(1)).all() and float((a - b).abs().max()) < 1e-3


def test_default_policy_fails_and_auto_passes(fixed_and_auto):
    fixed, auto, _ = fixed_and_auto
    assert fixed['status'].startswith('FAILED')  # the fixed policy on outlier channels
    assert auto['status'] == 'passed'
    facts = auto['int8_auto']
    assert facts['met'] and 'budget met' in facts['message']
    assert auto['accuracy']['top1_agreement'] >= 0.99 > fixed['accuracy']['top1_agreement']


def test_auto_moves_the_layers_reading_the_outliers(fixed_and_auto):
    """The sensitivity ranks the outlier readers first, and the chosen set is among them (and small)."""
    _, auto, out = fixed_and_auto
    facts = auto['int8_auto']
    ranked = sorted(facts['sensitivity'], key=lambda n: -facts['sensitivity'][n])
    assert set(ranked[:3]) == OUTLIER_READERS
    assert facts['moved'] and set(facts['moved']) <= OUTLIER_READERS
    moves = [s for s in facts['steps'] if s['action'] == 'move']
    assert moves[0]['node'] == ranked[0] and moves[0]['sensitivity'] == pytest.approx(facts['sensitivity'][ranked[0]])
    assert all(s['quantized_mac_share_lost'] > 0 for s in moves)
    assert facts['steps'][-1]['met'] or any(s['met'] for s in facts['steps'])
    manifest = json.loads((out / 'manifest.json').read_text())
    assert manifest['quantization']['exclude_nodes_auto'] == facts['moved']
    md = (out / 'report.md').read_text()
    assert 'INT8 auto policy' in md and all(f'`{n}`' in md for n in facts['moved'])
    # the moved layers no longer read INT8 and run FP16 (the census of the deployed file)
    import onnx
    from scalablevit.host.census import layers_of
    dtypes = {la.name: la.dtype for la in layers_of(onnx.load(str(out / 'model.int8.onnx')))}
    assert all(dtypes[n] == 'fp16' for n in facts['moved'])


def test_rewrite_equals_a_fresh_calibration_with_that_exclusion(fixed_and_auto, tmp_path):
    """The search reroutes one calibrated graph; modelopt run afresh with the chosen exclusion gives the same file."""
    import onnxruntime as ort
    from scalablevit.data.store import ImageSet
    from scalablevit.host.quantize import quantize_qdq
    _, auto, out = fixed_and_auto
    exact = ['^' + n.replace('.', r'\.') + '$' for n in auto['int8_auto']['moved']]
    fresh = tmp_path / 'fresh.onnx'
    quantize_qdq(out / 'model.fp32.onnx', fresh, ImageSet.load_npz(out / 'calibration.npz').images,
                  policy='default', method='max', exclude_nodes=exact)  # the bundle's calibration
    images = np.load(out / 'reference.npz')['input'][:200]
    run = [ort.InferenceSession(str(p), providers=['CPUExecutionProvider']).run(['logits'], {'input': images})[0]
           for p in (out / 'model.int8.onnx', fresh)]
    assert np.abs(run[0] - run[1]).max() < 1e-3


def test_unreachable_target_stops_with_one_line(massive_weights, tmp_path, monkeypatch, capsys):
    """A bound too small for the target: the build exits 1 with one line saying the budget was not met."""
    from scalablevit.cli import build_engine, run_cli
    from scalablevit.host import autoquant
    monkeypatch.setattr(autoquant, 'MAX_STEPS', 2)
    weights, _ = massive_weights
    argv = ['--model', 'fmnist', '--weights', str(weights), '--precision', 'int8', '--int8-policy', 'auto',
            '--int8-target', 'agreement=100', '--calib-size', '256', '--val-size', '1000', '--out', str(tmp_path)]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(build_engine.main, argv)
    assert exit_info.value.code == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith('error:')]
    assert len(err) == 1 and 'not met within the bound (2 evaluations)' in err[0]
    report = json.loads((tmp_path / 'report.json').read_text())
    assert report['int8_auto']['met'] is False and len(report['int8_auto']['steps']) == 2
    assert report['status'].startswith('FAILED') and 'agreement' in report['status']


@pytest.mark.parametrize('target, policy, message', [
    ('agreement=99.5', 'default', "needs a searching policy"),
    ('agreement', 'auto', 'expected agreement=PERCENT'),
    ('drop=abc', 'auto', "'abc' is not a number"),
    ('agreement=101', 'auto', 'between 0 and 100'),
    ('cosine=1.5', 'auto-none', 'between 0 and 1'),
])
def test_bad_target_is_one_error_before_any_work(target, policy, message, tmp_path):
    from scalablevit.host.pipeline import HostOptions
    with pytest.raises(ScalableViTError, match=message):
        HostOptions(model='scalable_vit_fmnist', precision='int8', int8_policy=policy, int8_target=target,
                    out=tmp_path / 'b').validate()
    assert not (tmp_path / 'b').exists()


def test_target_tightens_the_budget_only():
    from scalablevit.host.autoquant import parse_target, target_budget
    budget = {'min_top1_agreement': 0.99, 'max_top1_drop': 0.5, 'min_cosine_min': 0.95}
    assert parse_target(' drop=0.2 , agreement=99.9') == 'agreement=99.9,drop=0.2'
    assert target_budget(budget, 'agreement=99.9,drop=0.2,cosine=0.99') == {
        'min_top1_agreement': 0.999, 'max_top1_drop': 0.2, 'min_cosine_min': 0.99}  # 0.999 exactly, not 0.999...01
    assert target_budget(budget, 'agreement=90,drop=2,cosine=0.5') == budget


def test_auto_without_reference_images_is_one_clear_error(massive_weights, tmp_path):
    from scalablevit.host.export import export_onnx
    from scalablevit.host.quantize import quantize_qdq
    from scalablevit.models.scalablevit import create_model
    model = create_model('scalable_vit_fmnist').eval()
    export_onnx(model, tmp_path / 'm.onnx')
    images = np.zeros((2, 3, 64, 64), np.float32)
    with pytest.raises(ScalableViTError, match='held-out images and their FP32 logits'):
        quantize_qdq(tmp_path / 'm.onnx', tmp_path / 'q.onnx', images, policy='auto')
    assert not (tmp_path / 'q.onnx').exists()
