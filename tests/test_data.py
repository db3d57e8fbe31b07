"""Calibration / validation data: image folders, bundled photos, labelled folders, .npz sets, make_calib CLI.

Every test writes real image files (PNG, JPEG, CMYK JPEG, GIF, ...) into tmp_path and checks real numbers.
"""
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import pytest
from PIL import Image

from scalablevit.core.errors import ScalableViTError
from scalablevit.data import sets, transforms
from scalablevit.data.images import find_images, load_image
from scalablevit.data.photos import SAMPLE_PHOTOS, load_sample_photo
from scalablevit.data.sets import (CROPS_PER_PHOTO, FileHashes, calibration_and_validation, calibration_set,
                                   calibration_stream_and_validation, load_folder, load_labelled_folder, photo_crops,
                                   source_signature, split_files, split_photos)
from scalablevit.data.store import ImageSet, ImageStream, StoredImages, image_batches, load_npz
from scalablevit.data.transforms import preprocess, resize_crop
from scalablevit.models.scalablevit import data_config

REPO = Path(__file__).resolve().parents[1]
IMAGENET = data_config('scalable_vit_small')
FMNIST = data_config('scalable_vit_fmnist')  # 64x64: keeps folder tests fast
COLOUR = (10, 200, 77)


def expected_pixel(rgb: Tuple[int, int, int], cfg: Dict) -> np.ndarray:
    """(c/255 - mean) / std per channel, in float32 like preprocess."""
    c = np.asarray(rgb, np.float32) / 255.0
    return (c - np.asarray(cfg['mean'], np.float32)) / np.asarray(cfg['std'], np.float32)


def write_mixed_folder(root: Path) -> Path:
    """7 readable images of every awkward mode, one corrupt file, one non-image, one nested folder."""
    root.mkdir(parents=True, exist_ok=True)
    Image.new('RGB', (120, 90), COLOUR).save(root / 'rgb.png')
    Image.new('RGB', (80, 100), COLOUR).save(root / 'photo.JPG', quality=95)  # upper-case extension
    Image.new('L', (70, 70), 128).save(root / 'gray.png')
    Image.new('RGBA', (64, 64), (255, 0, 0, 0)).save(root / 'transparent.png')  # fully transparent red
    Image.new('CMYK', (50, 40), (0, 255, 255, 0)).save(root / 'cmyk.jpg')
    palette = Image.new('P', (60, 60), 1)
    palette.putpalette([0, 0, 0, *COLOUR] + [0] * 762)
    palette.save(root / 'palette.gif')
    (root / 'nested' / 'deeper').mkdir(parents=True)
    Image.new('RGB', (100, 100), (1, 2, 3)).save(root / 'nested' / 'deeper' / 'inner.bmp')
    (root / 'corrupt.jpg').write_bytes(b'\xff\xd8\xff\xe0 this is not really a jpeg')
    (root / 'notes.txt').write_text('not an image')
    return root


def pixel_of(images: ImageSet, name: str) -> np.ndarray:
    return images.images[images.names.index(name)][:, 0, 0]


# ------------------------------------------------------------------------------------------ find_images
def test_find_images_recursive_sorted_case_insensitive(tmp_path):
    folder = write_mixed_folder(tmp_path / 'imgs')
    rel = [p.relative_to(folder).as_posix() for p in find_images(folder)]
    assert rel == ['cmyk.jpg', 'corrupt.jpg', 'gray.png', 'nested/deeper/inner.bmp', 'palette.gif',
                   'photo.JPG', 'rgb.png', 'transparent.png']


def test_find_images_errors_name_the_folder(tmp_path):
    with pytest.raises(ScalableViTError, match='does not exist'):
        find_images(tmp_path / 'missing')
    (tmp_path / 'file.png').write_bytes(b'x')
    with pytest.raises(ScalableViTError, match='not a directory'):
        find_images(tmp_path / 'file.png')
    empty = tmp_path / 'empty'
    (empty / 'sub').mkdir(parents=True)
    (empty / 'readme.txt').write_text('no images')
    with pytest.raises(ScalableViTError, match=r'no images found in .*empty \(looked for \.jpg, \.jpeg, \.png'):
        find_images(empty)


