"""Image preprocessing and the data behind calibration, validation and accuracy runs.

``preprocess`` is THE eval transform: every stage (calibration, validation, accuracy, demos) uses it, so a
model sees the same pixels on the host and on the device.

Data sources, all returned as an :class:`ImageSet` (float32 (N, 3, H, W) + names + sha256):

* an image folder (``find_images``, ``load_folder``), split by ``split_files`` into disjoint calibration and
  validation lists, or a separate validation folder whose files calibration then excludes;
* the colour photos bundled with scikit-image (no download), cut into seeded random crops; whole photos are
  held out for validation (``split_photos``);
* a labelled folder (ImageNet-style class subfolders, or a flat folder plus a "filename label" file).

``calibration_and_validation`` is the one entry point the pipeline uses (``source_signature`` keys its cache,
by image content).

Hostile folders are expected: links are followed but every directory and file is visited once (loops end,
duplicates are dropped), dangling links are skipped and counted, 16-bit images are scaled to 8 bits (not
clipped), an image above ``MAX_IMAGE_PIXELS`` is skipped before it is decoded, an extreme aspect ratio never
makes a resize larger than ``MAX_RESIZE_SIDE``, and a set never grows beyond what its source can give or
``MAX_SET_BYTES`` of memory.
"""
import contextlib
import functools
import hashlib
import logging
import os
import shutil
import stat
import tempfile
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import ScalableViTError
from .fileio import atomic_path, human_size, read_json, sha256_file, write_json
from .progress import iterate

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

_INTERPOLATIONS = {'bicubic': 3, 'bilinear': 2, 'nearest': 0}  # PIL.Image.Resampling values

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff', '.gif', '.ppm')
DEFAULT_CALIB_SIZE = 512
DEFAULT_VAL_SIZE = 100  # the pipeline's default (deploy/build_engine.py --val-size)
_DATA_VERSION = 1  # bump when a sampling, split or crop rule changes: cached sets are then rebuilt
MAX_IMAGE_PIXELS = 89_478_485  # PIL's decompression-bomb threshold (0.27 GB as RGB): larger images are skipped
MAX_RESIZE_SIDE = 8192  # a resize whose long side would exceed this resamples only the crop window
MAX_SET_BYTES = 4 << 30  # an image set (float32) stays below 4 GiB: 7,131 images at 224 x 224
CROPS_PER_PHOTO = 128  # what the bundled photos give: 7 calibration photos -> at most 896 crops
_WIDE_MODES = ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I')  # PIL modes of 16-bit (and 32-bit integer) images

# One seeded generator per purpose, so changing e.g. the validation size never changes the calibration set.
STREAM_SPLIT, STREAM_CALIB, STREAM_VAL, STREAM_SAMPLE = 0, 1, 2, 3

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
                im = _to_8bit(im)
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


def _to_8bit(image: Any) -> Any:
    """A 16-bit (or 32-bit integer) gray PIL image as 8-bit 'L', scaled from the 16-bit range with rounding."""
    from PIL import Image
    wide = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
    return Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8))  # uint8 2-D: mode 'L'


def _float_to_8bit(image: Any, path: Path) -> Any:
    """A 32-bit float gray PIL image as 8-bit 'L': values in 0..1 are scaled by 255 (what float TIFFs hold),
    values in 0..255 kept; anything else (NaN, negative, beyond 255) has no agreed meaning and is refused."""
    from PIL import Image
    values = np.asarray(image, dtype=np.float64)
    if not np.isfinite(values).all() or values.min(initial=0) < 0 or values.max(initial=0) > 255:
        raise ScalableViTError(f'{path}: float pixels must be finite and within 0..1 (or 0..255), got '
                               f'{np.nanmin(values):.4g}..{np.nanmax(values):.4g}')
    scale = 255.0 if values.max(initial=0) <= 1.0 else 1.0
    return Image.fromarray(np.rint(values * scale).astype(np.uint8))


# ------------------------------------------------------------------------------------------- image sets
_NPZ_FORMAT = 'scalablevit-imageset/1'
_NPZ_REQUIRED = ('format', 'images', 'names', 'source', 'sha256')
_READ_IMAGES = 64  # images per read when a stored set is loaded whole or verified


