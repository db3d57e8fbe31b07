"""The eval transform: resize, center crop, normalize.

``preprocess`` is THE eval transform: every stage (calibration, validation, accuracy, demos, predict) uses it, so a
model sees the same pixels on the host and on the device. An extreme aspect ratio never makes a resize larger than
``MAX_RESIZE_SIDE``.
"""
import logging
import os
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np


logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

_INTERPOLATIONS = {'bicubic': 3, 'bilinear': 2, 'nearest': 0}  # PIL.Image.Resampling values
MAX_RESIZE_SIDE = 8192  # a resize whose long side would exceed this resamples only the crop window

def eval_sizes(data_cfg: Dict[str, Any], input_size: Optional[int] = None) -> Tuple[int, int]:
    """(resize side, crop side) for an input side; other sizes keep the config's crop ratio (224/256)."""
    crop = data_cfg['input_size'][-1]
    resize = data_cfg['resize']
    if input_size is None or input_size == crop:
        return resize, crop
    return int(round(input_size * resize / crop)), input_size


def sized_config(data_cfg: Dict[str, Any], input_size: Optional[int]) -> Dict[str, Any]:
    """``data_cfg`` for an input side of ``input_size``: crop = the side, resize scaled by the config's ratio
    (224 -> 256 gives 448 -> 512): the record every reader of a bundle follows."""
    resize, crop = eval_sizes(data_cfg, input_size)
    return {**data_cfg, 'input_size': (3, crop, crop), 'resize': resize}


def resize_crop(image: Any, data_cfg: Dict[str, Any], input_size: Optional[int] = None) -> Any:
    """The geometric half of ``preprocess``: shorter side to ``resize`` (config interpolation), center crop.

    Works on any PIL mode; PIL resamples every 8-bit band alike, so a gray image resized here equals the
    same channel of its RGB copy (``fmnist`` relies on this).

    An image so elongated that its resize would exceed ``MAX_RESIZE_SIDE`` (a 20000 x 1 strip would become
    5,120,000 x 256) has only the crop window resampled (PIL's ``box``): the same sampling grid, within one
    grey level, without ever allocating the full resize.
    """
    from PIL import Image
    resize, crop = eval_sizes(data_cfg, input_size)
    w, h = image.size
    scale = resize / min(w, h)
    new_w, new_h = max(crop, round(w * scale)), max(crop, round(h * scale))
    left, top = (new_w - crop) // 2, (new_h - crop) // 2
    resample = Image.Resampling(_INTERPOLATIONS[data_cfg['interpolation']])
    if max(new_w, new_h) > MAX_RESIZE_SIDE:
        box = (left * w / new_w, top * h / new_h, (left + crop) * w / new_w, (top + crop) * h / new_h)
        return image.resize((crop, crop), resample, box=box)
    image = image.resize((new_w, new_h), resample)
    return image.crop((left, top, left + crop, top + crop))


# Set in a data config when the model normalizes by itself (export --fold-normalization): its input is RGB 0-255.
NORMALIZE_IN_MODEL = 'normalize_in_model'


def normalize_in_model(data_cfg: Dict[str, Any]) -> bool:
    """True when the model takes RGB 0-255 pixels (mean/std folded into its first convolution)."""
    return bool(data_cfg.get(NORMALIZE_IN_MODEL, False))


def folded_config(data_cfg: Dict[str, Any]) -> Dict[str, Any]:
    """The data config of the same model with its normalization folded in: same resize and crop, 0-255 input.

    ``mean`` and ``std`` stay recorded: they say what the model now does internally.
    """
    return {**data_cfg, NORMALIZE_IN_MODEL: True}


def normalize(pixels: np.ndarray, data_cfg: Dict[str, Any]) -> np.ndarray:
    """RGB pixels 0-255 (..., 3, H, W) -> ``(x / 255 - mean) / std`` per channel, float32, the one normalization.

    Pixel values are whole numbers, so feeding a model the stored 0-255 array through this function gives
    exactly the input ``preprocess`` gives an unfolded model.
    """
    mean = np.asarray(data_cfg['mean'], np.float32).reshape(3, 1, 1)
    std = np.asarray(data_cfg['std'], np.float32).reshape(3, 1, 1)
    return np.ascontiguousarray((np.asarray(pixels, np.float32) / 255.0 - mean) / std)


def model_input(pixels: np.ndarray, data_cfg: Dict[str, Any]) -> np.ndarray:
    """RGB 0-255 pixels (..., 3, H, W) -> what the model of ``data_cfg`` takes: the pixels themselves when it
    normalizes by itself, else ``normalize``'d."""
    if normalize_in_model(data_cfg):
        return np.ascontiguousarray(pixels, dtype=np.float32)
    return normalize(pixels, data_cfg)


def preprocess(image: Any, data_cfg: Dict[str, Any], input_size: Optional[int] = None) -> np.ndarray:
    """PIL image -> (3, S, S) float32: shorter side to ``resize`` (config interpolation), center crop, normalize.

    For ImageNet models: shorter side 256 bicubic, center crop 224, ImageNet mean/std (the official eval).
    A folded model (``normalize_in_model``) gets the cropped RGB pixels 0-255 instead.
    """
    pixels = np.asarray(resize_crop(image.convert('RGB'), data_cfg, input_size), dtype=np.float32)
    return model_input(pixels.transpose(2, 0, 1), data_cfg)
