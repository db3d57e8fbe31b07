"""The colour photos bundled with scikit-image (shipped in its wheel: no download) and seeded random crops of them.
"""
import functools
import logging
import os
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

from ..core.errors import ScalableViTError

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


# ----------------------------------------------------------------------------- scikit-image sample photos
# photo -> (scene, skimage.data function, index into its tuple result). Only photos shipped inside the
# scikit-image wheel: the others are downloaded on demand and must never be needed. Photos of one scene
# (the stereo pair) always land on the same side of the calibration/validation split.
SAMPLE_PHOTOS: Dict[str, Tuple[str, str, Optional[int]]] = {
    'astronaut': ('astronaut', 'astronaut', None),
    'chelsea': ('chelsea', 'chelsea', None),
    'coffee': ('coffee', 'coffee', None),
    'rocket': ('rocket', 'rocket', None),
    'hubble_deep_field': ('hubble_deep_field', 'hubble_deep_field', None),
    'retina': ('retina', 'retina', None),
    'immunohistochemistry': ('immunohistochemistry', 'immunohistochemistry', None),
    'motorcycle_left': ('stereo_motorcycle', 'stereo_motorcycle', 0),
    'motorcycle_right': ('stereo_motorcycle', 'stereo_motorcycle', 1),
}
CROP_SCALE = (0.25, 1.0)  # fraction of the photo's area
CROP_RATIO = (3 / 4, 4 / 3)  # width / height, sampled log-uniformly


@functools.lru_cache(maxsize=None)
def _photo_array(name: str) -> np.ndarray:
    import skimage.data
    _, function, index = SAMPLE_PHOTOS[name]
    try:
        result = getattr(skimage.data, function)()
    except (ImportError, OSError) as e:  # a download attempt (pooch missing, offline) or a damaged install
        raise ScalableViTError(f'scikit-image sample photo {name!r} is not available offline ({e})') from e
    array = result if index is None else result[index]
    array.setflags(write=False)
    return array


def load_sample_photo(name: str) -> Any:
    """One bundled scikit-image photo as an RGB PIL image."""
    from PIL import Image
    if name not in SAMPLE_PHOTOS:
        from ..core.errors import unknown_choice
        raise unknown_choice('sample photo', name, SAMPLE_PHOTOS)
    return Image.fromarray(_photo_array(name)).convert('RGB')


def random_crop(image: Any, rng: np.random.Generator) -> Tuple[Any, str]:
    """A random crop (area ``CROP_SCALE``, aspect ``CROP_RATIO``) flipped half the time, and its description."""
    from PIL import Image
    width, height = image.size
    w, h = width, height  # fallback: the whole photo
    for _ in range(10):
        area = width * height * rng.uniform(*CROP_SCALE)
        ratio = np.exp(rng.uniform(np.log(CROP_RATIO[0]), np.log(CROP_RATIO[1])))
        cw, ch = int(round(np.sqrt(area * ratio))), int(round(np.sqrt(area / ratio)))
        if 0 < cw <= width and 0 < ch <= height:
            w, h = cw, ch
            break
    x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
    crop = image.crop((x, y, x + w, y + h))
    flip = bool(rng.random() < 0.5)
    if flip:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return crop, f'{x},{y},{w}x{h}' + (',flip' if flip else '')