def test_unreadable_folder_is_named(tmp_path):
    locked = write_mixed_folder(tmp_path / 'locked')
    os.chmod(locked, 0)
    try:
        try:
            os.listdir(locked)
        except PermissionError:
            pass
        else:
            pytest.skip('permissions do not apply (running as root)')
        with pytest.raises(ScalableViTError, match='cannot read image folder .*locked'):
            find_images(locked)
    finally:
        os.chmod(locked, 0o755)


def test_find_images_visits_every_directory_and_file_once(tmp_path, caplog):
    """Link loops end, a link back to a parent or a hard link adds nothing, dangling links are counted."""
    folder = tmp_path / 'imgs'
    (folder / 'sub').mkdir(parents=True)
    for name in ('a.png', 'b.png', 'sub/c.png'):
        Image.new('RGB', (8, 8)).save(folder / name)
    (folder / 'self').symlink_to('.')
    (folder / 'sub' / 'loop').symlink_to('..')
    (folder / 'sub2').mkdir()
    (folder / 'sub2' / 'loop2').symlink_to('../sub')  # a second loop, through another folder
    (folder / 'dangling.png').symlink_to('missing.png')
    (folder / 'knot.png').symlink_to('knot.png')  # a link to itself: ELOOP on stat
    os.link(folder / 'a.png', folder / 'hard.png')
    (folder / 'alias.png').symlink_to('b.png')
    rel = [p.relative_to(folder).as_posix() for p in find_images(folder)]
    assert rel == ['a.png', 'alias.png', 'sub/c.png']  # the first path of each file in a sorted walk
    assert 'skipped 2 dangling symbolic link(s)' in caplog.text


def test_sixteen_bit_gray_is_scaled_not_clipped(tmp_path):
    wide = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)  # 0..65520
    Image.fromarray(wide).save(tmp_path / 'g16.png')
    assert Image.open(tmp_path / 'g16.png').mode == 'I;16'
    pixels = np.asarray(load_image(tmp_path / 'g16.png'))
    expected = (wide.astype(np.int64) * 255 + 32767) // 65535
    np.testing.assert_array_equal(pixels[..., 0], expected)
    assert (pixels == 255).mean() < 0.01  # PIL's convert('RGB') clipped 99.6 % of this gradient to 255


def test_oversized_images_are_refused_before_decoding(tmp_path):
    Image.new('L', (10000, 9000)).save(tmp_path / 'bomb.png')  # 90 MP, 87 KB on disk
    with pytest.raises(ScalableViTError, match=r'bomb.png: 10000 x 9000 = 90,000,000 pixels, beyond the '
                                               r'89,478,485-pixel cap'):
        load_image(tmp_path / 'bomb.png')


def test_extreme_aspect_ratio_resamples_only_the_crop_window(monkeypatch):
    """A 20000 x 1 strip would resize to 5,120,000 x 256; beyond MAX_RESIZE_SIDE only the crop is resampled,
    and on an ordinary image that path agrees with the full resize within one grey level."""
    strip = Image.fromarray(np.tile(np.arange(256, dtype=np.uint8), 79)[:20000][None].repeat(1, 0))
    out = resize_crop(strip.convert('RGB'), IMAGENET)
    assert out.size == (224, 224)
    photo = load_sample_photo('chelsea')
    full = np.asarray(resize_crop(photo, IMAGENET), dtype=np.int16)
    monkeypatch.setattr(transforms, 'MAX_RESIZE_SIDE', 100)
    boxed = np.asarray(resize_crop(photo, IMAGENET), dtype=np.int16)
    assert np.abs(full - boxed).max() <= 1 and (full != boxed).mean() < 0.01