@dataclass
class ImageSet:
    """Preprocessed images ready to feed a model, with where they came from and a content hash.

    ``sha256`` is the hash of the float32 array bytes: two runs that agree on it fed identical inputs.
    ``labels``/``class_names`` are set for labelled data only (``class_names`` may stay None when the
    labels are bare class indices).
    """

    images: np.ndarray
    source: str
    names: List[str]
    labels: Optional[np.ndarray] = None
    class_names: Optional[List[str]] = None
    skipped: int = 0
    sha256: str = field(init=False)

    def __post_init__(self) -> None:
        self.images = np.ascontiguousarray(self.images, dtype=np.float32)
        self.names = [str(n) for n in self.names]
        if self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ScalableViTError(f'{self.source}: images must be (N, 3, H, W), got {self.images.shape}')
        if len(self.names) != len(self.images):
            raise ScalableViTError(f'{self.source}: {len(self.names)} names for {len(self.images)} images')
        if self.labels is not None:
            self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
            if len(self.labels) != len(self.images):
                raise ScalableViTError(f'{self.source}: {len(self.labels)} labels for {len(self.images)} images')
        self.sha256 = hashlib.sha256(self.images.data).hexdigest()  # the contiguous buffer, no copy

    def __len__(self) -> int:
        return len(self.images)

    def save_npz(self, path: PathLike) -> Path:
        """Write the set to one compressed .npz (no pickles), atomically; returns the path.

        Compressed: the images come from 8-bit pixels, so they shrink about 3.5x (512 x 224^2: ~87 MB, not 308).
        """
        path = Path(path)
        with atomic_path(path) as tmp:
            _write_npz(tmp, _npz_arrays(self.images, self.names, self.source, self.sha256, self.skipped,
                                        self.labels, self.class_names))
        _log_saved(path, self.images.shape, self.sha256)
        return path

    @classmethod
    def load_npz(cls, path: PathLike) -> 'ImageSet':
        """Read a set written by ``save_npz``; ScalableViTError for a missing, corrupt or foreign file."""
        return StoredImages(path).load()


def load_npz(path: PathLike) -> ImageSet:
    """Read an image set written by ``ImageSet.save_npz``."""
    return ImageSet.load_npz(path)


class ImageStream:
    """Preprocessed images made one at a time: ``save_npz`` writes them holding one image in memory (the
    pipeline's calibration set, which may be thousands of images), ``collect`` gathers them into an ImageSet.

    ``items`` yields ``(image (3, H, W), name, label or None)``; a producer that skips inputs counts them in
    ``skipped``. Once written, ``count`` and ``sha256`` (of the float32 image bytes, as ImageSet's) describe the set.
    """

    def __init__(self, source: str, items: Iterable[Tuple[np.ndarray, str, Optional[int]]], labelled: bool = False,
                 class_names: Optional[List[str]] = None, skipped: int = 0):
        self.source, self.items, self.labelled, self.class_names = source, items, labelled, class_names
        self.skipped, self.count, self.sha256 = skipped, 0, ''

    @classmethod
    def of(cls, images: ImageSet) -> 'ImageStream':
        """An ImageSet already in memory, as a stream (the writer is the same for both)."""
        labels = [None] * len(images) if images.labels is None else images.labels.tolist()
        return cls(images.source, zip(images.images, images.names, labels), labelled=images.labels is not None,
                   class_names=images.class_names, skipped=images.skipped)

    def collect(self) -> ImageSet:
        arrays, names, labels = [], [], []
        for image, name, label in self.items:
            arrays.append(image)
            names.append(name)
            labels.append(label)
        return ImageSet(np.stack(arrays), self.source, names, labels=labels if self.labelled else None,
                        class_names=self.class_names, skipped=self.skipped)

    def save_npz(self, path: PathLike) -> Path:
        """Write the images to one .npz in ImageSet's format, atomically, one image at a time: they are spooled
        to an unnamed temporary file (the header needs the count, known only at the end), then compressed."""
        path = Path(path)
        digest, names, labels, shape = hashlib.sha256(), [], [], None
        with atomic_path(path) as tmp, tempfile.TemporaryFile(dir=tmp.parent) as spool:
            for image, name, label in self.items:
                image = np.ascontiguousarray(image, dtype=np.float32)
                if shape is None and (image.ndim != 3 or image.shape[0] != 3):
                    raise ScalableViTError(f'{self.source}: images must be (3, H, W), got {image.shape}')
                if image.shape != (shape or image.shape):
                    raise ScalableViTError(f'{self.source}: image {name} is {image.shape}, the first was {shape}')
                shape = image.shape
                digest.update(image.data)
                spool.write(image.data)
                names.append(str(name))
                labels.append(label)
            if shape is None:
                raise ScalableViTError(f'{self.source}: no images')
            self.count, self.sha256 = len(names), digest.hexdigest()
            spool.seek(0)
            _write_npz(tmp, _npz_arrays(_Spooled(spool, (self.count, *shape)), names, self.source, self.sha256,
                                        self.skipped, labels if self.labelled else None, self.class_names))
        _log_saved(path, (self.count, *shape), self.sha256)
        return path


