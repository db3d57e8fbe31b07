"""From a bundle to where users run it: predict over every backend, the DeepStream nvinfer config and the Triton
model repository, on Fashion-MNIST bundles made by the real host pipeline (real exports, real modelopt INT8).

No DeepStream or Triton server runs here: the nvinfer config is checked against nvinfer's documented arithmetic
(``y = net-scale-factor * (x - offsets)``) on real images and its softmax ONNX with onnxruntime; every Triton
config is parsed with Triton's own ModelConfig protobuf (tritonclient's model_config_pb2). Engines: TensorRT is not
installed here, so the engine tests use an engine *manifest* (the JSON the device pipeline writes beside every
engine) next to placeholder bytes, and check only what the tools read from it; no engine is run.
"""
import configparser
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scalablevit.core.errors import ScalableViTError
from scalablevit.core.fileio import sha256_file, write_json
from scalablevit.data.fmnist import CLASSES, load_fashion_mnist, resize_images, to_model_input
from scalablevit.host.pipeline import HostOptions, HostPipeline
from scalablevit.host.runners import OnnxRuntimeRunner
from scalablevit.serve.deepstream import NETWORK_MODE, export_deepstream
from scalablevit.serve.predict import softmax
from scalablevit.serve.triton import export_triton, parse_model_config

ROOT = Path(__file__).resolve().parents[1]
PNG_COUNT = 300
MODEL_TOP1 = 91.88  # scalable_vit_fmnist, PyTorch FP32, full test set (scalablevit/models/weights/README.md)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)


def _logits(onnx: Path, x: np.ndarray, output: str = 'logits') -> np.ndarray:
    with OnnxRuntimeRunner(str(onnx)) as runner:
        return runner.infer({'input': np.ascontiguousarray(x, dtype=np.float32)})[output]


pytestmark = pytest.mark.usefixtures('fashion_mnist_installed')


@pytest.fixture(scope='module')
def bundles(tmp_path_factory):
    """Fashion-MNIST INT8 bundles, plain and folded, and test-config FP32 bundles (ImageNet mean/std)."""
    out = tmp_path_factory.mktemp('bundles')
    made = {}
    for key, model, precision, fold in (('int8', 'fmnist', 'int8', False), ('int8-folded', 'fmnist', 'int8', True),
                                        ('test', 'scalable_vit_test', 'fp32', False),
                                        ('test-folded', 'scalable_vit_test', 'fp32', True)):
        HostPipeline(HostOptions(model=model, precision=precision, out=out / key, calib_size=64, val_size=16,
                                 fold_normalization=fold)).run()
        made[key] = out / key
    return made


@pytest.fixture(scope='module')
def pngs(tmp_path_factory):
    """A seeded sample of Fashion-MNIST TEST images saved as 28x28 gray PNG files, with their labels."""
    from PIL import Image
    images, labels = load_fashion_mnist('test')
    pick = np.sort(np.random.default_rng(15).choice(len(images), PNG_COUNT, replace=False))
    folder = tmp_path_factory.mktemp('png')
    for i in pick:
        Image.fromarray(images[i]).save(folder / f'{i:05d}.png')
    return folder, images[pick], labels[pick]


def _predictions(args: list) -> dict:
    result = _run('deploy/predict.py', *args, '--json')
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# ------------------------------------------------------------------------------------------------ predict
def test_predict_bundle_names_the_right_class(bundles, pngs):
    folder, images, labels = pngs
    out = _predictions([str(folder), '--bundle', str(bundles['int8'])])
    preds = out['predictions']
    assert out['model']['backend'] == 'onnxruntime' and out['model']['precision'] == 'int8'
    assert [Path(p['image']).name for p in preds] == sorted(p.name for p in folder.iterdir())
    top1 = np.array([p['top'][0]['index'] for p in preds])
    names = [p['top'][0]['label'] for p in preds]
    assert names == [CLASSES[i] for i in top1]
    accuracy = (top1 == labels).mean() * 100
    assert abs(accuracy - MODEL_TOP1) <= 4.0, accuracy  # 300 images: sampling error ~1.6 pt
    # the PNG path feeds the bundle's ONNX exactly what the pipeline's Fashion-MNIST path feeds it
    expected = softmax(_logits(bundles['int8'] / 'model.int8.onnx', to_model_input(images, _dcfg(bundles['int8']))))
    assert all(len(p['top']) == 5 for p in preds)
    assert np.array_equal([[t['index'] for t in p['top']] for p in preds], np.argsort(-expected, axis=1)[:, :5])
    got = np.array([[t['probability'] for t in p['top']] for p in preds])
    assert np.abs(got - np.sort(expected, axis=1)[:, ::-1][:, :5]).max() < 1e-6


