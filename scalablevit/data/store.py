"""The image store behind calibration.npz and reference.npz: float32 (N, 3, H, W) + names + sha256.

``ImageStream`` writes a set one image at a time and ``StoredImages`` reads it a batch at a time, so no stage holds
a whole set in memory; ``ImageSet`` is a set in memory.
"""
import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..core.errors import ScalableViTError
from ..core.fileio import atomic_path

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


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
    if path.is_dir():
        raise ScalableViTError(f'{path} is a folder, not an image-set .npz file (calib/make_calib.py makes one from a '
                               'folder of images)')
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
