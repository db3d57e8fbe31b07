"""torch -> ONNX export: real exports of scalable_vit_test checked with onnxruntime, the graph rules
(fused LayerNorm, TensorRT ops, IO contract), metadata, the check_onnx gate and the CLI's error path."""
import importlib.util
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from onnx.external_data_helper import uses_external_data

import scalablevit
from scalablevit.core.errors import InputSizeError, ScalableViTError
from scalablevit.core.fileio import sha256_file
from scalablevit.core.runners import INPUT_NAME, OUTPUT_NAME
from scalablevit.host.export import (ExportOnnx, check_layernorm_fused, check_onnx, check_tensorrt_ops, export_onnx,
                                     read_metadata, stamp_metadata)
from scalablevit.host.runners import OnnxRuntimeRunner, TorchRunner
from scalablevit.models.scalablevit import create_model

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / 'deploy' / 'export_onnx.py'
TOL = 1e-4


def _weights_util():
    spec = importlib.util.spec_from_file_location('_export_weights_util', Path(__file__).with_name('weights_util.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


wu = _weights_util()


def _model(name='scalable_vit_test', seed=0):
    """A model with O(1)-scale weights, so a 1e-4 agreement is a real test (the default init gives tiny logits)."""
    return wu.fill_weights(create_model(name), seed).eval()


def _max_diff(model, onnx_path, batch, seed=1):
    h, w = model.data_cfg['input_size'][1:]
    x = wu.make_input((batch, 3, h, w), seed).numpy()
    with TorchRunner(model) as ref, OnnxRuntimeRunner(str(onnx_path)) as ort:
        expected = ref.infer({INPUT_NAME: x})[OUTPUT_NAME]
        got = ort.infer({INPUT_NAME: x})[OUTPUT_NAME]
    assert got.shape == expected.shape == (batch, model.num_classes)
    assert expected.std() > 0.1, 'logits too small for the tolerance to mean anything'
    return float(np.abs(got - expected).max())


def _cli(*args, cwd):
    """Run the CLI as a user would, from another directory (it finds the package itself)."""
    return subprocess.run([sys.executable, str(CLI), *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


@pytest.fixture(scope='module')
def model():
    return _model()


@pytest.fixture(scope='module')
def export17(model, tmp_path_factory):
    """Opset-17 export of scalable_vit_test; also records the warnings the export let through."""
    out = tmp_path_factory.mktemp('export17') / 'model.fp32.onnx'
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        info = export_onnx(model, out)
    return out, info, caught


# ----------------------------------------------------------------------------------- numerics
@pytest.mark.parametrize('batch', [1, 4])
def test_onnxruntime_matches_torch_fp32(model, export17, batch):
    path, info, _ = export17
    assert info['opset'] == 17
    assert _max_diff(model, path, batch) < TOL


def test_opset20_export_matches_torch(model, tmp_path):
    info = export_onnx(model, tmp_path / 'm20.onnx', opset=20)
    assert info['opset'] == 20 and info['metadata']['opset'] == '20'
    assert info['ops']['LayerNormalization'] == 25 and 'Gelu' in info['ops']  # onnxslim fuses Erf-GELU at 20
    assert _max_diff(model, tmp_path / 'm20.onnx', batch=2) < TOL


def test_unsimplified_export_is_also_valid(model, tmp_path):
    info = export_onnx(model, tmp_path / 'raw.onnx', simplify=False)
    assert 'Constant' in info['ops']  # onnxslim would have folded these
    assert _max_diff(model, tmp_path / 'raw.onnx', batch=1) < TOL


# ----------------------------------------------------------------------------------- graph rules
def test_layernorm_is_fused_everywhere(model, export17):
    path, info, _ = export17
    n_layernorm = sum(isinstance(m, torch.nn.LayerNorm) for m in model.modules())
    assert info['ops']['LayerNormalization'] == n_layernorm == 25
    assert not {'Pow', 'Sqrt', 'Reciprocal'} & set(info['ops'])
    graph = onnx.load(str(path)).graph
    reduce_means = [n for n in graph.node if n.op_type == 'ReduceMean']
    # The one ReduceMean is the global average pool over tokens (axis 1), not a LayerNorm over channels.
    assert len(reduce_means) == 1 and list(reduce_means[0].attribute[0].ints) == [1]


class _HandLayerNorm(torch.nn.Module):
    def forward(self, x):
        mu = x.mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt((x - mu).pow(2).mean(-1, keepdim=True) + 1e-6)


@pytest.mark.filterwarnings('ignore::DeprecationWarning')
def test_decomposed_layernorm_is_detected(tmp_path):
    path = tmp_path / 'hand_ln.onnx'
    torch.onnx.export(_HandLayerNorm(), (torch.randn(2, 4, 8),), str(path), dynamo=False, opset_version=17)
    with pytest.raises(ScalableViTError, match='LayerNorm decomposed into primitive ops'):
        check_layernorm_fused(onnx.load(str(path)))


def test_unsupported_ops_are_listed_by_node():
    nodes = [helper.make_node('Unique', ['input'], ['u'], name='uniq0'),
             helper.make_node('MyPlugin', ['u'], ['logits'], name='plug0', domain='com.example')]
    graph = helper.make_graph(nodes, 'g', [helper.make_tensor_value_info('input', TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info('logits', TensorProto.FLOAT, [4])])
    with pytest.raises(ScalableViTError) as err:
        check_tensorrt_ops(helper.make_model(graph), 'toy.onnx')
    assert 'Unique x1 (e.g. uniq0)' in str(err.value) and 'com.example::MyPlugin x1 (e.g. plug0)' in str(err.value)


def test_one_self_contained_file_with_dynamic_batch(export17):
    path, _, caught = export17
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no .data sidecar, no temp file
    model = onnx.load(str(path), load_external_data=False)
    assert model.graph.initializer and not any(uses_external_data(t) for t in model.graph.initializer)
    onnx.checker.check_model(model, full_check=True)
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ['batch', 3, 224, 224]
    out_dims = [d.dim_param or d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert out_dims == ['batch', 10]
    noisy = [str(w.message)[:80] for w in caught
             if issubclass(w.category, (DeprecationWarning, torch.jit.TracerWarning))]
    assert not noisy


# ----------------------------------------------------------------------------------- metadata, check_onnx
def test_metadata_round_trip(export17):
    path, info, _ = export17
    meta = read_metadata(onnx.load(str(path)))
    assert meta['model'] == 'scalable_vit_test' and meta['input_size'] == '224x224'
    assert meta['num_classes'] == '10' and meta['opset'] == '17' and meta['weights_sha256'] == 'untrained'
    assert torch.__version__ in meta['exporter'] and meta['version'] == scalablevit.__version__
    again = check_onnx(path, expected_model='scalable_vit_test', input_size=224)
    assert again['metadata'] == meta == info['metadata']
    assert again['sha256'] == sha256_file(path) and again['size_bytes'] == path.stat().st_size
    assert (again['input_size'], again['num_classes'], again['in_chans']) == ((224, 224), 10, 3)


def _toy_export(path, meta=None, size=64):
    """A hand-made graph with the project's IO contract (a Relu and a Flatten), optionally stamped."""
    nodes = [helper.make_node('Relu', ['input'], ['r']), helper.make_node('Flatten', ['r'], ['logits'])]
    graph = helper.make_graph(nodes, 'toy', [helper.make_tensor_value_info('input', TensorProto.FLOAT,
                                                                           ['batch', 3, size, size])],
                              [helper.make_tensor_value_info('logits', TensorProto.FLOAT, ['batch', 3 * size * size])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    if meta:
        stamp_metadata(model, meta)
    onnx.save_model(model, str(path))
    return path


def test_check_onnx_refuses_other_models(tmp_path, export17):
    plain = _toy_export(tmp_path / 'plain.onnx')
    with pytest.raises(ScalableViTError, match='not a ScalableViT export'):
        check_onnx(plain)
    fmnist = _toy_export(tmp_path / 'fmnist.onnx', {'model': 'scalable_vit_fmnist', 'input_size': '64x64'})
    assert check_onnx(fmnist)['model'] == 'scalable_vit_fmnist'
    with pytest.raises(ScalableViTError, match="exported from 'scalable_vit_fmnist', expected 'scalable_vit_test'"):
        check_onnx(fmnist, expected_model='scalable_vit_test')
    with pytest.raises(ScalableViTError, match='input size 224x224, expected 448x448'):
        check_onnx(export17[0], expected_model='scalable_vit_test', input_size=448)


def test_check_onnx_refuses_broken_files(tmp_path):
    garbage = tmp_path / 'garbage.onnx'
    garbage.write_bytes(b'\x08\x07 definitely not a protobuf model' * 10)
    for path, message in [(garbage, 'not a valid ONNX file'), (tmp_path / 'missing.onnx', 'file not found')]:
        with pytest.raises(ScalableViTError, match=message) as err:
            check_onnx(path)
        assert str(path) in str(err.value) and '\n' not in str(err.value)


# ----------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize('opset', [16, 21, '17', True])
def test_bad_opset_is_refused_up_front(model, tmp_path, opset):
    with pytest.raises(ScalableViTError, match=r'choose 17\.\.20'):
        ExportOnnx(model, opset=opset)


@pytest.mark.parametrize('size', [100, (224, 300), 0])
def test_invalid_input_size(model, tmp_path, size):
    out = tmp_path / 'never.onnx'
    with pytest.raises(InputSizeError, match='multiples of 224'):
        export_onnx(model, out, input_size=size)
    assert not out.exists()


def test_other_input_size_is_exported_statically(model, tmp_path):
    info = export_onnx(model, tmp_path / 'wide.onnx', input_size=(224, 448), simplify=False)
    assert info['input_size'] == (224, 448) and info['metadata']['input_size'] == '224x448'


def test_interrupted_export_leaves_old_file_intact(model, tmp_path, monkeypatch):
    out = tmp_path / 'model.onnx'
    out.write_bytes(b'previous artifact')

    def half_write(proto, f, **kwargs):
        Path(f).write_bytes(proto.SerializeToString()[:1000])
        raise KeyboardInterrupt

    monkeypatch.setattr(onnx, 'save_model', half_write)
    with pytest.raises(KeyboardInterrupt):
        export_onnx(model, out, simplify=False)
    assert [p.name for p in tmp_path.iterdir()] == ['model.onnx'] and out.read_bytes() == b'previous artifact'


# ----------------------------------------------------------------------------------- CLI
@pytest.mark.parametrize('args, message', [
    (['--input-size', '100'], 'input size 100x100 does not fit'),
    (['--opset', '21'], 'opset 21 is not supported'),
    (['--input-size', '22y'], "--input-size '22y' is not SIZE or HxW"),
    (['--weights', 'no_such.pth'], 'no_such.pth'),
])
def test_cli_bad_input_exits_1_with_one_line(tmp_path, args, message):
    out = tmp_path / 'sub' / 'model.onnx'
    result = _cli('--model', 'scalable_vit_test', '--out', out, *args, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and message in errors[0] and 'Traceback' not in result.stderr
    assert not out.exists() and not out.parent.exists()


def test_cli_with_weights_stamps_their_hash(tmp_path):
    checkpoint = pytest.importorskip('scalablevit.models.checkpoint')
    model = _model(seed=3)
    weights = tmp_path / 'w.safetensors'
    checkpoint.save_weights(model, weights)
    out = tmp_path / 'model.onnx'
    result = _cli('--model', 'test', '--weights', weights, '--out', out, '--opset', '18', cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    info = check_onnx(out, expected_model='scalable_vit_test')
    assert info['weights_sha256'] == sha256_file(weights) and info['opset'] == 18
    assert _max_diff(model, out, batch=1) < TOL


@pytest.mark.slow
def test_cli_exports_scalable_vit_small(tmp_path):
    """The default model at 224 through the CLI; ORT equals torch FP32 within 1e-4 at batch 1."""
    checkpoint = pytest.importorskip('scalablevit.models.checkpoint')
    model = _model('scalable_vit_small', seed=5)
    weights = tmp_path / 's.safetensors'
    checkpoint.save_weights(model, weights)
    out = tmp_path / 's.fp32.onnx'
    result = _cli('--weights', weights, '--out', out, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert 'export: done in' in result.stderr and 'LayerNormalization 70' in result.stdout
    info = check_onnx(out, expected_model='scalable_vit_small', input_size=224)
    assert info['ops']['LayerNormalization'] == 70 and info['num_classes'] == 1000
    assert _max_diff(model, out, batch=1) < TOL


def test_run_cli_exit_codes(capsys):
    from scalablevit import cli

    def fails(argv):
        raise ScalableViTError('model.onnx: broken\n  second line')

    def interrupted(argv):
        raise KeyboardInterrupt

    for main, code in [(fails, 1), (interrupted, 130), (lambda argv: None, 0), (lambda argv: 3, 3)]:
        with pytest.raises(SystemExit) as done:
            cli.run_cli(main, [])
        assert done.value.code == code
    err = capsys.readouterr().err.splitlines()
    assert err == ['error: model.onnx: broken second line', 'error: interrupted']