def _dcfg(bundle: Path) -> dict:
    return json.loads((bundle / 'manifest.json').read_text())['input']['preprocessing']


def test_predict_agrees_across_backends(bundles, pngs):
    """The folded INT8 bundle (fed 0-255), its FP32 ONNX and the PyTorch weights give the plain bundle's classes."""
    folder, _, labels = pngs
    runs = {'plain': ['--bundle', str(bundles['int8'])], 'folded': ['--bundle', str(bundles['int8-folded'])],
            'onnx': ['--onnx', str(bundles['int8-folded'] / 'model.fp32.onnx')],
            'torch': ['--model', 'fmnist']}
    top1 = {}
    for key, args in runs.items():
        out = _predictions([str(folder), '--top', '1', *args])
        top1[key] = np.array([p['top'][0]['index'] for p in out['predictions']])
        assert ('RGB 0-255' in out['model']['input']) == (key in ('folded', 'onnx'))
    assert (top1['onnx'] == top1['torch']).all()  # FP32 folded ONNX = PyTorch FP32
    for key in ('plain', 'folded'):
        assert (top1[key] == top1['torch']).mean() >= 0.98  # INT8 vs FP32
    assert abs((top1['torch'] == labels).mean() * 100 - MODEL_TOP1) <= 4.0


def test_predict_text_output(bundles, pngs):
    folder, _, _ = pngs
    one = sorted(folder.iterdir())[0]
    result = _run('deploy/predict.py', str(one), '--bundle', str(bundles['int8']), '--top', '3')
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f'{one}: ') and len(lines) == 4
    percents = [float(line.split('%')[0].split()[-1]) for line in lines[1:]]
    assert percents == sorted(percents, reverse=True) and 0 < sum(percents) <= 100.01


@pytest.mark.parametrize('args, message', [
    (['{bad}', '--bundle', '{int8}'], 'not a readable image'),
    (['{png}', '--onnx', '{int8}'], 'is a bundle directory, not an ONNX file: pass it with --bundle'),
    (['{png}', '--engine', '{int8}/model.int8.onnx'], 'is an ONNX file, not a TensorRT engine: pass it with --onnx'),
    (['{png}', '--model', 'fmnist', '--weights', '{int8}/model.int8.onnx'], 'is an ONNX file, not a weights file'),
    (['{png}', '--onnx', '{int8}/model.int8.onnx', '--model', 's'], "exported from 'scalable_vit_fmnist'"),
    (['{png}', '--bundle', '{int8}', '--model', 'fmnist'], '--model goes with --weights or --onnx'),
    (['{png}'], 'no model given'),
    (['{png}', '--bundle', '{int8}', '--top', '0'], '--top must be at least 1'),
    (['{png}', '--engine', '{int8}/missing.engine'], 'not found'),
    (['{png}', '--bundle', '{png}'], 'not a bundle'),
])
def test_predict_errors_are_one_line(bundles, pngs, tmp_path, args, message):
    folder, _, _ = pngs
    bad = tmp_path / 'broken.png'
    bad.write_bytes(b'\x89PNG\r\n\x1a\n not really')
    subst = {'bad': bad, 'int8': bundles['int8'], 'png': sorted(folder.iterdir())[0]}
    result = _run('deploy/predict.py', *[a.format(**subst) for a in args])
    assert result.returncode == 1
    assert result.stdout == ''
    err = [line for line in result.stderr.splitlines() if not line[:2].isdigit()]  # log lines start with a time
    assert len(err) == 1 and err[0].startswith('error: ') and message in err[0], result.stderr


