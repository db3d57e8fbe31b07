"""--fold-normalization: mean/std folded exactly into the stem conv, checked with onnxruntime against the unfolded
export, and the host pipeline feeding the folded model RGB 0-255 (real exports, real modelopt INT8)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from scalablevit.core.errors import ScalableViTError
from scalablevit.data.fmnist import load_fashion_mnist, resize_images
from scalablevit.data.store import load_npz
from scalablevit.data.transforms import folded_config, normalize, normalize_in_model, preprocess
from scalablevit.host.export import export_onnx, load_onnx, onnx_data_config, op_histogram, read_metadata
from scalablevit.host.runners import OnnxRuntimeRunner
from scalablevit.models.fold import FoldedConv2d, fold_normalization
from scalablevit.models.scalablevit import create_model

ROOT = Path(__file__).resolve().parents[1]
FMNIST_WEIGHTS = ROOT / 'scalablevit' / 'models' / 'weights' / 'scalable_vit_fmnist.safetensors'
EXACT = 1e-5  # the bound on |folded - unfolded| logits, onnxruntime FP32


def _logits(onnx: Path, x: np.ndarray) -> np.ndarray:
    with OnnxRuntimeRunner(str(onnx)) as runner:
        return runner.infer({'input': x})['logits']


def _pixels(size: int, n: int = 8, seed: int = 0) -> np.ndarray:
    """Random whole-number RGB pixels 0-255, float32 (N, 3, S, S): every border pixel differs from the mean."""
    return np.random.default_rng(seed).integers(0, 256, (n, 3, size, size)).astype(np.float32)


@pytest.fixture(scope='module', params=['scalable_vit_fmnist', 'scalable_vit_test'])
def exports(request, tmp_path_factory):
    """(model, unfolded ONNX, folded ONNX): the trained fmnist model, and the test config with ImageNet's
    per-channel mean/std (random weights)."""
    torch.manual_seed(0)
    weights = str(FMNIST_WEIGHTS) if request.param == 'scalable_vit_fmnist' else None
    model = create_model(request.param, weights=weights).eval()
    out = tmp_path_factory.mktemp(request.param)
    export_onnx(model, out / 'plain.onnx')
    export_onnx(model, out / 'folded.onnx', fold_normalization=True)
    return model, out / 'plain.onnx', out / 'folded.onnx'


def test_folded_onnx_on_pixels_equals_unfolded_on_normalized_pixels(exports):
    model, plain, folded = exports
    x = _pixels(model.data_cfg['input_size'][-1])
    expected = _logits(plain, normalize(x, model.data_cfg))
    got = _logits(folded, x)
    assert np.abs(got - expected).max() <= EXACT
    assert np.abs(expected).max() > 0.5  # real logits, not a degenerate output
    assert (got.argmax(1) == expected.argmax(1)).all()


def test_folded_onnx_on_real_images(tmp_path):
    """Fashion-MNIST test images (black borders, far from the mean) through both exports of the trained model."""
    model = create_model('fmnist', weights=str(FMNIST_WEIGHTS)).eval()
    export_onnx(model, tmp_path / 'plain.onnx')
    export_onnx(model, tmp_path / 'folded.onnx', fold_normalization=True)
    images, _ = load_fashion_mnist('test')
    pixels = resize_images(images[:64], model.data_cfg).astype(np.float32)
    pixels = np.repeat(pixels[:, None], 3, axis=1)
    expected = _logits(tmp_path / 'plain.onnx', normalize(pixels, model.data_cfg))
    assert np.abs(_logits(tmp_path / 'folded.onnx', pixels) - expected).max() <= EXACT


def test_the_border_term_is_what_makes_it_exact(exports):
    """Zero padding pads the normalized image with 0, i.e. with the mean colour: weights and bias alone are off."""
    model, _, _ = exports
    size = model.data_cfg['input_size'][-1]
    folded = fold_normalization(model, (size, size)).eval()
    stem = folded.patch_embeds[0].proj
    assert isinstance(stem, FoldedConv2d) and stem.padding == (3, 3) and stem.padding_mode == 'zeros'
    border = stem.border[0].abs().amax(0)
    assert border[2:-2, 2:-2].max() == 0 and border[0].min() > 0  # only the outputs that reach the padding
    x = torch.from_numpy(_pixels(size))
    with torch.no_grad():
        reference = model(torch.from_numpy(normalize(x.numpy(), model.data_cfg)))
        exact = folded(x)
        stem.border.zero_()
        naive = folded(x)
    assert (exact - reference).abs().max() < EXACT
    assert (naive - reference).abs().max() > 100 * EXACT


def test_non_zero_padding_needs_no_border_term():
    """Reflect padding copies pixels, which commutes with the per-channel normalization."""
    torch.manual_seed(1)
    model = create_model('scalable_vit_test').eval()
    model.patch_embeds[0].proj.padding_mode = 'reflect'
    folded = fold_normalization(model, (224, 224)).eval()
    assert folded.patch_embeds[0].proj.border.abs().max() == 0
    x = torch.from_numpy(_pixels(224, n=2))
    with torch.no_grad():
        diff = folded(x) - model(torch.from_numpy(normalize(x.numpy(), model.data_cfg)))
    assert diff.abs().max() < EXACT


def test_metadata_and_preprocessing_say_what_the_model_expects(exports):
    model, plain, folded = exports
    meta_plain, meta_folded = read_metadata(load_onnx(plain)), read_metadata(load_onnx(folded))
    assert meta_plain['normalize_in_model'] == 'False' and meta_folded['normalize_in_model'] == 'True'
    cfg = onnx_data_config(load_onnx(folded), folded)
    assert normalize_in_model(cfg) and not normalize_in_model(onnx_data_config(load_onnx(plain), plain))
    assert cfg['mean'] == model.data_cfg['mean']  # still recorded: what the model does inside
    # one extra node: the border Add after the stem conv (node names keep the INT8 policy's stem pattern)
    names = [n.name for n in load_onnx(folded).graph.node]
    assert '/patch_embeds.0/proj/Conv' in names and '/patch_embeds.0/proj/Add' in names
    assert op_histogram(load_onnx(folded))['Add'] == op_histogram(load_onnx(plain))['Add'] + 1


def test_preprocess_of_a_folded_config_is_the_pixels():
    from PIL import Image
    cfg = create_model('scalable_vit_test').data_cfg
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (240, 300, 3), dtype=np.uint8))
    raw = preprocess(image, folded_config(cfg))
    assert raw.dtype == np.float32 and raw.shape == (3, 224, 224) and raw.max() <= 255 and (raw == np.round(raw)).all()
    assert np.array_equal(normalize(raw, cfg), preprocess(image, cfg))  # bit for bit


def test_refusals():
    model = create_model('scalable_vit_test')
    folded = fold_normalization(model, (224, 224))
    with pytest.raises(ScalableViTError, match='already folded'):
        fold_normalization(folded, (224, 224))
    grouped = create_model('scalable_vit_test')
    grouped.patch_embeds[0].proj = torch.nn.Conv2d(3, 16, 7, 4, 3, groups=1, bias=False)
    with pytest.raises(ScalableViTError, match='exact only for a 3-channel, ungrouped conv with a bias'):
        fold_normalization(grouped, (224, 224))
    with pytest.raises(ScalableViTError, match='exported for a stem output of'):
        folded(torch.zeros(1, 3, 448, 448))


def test_cli_export_with_fold(tmp_path):
    out = tmp_path / 'f.onnx'
    result = subprocess.run([sys.executable, 'deploy/export_onnx.py', '--model', 'fmnist', '--weights',
                             str(FMNIST_WEIGHTS), '--fold-normalization', '--out', str(out)],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert read_metadata(load_onnx(out))['normalize_in_model'] == 'True'


# ------------------------------------------------------------------------------------------- pipeline
@pytest.fixture(scope='module')
def folded_int8(tmp_path_factory):
    from scalablevit.host.pipeline import HostOptions, HostPipeline
    out = tmp_path_factory.mktemp('folded') / 'int8'
    # 500 held-out images: enough for the gate to decide (64 cannot tell one flipped image from a drop)
    report = HostPipeline(HostOptions(model='fmnist', precision='int8', out=out, calib_size=128, val_size=500,
                                      fold_normalization=True)).run()
    return out, report


def test_pipeline_records_the_fold_and_feeds_pixels(folded_int8):
    out, report = folded_int8
    m = json.loads((out / 'manifest.json').read_text())
    assert m['input']['preprocessing']['normalize_in_model'] is True
    assert m['stages']['export']['facts']['normalize_in_model'] is True
    ref = np.load(out / 'reference.npz')
    calib = load_npz(out / 'calibration.npz')
    for images in (ref['input'], calib.images):
        assert images.min() >= 0 and images.max() == 255 and (images == np.round(images)).all()
    # the reference logits are the UNfolded PyTorch model on normalized pixels: the folded FP32 ONNX matches them
    model = create_model('fmnist', weights=str(FMNIST_WEIGHTS)).eval()
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(normalize(ref['input'], model.data_cfg))).numpy()
    assert np.abs(torch_logits - ref['logits']).max() < 1e-5
    assert np.abs(_logits(out / 'model.fp32.onnx', ref['input']) - ref['logits']).max() <= EXACT


def test_folded_int8_bundle_keeps_its_accuracy(folded_int8):
    _, report = folded_int8
    acc = report['accuracy']
    assert report['status'] == 'passed' and acc['samples'] == 500
    assert acc['top1_agreement'] >= 0.98 and acc['cosine_min'] > 0.99


def test_folded_and_plain_bundles_do_not_share_a_default_directory():
    from scalablevit.host.pipeline import HostOptions
    assert HostOptions(model='fmnist', precision='int8', fold_normalization=True).validate().out.name == \
        'scalable_vit_fmnist-int8-folded'


def test_compare_bundle_feeds_pytorch_normalized_images(folded_int8, tmp_path):
    from scalablevit.cli.compare_bundle import main
    out, _ = folded_int8
    assert main([str(out), '--iters', '1', '--warmup', '0', '--no-plots', '--out', str(tmp_path)]) == 0
    rows = {r['name']: r for r in json.loads((tmp_path / 'compare.json').read_text())['rows']}
    assert rows['torch-cpu']['accuracy']['top1_agreement'] == 1.0
    assert rows['torch-cpu']['accuracy']['max_abs_diff'] < 1e-4


def test_accuracy_cli_refuses_a_folded_candidate(folded_int8, tmp_path):
    out, _ = folded_int8
    result = subprocess.run([sys.executable, 'bench/accuracy.py', '--val', str(tmp_path), '--model', 'fmnist',
                             '--candidate', str(out / 'model.fp32.onnx')], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 1 and 'takes RGB 0-255 (--fold-normalization)' in result.stderr
