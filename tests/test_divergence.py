"""The divergence report on real bundles of the trained Fashion-MNIST ScalableViT (FP32, INT8 + FP16).

Two small INT8 bundles (default policy, max calibration, 128 TRAIN images to calibrate, 64 TEST images held out):
the shipped model, and the same model with three LayerNorm output channels made 200x larger
(tools/massive_activations.py), where the report must point at the block holding the first outlier.
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
# max calibration: the outlier channel sets its tensor's scale (entropy, the default, would clip it), which is the
# departure the report must locate
SMALL = dict(model='scalable_vit_fmnist', precision='int8', calib_size=128, val_size=64, int8_method='max')


pytestmark = pytest.mark.usefixtures('fashion_mnist_installed')


@pytest.fixture(scope='module')
def bundles(tmp_path_factory):
    from massive_activations import build
    from scalablevit.host.pipeline import HostOptions, HostPipeline
    from scalablevit.models.checkpoint import save_weights
    out = tmp_path_factory.mktemp('divergence')
    model, _ = build()
    save_weights(model, out / 'massive.safetensors')
    HostPipeline(HostOptions(out=out / 'plain', **SMALL)).run()
    HostPipeline(HostOptions(out=out / 'massive', weights=out / 'massive.safetensors', **SMALL)).run()
    return out / 'plain', out / 'massive'


def _images(bundle, count=16):
    return np.load(bundle / 'reference.npz')['input'][:count]


def test_fp32_against_itself_is_exact(bundles):
    from scalablevit.host.divergence import divergence_report
    plain, _ = bundles
    fp32 = plain / 'model.fp32.onnx'
    report = divergence_report(fp32, fp32, _images(plain))
    assert report['matched_tensors'] > 300 and report['first_block'] is None and report['first_node'] is None
    assert all(r['cosine'] == 1.0 and r['rel_l2'] == 0.0 and r['max_abs_err'] == 0.0 for r in report['nodes'])
    assert [b['block'] for b in report['blocks']][:3] == ['patch_embeds.0', 'stages.0.0', 'pos_block.0']
    assert report['blocks'][-1]['block'] == 'head' and report['blocks'][-1]['tensor'] == 'logits'


def test_int8_error_grows_with_depth_and_matches_the_plain_run(bundles):
    import onnxruntime as ort
    from scalablevit.host.divergence import divergence_report
    plain, _ = bundles
    images = _images(plain)
    report = divergence_report(plain / 'model.fp32.onnx', plain / 'model.int8.onnx', images)
    blocks = {b['block']: b for b in report['blocks']}
    assert 0 < blocks['stages.0.0']['rel_l2'] < blocks['stages.3.1']['rel_l2']
    assert report['quantized_nodes'] and all(q['local_error'] <= q['rel_l2'] + 1e-12 for q in report['quantized_nodes'])
    # the exposed graphs compute what the plain ones do, up to the FP16 rounding of each exposed FP16 tensor
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    got = {p: ort.InferenceSession(str(plain / p), options, providers=['CPUExecutionProvider']).run(
        ['logits'], {'input': images})[0] for p in ('model.fp32.onnx', 'model.int8.onnx')}
    plain_err = np.abs(got['model.int8.onnx'] - got['model.fp32.onnx']).max()
    assert plain_err > 0.01 and blocks['head']['max_abs_err'] == pytest.approx(plain_err, rel=0.3)


def test_divergence_is_located_at_the_injected_outlier(bundles):
    from scalablevit.host.divergence import divergence_report
    _, massive = bundles
    report = divergence_report(massive / 'model.fp32.onnx', massive / 'model.int8.onnx', _images(massive))
    first = report['first_block']
    assert first['block'] == 'stages.2.0' and first['worst_node'] == '/stages.2.0/attn/qkv/MatMul'
    before = [b for b in report['blocks'] if b['depth'] < first['depth']]
    assert before and all(b['rel_l2'] < report['threshold'] for b in before)
    rows = {r['node']: r for r in report['nodes']}
    qkv = rows['/stages.2.0/attn/qkv/MatMul']
    assert qkv['input_step_over_median'] > 2  # the outlier channel's scale rounds the typical value to 0
    assert report['quantized_nodes'][0]['node'] in {'/stages.2.0/attn/qkv/MatMul', '/stages.2.1/mlp/fc1/MatMul',
                                                    '/stages.3.1/mlp/fc1/MatMul'}


def test_batches_are_sized_to_the_memory_budget(bundles):
    import onnx
    from scalablevit.host.divergence import batch_size_for, probes
    plain, _ = bundles
    ref, cand = (onnx.load(str(plain / f)) for f in ('model.fp32.onnx', 'model.int8.onnx'))
    found = probes(ref, cand)
    assert batch_size_for(ref, found) == 32  # ~7.8 MB of exposed FP32 tensors per image and graph: 1 GiB holds 32+
    assert batch_size_for(ref, found, budget=100 << 20) == 6
    assert batch_size_for(ref, found, budget=1 << 20) == 1


def test_cli_writes_markdown_json_and_plot(bundles, tmp_path, capsys):
    from scalablevit.cli.divergence import main
    _, massive = bundles
    assert main(['--bundle', str(massive), '--samples', '8', '--out', str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert 'first block over 0.05: stages.2.0' in printed
    data = json.loads((tmp_path / 'divergence.json').read_text())
    assert data['images'] == 8 and data['first_block']['block'] == 'stages.2.0'
    md = (tmp_path / 'divergence.md').read_text()
    assert '**First block over the threshold: `stages.2.0`**' in md and '| stages.3.1 |' in md
    assert (tmp_path / 'divergence.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_cli_files_mode_and_bad_inputs(bundles, tmp_path):
    from scalablevit.cli.divergence import main
    plain, _ = bundles
    fp32, int8 = plain / 'model.fp32.onnx', plain / 'model.int8.onnx'
    assert main(['--fp32', str(fp32), '--candidate', str(int8), '--inputs', str(plain / 'calibration.npz'),
                 '--samples', '4', '--out', str(tmp_path / 'ok')]) == 0
    assert json.loads((tmp_path / 'ok' / 'divergence.json').read_text())['images'] == 4
    cases = [([], 'give --bundle, or all of'),
             (['--bundle', str(plain), '--fp32', str(fp32)], 'brings its own'),
             (['--bundle', str(plain), '--candidate', str(tmp_path / 'none.onnx')], 'candidate ONNX not found'),
             (['--bundle', str(plain), '--samples', '0'], '--samples must be positive'),
             (['--bundle', str(plain), '--threshold', '0', '--out', str(tmp_path / 'x')], 'positive relative error'),
             (['--fp32', str(fp32), '--candidate', str(int8), '--inputs', str(fp32), '--out', str(tmp_path / 'y')],
              'not a readable .npz')]
    for argv, message in cases:
        with pytest.raises(ScalableViTError, match=message):
            main(argv)
    assert not (tmp_path / 'x').exists() and not (tmp_path / 'y').exists()