def test_an_unreadable_image_in_a_folder_fails_the_whole_run(bundles, pngs, tmp_path):
    folder, _, _ = pngs
    mixed = tmp_path / 'mixed'
    shutil.copytree(folder, mixed)
    (mixed / 'zz_broken.jpg').write_bytes(b'not an image')
    result = _run('deploy/predict.py', str(mixed), '--bundle', str(bundles['int8']), '--json')
    assert result.returncode == 1 and result.stdout == '' and 'zz_broken.jpg: not a readable image' in result.stderr


# ------------------------------------------------------------------------------------------------ DeepStream
def _read_config(path: Path) -> dict:
    parser = configparser.ConfigParser(comment_prefixes=('#',), interpolation=None)
    parser.optionxform = str
    parser.read_string(path.read_text())
    return dict(parser['property'])


def _nvinfer(props: dict, pixels: np.ndarray) -> np.ndarray:
    """nvinfer's preprocessing in float32: y = net-scale-factor * (x - offsets[c]) on RGB 0-255 pixels."""
    nsf = np.float32(float(props['net-scale-factor']))
    offsets = np.array([float(v) for v in props['offsets'].split(';')], np.float32).reshape(1, 3, 1, 1)
    return nsf * (pixels.astype(np.float32) - offsets)


@pytest.mark.parametrize('key', ['int8', 'int8-folded'])
def test_deepstream_config_feeds_the_model_exactly(bundles, pngs, tmp_path, key):
    _, images, _ = pngs
    bundle = bundles[key]
    record = export_deepstream(bundle, tmp_path, target='jetson-orin-nano')
    props = _read_config(tmp_path / 'config_infer_scalable_vit_fmnist.txt')
    assert props['network-type'] == '1' and props['network-mode'] == str(NETWORK_MODE['int8']) == '1'
    assert props['batch-size'] == '8'  # jetson-orin-nano's max batch
    assert props['infer-dims'] == '3;64;64' and props['model-color-format'] == '0' and props['process-mode'] == '1'
    assert props['output-blob-names'] == 'probs' and props['maintain-aspect-ratio'] == '0'
    assert props['model-engine-file'] == 'model.int8.probs.onnx_b8_gpu0_int8.engine'
    assert (tmp_path / props['onnx-file']).is_file() and record['engine_build'].startswith('trtexec ')
    labels = (tmp_path / props['labelfile-path']).read_text()
    assert labels.count('\n') == 1 and labels.strip().split(';') == list(CLASSES)
    # nvinfer's arithmetic on the resized pixels == our preprocessing of the same images
    pixels = np.repeat(resize_images(images, _dcfg(bundle))[:, None], 3, axis=1)
    ours = to_model_input(images, _dcfg(bundle))
    theirs = _nvinfer(props, pixels)
    if key == 'int8-folded':
        assert props['net-scale-factor'] == '1.0' and props['offsets'] == '0.0;0.0;0.0'
        assert np.array_equal(theirs, ours)
    else:
        assert float(props['net-scale-factor']) == 1 / (255 * 0.353)
        assert np.abs(theirs - ours).max() < 1e-5
    # the softmax ONNX gives probabilities whose classes are the bundle ONNX's classes
    probs = _logits(tmp_path / props['onnx-file'], theirs, 'probs')
    logits = _logits(bundle / 'model.int8.onnx', ours)
    assert np.abs(probs.sum(1) - 1).max() < 1e-5 and (probs.argmax(1) == logits.argmax(1)).mean() >= 0.99


