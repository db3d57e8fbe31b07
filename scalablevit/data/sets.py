"""Calibration and validation sets: which images, from which source, split how.

Sources: an image folder (``find_images``), split by ``split_files`` into disjoint calibration and validation
lists, or a separate validation folder whose files calibration then excludes; crops of the bundled photos, whole
photos held out for validation (``split_photos``); a labelled folder (ImageNet-style class subfolders, or a flat
folder plus a "filename label" file). ``calibration_and_validation`` is the one entry point the pipeline uses
(``source_signature`` keys its cache, by image content). A set never grows beyond what its source can give or
``MAX_SET_BYTES`` of memory.
"""
import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..core.errors import ScalableViTError
from ..core.fileio import human_size, read_json, sha256_file, write_json
from ..core.progress import iterate
from .images import file_identity, find_images, load_image
from .photos import CROP_RATIO, CROP_SCALE, SAMPLE_PHOTOS, load_sample_photo, random_crop
from .store import ImageSet, ImageStream
from .transforms import eval_sizes, preprocess

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
DEFAULT_CALIB_SIZE = 512
DEFAULT_VAL_SIZE = 100  # the pipeline's default (deploy/build_engine.py --val-size)
_DATA_VERSION = 1  # bump when a sampling, split or crop rule changes: cached sets are then rebuilt
MAX_SET_BYTES = 4 << 30  # an image set (float32) stays below 4 GiB: 7,131 images at 224 x 224
CROPS_PER_PHOTO = 128  # what the bundled photos give: 7 calibration photos -> at most 896 crops

# One seeded generator per purpose, so changing e.g. the validation size never changes the calibration set.
STREAM_SPLIT, STREAM_CALIB, STREAM_VAL, STREAM_SAMPLE = 0, 1, 2, 3


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
VAL_SCENES = 2  # whole scenes held out for validation


def split_photos(seed: int = 0, val_scenes: int = VAL_SCENES) -> Tuple[List[str], List[str]]:
    """(calibration photos, validation photos): ``val_scenes`` whole scenes, chosen with ``seed``, validate."""
    scenes = sorted({scene for scene, _, _ in SAMPLE_PHOTOS.values()})
    order = stream_rng(seed, STREAM_SPLIT).permutation(len(scenes))
    held_out = {scenes[i] for i in order[:val_scenes]}
    val = [name for name, (scene, _, _) in SAMPLE_PHOTOS.items() if scene in held_out]
    calib = [name for name in SAMPLE_PHOTOS if name not in val]
    return calib, val


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
    held_out = {file_identity(p.stat()) for p in find_images(val_dir)}
    files = [p for p in find_images(folder) if file_identity(p.stat()) not in held_out]
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
    """The folder's path, image count and a digest of every image's relative path and content sha256. A file that
    cannot be read is skipped and counted, as decoding skips it (it then calibrates and validates nothing): it
    enters the digest as unreadable, so the key changes when it becomes readable. A folder whose files all read
    gives the same signature as before unreadable files were counted."""
    digest, unreadable = hashlib.sha256(), []
    files = find_images(folder)
    for path in files:
        try:
            content = hashes.sha256(path)
        except ScalableViTError as e:
            unreadable.append(str(e))
            content = 'unreadable'
        digest.update(f'{path.relative_to(folder).as_posix()}\t{content}\n'.encode())
    if unreadable:
        logger.warning('%s: skipped %d unreadable of %d image files when hashing them (e.g. %s); they are skipped '
                       'when the images are loaded too', folder, len(unreadable), len(files), unreadable[0])
    counted = f', {len(unreadable)} unreadable' if unreadable else ''
    return f'{folder.resolve()} ({len(files)} images{counted}, {digest.hexdigest()[:16]})'


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
        """The content sha256 of ``file``; ScalableViTError naming it when it cannot be read (or has vanished)."""
        try:
            st = file.stat()
            stamp = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
            key = os.path.realpath(file)
            entry = self.known.get(key)
            if not (isinstance(entry, list) and entry[:-1] == stamp):
                entry = stamp + [sha256_file(file)]
        except OSError as e:
            raise ScalableViTError(f'cannot read {file}: {e.strerror or e}') from e
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
