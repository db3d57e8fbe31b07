"""Image decoding and safe folder walking.

Hostile folders are expected: links are followed but every directory and file is visited once (loops end,
duplicates are dropped), dangling links are skipped and counted, 16-bit images are scaled to 8 bits (not clipped),
integer or float pixels outside the range they can mean (negative, beyond 16 bits, NaN, Inf) are refused, EXIF
orientation is applied, and an image above ``MAX_IMAGE_PIXELS`` is skipped before it is decoded.
"""
import logging
import os
import stat
import warnings
from pathlib import Path
from typing import Any, List, Tuple, Union

import numpy as np

from ..core.errors import ScalableViTError

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff', '.gif', '.ppm')
MAX_IMAGE_PIXELS = 89_478_485  # PIL's decompression-bomb threshold (0.27 GB as RGB): larger images are skipped
_WIDE_MODES = ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I')  # PIL modes of 16-bit (and 32-bit integer) images


def load_image(path: Path) -> Any:
    """Open an image file as RGB (gray, palette, CMYK and RGBA converted); ScalableViTError if unreadable.

    Transparent pixels are composited on white, as browsers and most dataset tools show them. 16-bit images
    are scaled to 8 bits (PIL's ``convert`` would clip: 89 % of a 16-bit gradient's pixels became 255). An image
    above ``MAX_IMAGE_PIXELS`` is refused from its header, before any pixel is decoded.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError
    try:
        with warnings.catch_warnings():  # PIL's bomb warning: the cap below refuses those images in one line
            warnings.simplefilter('ignore', Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            w, h = im.size
            if w * h > MAX_IMAGE_PIXELS:
                raise ScalableViTError(f'{path}: {w} x {h} = {w * h:,} pixels, beyond the {MAX_IMAGE_PIXELS:,}-pixel '
                                       'cap per image')
            im.load()
            im = ImageOps.exif_transpose(im)  # a camera's "rotate 90" tag: the pixels as the photo is seen
            if im.mode in _WIDE_MODES:
                im = _to_8bit(im, path)
            elif im.mode == 'F':
                im = _float_to_8bit(im, path)
            if im.mode in ('RGBA', 'LA', 'P', 'PA'):
                im = im.convert('RGBA')
                background = Image.new('RGBA', im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(background, im)
            return im.convert('RGB')
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, EOFError,
            Image.DecompressionBombError) as e:
        raise ScalableViTError(f'{path}: not a readable image ({e})') from e


def _to_8bit(image: Any, path: Path) -> Any:
    """A 16-bit (or 32-bit integer) gray PIL image as 8-bit 'L', scaled from the 16-bit range with rounding.

    Values outside 0..65535 (a signed 32-bit TIFF's negatives, or more than 16 bits) have no agreed meaning and
    are refused, as out-of-range floats are, rather than clipped to black or white."""
    from PIL import Image
    wide = np.asarray(image, dtype=np.int64)
    if wide.size and (wide.min() < 0 or wide.max() > 65535):
        raise ScalableViTError(f'{path}: integer pixels must be within 0..65535 (16 bits), got '
                               f'{wide.min()}..{wide.max()}')
    return Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8))  # uint8 2-D: mode 'L'


def _float_to_8bit(image: Any, path: Path) -> Any:
    """A 32-bit float gray PIL image as 8-bit 'L': values in 0..1 are scaled by 255 (what float TIFFs hold),
    values in 0..255 kept; anything else (NaN, Inf, negative, beyond 255) has no agreed meaning and is refused."""
    from PIL import Image
    values = np.asarray(image, dtype=np.float64)
    if not np.isfinite(values).all():
        raise ScalableViTError(f'{path}: float pixels must be finite and within 0..1 (or 0..255), got '
                               f'{_non_finite(values)}')
    if values.min(initial=0) < 0 or values.max(initial=0) > 255:
        raise ScalableViTError(f'{path}: float pixels must be finite and within 0..1 (or 0..255), got '
                               f'{values.min():.4g}..{values.max():.4g}')
    scale = 255.0 if values.max(initial=0) <= 1.0 else 1.0
    return Image.fromarray(np.rint(values * scale).astype(np.uint8))


def _non_finite(values: np.ndarray) -> str:
    """How many pixels are NaN, inf and -inf, e.g. 'NaN in 3 of 1,600 pixels'."""
    counts = ((np.isnan(values), 'NaN'), (np.isposinf(values), 'inf'), (np.isneginf(values), '-inf'))
    found = [f'{what} in {int(mask.sum()):,}' for mask, what in counts if mask.any()]
    return f"{' and '.join(found)} of {values.size:,} pixels"


# --------------------------------------------------------------------------------------------- folders
def find_images(folder: PathLike) -> List[Path]:
    """Every image file under ``folder`` (recursive, extensions case-insensitive), sorted by relative path.

    Symbolic links are followed (dataset trees often link), but each directory and each file is visited once,
    by identity (device, inode): a link loop ends, a link back to a parent adds nothing, and a file reachable by
    two paths (a link, a hard link) is listed once, under the path met first in a sorted depth-first walk.
    Dangling links are skipped and counted in a warning.
    """
    folder = Path(folder)
    if not folder.exists():
        raise ScalableViTError(f'image folder {folder} does not exist')
    if not folder.is_dir():
        raise ScalableViTError(f'image folder {folder} is not a directory')
    seen_dirs, seen_files, found, dangling = {file_identity(folder.stat())}, set(), [], []
    stack = [folder]
    while stack:
        directory = stack.pop()
        subdirs = []
        for entry in _sorted_entries(directory):
            try:
                st = entry.stat()  # follows links
            except OSError as e:
                if not entry.is_symlink():
                    raise ScalableViTError(f'cannot read {entry.path}: {e.strerror}') from e
                dangling.append(entry.path)  # target missing, or a link loop like a -> a
                continue
            ident = file_identity(st)
            if stat.S_ISDIR(st.st_mode) and ident not in seen_dirs:
                seen_dirs.add(ident)
                subdirs.append(Path(entry.path))
            elif stat.S_ISREG(st.st_mode) and entry.name.lower().endswith(IMAGE_EXTENSIONS) \
                    and ident not in seen_files:
                seen_files.add(ident)
                found.append(Path(entry.path))
        stack.extend(reversed(subdirs))  # popped in sorted order
    if dangling:
        logger.warning('%s: skipped %d dangling symbolic link(s) (e.g. %s)', folder, len(dangling), dangling[0])
    if not found:
        raise ScalableViTError(f"no images found in {folder} (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def file_identity(st: os.stat_result) -> Tuple[int, int]:
    return st.st_dev, st.st_ino


def _sorted_entries(directory: Path) -> List[os.DirEntry]:
    try:
        with os.scandir(directory) as entries:
            return sorted(entries, key=lambda e: e.name)
    except OSError as e:
        raise ScalableViTError(f'cannot read image folder {directory}: {e.strerror}') from e