def test_deepstream_refuses_a_per_channel_std_and_writes_nothing(bundles, tmp_path):
    with pytest.raises(ScalableViTError, match='different std per channel.*--fold-normalization'):
        export_deepstream(bundles['test'], tmp_path / 'ds')
    assert not (tmp_path / 'ds').exists()
    export_deepstream(bundles['test-folded'], tmp_path / 'ok', process_mode='secondary')
    props = _read_config(tmp_path / 'ok' / 'config_infer_scalable_vit_test.txt')
    assert props['net-scale-factor'] == '1.0' and props['network-mode'] == '0' and props['batch-size'] == '64'
    assert props['process-mode'] == '2' and props['gie-unique-id'] == '2' and props['operate-on-gie-id'] == '1'
    assert props['scaling-filter'] == '2'  # bicubic: GPU cubic / VIC 5-tap
    assert (tmp_path / 'ok' / 'labels.txt').read_text().strip().split(';') == [f'class {i}' for i in range(10)]


def test_deepstream_cli(bundles, tmp_path):
    result = _run('deploy/export_deepstream.py', str(bundles['int8-folded']), '--out', str(tmp_path),
                  '--process-mode', 'tertiary')
    assert result.returncode == 1 and "unknown process mode 'tertiary'" in result.stderr
    result = _run('deploy/export_deepstream.py', str(bundles['int8-folded']), '--out', str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert 'net-scale-factor 1.0' in result.stdout and 'trtexec --onnx=model.int8.probs.onnx' in result.stdout
    record = json.loads((tmp_path / 'deepstream.json').read_text())
    assert record['properties']['batch-size'] == '64' and record['probs_onnx']['max_abs_diff'] < 1e-6


# ------------------------------------------------------------------------------------------------ engines
def _fake_engine(bundle: Path, profile=(1, 4, 16), onnx_sha: str = None) -> Path:
    """Placeholder engine bytes plus the manifest the device pipeline writes beside a real engine."""
    engine = bundle / 'engines' / 'model.int8.test.abc.engine'
    engine.parent.mkdir(exist_ok=True)
    engine.write_bytes(b'placeholder, not a TensorRT plan')
    manifest = json.loads((bundle / 'manifest.json').read_text())
    chw = manifest['input']['shape'][1:]
    write_json(engine.with_name(engine.name + '.json'), {
        'format': 'scalablevit-engine/1', 'engine': engine.name, 'engine_sha256': sha256_file(engine),
        'tensorrt_version': '10.3.0', 'gpu': {'name': 'Orin', 'compute_capability': '8.7', 'integrated': True},
        'target': {'name': 'test'}, 'compatibility': {}, 'precision': manifest['precision'],
        'onnx': {'file': manifest['deploy_onnx'], 'sha256': onnx_sha or manifest['onnx'][manifest['precision']][
            'sha256']},
        'input': {'name': 'input', 'profile': {k: [b, *chw] for k, b in zip(('min', 'opt', 'max'), profile)}}})
    return engine


def test_engine_source_gives_batch_and_refuses_foreign_engines(bundles, tmp_path):
    bundle = tmp_path / 'b'
    shutil.copytree(bundles['int8'], bundle)
    engine = _fake_engine(bundle)
    record = export_deepstream(engine, tmp_path / 'ds')
    assert record['properties']['batch-size'] == '16'  # the engine profile's max, not a target's
    assert 'outputs logits, so it is not used here' in (tmp_path / 'ds' / record['config']).read_text()
    _fake_engine(bundle, onnx_sha='0' * 64)
    with pytest.raises(ScalableViTError, match='not in bundle'):
        export_deepstream(engine, tmp_path / 'ds2')
    loose = tmp_path / 'loose.engine'
    shutil.copy(engine, loose)
    shutil.copy(engine.with_name(engine.name + '.json'), tmp_path / 'loose.engine.json')
    with pytest.raises(ScalableViTError, match='not inside a bundle'):
        export_triton(loose, tmp_path / 'repo')


# ------------------------------------------------------------------------------------------------ Triton
def _config(repo: Path, name: str):
    return parse_model_config((repo / name / 'config.pbtxt').read_text())


def test_triton_onnx_repository(bundles, tmp_path):
    bundle = bundles['int8']
    record = export_triton(bundle, tmp_path, target='jetson-agx-orin')
    name = record['name']
    cfg = _config(tmp_path, name)
    manifest = json.loads((bundle / 'manifest.json').read_text())
    assert name == 'scalable_vit_fmnist_int8_onnx' and cfg.name == name
    assert cfg.platform == 'onnxruntime_onnx' and cfg.backend == 'onnxruntime'
    from scalablevit.device.targets import load_target
    target = load_target('jetson-agx-orin')
    assert cfg.max_batch_size == target.batch_max
    assert cfg.HasField('dynamic_batching')
    assert list(cfg.dynamic_batching.preferred_batch_size) == ([target.batch_opt] if target.batch_opt > 1 else [])
    (inp,), (out,) = cfg.input, cfg.output
    assert inp.name == manifest['input']['name'] and list(inp.dims) == manifest['input']['shape'][1:]
    assert out.name == manifest['output']['name'] and list(out.dims) == [manifest['output']['num_classes']]
    assert inp.data_type == out.data_type == type(cfg).DESCRIPTOR.file.enum_types_by_name['DataType'] \
        .values_by_name['TYPE_FP32'].number
    assert cfg.instance_group[0].kind == 0  # KIND_AUTO: GPU where there is one, else CPU
    assert (tmp_path / name / out.label_filename).read_text().splitlines() == list(CLASSES)
    model = tmp_path / name / '1' / 'model.onnx'
    assert sha256_file(model) == manifest['onnx']['int8']['sha256']
    import onnx
    graph = onnx.load(str(model)).graph  # the served file's own IO agrees with the config
    assert [(v.name, v.type.tensor_type.elem_type) for v in (*graph.input, *graph.output)] == \
        [(inp.name, onnx.TensorProto.FLOAT), (out.name, onnx.TensorProto.FLOAT)]
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim[1:]] == list(inp.dims)
    ref = np.load(bundle / 'reference.npz')
    assert (_logits(model, ref['input']).argmax(1) == ref['logits'].argmax(1)).mean() >= 0.9


