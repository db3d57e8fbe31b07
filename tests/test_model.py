"""ScalableViT equals the official implementation: logits, state_dict keys, parameter counts, input checks.

The reference data came from the official file (Yangr116/ScalableViT,
``image_classification/models/scalablevit.py`` at commit 90afa8e, run on torch 2.13 with a stub of the
four timm 0.3.2 helpers it imports), in eval mode, FP32, on CPU, with the weights and inputs that
``weights_util.py`` makes. ``official_reference.npz`` holds the logits plus checksums of those inputs
and weights, so a drift in the generators is reported as such and not as a model bug.
``official_keys.json`` holds the official ``{key: shape}`` maps of S, B, L and small_0.
"""
import importlib.util
import json
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import pytest
import torch

from scalablevit.core import numerics
from scalablevit.core.errors import InputSizeError
from scalablevit.models.complexity import complexity_table, model_complexity
from scalablevit.models.scalablevit import ScalableViT, create_model, model_config

DATA = Path(__file__).parent / 'data'


def parity_atol(model: str, reference: np.ndarray) -> float:
    """FP32 logits of another machine's kernels (the stored official run) may differ by the format's bound."""
    return numerics.logit_tolerance('fp32', model_config(model)['depths'], float(np.abs(reference).max()))


def _load_weights_util():
    """weights_util by path: the same file the reference generator loaded."""
    path = Path(__file__).with_name('weights_util.py')
    spec = importlib.util.spec_from_file_location('_scalablevit_weights_util', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


wu = _load_weights_util()


def _assert_same_draws(tensors: List[torch.Tensor], stored: np.ndarray, problem: str) -> None:
    """The generator's draws equal the stored ones up to 2 float32 ulps of the largest draw each: torch's vectorized
    normal sampler (AVX2/AVX-512) and its portable one (ATEN_CPU_CAPABILITY=default) evaluate Box-Muller's log/cos
    with different libraries. A changed generator moves the sum by about sqrt(n), orders of magnitude beyond this."""
    flat = torch.cat([t.detach().reshape(-1).double() for t in tensors])
    step = 2.0 ** -22 * flat.abs().max().item()  # two float32 ulps of the largest draw, absolute
    allowed = step * np.array([flat.numel(), 2 * flat.numel() * flat.abs().max().item(), 1, 1])
    got = wu.checksum(tensors)
    assert (np.abs(got - stored) <= allowed).all(), f'{problem}: checksum {got} vs stored {stored}, allowed {allowed}'


@lru_cache(maxsize=None)
def _reference() -> Tuple[Dict[str, np.ndarray], dict]:
    with np.load(DATA / 'official_reference.npz') as npz:
        arrays = {k: npz[k] for k in npz.files}
    return arrays, json.loads(str(arrays.pop('meta_json')))


@lru_cache(maxsize=None)
def _official_keys() -> Dict[str, Dict[str, Tuple[int, ...]]]:
    models = json.loads((DATA / 'official_keys.json').read_text())['models']
    return {name: {k: tuple(s) for k, s in keys.items()} for name, keys in models.items()}


def _filled_model(name: str, seed: int, plain_head: bool = False, scales: Optional[dict] = None) -> ScalableViT:
    kwargs = {'plain_head': True} if plain_head else {}
    with torch.device('meta'):  # skip the random init: every tensor is overwritten by the filler
        model = create_model(name, **kwargs)
    return wu.fill_weights(model.to_empty(device='cpu'), seed, scales).eval()


def _meta_model(name: str) -> ScalableViT:
    with torch.device('meta'):
        return create_model(name)


# ------------------------------------------------------------------------------------ parity with the official code
# The official IWSA/SSA compute (q @ k^T) * scale; ours scales q before the matmul (the pattern TensorRT's attention
# fusion matches). Pre-scaled q equals post-scaled official numerics: these parity cases are that proof.
PARITY_CASES = [
    'test_224',   # scalable_vit_test: every block type, c_ratio 1.5 in the sr_ratio-1 last stage, mlp_ratios 4/3/2/2
    'test_448',   # same weights at 448: 2x2 windows per stage-4 map, larger SSA reductions
    'plain_224',  # scalable_vit_test with plain_head=True (the official reset_classifier path)
    'eps_224',    # patch-embedding and SSA-reduction weights x 1e-3: LayerNorm eps (1e-6, norm_act 1e-5) shows
    'small_224',  # ScalableViT-S, the released configuration
    pytest.param('small_448', marks=pytest.mark.slow),
]


@pytest.mark.numerics
@pytest.mark.parametrize('case', PARITY_CASES)
def test_logits_match_official(case: str) -> None:
    arrays, meta = _reference()
    spec = meta['cases'][case]
    plain = bool(spec.get('config', {}).get('plain_head', False))
    if 'config' in spec:  # the stored config must still be ours, else the comparison is meaningless
        ours = {k: list(v) if isinstance(v, tuple) else v for k, v in model_config(spec['model']).items()}
        assert {**ours, 'plain_head': plain} == {**spec['config'], 'plain_head': plain}, 'test config drifted'

    x = wu.make_input(spec['shape'], spec['iseed'])
    _assert_same_draws([x], arrays[f'{case}/input_checksum'], 'input generator drifted (torch RNG?), not a model bug')
    model = _filled_model(spec['model'], spec['wseed'], plain, spec.get('scales'))
    _assert_same_draws(list(model.state_dict().values()), arrays[f'{case}/weights_checksum'],
                       'weight filler drifted, not a model bug')
    with torch.no_grad():
        logits = model(x).numpy()
    reference = arrays[f'{case}/logits']
    assert logits.shape == reference.shape
    np.testing.assert_allclose(logits, reference, rtol=0, atol=parity_atol(spec['model'], reference))


def test_reference_detects_a_wrong_ssa_scale() -> None:
    """The FP32 bound is discriminating: dropping c_ratio from the sr_ratio-1 SSA scale fails it by far."""
    arrays, meta = _reference()
    spec = meta['cases']['test_224']
    model = wu.fill_weights(create_model('scalable_vit_test'), spec['wseed']).eval()
    attn = model.stages[3][1].attn  # SSA, sr_ratio 1, c_ratio 1.5
    attn.scale = (attn.dim // attn.num_heads) ** -0.5
    with torch.no_grad():
        logits = model(wu.make_input(spec['shape'], spec['iseed'])).numpy()
    reference = arrays['test_224/logits']
    assert np.abs(logits - reference).max() > 100 * parity_atol('scalable_vit_test', reference)


# ------------------------------------------------------------------------------------ checkpoint layout
@pytest.mark.parametrize('name', ['scalable_vit_small', 'scalable_vit_base', 'scalable_vit_large',
                                  'scalable_vit_small_0'])
def test_state_dict_keys_and_shapes_match_official(name: str) -> None:
    official = _official_keys()[name]
    model = _meta_model(name)
    assert wu.state_dict_shapes(model) == official
    # A checkpoint with exactly the official keys and shapes loads strictly (meta tensors: shapes are checked).
    state = {k: torch.empty(shape, device='meta') for k, shape in official.items()}
    result = model.load_state_dict(state, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys


@pytest.mark.parametrize('name, expected', [
    ('scalable_vit_small', 32_000_472), ('scalable_vit_base', 81_881_624), ('scalable_vit_large', 109_288_840),
])
def test_parameter_counts(name: str, expected: int) -> None:
    ours = sum(p.numel() for p in _meta_model(name).parameters())
    official = sum(int(np.prod(shape)) for shape in _official_keys()[name].values())
    assert ours == official == expected


# ------------------------------------------------------------------------------------ inputs
@pytest.mark.parametrize('height, width', [(230, 230), (240, 240), (0, 0), (224, 230), (448, 200), (-224, 224)])
def test_bad_input_size_is_a_clear_value_error(height: int, width: int) -> None:
    model = create_model('scalable_vit_test').eval()
    with pytest.raises(InputSizeError) as info:
        model.check_input_size(height, width)
    message = str(info.value)
    assert f'{height}x{width}' in message and f'multiples of {model.size_multiple}' in message


@pytest.mark.parametrize('height, width', [(230, 230), (240, 240), (224, 230)])
def test_forward_rejects_bad_size_before_any_layer_runs(height: int, width: int) -> None:
    model = create_model('scalable_vit_test').eval()
    calls = []
    model.patch_embeds[0].register_forward_pre_hook(lambda module, args: calls.append(module))
    with pytest.raises(ValueError, match='multiples of 224') as info, torch.no_grad():
        model(torch.zeros(1, 3, height, width))
    assert not isinstance(info.value, RuntimeError) and calls == []


def test_size_multiple_follows_the_config() -> None:
    assert _meta_model('scalable_vit_small').size_multiple == 224  # 32x downsampling x window 7
    fmnist = create_model('scalable_vit_fmnist')
    assert fmnist.size_multiple == 64
    with pytest.raises(InputSizeError, match='multiples of 64'):
        fmnist.check_input_size(96, 96)


def test_non_square_multiple_runs() -> None:
    model = _filled_model('scalable_vit_test', 1)
    with torch.no_grad():
        logits = model(wu.make_input((1, 3, 224, 448), 7))
    assert logits.shape == (1, 10) and torch.isfinite(logits).all()


def test_dynamic_batch_rows_agree() -> None:
    model = _filled_model('scalable_vit_test', 1)
    x = wu.make_input((3, 3, 224, 224), 11)
    with torch.no_grad():
        batched = model(x)
        single = torch.cat([model(x[i:i + 1]) for i in range(3)])
    assert batched.shape == (3, 10)
    torch.testing.assert_close(batched, single, rtol=0, atol=parity_atol('scalable_vit_test', single.numpy()))
    assert (batched[0] - batched[1]).abs().max() > 1e-2  # rows really differ: no broadcast mix-up


# ------------------------------------------------------------------------------------ complexity
def _analytic_macs(name: str, size: int) -> Dict[str, int]:
    """Hand count of conv / linear / attention MACs for one image, straight from the config."""
    cfg = model_config(name)
    macs = {'conv': 0, 'linear': 0, 'attention': 0}
    side, c_in = size, 3
    for k, (c, heads, depth) in enumerate(zip(cfg['embed_dims'], cfg['num_heads'], cfg['depths'])):
        kernel, stride = (cfg['patch_size'] + 3, cfg['patch_size']) if k == 0 else (3, 2)
        side //= stride
        n, sr, ws = side * side, cfg['sr_ratios'][k], cfg['wss'][k]
        c_new, hidden = int(c * cfg['c_ratios'][k]), int(c * cfg['mlp_ratios'][k])
        macs['conv'] += n * c * c_in * kernel * kernel + n * c * 9  # patch embedding + PEG
        for i in range(depth):
            macs['linear'] += 2 * n * c * hidden + n * c * c  # MLP + proj
            if i % 2 == 0:  # IWSA: qkv, LIM, windowed q@k^T and attn@v
                macs['linear'] += 3 * n * c * c
                macs['conv'] += 9 * n * c
                macs['attention'] += 2 * n * ws * ws * c
            elif sr > 1:  # SSA with reduction: q, dw sr x sr conv, 1x1 conv, k, v; attention over n / sr^2 keys
                n_kv = n // (sr * sr)
                macs['linear'] += n * c * c_new + n_kv * c_new * c_new + n_kv * c_new * c
                macs['conv'] += n * c + n_kv * c * c_new
                macs['attention'] += n * n_kv * (c_new + c)
            else:  # SSA without reduction: q and kv projections, full attention
                macs['linear'] += 3 * n * c * c
                macs['attention'] += 2 * n * n * c
        c_in = c
    classes = cfg.get('num_classes', 1000)
    macs['linear'] += c_in * classes if cfg.get('plain_head') else c_in * 4096 + 4096 * classes
    return macs


@pytest.mark.parametrize('name, size', [('scalable_vit_test', 224), ('scalable_vit_test', 448),
                                        ('scalable_vit_small', 224), ('scalable_vit_small', 448),
                                        ('scalable_vit_large', 224), ('scalable_vit_fmnist', 64)])
def test_complexity_counts_every_conv_linear_and_attention_matmul(name: str, size: int) -> None:
    info = model_complexity(name, size)
    assert info['macs_by_kind'] == _analytic_macs(name, size)
    assert info['macs'] == sum(info['macs_by_kind'].values()) and info['gmacs'] == info['macs'] / 1e9


def test_complexity_of_scalablevit_small() -> None:
    info = model_complexity('s')
    assert (info['model'], info['input_size'], info['params'], info['macs']) == \
        ('scalable_vit_small', 224, 32_000_472, 4_265_295_104)
    assert info['macs_by_kind']['attention'] == 172_103_680
    assert model_complexity('s', 448)['macs'] == 18_134_230_016


def test_complexity_of_a_built_model_equals_the_name() -> None:
    model = create_model('scalable_vit_test').train()
    assert model_complexity(model, 448) == model_complexity('scalable_vit_test', 448)
    assert model.training  # mode restored


def test_complexity_rejects_bad_size() -> None:
    with pytest.raises(InputSizeError, match='multiples of 224'):
        model_complexity('scalable_vit_test', 230)


def test_complexity_table_rows() -> None:
    lines = complexity_table(['s', 'scalable_vit_small_0']).splitlines()
    assert lines[0].startswith('| model |') and len(lines) == 4
    assert lines[2] == '| scalable_vit_small | 224 | 32.00 | 4.27 | 83.1 |'
    assert lines[3] == '| scalable_vit_small_0 | 224 | 26.31 | 4.26 | - |'
