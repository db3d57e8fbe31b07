"""Checkpoint files: official ``.pth`` and safetensors read with safe unpickling only, safetensors written.

Loading a file into a model (strict keys, the variant a file matches) is ``model.load_weights``.

Official checkpoints (``main.py`` of Yangr116/ScalableViT) are ``{'model': state_dict, 'optimizer': ...,
'lr_scheduler': ..., 'epoch': int, 'scaler': ..., 'args': argparse.Namespace}`` or a raw state_dict. They are read
with ``torch.load(weights_only=True)``; the only class allowed beyond tensors and containers is
``argparse.Namespace`` (the ``args`` entry). A pickle that would import anything else is refused.
"""
import argparse
import logging
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Union

import torch

from ..core.errors import CheckpointError
from ..core.fileio import atomic_path

logger = logging.getLogger(__name__)

__all__ = ['read_state_dict', 'checkpoint_filter_fn', 'classifier_keys', 'save_weights']

StateDict = Dict[str, torch.Tensor]
SAFE_GLOBALS = [argparse.Namespace]  # everything the official format needs beyond tensors and containers
_ZIP_MAGIC = b'PK\x03\x04'
_PICKLE_PROTO = 0x80


def _is_safetensors(head: bytes) -> bool:
    """safetensors: u64 little-endian header length, then a JSON object."""
    return len(head) >= 9 and head[8:9] == b'{' and 0 < struct.unpack('<Q', head[:8])[0] < 100_000_000


def _load_safetensors(path: Path) -> StateDict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f'{path}: corrupt or truncated safetensors file ({e})') from e


def _load_pickle(path: Path) -> object:
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        # torch names the refused global, e.g. "Unsupported global: GLOBAL os.system".
        detail = next((line.strip() for line in str(e).splitlines() if 'GLOBAL' in line or 'Unsupported' in line),
                      str(e).splitlines()[0] if str(e) else 'unpickling error')
        raise CheckpointError(f'{path}: refused to load, the pickle asks for more than weights ({detail})') from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, struct.error) as e:
        raise CheckpointError(f'{path}: corrupt or truncated checkpoint ({str(e).splitlines()[0]})') from e


def read_state_dict(path: Union[str, Path]) -> StateDict:
    """Tensors of a checkpoint file, unwrapped from the official ``{'model': ...}`` dict when needed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'{path}: checkpoint not found')
    with open(path, 'rb') as f:
        head = f.read(16)
    if _is_safetensors(head):
        obj = _load_safetensors(path)
    elif head.startswith(_ZIP_MAGIC) or (head and head[0] == _PICKLE_PROTO):
        obj = _load_pickle(path)
    else:
        raise CheckpointError(f'{path}: not a checkpoint (neither a PyTorch .pth nor a safetensors file)')
    return _unwrap(obj, path)


def _unwrap(obj: object, path: Path) -> StateDict:
    if isinstance(obj, dict):
        for key in ('model', 'state_dict', 'model_ema'):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f'{path}: no state_dict inside (expected tensors, or a dict with a "model" entry)')
    return obj


def checkpoint_filter_fn(state_dict: StateDict, model: torch.nn.Module) -> StateDict:
    """Pure conversion to this model's key space: strip DataParallel's ``module.`` prefix.

    Classifier keys whose shapes differ from the model's (another num_classes), or that a headless model
    (num_classes=0) lacks, are dropped, so the backbone loads and the caller re-initialises the classifier.
    """
    out = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state_dict.items()}
    own = model.state_dict()
    for key in classifier_keys(model):
        if key in out and (key not in own or out[key].shape != own[key].shape):
            del out[key]
    return out


def classifier_keys(model: torch.nn.Module) -> List[str]:
    prefix = 'head.' if model.plain_head else 'head.3.'
    return [prefix + 'weight', prefix + 'bias']


def save_weights(model: torch.nn.Module, path: Union[str, Path], metadata: Optional[Dict[str, str]] = None) -> None:
    """Write the model's state_dict as safetensors, atomically, with the model name in the metadata."""
    from safetensors.torch import save_file
    meta = {'format': 'pt', 'model': getattr(model, 'name', ''), 'num_classes': str(model.num_classes)}
    meta.update(metadata or {})
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


WEIGHTS_DIR = Path(__file__).with_name('weights')


def shipped_weights(model: str) -> Optional[Path]:
    """The trained weights shipped in the package for registered name ``model`` (``models/weights/<model>.safetensors``),
    if any."""
    shipped = WEIGHTS_DIR / f'{model}.safetensors'
    if not shipped.is_file():
        return None
    logger.info('using the weights shipped with the package: %s', shipped)
    return shipped
