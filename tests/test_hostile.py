"""Hostile inputs, round three (issue 21), the core items, each through the command line: exit code, the one
``error:`` line, and what the directory holds afterwards. One small INT8 bundle of ``scalable_vit_test`` is built
once and copied for each attack; the few cases that need another build make it with two images.

Covered: a checkpoint defines its head, a non-default input size gives the right preprocessing record, readers
verify what they load and hold a shared lock against the writer, engines are checked against their manifest's
sha256, size flags are capped, ``python -m scalablevit.cli.<tool>`` runs, nested manifest values have one schema,
untrained bundles warn, EXIF orientation and float TIFFs, and the smaller cases of issue 14.
"""
import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scalablevit.core.bundle import Bundle
from scalablevit.core.errors import ScalableViTError
from scalablevit.models.checkpoint import save_weights
from scalablevit.models.scalablevit import create_model
from test_reliability import (ROOT, SMALL, _env, build, cli, copy_bundle, failed, manifest, passed, snapshot,
                              start)

TINY = ['--model', 'test', '--calib-size', '2', '--val-size', '2']
CLI_MODULES = sorted(p.stem for p in (ROOT / 'scalablevit' / 'cli').glob('*.py') if p.stem != '__init__')


# ------------------------------------------------------------------------------------------- helpers
def write_manifest(folder: Path, m: dict) -> None:
    (folder / 'manifest.json').write_text(json.dumps(m))


def predict(*args, env=None) -> subprocess.CompletedProcess:
    return cli('deploy/predict.py', *args, env=env)


def top(res: subprocess.CompletedProcess) -> list:
    return [p['top'] for p in json.loads(passed(res).stdout)['predictions']]


def fake_engine(bundle: Path, content: bytes, sha256: str = None) -> Path:
    """Bytes that are no TensorRT engine, with an engine manifest naming the bundle's deployed ONNX: what the
    checks before TensorRT see (the sha256 of the bytes, the ONNX it was built from). Nothing here runs it."""
    m = manifest(bundle)
    engine = bundle / 'engines' / 'model.int8.desktop.abc.engine'
    engine.parent.mkdir(exist_ok=True)
    engine.write_bytes(content)
    record = {'engine': engine.name, 'engine_sha256': sha256 or hashlib.sha256(content).hexdigest(),
              'tensorrt_version': '10.3.0', 'gpu': {}, 'compatibility': {}, 'target': {}, 'precision': 'int8',
              'onnx': {'file': 'model.int8.onnx', 'sha256': m['onnx']['int8']['sha256']},
              'input': {'name': 'input', 'profile': {'min': [1, 3, 224, 224], 'opt': [1, 3, 224, 224],
                                                     'max': [8, 3, 224, 224]}}}
    (engine.parent / (engine.name + '.json')).write_text(json.dumps(record))
    return engine


@pytest.fixture(scope='module')
def int8_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp('int8') / 'bundle'
    passed(build(*SMALL, '--precision', 'int8', '--out', out))
    return out


@pytest.fixture(scope='module')
def photo(tmp_path_factory):
    """An asymmetric RGB picture (a gradient and a bar), so a rotation changes what the model sees."""
    rng = np.random.default_rng(0)
    pixels = (rng.random((180, 240, 3)) * 60).astype(np.uint8)
    pixels[:, :, 0] += np.linspace(0, 190, 240, dtype=np.uint8)[None, :]
    pixels[20:60, 30:200] = (250, 250, 20)
    path = tmp_path_factory.mktemp('photo') / 'photo.png'
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope='module')
def head5(tmp_path_factory):
    """A 5-class checkpoint of the test model (seeded: a fine-tuned head, as far as the tools can tell)."""
    torch.manual_seed(5)
    path = tmp_path_factory.mktemp('weights') / 'head_5_classes.safetensors'
    save_weights(create_model('test', num_classes=5), path)
    return path


