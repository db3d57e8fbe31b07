"""Checkpoint files: official ``.pth`` and safetensors read with safe unpickling only, safetensors written.

Loading a file into a model (strict keys, the variant a file matches) is ``model.load_weights``.

Official checkpoints (``main.py`` of Yangr116/ScalableViT) are ``{'model': state_dict, 'optimizer': ...,
'lr_scheduler': ..., 'epoch': int, 'scaler': ..., 'args': argparse.Namespace}`` or a raw state_dict. They are read
with ``torch.load(weights_only=True)``; the only class allowed beyond tensors and containers is
``argparse.Namespace`` (the ``args`` entry). A pickle that would import anything else is refused.
"""
import argparse
import hashlib
import io
import json
import logging
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import torch

from ..core.errors import CheckpointError
from ..core.fileio import atomic_path

logger = logging.getLogger(__name__)

__all__ = ['read_checkpoint', 'read_state_dict', 'checkpoint_filter_fn', 'classifier_keys', 'save_weights']

StateDict = Dict[str, torch.Tensor]
SAFE_GLOBALS = [argparse.Namespace]  # everything the official format needs beyond tensors and containers
_ZIP_MAGIC = b'PK\x03\x04'
_PICKLE_PROTO = 0x80


def _is_safetensors(head: bytes) -> bool:
    """safetensors: u64 little-endian header length, then a JSON object."""
    return len(head) >= 9 and head[8:9] == b'{' and 0 < struct.unpack('<Q', head[:8])[0] < 100_000_000


def _load_safetensors(data: bytes, path: Path) -> StateDict:
    """The tensors in file order (``safetensors.torch.load`` returns them in no fixed order)."""
    from safetensors import SafetensorError
    from safetensors.torch import load
    try:
        tensors = load(data)
        header = json.loads(data[8:8 + struct.unpack('<Q', data[:8])[0]])
    except (SafetensorError, ValueError) as e:
        raise CheckpointError(f'{path}: corrupt or truncated safetensors file ({e})') from e
    order = sorted(tensors, key=lambda k: header[k]['data_offsets'][0])
    return {k: tensors[k] for k in order}


def _load_pickle(data: bytes, path: Path) -> object:
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(io.BytesIO(data), map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        # torch names the refused global, e.g. "Unsupported global: GLOBAL os.system".
        detail = next((line.strip() for line in str(e).splitlines() if 'GLOBAL' in line or 'Unsupported' in line),
                      str(e).splitlines()[0] if str(e) else 'unpickling error')
        raise CheckpointError(f'{path}: refused to load, the pickle asks for more than weights ({detail})') from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, struct.error) as e:
        raise CheckpointError(f'{path}: corrupt or truncated checkpoint ({str(e).splitlines()[0]})') from e


def read_checkpoint(path: Union[str, Path]) -> Tuple[StateDict, str]:
    """Tensors of a checkpoint file (unwrapped from the official ``{'model': ...}`` dict when needed) and the
    sha256 of the very bytes they were parsed from: the file is read once."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'{path}: checkpoint not found')
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f'{path}: cannot read it ({e.strerror})') from e
    head = data[:16]
    if _is_safetensors(head):
        obj = _load_safetensors(data, path)
    elif head.startswith(_ZIP_MAGIC) or (head and head[0] == _PICKLE_PROTO):
        obj = _load_pickle(data, path)
    else:
        raise CheckpointError(f'{path}: not a checkpoint (neither a PyTorch .pth nor a safetensors file)')
    return _unwrap(obj, path), hashlib.sha256(data).hexdigest()


def read_state_dict(path: Union[str, Path], sha256: Optional[str] = None) -> StateDict:
    """Tensors of a checkpoint file; with ``sha256`` (what a bundle recorded) the bytes read must carry it, so a
    file replaced since it was recorded is refused, never loaded."""
    state_dict, actual = read_checkpoint(path)
    if sha256 is not None and actual != sha256:
        raise CheckpointError(f'{path} is not the checkpoint that was recorded (sha256 {actual[:12]}... != '
                              f'{sha256[:12]}...): it changed since; rebuild, or pass the original file')
    return state_dict


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
    """Pure conversion to this model's key space: strip DataParallel's ``module.`` prefix, and drop the classifier
    keys a headless model (num_classes=0) lacks. A checkpoint holding a key both with and without the prefix is
    ambiguous and refused."""
    out: StateDict = {}
    for key, value in state_dict.items():
        plain = key[len('module.'):] if key.startswith('module.') else key
        if plain in out:
            raise CheckpointError(f"the checkpoint holds both 'module.{plain}' and '{plain}': which one is the model "
                                  'is ambiguous')
        out[plain] = value
    own = model.state_dict()
    for key in classifier_keys(model):
        if key in out and key not in own:
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