def test_file_hashes_key_on_content_and_cache_only_accelerates(tmp_path):
    image = tmp_path / 'a.bmp'
    Image.new('RGB', (16, 16), (1, 2, 3)).save(image)
    cache = tmp_path / 'cache.json'
    first = FileHashes(cache)
    digest = first.sha256(image)
    first.save()
    before = image.stat()
    with open(image, 'r+b') as f:  # same inode, same size, mtime restored: only ctime and content differ
        f.seek(-3, os.SEEK_END)
        f.write(b'\x09\x08\x07')
    os.utime(image, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = image.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    assert FileHashes(cache).sha256(image) != digest
    (tmp_path / 'garbage.json').write_text('[not json')
    assert FileHashes(tmp_path / 'garbage.json').sha256(image) == FileHashes().sha256(image)


def test_counts_beyond_the_source_are_capped_with_a_warning(caplog, monkeypatch):
    monkeypatch.setattr(sets, 'CROPS_PER_PHOTO', 2)
    crops = photo_crops(['astronaut', 'coffee'], 10 ** 9, FMNIST)
    assert len(crops) == 4 and '1000000000 images asked for, capped to 4' in caplog.text
    monkeypatch.setattr(sets, 'MAX_SET_BYTES', 3 * (3 * 64 * 64 * 4))
    calib, val = calibration_and_validation(FMNIST, calib_size=100, val_size=100)
    assert len(calib) == 3 and len(val) == 3 and 'of memory' in caplog.text
    # the real limits: the bundled photos never exceed ~1 GB at 224, no set exceeds MAX_SET_BYTES
    assert 2 * len(SAMPLE_PHOTOS) * CROPS_PER_PHOTO * 3 * 224 * 224 * 4 < 2 ** 30 * 2


# ---------------------------------------------------------------------------------------------- loading
def test_folder_loads_every_mode_as_rgb_and_skips_corrupt(tmp_path, caplog):
    folder = write_mixed_folder(tmp_path / 'imgs')
    images = load_folder(folder, FMNIST, count=100)
    assert images.images.shape == (7, 3, 64, 64) and images.images.dtype == np.float32
    assert images.skipped == 1 and 'corrupt.jpg' not in images.names
    assert 'corrupt.jpg' in caplog.text
    np.testing.assert_array_equal(pixel_of(images, 'rgb.png'), expected_pixel(COLOUR, FMNIST))
    np.testing.assert_array_equal(pixel_of(images, 'palette.gif'), expected_pixel(COLOUR, FMNIST))
    np.testing.assert_array_equal(pixel_of(images, 'gray.png'), expected_pixel((128,) * 3, FMNIST))
    np.testing.assert_array_equal(pixel_of(images, 'transparent.png'), expected_pixel((255,) * 3, FMNIST))
    np.testing.assert_array_equal(pixel_of(images, 'nested/deeper/inner.bmp'), expected_pixel((1, 2, 3), FMNIST))
    cmyk = images.images[images.names.index('cmyk.jpg')]
    assert cmyk[0].mean() > cmyk[1].mean() + 1 and cmyk[0].mean() > cmyk[2].mean() + 1  # CMYK (0,255,255,0) is red


def test_folder_with_only_unreadable_files_fails(tmp_path):
    for name in ('a.png', 'b.jpg'):
        (tmp_path / name).write_bytes(b'garbage')
    with pytest.raises(ScalableViTError, match='none of the 2 image files could be read'):
        load_folder(tmp_path, FMNIST)


def test_folder_sampling_is_seeded(tmp_path):
    for i in range(12):
        Image.new('RGB', (40, 40), (i * 20, 0, 255 - i * 20)).save(tmp_path / f'{i:02d}.png')
    first, again, other = (load_folder(tmp_path, FMNIST, count=5, seed=s) for s in (0, 0, 1))
    assert len(first) == 5 and first.sha256 == again.sha256 and first.names == again.names
    assert other.sha256 != first.sha256


# ------------------------------------------------------------------------------------------- preprocess
@pytest.mark.parametrize('cfg, side', [(IMAGENET, 224), (FMNIST, 64)])
def test_preprocess_constant_colour_is_exact(cfg, side):
    out = preprocess(Image.new('RGB', (300, 200), COLOUR), cfg)
    assert out.shape == (3, side, side) and out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, np.broadcast_to(expected_pixel(COLOUR, cfg)[:, None, None], out.shape))


