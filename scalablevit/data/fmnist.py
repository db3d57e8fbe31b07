"""Fashion-MNIST (Xiao et al., arXiv 1708.07747): the project's labelled data set for accuracy gates.

The Debian package ``dataset-fashion-mnist`` (MIT) installs the four idx files under
``/usr/share/datasets/fashion-mnist``. This module parses them with numpy alone (no torchvision) and
turns images into model inputs with exactly the project's eval transform, ``scalablevit.data.transforms.preprocess``:
a model sees the same pixels in training, in tests and in every calibration or accuracy stage.
"""
import gzip
import logging
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np

from ..core.errors import ScalableViTError, unknown_choice
from .sets import DEFAULT_CALIB_SIZE, DEFAULT_VAL_SIZE, STREAM_CALIB, STREAM_VAL, check_count, stream_rng
from .store import ImageSet
from .transforms import eval_sizes, model_input, resize_crop

logger = logging.getLogger(__name__)

__all__ = ['fashion_mnist_sets', 'CLASSES', 'DEFAULT_ROOT', 'INSTALL_HINT', 'load_fashion_mnist', 'resize_images',
           'normalize',
           'to_model_input']

DEFAULT_ROOT = Path('/usr/share/datasets/fashion-mnist')
INSTALL_HINT = 'apt-get install dataset-fashion-mnist'
CLASSES: Tuple[str, ...] = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat',
                            'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot')

# split -> (images file, labels file, number of samples)
_SPLITS: Dict[str, Tuple[str, str, int]] = {
    'train': ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz', 60000),
    'test': ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz', 10000),
}
# idx magic: two zero bytes, dtype code 0x08 (uint8), number of dimensions.
_IMAGES_MAGIC = 0x00000803
_LABELS_MAGIC = 0x00000801


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse one gzip'd idx file into a uint8 array of the shape its header declares."""
    if not path.is_file():
        raise ScalableViTError(f'Fashion-MNIST file {path} not found; install the data set: {INSTALL_HINT}')
    try:
        with gzip.open(path, 'rb') as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise ScalableViTError(f'{path}: not a readable gzip idx file ({e})') from e
    ndim = magic & 0xFF
    header = 4 * (1 + ndim)
    if len(data) < header or int.from_bytes(data[:4], 'big') != magic:
        found = data[:4].hex() if len(data) >= 4 else 'truncated header'
        raise ScalableViTError(f'{path}: bad idx magic number {found}, expected {magic:08x}')
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim))
    if len(data) - header != int(np.prod(shape)):
        raise ScalableViTError(f'{path}: {len(data) - header} data bytes, header declares shape {shape}')
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def load_fashion_mnist(split: str, root: Path = DEFAULT_ROOT) -> Tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, 28, 28) and labels int64 (N,) of the 'train' (60k) or 'test' (10k) split."""
    if split not in _SPLITS:
        raise unknown_choice('Fashion-MNIST split', split, _SPLITS)
    root = Path(root)
    images_name, labels_name, count = _SPLITS[split]
    images = _read_idx(root / images_name, _IMAGES_MAGIC)
    labels = _read_idx(root / labels_name, _LABELS_MAGIC).astype(np.int64)
    if images.shape != (count, 28, 28) or labels.shape != (count,):
        raise ScalableViTError(f'{root}: {split} split has images {images.shape} and labels {labels.shape}, '
                               f'expected ({count}, 28, 28) and ({count},)')
    if labels.max() >= len(CLASSES):
        raise ScalableViTError(f'{root / labels_name}: label {labels.max()} outside 0..{len(CLASSES) - 1}')
    logger.debug('loaded Fashion-MNIST %s: %d images from %s', split, count, root)
    return images, labels


def resize_images(images: np.ndarray, data_cfg: Dict[str, Any]) -> np.ndarray:
    """uint8 (N, h, w) gray -> uint8 (N, S, S): the resize and center crop of the eval transform, per image.

    ``tests/test_fmnist.py`` checks the end result against ``preprocess`` bit for bit.
    """
    from PIL import Image

    crop = eval_sizes(data_cfg)[1]
    out = np.empty((len(images), crop, crop), np.uint8)
    for i, img in enumerate(images):
        out[i] = np.asarray(resize_crop(Image.fromarray(img), data_cfg))
    return out


def normalize(images: np.ndarray, data_cfg: Dict[str, Any]) -> np.ndarray:
    """uint8 (N, S, S) gray -> float32 (N, 3, S, S), the same float32 arithmetic as ``preprocess``."""
    images = np.asarray(images)
    return model_input(np.broadcast_to(images[:, None], (len(images), 3, *images.shape[1:])), data_cfg)


def to_model_input(images: np.ndarray, data_cfg: Dict[str, Any]) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 (N, 3, S, S), identical to ``preprocess(Image.fromarray(img), data_cfg)``."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ScalableViTError(f'Fashion-MNIST images must be uint8 (N, H, W), got {images.dtype} {images.shape}')
    return normalize(resize_images(images, data_cfg), data_cfg)


def fashion_mnist_sets(data_cfg: Dict[str, Any], calib_size: int = DEFAULT_CALIB_SIZE,
                       val_size: int = DEFAULT_VAL_SIZE, seed: int = 0) -> Tuple['ImageSet', 'ImageSet']:
    """Calibration from the Fashion-MNIST train split, labelled validation from the test split (never mixed)."""
    check_count('calibration size', calib_size)
    check_count('validation size', val_size)
    sets = []
    for split, count, stream in (('train', calib_size, STREAM_CALIB), ('test', val_size, STREAM_VAL)):
        images, labels = load_fashion_mnist(split)
        pick = np.sort(stream_rng(seed, stream).choice(len(images), size=min(count, len(images)), replace=False))
        sets.append(ImageSet(to_model_input(images[pick], data_cfg), source=f'fashion-mnist {split} (seed {seed})',
                                  names=[f'{split}/{i}' for i in pick], labels=labels[pick], class_names=list(CLASSES)))
    return sets[0], sets[1]
