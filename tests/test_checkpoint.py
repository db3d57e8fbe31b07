"""Checkpoint loading: official .pth layouts, safetensors, and every error case (with the malicious pickle)."""
import argparse
import os
import pickle
import subprocess
from pathlib import Path

import pytest
import torch

from scalablevit import CheckpointError, create_model
from scalablevit.models.checkpoint import read_state_dict, save_weights
from scalablevit.models.scalablevit import load_weights, matching_variants

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def trained_like():
    torch.manual_seed(0)
    return create_model('scalable_vit_test').eval()


def _logits(model, seed=1):
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(x)


def test_official_training_checkpoint_layout_loads(tmp_path, trained_like):
    """main.py saves model/optimizer/lr_scheduler/epoch/scaler/args; args is an argparse.Namespace."""
    args = argparse.Namespace(model='scalable_vit_test', lr=5e-4, drop_path=0.2, input_size=224, data_path='/imagenet')
    opt = torch.optim.AdamW(trained_like.parameters(), lr=1e-3)
    ckpt = {'model': trained_like.state_dict(), 'optimizer': opt.state_dict(), 'lr_scheduler': {'t_initial': 300},
            'epoch': 299, 'scaler': {'scale': 65536.0}, 'args': args}
    path = tmp_path / 'checkpoint_best.pth'
    torch.save(ckpt, path)
    model = create_model('scalable_vit_test', weights=str(path)).eval()
    assert torch.equal(_logits(model), _logits(trained_like))


def test_raw_and_ddp_state_dicts_load(tmp_path, trained_like):
    raw = tmp_path / 'raw.pth'
    torch.save(trained_like.state_dict(), raw)
    ddp = tmp_path / 'ddp.pth'
    torch.save({'model': {'module.' + k: v for k, v in trained_like.state_dict().items()}}, ddp)
    for path in (raw, ddp):
        assert torch.equal(_logits(create_model('test', weights=str(path)).eval()), _logits(trained_like))


def test_safetensors_round_trip(tmp_path, trained_like):
    path = tmp_path / 'w.safetensors'
    trained_like.name = 'scalable_vit_test'
    save_weights(trained_like, path)
    assert not [p for p in tmp_path.iterdir() if p.name != 'w.safetensors']  # no temp files left
    model = create_model('scalable_vit_test', weights=str(path)).eval()
    assert torch.equal(_logits(model), _logits(trained_like))


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / 'pwned'

    class Exploit:
        def __reduce__(self):
            return os.system, (f'touch {marker}',)

    path = tmp_path / 'evil.pth'
    torch.save({'model': {'w': torch.zeros(1)}, 'payload': Exploit()}, path)
    with pytest.raises(CheckpointError, match=r'refused to load.*os\.system|refused to load.*system'):
        read_state_dict(path)
    assert not marker.exists()
    # The legacy (non-zip) pickle format takes the same safe path.
    legacy = tmp_path / 'evil_legacy.pth'
    torch.save({'payload': Exploit()}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match='refused to load'):
        read_state_dict(legacy)
    assert not marker.exists()


def test_plain_pickle_of_other_objects_is_refused(tmp_path):
    path = tmp_path / 'obj.pth'
    with open(path, 'wb') as f:
        pickle.dump({'model': {'w': torch.zeros(1)}, 'when': __import__('datetime').date(2022, 3, 21)}, f, protocol=2)
    with pytest.raises(CheckpointError, match='refused to load'):
        read_state_dict(path)


def test_truncated_and_corrupt_files(tmp_path, trained_like):
    good = tmp_path / 'good.pth'
    torch.save({'model': trained_like.state_dict()}, good)
    data = good.read_bytes()
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match='corrupt or truncated'):
        read_state_dict(truncated)
    st = tmp_path / 'w.safetensors'
    save_weights(trained_like, st)
    cut = tmp_path / 'cut.safetensors'
    cut.write_bytes(st.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match='corrupt or truncated safetensors'):
        read_state_dict(cut)