def test_preprocess_is_resize_then_center_crop():
    """A 512x256 image whose left/right quarters are black: 256 short side -> 512 wide, centre 224 is white."""
    image = Image.new('RGB', (512, 256), (255, 255, 255))
    image.paste((0, 0, 0), (0, 0, 128, 256))
    image.paste((0, 0, 0), (384, 0, 512, 256))
    out = preprocess(image, IMAGENET)
    np.testing.assert_allclose(out[:, 112, 112], expected_pixel((255,) * 3, IMAGENET), atol=1e-6)
    assert preprocess(image, IMAGENET, input_size=448).shape == (3, 448, 448)


# ------------------------------------------------------------------------------ calibration / validation
def test_split_files_disjoint_and_proportional_when_short():
    files = [Path(f'{i:03d}.png') for i in range(100)]
    calib, val = split_files(files, 60, 20, seed=3)
    assert (len(calib), len(val)) == (60, 20) and not set(calib) & set(val)
    calib, val = split_files(files[:40], 60, 20, seed=3)  # 40 < 80: shares of 3:1
    assert (len(calib), len(val)) == (30, 10) and not set(calib) & set(val)
    with pytest.raises(ScalableViTError, match='at least 2 images'):
        split_files(files[:1], 5, 5)
    with pytest.raises(ScalableViTError, match='validation size must be a positive integer'):
        split_files(files, 5, 0)


def test_folder_calibration_and_validation_disjoint_and_seeded(tmp_path):
    for i in range(30):
        Image.new('RGB', (48, 40), (i * 8, 255 - i * 8, 100)).save(tmp_path / f'img{i:02d}.png')
    calib, val = calibration_and_validation(FMNIST, tmp_path, calib_size=20, val_size=6, seed=0)
    assert (len(calib), len(val)) == (20, 6) and not set(calib.names) & set(val.names)
    again = calibration_set(FMNIST, tmp_path, calib_size=20, val_size=6, seed=0)
    assert again.sha256 == calib.sha256
    other, _ = calibration_and_validation(FMNIST, tmp_path, calib_size=20, val_size=6, seed=1)
    assert other.sha256 != calib.sha256


def write_class_tree(root: Path, classes=('ant', 'bee'), per_class: int = 3) -> Path:
    for label, cls in enumerate(classes):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            Image.new('RGB', (40, 40), (label * 100, i * 10, 0)).save(root / cls / f'{i}.png')
    return root


def test_separate_val_folder_is_labelled_and_excluded_from_calibration(tmp_path):
    data = tmp_path / 'data'
    for i in range(6):
        (data / 'extra').mkdir(parents=True, exist_ok=True)
        Image.new('RGB', (40, 40), (0, 0, i * 40)).save(data / 'extra' / f'{i}.png')
    val_dir = write_class_tree(data / 'val')  # nested inside the calibration folder on purpose
    calib, val = calibration_and_validation(FMNIST, data, calib_size=50, val_size=4, val_dir=val_dir)
    assert len(calib) == 6 and all(n.startswith('extra/') for n in calib.names)
    assert len(val) == 4 and val.class_names == ['ant', 'bee']
    assert all(n.split('/')[0] == val.class_names[label] for n, label in zip(val.names, val.labels))
    default_calib, flat_val = calibration_and_validation(FMNIST, None, calib_size=4, val_size=3,
                                                         val_dir=data / 'extra')
    assert flat_val.labels is None and len(flat_val) == 3
    assert {n.split('@')[0] for n in default_calib.names} <= set(SAMPLE_PHOTOS)
    with pytest.raises(ScalableViTError, match='every image in calibration folder .* is also in validation'):
        calibration_set(FMNIST, val_dir, calib_size=4, val_dir=val_dir)