def test_triton_engine_repository_and_rewrite(bundles, tmp_path):
    bundle = tmp_path / 'b'
    shutil.copytree(bundles['int8'], bundle)
    engine = _fake_engine(bundle, profile=(1, 4, 16))
    repo = tmp_path / 'repo'
    record = export_triton(engine, repo, name='fmnist')
    cfg = _config(repo, 'fmnist')
    assert record['backend'] == 'tensorrt' and cfg.platform == 'tensorrt_plan' and cfg.backend == 'tensorrt'
    assert cfg.max_batch_size == 16 and list(cfg.dynamic_batching.preferred_batch_size) == [4]
    assert cfg.instance_group[0].kind == 1  # KIND_GPU
    assert (repo / 'fmnist' / '1' / 'model.plan').read_bytes() == engine.read_bytes()
    # writing again (now from the bundle) replaces the entry whole: no stale plan next to the ONNX
    export_triton(bundle, repo, name='fmnist')
    assert sorted(p.name for p in (repo / 'fmnist' / '1').iterdir()) == ['model.onnx']
    assert _config(repo, 'fmnist').platform == 'onnxruntime_onnx'
    assert not [p for p in repo.iterdir() if p.name.startswith('.')]
    _fake_engine(bundle, profile=(4, 4, 4))  # a DLA-style fixed batch
    with pytest.raises(ScalableViTError, match='Triton sends any batch from 1'):
        export_triton(engine, repo)


def test_triton_cli_and_bad_config_text(bundles, tmp_path):
    result = _run('deploy/export_triton.py', str(bundles['test-folded']), '--repo', str(tmp_path))
    assert result.returncode == 0, result.stderr
    cfg = _config(tmp_path, 'scalable_vit_test_fp32_onnx')
    assert list(cfg.input[0].dims) == [3, 224, 224] and cfg.max_batch_size == 64
    result = _run('deploy/export_triton.py', str(bundles['test'] / 'model.fp32.onnx'), '--repo', str(tmp_path))
    assert result.returncode == 1 and 'not a bundle directory or a TensorRT engine' in result.stderr
    with pytest.raises(ScalableViTError, match='not a valid Triton model configuration'):
        parse_model_config('max_batch_size: "eight"')