# ------------------------------------------------------------------------------------------- 1. checkpoint head
def test_a_checkpoint_defines_its_head_and_force_removes_the_tools_old_folders(int8_bundle, head5, photo,
                                                                               tmp_path):
    out = copy_bundle(int8_bundle, tmp_path / 'b')
    for folder in ('deepstream', 'divergence'):  # what export_deepstream and divergence made for the old model
        (out / folder).mkdir()
        (out / folder / 'config.txt').write_text('old')
    (out / 'notes.txt').write_text('mine')
    passed(build(*TINY, '--precision', 'fp32', '--weights', head5, '--force', '--out', out))
    m = manifest(out)
    assert m['output']['num_classes'] == 5 and m['input']['preprocessing']['num_classes'] == 5
    assert m['untrained'] is False and m['input']['preprocessing']['labels'] is None
    assert not (out / 'deepstream').exists() and not (out / 'divergence').exists()
    assert (out / 'notes.txt').read_text() == 'mine'
    bundle_top = top(predict(photo, '--bundle', out, '--json'))
    weights_top = [top(predict(photo, '--model', 'test', '--weights', head5, '--json')) for _ in range(2)]
    assert weights_top[0] == weights_top[1]  # the same weights, the same answer: no random head anywhere
    assert len(bundle_top[0]) == 5 and {t['index'] for t in bundle_top[0]} == set(range(5))
    assert bundle_top[0][0]['index'] == weights_top[0][0][0]['index']
    assert math.isclose(bundle_top[0][0]['probability'], weights_top[0][0][0]['probability'], abs_tol=1e-4)


def test_int8_typed_weights_are_refused_and_leave_no_directory(tmp_path):
    state = {k: (v * 100).to(torch.int8) if v.is_floating_point() else v
             for k, v in create_model('test').state_dict().items()}
    torch.save({'model': state}, tmp_path / 'int8.pth')
    line = failed(build(*TINY, '--precision', 'fp32', '--weights', tmp_path / 'int8.pth', '--out', tmp_path / 'o'))
    assert "tensor 'patch_embeds.0.proj.weight' is int8, the model needs floating point" in line
    assert not (tmp_path / 'o').exists()


# ------------------------------------------------------------------------------------------- 2. input sizes
def test_a_non_default_input_size_records_its_preprocessing_for_every_reader(photo, tmp_path):
    out = tmp_path / 'b448'
    passed(build(*TINY, '--precision', 'fp32', '--input-size', '448', '--out', out))
    pre = manifest(out)['input']['preprocessing']
    assert pre['input_size'] == [3, 448, 448] and pre['resize'] == 512  # 448 * 256 / 224
    assert len(top(predict(photo, '--bundle', out, '--json'))[0]) == 5


def test_fmnist_at_128_px_builds_128_px_sets(tmp_path):
    out = tmp_path / 'f128'
    passed(build('--model', 'fmnist', '--calib-size', '2', '--val-size', '4', '--precision', 'fp32',
                 '--input-size', '128', '--out', out))
    pre = manifest(out)['input']['preprocessing']
    assert pre['input_size'] == [3, 128, 128] and pre['resize'] == 128
    with np.load(out / 'reference.npz') as ref:
        assert ref['input'].shape == (4, 3, 128, 128)


def test_an_input_size_the_model_cannot_tile_leaves_no_directory(tmp_path):
    line = failed(build(*TINY, '--input-size', '225', '--out', tmp_path / 'o'))
    assert '--input-size 225 does not fit scalable_vit_test: it takes positive multiples of 224' in line
    assert not (tmp_path / 'o').exists()


# ------------------------------------------------------------------------------------------- 3. readers
def _replace_after_verify(monkeypatch, out: Path) -> None:
    """Replace model.int8.onnx with the FP32 file right after the bundle was verified (the race of issue 21)."""
    verify = Bundle.verify

    def verify_then_replace(self):
        result = verify(self)
        (out / 'model.int8.onnx').write_bytes((out / 'model.fp32.onnx').read_bytes())
        return result
    monkeypatch.setattr(Bundle, 'verify', verify_then_replace)