def test_source_signature_tracks_folder_contents(tmp_path):
    folder = write_class_tree(tmp_path / 'imgs')
    first = source_signature(folder)
    assert source_signature(folder) == first and '6 images' in first
    Image.new('RGB', (40, 40)).save(folder / 'ant' / 'new.png')
    assert source_signature(folder) != first
    assert 'scikit-image' in source_signature() and source_signature() != source_signature(None, folder)
    with pytest.raises(ScalableViTError, match='does not exist'):
        source_signature(tmp_path / 'missing')


def test_split_photos_holds_out_whole_scenes():
    for seed in range(6):
        calib, val = split_photos(seed)
        assert sorted(calib + val) == sorted(SAMPLE_PHOTOS)
        calib_scenes = {SAMPLE_PHOTOS[n][0] for n in calib}
        val_scenes = {SAMPLE_PHOTOS[n][0] for n in val}
        assert len(val_scenes) == 2 and not calib_scenes & val_scenes
        assert ('motorcycle_left' in val) == ('motorcycle_right' in val)


def test_sample_photos_all_load_offline():
    for name in SAMPLE_PHOTOS:
        image = load_sample_photo(name)
        assert image.mode == 'RGB' and min(image.size) >= 300, name


def test_default_photo_sets_shape_finite_disjoint_seeded():
    calib, val = calibration_and_validation(IMAGENET, calib_size=12, val_size=4, seed=0)
    assert calib.images.shape == (12, 3, 224, 224) and val.images.shape == (4, 3, 224, 224)
    assert np.isfinite(calib.images).all() and calib.images.std() > 0.1
    assert not {n.split('@')[0] for n in calib.names} & {n.split('@')[0] for n in val.names}
    assert calibration_set(IMAGENET, calib_size=12, val_size=4, seed=0).sha256 == calib.sha256
    assert calibration_set(IMAGENET, calib_size=12, val_size=4, seed=1).sha256 != calib.sha256
    small = calibration_set(FMNIST, calib_size=3, seed=0, input_size=32)
    assert small.images.shape == (3, 3, 32, 32)


def test_photo_crops_vary():
    crops = photo_crops(['astronaut'], 6, FMNIST, seed=0)
    assert len(set(crops.names)) == 6
    flat = crops.images.reshape(6, -1)
    assert min(np.abs(flat[i] - flat[j]).max() for i in range(6) for j in range(i)) > 0.1


# ------------------------------------------------------------------------------------------------ .npz
def test_npz_round_trip_and_bad_files(tmp_path):
    labelled = ImageSet(np.random.default_rng(0).standard_normal((3, 3, 8, 8)), 'unit test', ['a', 'b', 'c'],
                        labels=[2, 0, 1], class_names=['x', 'y', 'z'], skipped=1)
    path = labelled.save_npz(tmp_path / 'set.npz')
    back = load_npz(path)
    assert back.sha256 == labelled.sha256 and back.names == ['a', 'b', 'c'] and back.source == 'unit test'
    assert back.labels.tolist() == [2, 0, 1] and back.class_names == ['x', 'y', 'z'] and back.skipped == 1
    assert [p.name for p in tmp_path.iterdir()] == ['set.npz']  # no temp file left
    (tmp_path / 'truncated.npz').write_bytes(path.read_bytes()[:500])
    (tmp_path / 'text.npz').write_text('hello')
    np.savez(tmp_path / 'foreign.npz', x=np.zeros(3))
    np.save(tmp_path / 'bare.npy', np.zeros(3))
    fields = dict(images=labelled.images, names=np.array(['a', 'b', 'c']), source=np.array('x'))
    np.savez(tmp_path / 'tampered.npz', format=np.array('scalablevit-imageset/1'), sha256=np.array('0' * 64), **fields)
    np.savez(tmp_path / 'future.npz', format=np.array('scalablevit-imageset/9'), sha256=np.array(labelled.sha256),
             **fields)
    for name, message in [('truncated.npz', 'not a readable image-set'), ('text.npz', 'not a readable image-set'),
                          ('foreign.npz', 'missing format, images'), ('bare.npy', 'single array'),
                          ('missing.npz', 'not found'), ('tampered.npz', 'corrupt image set'),
                          ('future.npz', "unsupported image-set format 'scalablevit-imageset/9'")]:
        with pytest.raises(ScalableViTError, match=message):
            load_npz(tmp_path / name)