class StoredImages:
    """The images of an image-set .npz, read from the file a batch at a time and never loaded whole, so what
    reads them (the quantize stage) holds one batch whatever the set's size.

    Opening reads the small members and streams the images once to check them: ``sha256`` against the stored
    one, and ``finite`` (no NaN or Inf). ``batches`` then decompresses them again on every pass.
    """

    def __init__(self, path: PathLike):
        self.path = Path(path)
        arrays = _read_npz(self.path, lazy=('images',))
        if str(arrays['format']) != _NPZ_FORMAT:
            raise ScalableViTError(f"{path}: unsupported image-set format '{arrays['format']}' "
                                   f"(expected '{_NPZ_FORMAT}')")
        self.source, self.names = str(arrays['source']), [str(n) for n in arrays['names']]
        labels, class_names = arrays.get('labels'), arrays.get('class_names')
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64).reshape(-1)
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        self.skipped = int(arrays.get('skipped', 0))
        with self._images() as (_, shape):
            self.shape = shape
        if len(self.names) != len(self) or (self.labels is not None and len(self.labels) != len(self)):
            raise ScalableViTError(f'{path}: {len(self.names)} names for {len(self)} images')
        self.sha256, self.finite = self._check(str(arrays['sha256']))

    def __len__(self) -> int:
        return self.shape[0]

    @contextlib.contextmanager
    def _images(self) -> Iterator[Tuple[Any, Tuple[int, ...]]]:
        """The images member, positioned after its .npy header, and the array's shape."""
        try:
            with zipfile.ZipFile(self.path) as archive, archive.open('images.npy') as member:
                version = np.lib.format.read_magic(member)
                read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                    np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read_header(member)
                if fortran or dtype != np.float32 or len(shape) != 4 or shape[1] != 3:
                    raise ScalableViTError(f"{self.path}: images must be float32 (N, 3, H, W) in C order, got "
                                           f"{dtype} {shape}{' in Fortran order' if fortran else ''}")
                yield member, tuple(shape)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
            raise ScalableViTError(f'{self.path}: not a readable image-set .npz ({e})') from e

    def batches(self, batch_size: int, indices: Optional[Iterable[int]] = None) -> Iterator[np.ndarray]:
        """The images in file order, ``batch_size`` at a time (fresh float32 arrays); only ``indices`` when given."""
        wanted = range(len(self)) if indices is None else sorted(set(int(i) for i in indices))
        one = int(np.prod(self.shape[1:])) * 4
        with self._images() as (member, shape):
            position = 0
            for start in range(0, len(wanted), batch_size):
                picks = wanted[start:start + batch_size]
                batch = np.empty((len(picks), *shape[1:]), np.float32)
                for k, index in enumerate(picks):
                    while position <= index:  # a pass always reads forward: the member is a compressed stream
                        data = member.read(one)
                        if len(data) != one:
                            raise ScalableViTError(f'{self.path}: truncated images (image {position} of {shape[0]})')
                        position += 1
                    batch[k] = np.frombuffer(data, np.float32).reshape(shape[1:])
                yield batch
            if indices is None and member.read(1):  # read to the end, so the zip's CRC is checked too
                raise ScalableViTError(f'{self.path}: not a readable image-set .npz (data after the images)')

    def _check(self, stored: str) -> Tuple[str, bool]:
        digest, finite = hashlib.sha256(), True
        for batch in self.batches(_READ_IMAGES):
            digest.update(batch.data)
            finite = finite and bool(np.isfinite(batch).all())
        if digest.hexdigest() != stored:
            raise ScalableViTError(f'{self.path}: corrupt image set (sha256 of the images does not match the '
                                   f'stored one)')
        return stored, finite

    def load(self) -> ImageSet:
        """All the images in memory, as an ImageSet."""
        images = np.empty(self.shape, np.float32)
        start = 0
        for batch in self.batches(_READ_IMAGES):
            images[start:start + len(batch)] = batch
            start += len(batch)
        return ImageSet(images, self.source, self.names, labels=self.labels, class_names=self.class_names,
                        skipped=self.skipped)


def image_batches(images: Union[np.ndarray, StoredImages], batch_size: int,
                  indices: Optional[Sequence[int]] = None) -> Iterator[np.ndarray]:
    """Batches of an in-memory (N, C, H, W) array or of a stored set alike, in order; only ``indices`` when given."""
    if isinstance(images, StoredImages):
        yield from images.batches(batch_size, indices)
        return
    picked = images if indices is None else images[np.asarray(sorted(set(indices)), dtype=int)]
    for start in range(0, len(picked), batch_size):
        yield picked[start:start + batch_size]


class _Spooled:
    """Float32 C-order image bytes in a file, written into the .npz as the ``images`` array without loading."""

    def __init__(self, file: Any, shape: Tuple[int, ...]):
        self.file, self.shape = file, shape

    def write_npy(self, member: Any) -> None:
        np.lib.format.write_array_header_1_0(member, {'descr': np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                                                      'fortran_order': False, 'shape': self.shape})
        shutil.copyfileobj(self.file, member, 16 << 20)