@pytest.mark.parametrize('tool', ['compare_bundle', 'predict'])
def test_a_file_replaced_after_verification_is_refused_at_load(int8_bundle, photo, tmp_path, monkeypatch, tool):
    out = copy_bundle(int8_bundle, tmp_path / 'b')
    _replace_after_verify(monkeypatch, out)
    if tool == 'compare_bundle':
        from scalablevit.cli.compare_bundle import main
        argv = [str(out), '--no-torch', '--iters', '1', '--no-plots', '--out', str(tmp_path / 'c')]
    else:
        from scalablevit.cli.predict import main
        argv = [str(photo), '--bundle', str(out)]
    with pytest.raises(ScalableViTError, match=r'ONNX .*model\.int8\.onnx does not match the bundle manifest'):
        main(argv)
    assert not (tmp_path / 'c').exists()


@pytest.mark.parametrize('script, args', [
    ('bench/compare_bundle.py', ['{out}', '--no-torch']), ('deploy/predict.py', ['{photo}', '--bundle', '{out}']),
    ('bench/latency.py', ['--bundle', '{out}']), ('deploy/build_engine.py', ['--bundle', '{out}']),
    ('bench/divergence.py', ['--bundle', '{out}'])])
def test_readers_hold_off_while_a_writer_holds_the_bundle(int8_bundle, photo, tmp_path, script, args):
    out = copy_bundle(int8_bundle, tmp_path / 'b')
    before = snapshot(out)
    with Bundle.create(out):  # a writer at work (a --force rebuild): its exclusive lock
        res = cli(script, *(a.format(out=out, photo=photo) for a in args))
    assert f'{out} is being written by another run (pid {os.getpid()}): wait for it to finish' in failed(res)
    assert snapshot(out) == before


def test_a_reader_keeps_a_writer_out_until_it_is_done(int8_bundle, tmp_path):
    out = copy_bundle(int8_bundle, tmp_path / 'b')
    reader = Bundle.open(out)
    try:
        line = failed(build(*SMALL, '--precision', 'int8', '--force', '--out', out))
        assert f'another run holds {out}' in line
    finally:
        reader.close()
    assert Bundle.open(out).verify() is not None


def test_an_engine_that_does_not_match_its_manifest_is_refused(int8_bundle, photo, tmp_path):
    out = copy_bundle(int8_bundle, tmp_path / 'b')
    engine = fake_engine(out, b'x' * 1000, sha256=hashlib.sha256(b'x' * 5000).hexdigest())  # truncated
    line = failed(predict(photo, '--engine', engine))
    assert f'engine {engine} does not match the engine_sha256 of its manifest' in line and '1,000 bytes' in line


def test_a_link_from_the_bundle_to_a_file_outside_fails_verification(int8_bundle, photo, tmp_path):
    out = copy_bundle(int8_bundle, tmp_path / 'b')
    outside = tmp_path / 'reference.npz'
    (out / 'reference.npz').rename(outside)
    (out / 'reference.npz').symlink_to(outside)  # same bytes, same sha256: only where it lives is wrong
    for res in (predict(photo, '--bundle', out), cli('bench/compare_bundle.py', out)):
        assert f'reference {out}/reference.npz is a link to {outside}, outside the bundle' in failed(res)


# ------------------------------------------------------------------------------------------- 4. size flags
def test_size_flags_are_capped_before_allocation(int8_bundle, photo, tmp_path):
    cap = 'beyond the 2 GiB cap per batch (at most 3,566)'
    for script, args in (('bench/latency.py', ['--bundle', int8_bundle]), ('bench/compare_bundle.py', [int8_bundle])):
        line = failed(cli(script, *args, '--batch', '100000', '--no-plots', '--out', tmp_path / 'r'))
        assert '--batch 100000: 100,000 images of 3x224x224 float32 are 56.1 GiB' in line and cap in line
    out = copy_bundle(int8_bundle, tmp_path / 'b')
    m = manifest(out)
    m['input']['preprocessing'].update(input_size=[3, 60000, 60000], resize=60000)
    write_manifest(out, m)
    assert 'input_size must be [3, S, S] with S in 1..4096' in failed(predict(photo, '--bundle', out))