def test_stream_writes_what_the_set_writes_and_stored_images_read_it_in_batches(tmp_path):
    """An ImageStream is written one image at a time into ImageSet's format; StoredImages reads any batch size or
    subset of it back from the file, bit for bit, and checks it as it opens (sha256, finite)."""
    labelled = ImageSet(np.random.default_rng(0).standard_normal((7, 3, 8, 8)), 'unit test', list('abcdefg'),
                        labels=[2, 0, 1, 1, 0, 2, 1], class_names=['x', 'y', 'z'], skipped=1)
    stream = ImageStream.of(labelled)
    stream.save_npz(tmp_path / 'streamed.npz')
    assert (stream.count, stream.sha256) == (7, labelled.sha256)
    assert [p.name for p in tmp_path.iterdir()] == ['streamed.npz']  # nothing spooled is left
    stored = StoredImages(tmp_path / 'streamed.npz')
    assert (len(stored), stored.shape, stored.sha256, stored.finite) == (7, (7, 3, 8, 8), labelled.sha256, True)
    assert stored.names == labelled.names and stored.labels.tolist() == labelled.labels.tolist()
    assert [len(b) for b in stored.batches(3)] == [3, 3, 1]
    assert np.array_equal(np.concatenate(list(stored.batches(3))), labelled.images)
    assert np.array_equal(np.concatenate(list(stored.batches(2, indices=[6, 1, 4]))), labelled.images[[1, 4, 6]])
    assert np.array_equal(np.concatenate(list(image_batches(labelled.images, 2, [6, 1, 4]))), labelled.images[[1, 4, 6]])
    old = labelled.save_npz(tmp_path / 'saved.npz')  # bundles written before streaming read the same
    assert StoredImages(old).load().sha256 == load_npz(tmp_path / 'streamed.npz').sha256 == labelled.sha256
    nan = ImageSet(np.full((2, 3, 8, 8), np.nan), 'nan', ['a', 'b']).save_npz(tmp_path / 'nan.npz')
    assert StoredImages(nan).finite is False
    with pytest.raises(ScalableViTError, match=r'image b is \(3, 4, 4\), the first was \(3, 8, 8\)'):
        ImageStream('mixed', iter([(np.zeros((3, 8, 8)), 'a', None), (np.zeros((3, 4, 4)), 'b', None)])).save_npz(
            tmp_path / 'mixed.npz')
    assert not (tmp_path / 'mixed.npz').exists() and not list(tmp_path.glob('.*.tmp'))


def test_streamed_calibration_is_the_collected_one(tmp_path):
    """The pipeline's calibration stream (crops, files) writes exactly the images calibration_and_validation gives."""
    for folder in (None, tmp_path / 'photos'):
        if folder is not None:
            folder.mkdir()
            for i in range(6):
                Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(
                    folder / f'{i}.png')
        calib, val = calibration_and_validation(FMNIST, folder, calib_size=5, val_size=1, seed=0)
        stream, val2 = calibration_stream_and_validation(FMNIST, folder, calib_size=5, val_size=1, seed=0)
        stream.save_npz(tmp_path / 'calib.npz')
        assert stream.sha256 == calib.sha256 and val2.sha256 == val.sha256
        assert StoredImages(tmp_path / 'calib.npz').names == calib.names


def test_imageset_rejects_bad_shapes():
    with pytest.raises(ScalableViTError, match=r'\(N, 3, H, W\)'):
        ImageSet(np.zeros((2, 1, 8, 8)), 'gray', ['a', 'b'])
    with pytest.raises(ScalableViTError, match='1 names for 2 images'):
        ImageSet(np.zeros((2, 3, 8, 8)), 'short', ['a'])