def test_not_a_checkpoint(tmp_path):
    text = tmp_path / 'notes.txt'
    text.write_text('these are not weights\n')
    with pytest.raises(CheckpointError, match='not a checkpoint'):
        read_state_dict(text)
    with pytest.raises(CheckpointError, match='not found'):
        read_state_dict(tmp_path / 'missing.pth')
    empty_dict = tmp_path / 'empty.pth'
    torch.save({'epoch': 3}, empty_dict)
    with pytest.raises(CheckpointError, match='no state_dict inside'):
        read_state_dict(empty_dict)


def test_wrong_variant_names_the_matching_one(tmp_path):
    with torch.device('meta'):
        base = create_model('scalable_vit_base')
    sd = {k: torch.zeros(v.shape) for k, v in base.state_dict().items()}
    path = tmp_path / 'base.pth'
    torch.save({'model': sd}, path)
    assert matching_variants(sd) == ['scalable_vit_base']
    with torch.device('meta'):
        small = create_model('scalable_vit_small')
    with pytest.raises(CheckpointError) as err:
        load_weights(small, path)
    msg = str(err.value)
    assert '\n' not in msg
    assert 'does not fit scalable_vit_small' in msg
    assert 'missing keys' in msg and 'unexpected keys' in msg and 'shape mismatches' in msg
    assert 'the file matches scalable_vit_base' in msg


def test_the_checkpoint_defines_the_head_a_random_one_is_never_made(tmp_path, trained_like):
    path = tmp_path / 'ten.pth'
    torch.save({'model': trained_like.state_dict()}, path)
    with pytest.raises(CheckpointError, match='its classifier has 10 classes, the model 5'):
        load_weights(create_model('scalable_vit_test', num_classes=5), path)
    with pytest.raises(CheckpointError, match='its classifier has 10 classes, not the 5 asked for'):
        create_model('scalable_vit_test', weights=str(path), num_classes=5)
    torch.save({'model': {k: v for k, v in trained_like.state_dict().items() if not k.startswith('head.3.')}}, path)
    with pytest.raises(CheckpointError, match='carries no classifier .* 10-class head trained, never a random one'):
        create_model('scalable_vit_test', weights=str(path))
    torch.save({'model': {k: v for k, v in trained_like.state_dict().items() if not k.startswith('head.')}}, path)
    with pytest.raises(CheckpointError, match=r'carries no classifier \(a backbone-only checkpoint\)'):
        create_model('scalable_vit_test', weights=str(path))


def test_the_model_takes_its_class_count_from_the_checkpoint(tmp_path):
    torch.manual_seed(3)
    five = create_model('scalable_vit_fmnist', num_classes=5)  # a plain head: 'head.weight'
    path = tmp_path / 'five.pth'
    torch.save({'model': five.state_dict()}, path)
    model = create_model('scalable_vit_fmnist', weights=str(path))
    assert model.num_classes == 5 and model.data_cfg['num_classes'] == 5 and model.data_cfg['labels'] is None
    assert all(torch.equal(v, five.state_dict()[k]) for k, v in model.state_dict().items())


def test_weights_only_is_used_even_if_torch_default_changes(tmp_path):
    """Grep-level guard: every torch.load in the library passes weights_only=True."""
    calls = subprocess.run(['grep', '-rn', 'torch.load(', str(ROOT / 'scalablevit')], capture_output=True, text=True)
    lines = [line for line in calls.stdout.splitlines() if line.strip()]
    assert lines and all('weights_only=True' in line for line in lines), lines


def test_headless_model_loads_a_full_checkpoint(tmp_path, trained_like):
    path = tmp_path / 'full.pth'
    torch.save({'model': trained_like.state_dict()}, path)
    model = create_model('scalable_vit_test', weights=str(path), num_classes=0).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 224, 224)).shape == (1, 4096)  # the MLP head's pre-logits