def test_calib_batch_is_capped_by_the_activations_it_holds(fashion_mnist_installed, tmp_path):
    line = failed(build('--model', 'fmnist', '--calib-size', '600', '--val-size', '2', '--precision', 'int8',
                        '--calib-batch', '2560', '--out', tmp_path / 'f'))  # 600 images: a batch of 600
    assert line.startswith('error: --calib-batch 600: one calibration batch of 600 images holds')
    assert '4 GiB cap (at most 551)' in line


# ------------------------------------------------------------------------------------------- 5. python -m
def test_every_cli_module_runs_under_python_m():
    guarded = [m for m in CLI_MODULES if "__name__ == '__main__'" in (ROOT / 'scalablevit' / 'cli' / f'{m}.py')
               .read_text()]
    missing = sorted(set(CLI_MODULES) - set(guarded))
    assert missing == [], missing
    runs = {(m, flag): subprocess.Popen([sys.executable, '-m', f'scalablevit.cli.{m}', flag], env=_env(),
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for m in guarded for flag in ('--help', '--no-such-flag')}
    for (module, flag), proc in runs.items():
        stdout, stderr = proc.communicate(timeout=300)
        if flag == '--help':
            assert proc.returncode == 0 and stdout.startswith('usage:'), (module, stderr[-500:])
        else:  # unrecognized, or a required argument missing first: one line either way
            assert 'argument' in failed(subprocess.CompletedProcess([], proc.returncode, stdout, stderr)), module


# ------------------------------------------------------------------------------------------- 6-7. schema
SCHEMA_CASES = {
    'mean abc': (lambda m: m['input']['preprocessing'].update(mean='abc'), 'field \'mean\' must be an array'),
    'mean NaN': (lambda m: m['input']['preprocessing'].update(mean=[float('nan')] * 3),
                 'mean must be three finite numbers'),
    'std zero': (lambda m: m['input']['preprocessing'].update(std=[0.2, 0.0, 0.2]),
                 'std must be three finite numbers, each above 0'),
    'resize 1e12': (lambda m: m['input']['preprocessing'].update(resize=10 ** 12),
                    'resize must be an integer from the crop (224) to 896'),
    'interpolation': (lambda m: m['input']['preprocessing'].update(interpolation='lanczos9'),
                      "unknown interpolation in"),
    'list': (lambda m: m['input'].update(preprocessing=[224, 256]), 'input.preprocessing is not a JSON object'),
    'int8 deploys fp32': (lambda m: m.update(deploy_onnx='model.fp32.onnx'),
                          "an int8 bundle must deploy 'model.int8.onnx' from its onnx entry, not 'model.fp32.onnx'"),
    'int8 entry is fp32': (lambda m: m['onnx'].update(int8=m['onnx']['fp32']),
                           "onnx entry 'int8' points at 'model.fp32.onnx'"),
    'unfinished': (lambda m: [m['stages'].pop('quantize'), m.pop('reference')],
                   "the build did not finish (stage 'quantize' never completed; finished: export, data)"),
    'killed while validating': (lambda m: m.pop('validation'),
                                "the build did not finish (stage 'validate' never completed"),
}
# Every other nested value a reader acts on (second hostile round): the same one check, held in-process (every reader
# goes through Bundle.open, as the cases above show through three command lines).
MORE_SCHEMA_CASES = {
    'normalize_in_model "false"': (lambda m: m['input']['preprocessing'].update(normalize_in_model='false'),
                                   'normalize_in_model must be true or false, got "false"'),
    'untrained deleted': (lambda m: m.pop('untrained'), "is missing 'untrained'"),
    'mean 1e300': (lambda m: m['input']['preprocessing'].update(mean=[1e300] * 3),
                   'mean must be three finite numbers, in [0, 1]'),
    'std 1e-300': (lambda m: m['input']['preprocessing'].update(std=[1e-300] * 3),
                   'std must be three finite numbers, each above 0, in [0.001, 1]'),
    'classes "10"': (lambda m: m['input']['preprocessing'].update(num_classes='10'),
                     'num_classes must be an integer in 1..100000, got "10"'),
    'classes disagree': (lambda m: m['input']['preprocessing'].update(num_classes=5),
                         "num_classes 5 is not the output's 10"),
    'output 0 classes': (lambda m: m['output'].update(num_classes=0),
                         'output.num_classes must be an integer in 1..100000, got 0'),
    'output true classes': (lambda m: m['output'].update(num_classes=True),
                            "field 'num_classes' must be an integer, got true"),
    'labels of another size': (lambda m: m['input']['preprocessing'].update(labels='imagenet-1k'),
                               'labels imagenet-1k name 1000 classes, the model has 10'),
    'labels a path': (lambda m: m['input']['preprocessing'].update(labels='../../etc/passwd'),
                      'labels must be one of imagenet-1k, fashion-mnist or null'),
    'model a path': (lambda m: m.update(model='../x'), 'model must be a name'),
    'target a path': (lambda m: m.update(target='../../etc/passwd'), 'target must be a name'),
    'input name': (lambda m: m['input'].update(name=''), "the model's tensors are 'input' and 'logits'"),
    'static batch': (lambda m: m['input'].update(shape=[1, 3, 224, 224]), 'input.shape must be [null, 3, S, S]'),
    'opset -1': (lambda m: m.update(opset=-1), 'opset must be an integer in 7..30, got -1'),
    'entry opset -3': (lambda m: m['onnx']['int8'].update(opset=-3), "onnx entry 'int8' opset must be an integer"),
    'samples -1': (lambda m: m['reference'].update(samples=-1), 'reference.samples must be an integer in 1..'),
    'gmacs NaN': (lambda m: m.update(gmacs=float('nan')), "field 'gmacs' must be an integer or a number, got NaN"),
    'sha not hex': (lambda m: m['reference'].update(sha256='x' * 64), 'sha256 must be 64 lowercase hex digits'),
}


@pytest.mark.parametrize('case', MORE_SCHEMA_CASES)
def test_every_value_a_reader_acts_on_is_checked(int8_bundle, tmp_path, case):
    out = copy_bundle(int8_bundle, tmp_path / 'b')
    m = manifest(out)
    change, expected = MORE_SCHEMA_CASES[case]
    change(m)
    write_manifest(out, m)
    with pytest.raises(ScalableViTError) as raised:
        Bundle.open(out)
    assert expected in str(raised.value) and '\n' not in str(raised.value)


@pytest.mark.parametrize('case', SCHEMA_CASES)
def test_nested_manifest_values_have_one_schema_for_every_reader(int8_bundle, photo, tmp_path, case):
    out = copy_bundle(int8_bundle, tmp_path / 'b')
    m = manifest(out)
    change, expected = SCHEMA_CASES[case]
    change(m)
    write_manifest(out, m)
    before = snapshot(out)
    runs = [start('deploy/predict.py', photo, '--bundle', out), start('bench/compare_bundle.py', out, '--no-torch'),
            start('deploy/build_engine.py', '--bundle', out)]
    for proc in runs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 1 and 'complete and verified' not in stdout, (case, stderr[-2000:])
        assert expected in failed(subprocess.CompletedProcess([], 1, stdout, stderr)), case
    assert snapshot(out) == before


def test_engines_without_tensorrt_are_one_line(int8_bundle, photo, tmp_path):
    out = copy_bundle(int8_bundle, tmp_path / 'b')
    engine = fake_engine(out, b'not an engine, checked before TensorRT is asked')
    probe = subprocess.run([sys.executable, '-c', 'import tensorrt'], capture_output=True, env=_env())
    if probe.returncode == 0:
        pytest.skip('tensorrt imports here: this case is about a machine without it')
    for res in (predict(photo, '--engine', engine), cli('bench/latency.py', '--engine', engine, '--input-size', '224',
                                                        '--no-plots', '--out', tmp_path / 'r')):
        assert 'TensorRT engines need the tensorrt package, which is not importable here' in failed(res)


# ------------------------------------------------------------------------------------------- 8-9. predict
def test_predict_warns_about_an_untrained_bundle(int8_bundle, photo):
    res = passed(predict(photo, '--bundle', int8_bundle))
    warnings = [line for line in res.stderr.splitlines() if ' WARNING ' in line]
    assert len(warnings) == 1 and 'untrained (random) weights' in warnings[0]


def test_exif_orientation_and_float_tiffs(int8_bundle, photo, tmp_path):
    upright = Image.open(photo).convert('RGB')
    sideways = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to view": what a phone held sideways writes
    sideways.save(tmp_path / 'tagged.png', exif=exif)  # lossless, so the pixels compare exactly
    sideways.save(tmp_path / 'untagged.png')
    gray = np.asarray(upright.convert('L'))
    Image.fromarray(gray.astype(np.float32) / 255.0).save(tmp_path / 'float.tif')
    Image.fromarray(gray).save(tmp_path / 'gray.png')
    results = top(predict(photo, tmp_path / 'tagged.png', tmp_path / 'untagged.png', tmp_path / 'float.tif',
                          tmp_path / 'gray.png', '--bundle', int8_bundle, '--json'))
    assert results[1] == results[0] != results[2]  # the tag is honoured, and it matters
    assert results[3] == results[4]  # 0..1 floats scaled to the 8-bit picture they came from, exactly
    bad = tmp_path / 'negative.tif'
    Image.fromarray(np.full((40, 40), -3.0, np.float32)).save(bad)
    assert 'float pixels must be finite and within 0..1 (or 0..255)' in failed(predict(bad, '--bundle',
                                                                                       int8_bundle))


# ------------------------------------------------------------------------------------------- 10. issue 14
def test_a_duplicate_int8_target_key_is_refused(tmp_path):
    line = failed(build(*TINY, '--precision', 'int8', '--int8-target', 'agreement=99.9,agreement=99',
                        '--out', tmp_path / 'o'))
    assert 'agreement is given twice' in line and not (tmp_path / 'o').exists()


# ------------------------------------------------------------------------------------------- second hostile round
def test_weights_are_loaded_from_the_bytes_that_were_hashed(head5, tmp_path, monkeypatch):
    """The writer hashes the weights, then loads them: a file replaced in between is refused, never loaded under
    the recorded hash (the race of the second round); a reader given the recorded hash refuses another file."""
    from scalablevit.host import pipeline
    from scalablevit.host.pipeline import HostOptions, HostPipeline
    weights = tmp_path / 'w.safetensors'
    weights.write_bytes(head5.read_bytes())
    real = pipeline.sha256_file

    def hash_then_replace(path):
        digest = real(path)
        torch.manual_seed(9)
        save_weights(create_model('test', num_classes=5), weights)  # another fine-tune, same path
        return digest
    monkeypatch.setattr(pipeline, 'sha256_file', hash_then_replace)
    with pytest.raises(ScalableViTError, match='is not the checkpoint that was recorded'):
        HostPipeline(HostOptions(model='test', precision='fp32', weights=str(weights), calib_size=2, val_size=2,
                                 out=tmp_path / 'b')).run()
    with pytest.raises(ScalableViTError, match='is not the checkpoint that was recorded'):
        create_model('test', weights=str(head5), weights_sha256='0' * 64)


def test_a_classifier_of_no_class_is_refused(tmp_path):
    state = create_model('test').state_dict()
    state['head.3.weight'], state['head.3.bias'] = torch.zeros(0, 4096), torch.zeros(0)
    weights = tmp_path / 'h0.pth'
    torch.save(state, weights)
    for run in (lambda: build(*TINY, '--precision', 'fp32', '--weights', weights, '--out', tmp_path / 'b'),
                lambda: cli('deploy/export_onnx.py', '--model', 'test', '--weights', weights, '--out', tmp_path / 'x')):
        assert "its classifier 'head.3.weight' has 0 classes" in failed(run())
    assert not (tmp_path / 'b').exists() and not (tmp_path / 'x').exists()


def test_a_head_key_with_and_without_the_module_prefix_is_refused(head5, tmp_path):
    state = dict(create_model('test', weights=str(head5)).state_dict())
    state['module.head.3.bias'] = state['head.3.bias']
    weights = tmp_path / 'both.pth'
    torch.save(state, weights)
    assert "holds both 'module.head.3.bias' and 'head.3.bias'" in failed(
        cli('deploy/export_onnx.py', '--model', 'test', '--weights', weights, '--out', tmp_path / 'x'))


def test_predict_on_an_onnx_follows_its_graph(head5, photo, tmp_path):
    """An ONNX exported at 448 with a 5-class head: predict takes the input side and class count from the graph."""
    onnx = tmp_path / 'x448.onnx'
    passed(cli('deploy/export_onnx.py', '--model', 'test', '--weights', head5, '--input-size', '448', '--out', onnx))
    (five,) = top(predict(photo, '--onnx', onnx, '--json'))
    assert sorted(t['label'] for t in five) == [f'class {i}' for i in range(5)]


def test_a_manifest_that_describes_another_onnx_is_refused(int8_bundle, photo, tmp_path):
    """Edits the schema cannot catch alone are held against the deployed ONNX itself."""
    for case, change, expected in [
            ('folded', lambda m: m['input']['preprocessing'].update(normalize_in_model=True),
             'its normalization is not in the model, the bundle manifest says it is'),
            ('model', lambda m: m.update(model='scalable_vit_small'),
             "exported from 'scalable_vit_test', expected 'scalable_vit_small'")]:
        out = copy_bundle(int8_bundle, tmp_path / case)
        m = manifest(out)
        change(m)
        write_manifest(out, m)
        line = failed(predict(photo, '--bundle', out))
        assert expected in line and 'scalablevit-verified-' not in line, line  # names the bundle's file


def test_a_manifest_link_out_of_the_bundle_and_linked_tool_folders(int8_bundle, tmp_path):
    out = copy_bundle(int8_bundle, tmp_path / 'b')
    elsewhere = tmp_path / 'elsewhere.json'
    (out / 'manifest.json').rename(elsewhere)
    (out / 'manifest.json').symlink_to(elsewhere)
    with pytest.raises(ScalableViTError, match='is a link to .*outside the bundle'):
        Bundle.open(out)
    # --force removes a linked tool folder's link, never what it points at
    out = copy_bundle(int8_bundle, tmp_path / 'c')
    user = tmp_path / 'user-folder'
    user.mkdir()
    (user / 'keep.txt').write_text('mine')
    for name in ('deepstream', 'divergence'):
        (out / name).symlink_to(user, target_is_directory=True)
    passed(build(*SMALL, '--precision', 'int8', '--out', out, '--force'))
    assert (user / 'keep.txt').read_text() == 'mine' and not (out / 'deepstream').exists()


def test_int8_flags_with_another_precision_are_refused(tmp_path):
    for flags in (['--int8-target', 'agreement=99.9'], ['--calib-batch', '2']):
        line = failed(build(*TINY, '--precision', 'fp32', *flags, '--out', tmp_path / 'b'))
        assert f'{flags[0]}: for --precision int8 or fp8 only, not fp32' in line
    assert not (tmp_path / 'b').exists()


def test_verified_copies_of_a_killed_reader_are_swept(int8_bundle, tmp_path, monkeypatch):
    import tempfile
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True, text=True)
    stale = tmp_path / f'scalablevit-verified-{dead.stdout.strip()}-x'
    stale.mkdir()
    (stale / 'model.int8.onnx').write_bytes(b'a killed reader left this')
    live = tmp_path / f'scalablevit-verified-{os.getpid()}-y'
    live.mkdir()
    with Bundle.open(int8_bundle) as bundle:
        copy = bundle.deploy_onnx()[0]
        assert copy.is_file() and copy.parent.name.startswith(f'scalablevit-verified-{os.getpid()}-')
    assert not stale.exists() and live.exists()


def test_a_reader_refuses_weights_changed_since_the_bundle_recorded_them(head5, tmp_path):
    weights = tmp_path / 'w.safetensors'
    weights.write_bytes(head5.read_bytes())
    out = tmp_path / 'b'
    passed(build(*TINY, '--precision', 'fp32', '--weights', weights, '--out', out))
    torch.manual_seed(11)
    save_weights(create_model('test', num_classes=5), weights)  # retrained, saved over the same path
    line = failed(cli('bench/compare_bundle.py', out, '--iters', '1', '--warmup', '0', '--no-plots',
                      '--out', tmp_path / 'c'))
    assert f'{weights} is not the checkpoint that was recorded' in line
