"""Class names of a model's outputs, by the data set its data config names (``labels``).

* ``imagenet-1k``: ``imagenet_classes.json``, the 1000 ImageNet-1k class names in class-index order (the order of
  the sorted WordNet ids, which is what the official ScalableViT training used). Taken from torchvision 0.29.1,
  ``torchvision/models/_meta.py`` ``_IMAGENET_CATEGORIES`` (BSD-3-Clause; short WordNet lemmas, made unique there
  as "crane bird"/"crane" and "maillot"/"maillot tank suit").
* ``fashion-mnist``: ``scalablevit.data.fmnist.CLASSES``.
* anything else: ``class 0`` ... ``class N-1``.

torch-free: deployment configs made on a device read names through here.
"""
import functools
import json
from pathlib import Path
from typing import Any, Dict, List, Tuple

from ..core.errors import ScalableViTError

__all__ = ['class_names']

IMAGENET_FILE = Path(__file__).with_name('imagenet_classes.json')


@functools.lru_cache(maxsize=None)
def _imagenet() -> Tuple[str, ...]:
    names = json.loads(IMAGENET_FILE.read_text())
    if not isinstance(names, list) or len(names) != 1000 or len(set(names)) != 1000:
        raise ScalableViTError(f'{IMAGENET_FILE}: expected 1000 distinct class names')
    return tuple(names)


def class_names(data_cfg: Dict[str, Any]) -> List[str]:
    """One name per model output, in output order; the count must match the config's ``num_classes``."""
    labels, count = data_cfg.get('labels'), int(data_cfg['num_classes'])
    if labels == 'imagenet-1k':
        names = list(_imagenet())
    elif labels == 'fashion-mnist':
        from ..data.fmnist import CLASSES
        names = list(CLASSES)
    else:
        return [f'class {i}' for i in range(count)]
    if len(names) != count:
        raise ScalableViTError(f'{labels} has {len(names)} classes, the model predicts {count}')
    return names