def _npz_arrays(images: Any, names: Sequence[str], source: str, sha256: str, skipped: int,
                labels: Optional[Sequence[int]], class_names: Optional[Sequence[str]]) -> Dict[str, Any]:
    """The members of an image-set .npz, in the order they are written."""
    arrays: Dict[str, Any] = dict(
        format=np.array(_NPZ_FORMAT), images=images, names=np.array(names, dtype=str), source=np.array(source),
        sha256=np.array(sha256), skipped=np.array(skipped))
    if labels is not None:
        arrays['labels'] = np.asarray(labels, dtype=np.int64)
    if class_names is not None:
        arrays['class_names'] = np.array(class_names, dtype=str)
    return arrays


def _log_saved(path: Path, shape: Tuple[int, ...], sha256: str) -> None:
    logger.info('saved %d images (%s) to %s, sha256 %s', shape[0], 'x'.join(map(str, shape)), path, sha256[:12])


def _write_npz(path: Path, arrays: Dict[str, Any]) -> None:
    """``np.savez_compressed`` at zlib level 1: 7x faster than its level 6 for 17% more bytes."""
    with zipfile.ZipFile(path, 'w', zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for key, array in arrays.items():
            with archive.open(f'{key}.npy', 'w', force_zip64=True) as member:
                if isinstance(array, _Spooled):
                    array.write_npy(member)
                else:
                    np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def _read_npz(path: Path, lazy: Sequence[str] = ()) -> Dict[str, np.ndarray]:
    """The arrays of an .npz but ``lazy`` ones (checked present, not read), read eagerly so truncation and CRC
    errors surface here, with the file named."""
    if not path.is_file():
        raise ScalableViTError(f'{path}: image-set file not found')
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ScalableViTError(f'{path}: not an image-set .npz (a single array; write it with ImageSet.save_npz)')
        with loaded as npz:
            arrays = {key: (None if key in lazy else npz[key]) for key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ScalableViTError(f'{path}: not a readable image-set .npz ({e})') from e
    missing = [key for key in _NPZ_REQUIRED if key not in arrays]
    if missing:
        raise ScalableViTError(f"{path}: not an image-set .npz (missing {', '.join(missing)}; "
                               f"has {', '.join(sorted(arrays)) or 'nothing'})")
    return arrays


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
    seen_dirs, seen_files, found, dangling = {_identity(folder.stat())}, set(), [], []
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
            ident = _identity(st)
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


def _identity(st: os.stat_result) -> Tuple[int, int]:
    return st.st_dev, st.st_ino


def _sorted_entries(directory: Path) -> List[os.DirEntry]:
    try:
        with os.scandir(directory) as entries:
            return sorted(entries, key=lambda e: e.name)
    except OSError as e:
        raise ScalableViTError(f'cannot read image folder {directory}: {e.strerror}') from e


def stream_rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([stream, seed])


def check_count(what: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ScalableViTError(f'{what} must be a positive integer, got {value!r}')


def sample_files(files: Sequence[Path], count: int, seed: int = 0) -> List[Path]:
    """A seeded sample of ``count`` files (all of them, with a warning, when there are fewer), in sorted order."""
    check_count('image count', count)
    count = capped(count, len(files), f'only {len(files)} image files to choose from')
    order = stream_rng(seed, STREAM_SAMPLE).permutation(len(files))[:count]
    return [files[i] for i in sorted(order)]


def split_files(files: Sequence[Path], calib_size: int, val_size: int,
                seed: int = 0) -> Tuple[List[Path], List[Path]]:
    """Disjoint (calibration, validation) file lists.

    Rule: the sorted files are shuffled with ``seed``; validation takes the first ``val_size``, calibration
    the next ``calib_size``. With fewer files than both want, each gets its proportional share (validation
    at least one), and a warning says so. A file is therefore never in both lists.
    """
    check_count('calibration size', calib_size)
    check_count('validation size', val_size)
    n = len(files)
    if n < 2:
        raise ScalableViTError(f'need at least 2 images to split into calibration and validation, found {n}')
    if n < calib_size + val_size:
        requested = calib_size + val_size
        val_size = min(n - 1, max(1, round(n * val_size / requested)))  # both sides keep at least one
        calib_size = n - val_size
        logger.warning('only %d images for the %d requested: %d for calibration, %d for validation',
                       n, requested, calib_size, val_size)
    order = stream_rng(seed, STREAM_SPLIT).permutation(n)
    val, calib = order[:val_size], order[val_size:val_size + calib_size]
    return [files[i] for i in sorted(calib)], [files[i] for i in sorted(val)]


def most_images(side: int, photos: Optional[Sequence[str]] = None) -> Tuple[int, str]:
    """The most images one set may hold, and why: ``MAX_SET_BYTES`` of float32 at ``side``, and for crops of
    the bundled ``photos`` also ``CROPS_PER_PHOTO`` per photo."""
    most = max(1, MAX_SET_BYTES // (3 * side * side * 4))
    why = f'a set of {side} x {side} float32 images stays below {human_size(MAX_SET_BYTES)} of memory'
    if photos is not None and CROPS_PER_PHOTO * len(photos) < most:
        most = CROPS_PER_PHOTO * len(photos)
        why = f'the {len(photos)} bundled photos give at most {CROPS_PER_PHOTO} crops each'
    return most, why


def capped(count: int, most: int, why: str) -> int:
    """``count``, or ``most`` with a warning saying ``why`` when more images were asked than a source can give."""
    if count > most:
        logger.warning('%d images asked for, capped to %d: %s', count, most, why)
        return most
    return count


def load_files(files: Sequence[Path], data_cfg: Dict[str, Any], input_size: Optional[int] = None,
               source: str = 'files', root: Optional[Path] = None,
               labels: Optional[Sequence[int]] = None, class_names: Optional[List[str]] = None) -> ImageSet:
    """Load and ``preprocess`` image files; unreadable ones are skipped with a warning and counted.

    ``root`` makes the stored names relative to it; ``labels`` (one per file) follow the readable files.
    """
    return file_stream(files, data_cfg, input_size, source, root, labels, class_names).collect()


def file_stream(files: Sequence[Path], data_cfg: Dict[str, Any], input_size: Optional[int] = None,
                source: str = 'files', root: Optional[Path] = None, labels: Optional[Sequence[int]] = None,
                class_names: Optional[List[str]] = None) -> ImageStream:
    """``load_files`` one image at a time (see ImageStream)."""
    stream = ImageStream(source, (), labelled=labels is not None, class_names=class_names)

    def items() -> Iterator[Tuple[np.ndarray, str, Optional[int]]]:
        for i, path in enumerate(iterate(files, desc=f'loading {source}')):
            try:
                image = load_image(path)
            except ScalableViTError as e:
                logger.warning('skipped %s', e)
                stream.skipped += 1
                continue
            name = path.relative_to(root).as_posix() if root else str(path)
            yield preprocess(image, data_cfg, input_size), name, None if labels is None else labels[i]
        if stream.skipped == len(files):
            raise ScalableViTError(f'{source}: none of the {len(files)} image files could be read')
        if stream.skipped:
            logger.warning('%s: skipped %d unreadable of %d image files', source, stream.skipped, len(files))
    stream.items = items()
    return stream


def load_folder(folder: PathLike, data_cfg: Dict[str, Any], count: int = DEFAULT_CALIB_SIZE, seed: int = 0,
                input_size: Optional[int] = None) -> ImageSet:
    """A seeded sample of ``count`` images of a folder (all when fewer), preprocessed."""
    folder = Path(folder)
    files = sample_files(find_images(folder), count, seed)
    return load_files(files, data_cfg, input_size, source=f'{folder} (seed {seed})', root=folder)


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
VAL_SCENES = 2  # whole scenes held out for validation
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
        from .errors import unknown_choice
        raise unknown_choice('sample photo', name, SAMPLE_PHOTOS)
    return Image.fromarray(_photo_array(name)).convert('RGB')


def split_photos(seed: int = 0, val_scenes: int = VAL_SCENES) -> Tuple[List[str], List[str]]:
    """(calibration photos, validation photos): ``val_scenes`` whole scenes, chosen with ``seed``, validate."""
    scenes = sorted({scene for scene, _, _ in SAMPLE_PHOTOS.values()})
    order = stream_rng(seed, STREAM_SPLIT).permutation(len(scenes))
    held_out = {scenes[i] for i in order[:val_scenes]}
    val = [name for name, (scene, _, _) in SAMPLE_PHOTOS.items() if scene in held_out]
    calib = [name for name in SAMPLE_PHOTOS if name not in val]
    return calib, val


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


def photo_crops(photos: Sequence[str], count: int, data_cfg: Dict[str, Any], seed: int = 0,
                input_size: Optional[int] = None, stream: int = STREAM_CALIB) -> ImageSet:
    """``count`` preprocessed random crops of the given sample photos, scenes taken in turn (at most
    ``CROPS_PER_PHOTO`` per photo: beyond that the crops only repeat the same pixels, and memory would run out)."""
    return crop_stream(photos, count, data_cfg, seed, input_size, stream).collect()


def crop_stream(photos: Sequence[str], count: int, data_cfg: Dict[str, Any], seed: int = 0,
                input_size: Optional[int] = None, stream: int = STREAM_CALIB) -> ImageStream:
    """``photo_crops`` one image at a time (see ImageStream)."""
    import skimage
    check_count('image count', count)
    count = capped(count, *most_images(eval_sizes(data_cfg, input_size)[1], photos))
    by_scene: Dict[str, List[str]] = {}
    for name in photos:
        by_scene.setdefault(SAMPLE_PHOTOS[name][0], []).append(name)

    def items() -> Iterator[Tuple[np.ndarray, str, Optional[int]]]:
        rng = stream_rng(seed, stream)
        scenes = sorted(by_scene)
        images = {name: load_sample_photo(name) for name in photos}
        for i in iterate(range(count), desc='cropping sample photos'):
            candidates = by_scene[scenes[i % len(scenes)]]
            name = candidates[int(rng.integers(len(candidates)))]
            crop, where = random_crop(images[name], rng)
            yield preprocess(crop, data_cfg, input_size), f'{name}@{where}', None
    source = f"scikit-image {skimage.__version__} sample photos ({', '.join(photos)}), seed {seed}"
    return ImageStream(source, items())


# ------------------------------------------------------------------------------ calibration / validation
def calibration_and_validation(data_cfg: Dict[str, Any], calib_dir: Optional[PathLike] = None,
                               calib_size: int = DEFAULT_CALIB_SIZE, val_size: int = DEFAULT_VAL_SIZE,
                               seed: int = 0, input_size: Optional[int] = None,
                               val_dir: Optional[PathLike] = None) -> Tuple[ImageSet, ImageSet]:
    """Disjoint (calibration, validation) sets, preprocessed with ``preprocess``.

    Calibration comes from ``calib_dir``, or else from random crops of the bundled scikit-image photos.
    Validation comes from ``val_dir`` when given (labelled when it is a class-subfolder tree; its files are
    then kept out of calibration), or else from a held-out part of the calibration source: files by
    ``split_files``, whole photos by ``split_photos``.
    """
    calib, val = calibration_stream_and_validation(data_cfg, calib_dir, calib_size, val_size, seed, input_size,
                                                   val_dir)
    return calib.collect(), val


def calibration_stream_and_validation(data_cfg: Dict[str, Any], calib_dir: Optional[PathLike] = None,
                                      calib_size: int = DEFAULT_CALIB_SIZE, val_size: int = DEFAULT_VAL_SIZE,
                                      seed: int = 0, input_size: Optional[int] = None,
                                      val_dir: Optional[PathLike] = None) -> Tuple[ImageStream, ImageSet]:
    """``calibration_and_validation`` with the calibration images made one at a time, as they are written (the
    pipeline's way: memory then holds one calibration image, whatever ``calib_size``)."""
    return _split_sets(data_cfg, calib_dir, calib_size, val_size, seed, input_size, val_dir,  # type: ignore
                       want_val=True)


def calibration_set(data_cfg: Dict[str, Any], calib_dir: Optional[PathLike] = None,
                    calib_size: int = DEFAULT_CALIB_SIZE, val_size: int = DEFAULT_VAL_SIZE, seed: int = 0,
                    input_size: Optional[int] = None, val_dir: Optional[PathLike] = None) -> ImageSet:
    """The calibration half of ``calibration_and_validation`` (same split), without loading validation."""
    return _split_sets(data_cfg, calib_dir, calib_size, val_size, seed, input_size, val_dir,
                       want_val=False)[0].collect()


def _split_sets(data_cfg: Dict[str, Any], calib_dir: Optional[PathLike], calib_size: int, val_size: int,
                seed: int, input_size: Optional[int], val_dir: Optional[PathLike],
                want_val: bool) -> Tuple[ImageStream, Optional[ImageSet]]:
    check_count('calibration size', calib_size)
    check_count('validation size', val_size)
    most = most_images(eval_sizes(data_cfg, input_size)[1])  # photo crops are capped by crop_stream
    calib_size = capped(calib_size, *most) if calib_dir is not None else calib_size
    val_size = capped(val_size, *most) if calib_dir is not None or val_dir is not None else val_size
    if val_dir is not None:
        val = load_validation_folder(val_dir, data_cfg, val_size, seed, input_size) if want_val else None
        if calib_dir is None:
            return crop_stream(list(SAMPLE_PHOTOS), calib_size, data_cfg, seed, input_size, STREAM_CALIB), val
        return _calibration_outside(Path(calib_dir), Path(val_dir), data_cfg, calib_size, seed, input_size), val
    if calib_dir is None:
        calib_photos, val_photos = split_photos(seed)
        calib = crop_stream(calib_photos, calib_size, data_cfg, seed, input_size, STREAM_CALIB)
        val = photo_crops(val_photos, val_size, data_cfg, seed, input_size, STREAM_VAL) if want_val else None
        return calib, val
    folder = Path(calib_dir)
    calib_files, val_files = split_files(find_images(folder), calib_size, val_size, seed)

    def files_of(role: str, files: List[Path]) -> ImageStream:
        return file_stream(files, data_cfg, input_size, source=f'{folder} {role} (seed {seed})', root=folder)
    return files_of('calibration', calib_files), files_of('validation', val_files).collect() if want_val else None


def _calibration_outside(folder: Path, val_dir: Path, data_cfg: Dict[str, Any], count: int, seed: int,
                         input_size: Optional[int]) -> ImageStream:
    """A seeded sample of ``folder``'s images that are not files of ``val_dir`` (compared by file identity, so
    links and hard links into the validation folder are kept out too)."""
    held_out = {_identity(p.stat()) for p in find_images(val_dir)}
    files = [p for p in find_images(folder) if _identity(p.stat()) not in held_out]
    if not files:
        raise ScalableViTError(f'every image in calibration folder {folder} is also in validation folder {val_dir}')
    return file_stream(sample_files(files, count, seed), data_cfg, input_size,
                       source=f'{folder} calibration, excluding {val_dir} (seed {seed})', root=folder)


def load_validation_folder(folder: PathLike, data_cfg: Dict[str, Any], count: int = DEFAULT_VAL_SIZE,
                           seed: int = 0, input_size: Optional[int] = None) -> ImageSet:
    """A seeded sample of ``count`` images; labelled when every image sits in a class subfolder."""
    folder = Path(folder)
    if all(len(p.relative_to(folder).parts) > 1 for p in find_images(folder)):
        return load_labelled_folder(folder, data_cfg, limit=count, seed=seed, input_size=input_size)
    logger.info('%s has images outside class subfolders: validating without labels', folder)
    return load_folder(folder, data_cfg, count, seed, input_size)


def source_signature(calib_dir: Optional[PathLike] = None, val_dir: Optional[PathLike] = None,
                     hash_cache: Optional[PathLike] = None) -> str:
    """A string that changes when the data behind ``calibration_and_validation`` changes (a cache key).

    A folder is summarised by its path and the relative path and content sha256 of every image (a file
    replaced by another of the same size and modification time changes it); the default by the scikit-image
    version and the crop settings. ``hash_cache`` (a JSON file) remembers hashes between runs, see
    ``FileHashes``. Missing folders fail here, early.
    """
    hashes = FileHashes(hash_cache)
    calib = _photos_signature() if calib_dir is None else _folder_signature(Path(calib_dir), hashes)
    val = 'held-out split' if val_dir is None else _folder_signature(Path(val_dir), hashes)
    hashes.save()
    return f'data v{_DATA_VERSION}; calibration: {calib}; validation: {val}'


def _folder_signature(folder: Path, hashes: 'FileHashes') -> str:
    digest = hashlib.sha256()
    files = find_images(folder)
    for path in files:
        digest.update(f'{path.relative_to(folder).as_posix()}\t{hashes.sha256(path)}\n'.encode())
    return f'{folder.resolve()} ({len(files)} images, {digest.hexdigest()[:16]})'


class FileHashes:
    """sha256 of files, streamed, remembered in an optional JSON file as an accelerator only.

    A remembered hash is used only while the file's device, inode, size, modification time AND change time
    (ctime, which no user tool can set back) are those recorded; the key of a stage is always the content
    hash itself. A missing or unreadable cache file simply means hashing everything again.
    """

    def __init__(self, path: Optional[PathLike] = None):
        self.path = Path(path) if path else None
        self.known: Dict[str, List[Any]] = {}
        self.used: Dict[str, List[Any]] = {}
        if self.path is not None and self.path.is_file():
            try:
                loaded = read_json(self.path)
                self.known = loaded if isinstance(loaded, dict) else {}
            except ScalableViTError as e:
                logger.info('ignoring the hash cache: %s', e)

    def sha256(self, file: Path) -> str:
        st = file.stat()
        stamp = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
        key = os.path.realpath(file)
        entry = self.known.get(key)
        if not (isinstance(entry, list) and entry[:-1] == stamp):
            try:
                entry = stamp + [sha256_file(file)]
            except OSError as e:
                raise ScalableViTError(f'cannot read {file}: {e.strerror}') from e
        self.used[key] = entry
        return entry[-1]

    def save(self) -> None:
        """Write the hashes used in this run (entries of vanished files are dropped) when anything changed."""
        if self.path is not None and self.used != self.known:
            write_json(self.path, self.used)


def _photos_signature() -> str:
    import skimage
    return (f"scikit-image {skimage.__version__} photos {','.join(SAMPLE_PHOTOS)} crop scale {CROP_SCALE} "
            f"ratio {CROP_RATIO[0]:.4f}-{CROP_RATIO[1]:.4f}, {VAL_SCENES} scenes held out")


# ------------------------------------------------------------------------------------------ labelled data
def load_labelled_folder(folder: PathLike, data_cfg: Dict[str, Any], limit: Optional[int] = None,
                         labels_file: Optional[PathLike] = None, seed: int = 0,
                         input_size: Optional[int] = None) -> ImageSet:
    """Images with integer labels, for accuracy.

    Without ``labels_file``: ImageNet-style class subfolders; classes are the sorted subfolder names and a
    class's index is its position (torchvision ImageFolder's rule, so a full ImageNet val tree matches the
    model's indices). With ``labels_file``: a flat folder plus "filename label" lines (ImageNet's val.txt);
    labels are class indices, or class names mapped to their sorted position. ``limit`` takes a seeded
    random subset (not the first files, which would be one class).
    """
    folder = Path(folder)
    files, labels, class_names = labelled_files(folder, data_cfg, limit, labels_file, seed)
    return load_files(files, data_cfg, input_size, source=f'{folder} (labelled)', root=folder,
                      labels=labels, class_names=class_names)


def labelled_files(folder: PathLike, data_cfg: Dict[str, Any], limit: Optional[int] = None,
                   labels_file: Optional[PathLike] = None,
                   seed: int = 0) -> Tuple[List[Path], List[int], Optional[List[str]]]:
    """(files, labels, class names) of a labelled folder without loading any image (see load_labelled_folder).

    For large sets (ImageNet val is 50k images) load them in chunks with ``load_files``.
    """
    folder = Path(folder)
    if labels_file is None:
        files, labels, class_names = _class_folder_items(folder)
    else:
        files, labels, class_names = _labels_file_items(folder, Path(labels_file))
    _check_num_classes(labels, class_names, data_cfg, labels_file or folder)
    if limit is not None:
        keep = set(sample_files(files, limit, seed))
        pairs = [(f, label) for f, label in zip(files, labels) if f in keep]
        files, labels = [f for f, _ in pairs], [label for _, label in pairs]
    return files, labels, class_names


def _class_folder_items(folder: Path) -> Tuple[List[Path], List[int], List[str]]:
    files = find_images(folder)
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith('.'))
    if not classes:
        raise ScalableViTError(f'{folder}: no class subfolders (for a flat folder pass a labels file)')
    index = {name: i for i, name in enumerate(classes)}
    items = [(f, index.get(f.relative_to(folder).parts[0])) for f in files]
    loose = sum(len(f.relative_to(folder).parts) == 1 for f, _ in items)
    if loose:
        logger.warning('%s: ignored %d images outside the class subfolders', folder, loose)
    items = [(f, label) for f, label in items if label is not None and len(f.relative_to(folder).parts) > 1]
    empty = set(classes) - {classes[label] for _, label in items}
    if empty:
        logger.warning('%s: %d class folders hold no images (e.g. %s)', folder, len(empty), sorted(empty)[0])
    return [f for f, _ in items], [label for _, label in items], classes


def _parse_labels_file(path: Path) -> Dict[str, str]:
    """{filename: label} from "filename label" lines (whitespace or a comma; blank and # lines ignored)."""
    try:
        text = path.read_text()
    except OSError as e:
        raise ScalableViTError(f'labels file {path}: {e.strerror or e}') from e
    except UnicodeDecodeError as e:
        raise ScalableViTError(f'labels file {path}: not a text file') from e
    entries = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        parts = line.rsplit(',', 1) if ',' in line else line.rsplit(None, 1)
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise ScalableViTError(f'labels file {path}:{lineno}: expected "filename label", got {line!r}')
        entries[parts[0].strip()] = parts[1].strip()
    if not entries:
        raise ScalableViTError(f'labels file {path} has no "filename label" lines')
    return entries


def _labels_file_items(folder: Path, labels_file: Path) -> Tuple[List[Path], List[int], Optional[List[str]]]:
    entries = _parse_labels_file(labels_file)
    values = list(entries.values())
    numeric = [v.lstrip('-').isdigit() for v in values]
    if all(numeric):
        class_names, to_index = None, {v: int(v) for v in values}
    elif not any(numeric):
        class_names = sorted(set(values))
        to_index = {name: i for i, name in enumerate(class_names)}
    else:
        raise ScalableViTError(f'labels file {labels_file}: mixes class indices and class names')
    if any(i < 0 for i in to_index.values()):
        raise ScalableViTError(f'labels file {labels_file}: negative class index')
    files, labels, unlabelled = [], [], 0
    for path in find_images(folder):
        key = entries.get(path.relative_to(folder).as_posix(), entries.get(path.name))
        if key is None:
            unlabelled += 1
            continue
        files.append(path)
        labels.append(to_index[key])
    if not files:
        raise ScalableViTError(f'no image in {folder} has a label in {labels_file} (compare the file names)')
    if unlabelled:
        logger.warning('%s: ignored %d images without a label in %s', folder, unlabelled, labels_file)
    return files, labels, class_names


def _check_num_classes(labels: List[int], class_names: Optional[List[str]], data_cfg: Dict[str, Any],
                       where: PathLike) -> None:
    """Labels beyond the model's classifier would silently count as errors: refuse them."""
    num_classes = data_cfg.get('num_classes')
    top = max(len(class_names or ()), max(labels, default=-1) + 1)
    if num_classes is not None and top > num_classes:
        raise ScalableViTError(f'{where}: {top} classes but the model predicts {num_classes}')
