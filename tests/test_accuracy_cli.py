"""bench/accuracy.py on a real labelled folder: Fashion-MNIST test images written as PNG class folders."""
import importlib.util
import json
import logging
from pathlib import Path

import pytest
from PIL import Image

from scalablevit.core.errors import ScalableViTError
from scalablevit.data.fmnist import load_fashion_mnist

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / 'scalablevit' / 'models' / 'weights' / 'scalable_vit_fmnist.safetensors'


def _cli():
    spec = importlib.util.spec_from_file_location('bench_accuracy', ROOT / 'bench' / 'accuracy.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def labelled_folder(tmp_path_factory):
    images, labels = load_fashion_mnist('test')
    root = tmp_path_factory.mktemp('fmnist_val')
    for i in range(120):
        folder = root / f'{labels[i]:02d}'
        folder.mkdir(exist_ok=True)
        Image.fromarray(images[i]).save(folder / f'{i:05d}.png')
    (root / '03' / 'broken.png').write_bytes(b'not an image')  # skipped with a warning, for every runner
    return root, labels[:120]


@pytest.fixture(scope='module')
def fmnist_onnx(tmp_path_factory):
    from scalablevit import create_model
    from scalablevit.host.export import export_onnx
    onnx_path = tmp_path_factory.mktemp('fmnist_onnx') / 'model.fp32.onnx'
    export_onnx(create_model('scalable_vit_fmnist', weights=str(WEIGHTS)), onnx_path)
    return onnx_path


def test_accuracy_of_an_onnx_export_equals_pytorch(labelled_folder, fmnist_onnx, tmp_path):
    folder, labels = labelled_folder
    onnx_path = fmnist_onnx
    out = tmp_path / 'acc'
    assert _cli().main(['--val', str(folder), '--model', 'fmnist', '--weights', str(WEIGHTS),
                        '--candidate', str(onnx_path), '--out', str(out), '--batch', '16']) == 0
    (report,) = json.loads((out / 'accuracy.json').read_text())
    acc = report['accuracy']
    assert acc['samples'] == 120 and acc['top1_agreement'] == 1.0 and acc['max_abs_diff'] < 1e-4
    assert acc['top1_candidate'] == acc['top1_reference'] >= 85.0  # 120 test images; 91.9 % on all 10k
    assert f'| onnxruntime:{onnx_path} | fp32 |' in (out / 'accuracy.md').read_text()
    assert 'warning' not in report and report['reference_weights'] == str(WEIGHTS)


def test_accuracy_without_weights_uses_the_shipped_ones(labelled_folder, fmnist_onnx, tmp_path, caplog):
    """Without --weights it compared against random weights; now the package's trained weights, as the pipeline."""
    folder, _ = labelled_folder
    out = tmp_path / 'acc'
    caplog.set_level(logging.INFO, logger='scalablevit.models.checkpoint')
    assert _cli().main(['--val', str(folder), '--model', 'fmnist', '--candidate', str(fmnist_onnx),
                        '--out', str(out), '--limit', '40']) == 0
    (report,) = json.loads((out / 'accuracy.json').read_text())
    assert 'warning' not in report and report['reference_weights'] == str(WEIGHTS)
    assert report['accuracy']['top1_agreement'] == 1.0 and report['accuracy']['top1_reference'] >= 80.0
    assert f'using the weights shipped with the package: {WEIGHTS}' in caplog.text


def test_accuracy_needs_a_candidate(labelled_folder, tmp_path):
    folder, _ = labelled_folder
    with pytest.raises(ScalableViTError, match='nothing to evaluate'):
        _cli().main(['--val', str(folder), '--out', str(tmp_path)])