# -------------------------------------------------------------------------------------------- labelled
def test_labelled_class_subfolders(tmp_path):
    write_class_tree(tmp_path, ('ant', 'bee', 'cat'))
    (tmp_path / 'bee' / 'bad.jpg').write_bytes(b'broken')
    data = load_labelled_folder(tmp_path, FMNIST)
    assert data.class_names == ['ant', 'bee', 'cat'] and data.skipped == 1
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert all(name.split('/')[0] == data.class_names[label] for name, label in zip(data.names, data.labels))
    subset = load_labelled_folder(tmp_path, FMNIST, limit=4, seed=0)
    assert len(subset) + subset.skipped == 4
    assert all(name.split('/')[0] == subset.class_names[label] for name, label in zip(subset.names, subset.labels))
    with pytest.raises(ScalableViTError, match='3 classes but the model predicts 2'):
        load_labelled_folder(tmp_path, {**FMNIST, 'num_classes': 2})


def test_labelled_flat_folder_with_labels_file(tmp_path):
    images = tmp_path / 'val'
    images.mkdir()
    for i in range(4):
        Image.new('RGB', (40, 40), (i * 60, 0, 0)).save(images / f'ILSVRC2012_val_{i:08d}.JPEG')
    (tmp_path / 'val.txt').write_text('\n'.join(f'ILSVRC2012_val_{i:08d}.JPEG {i % 3 + 5}' for i in range(6)) + '\n')
    data = load_labelled_folder(images, FMNIST, labels_file=tmp_path / 'val.txt')
    assert data.labels.tolist() == [5, 6, 7, 5] and data.class_names is None
    (tmp_path / 'names.txt').write_text('# file,class\nILSVRC2012_val_00000001.JPEG,zebra\n'
                                        'ILSVRC2012_val_00000003.JPEG,antelope\n')
    named = load_labelled_folder(images, FMNIST, labels_file=tmp_path / 'names.txt')
    assert named.class_names == ['antelope', 'zebra'] and named.labels.tolist() == [1, 0]
    (tmp_path / 'bad.txt').write_text('ILSVRC2012_val_00000001.JPEG 1\njustonefield\n')
    with pytest.raises(ScalableViTError, match=r'bad\.txt:2: expected "filename label"'):
        load_labelled_folder(images, FMNIST, labels_file=tmp_path / 'bad.txt')
    (tmp_path / 'other.txt').write_text('unrelated.png 1\n')
    with pytest.raises(ScalableViTError, match='no image in .* has a label'):
        load_labelled_folder(images, FMNIST, labels_file=tmp_path / 'other.txt')
    with pytest.raises(ScalableViTError, match='11 classes but the model predicts 10'):
        (tmp_path / 'big.txt').write_text('ILSVRC2012_val_00000001.JPEG 10\n')
        load_labelled_folder(images, FMNIST, labels_file=tmp_path / 'big.txt')


# ------------------------------------------------------------------------------------------------- CLI
def run_make_calib(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / 'calib' / 'make_calib.py'), *args],
                          capture_output=True, text=True, timeout=300)


def test_make_calib_bad_input_exits_1_without_output(tmp_path):
    out = tmp_path / 'calib.npz'
    result = run_make_calib('--images', str(tmp_path / 'nowhere'), '--out', str(out))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == f'error: image folder {tmp_path / "nowhere"} does not exist'
    assert 'Traceback' not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_make_calib_writes_the_pipeline_calibration_split(tmp_path):
    folder = write_mixed_folder(tmp_path / 'imgs')
    out = tmp_path / 'out' / 'calib.npz'
    result = run_make_calib('--images', str(folder), '--count', '5', '--val-size', '2', '--model', 'fmnist',
                            '--out', str(out))
    assert result.returncode == 0, result.stderr
    written = load_npz(out)
    expected = calibration_set(FMNIST, folder, calib_size=5, val_size=2, seed=0)
    assert written.sha256 == expected.sha256 and written.names == expected.names
    assert f'sha256 {written.sha256}' in result.stdout
