"""Hostile files and folders met by the exports, the data pipeline and the quantize tool, through the command line:
the exit code, the one ``error:`` line, and what is on disk afterwards.

Exports: a file of ours that a user edited is never overwritten (the marker records each file's sha256); a
``--repo``/``--out`` under a regular file names that file; a destination that is a link to a folder is followed
(links to nothing are refused). Data: an unreadable calibration image is skipped and counted by the content hash
as by decoding, and make_calib.py writes the same calibration set as the pipeline; integer TIFFs outside 16 bits and
float TIFFs with NaN are refused naming the file and what is wrong. quantize: ``--calib`` given a folder says so.

Unreadable files: as root, file permissions are not enforced, so the run goes through a small wrapper that raises
PermissionError for a mode-000 file as the kernel does for anyone else (``_UNREADABLE``); the same test holds with
the real permission check when run as another user.
"""
import hashlib
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scalablevit.core.fileio import write_json
from scalablevit.serve.exportdir import MARKER
from tests.test_hostile_exports import DEEPSTREAM, NAME, ROOT, TRITON, _one_error, _run, _snapshot, bundle  # noqa

SMALL = ['--model', 'test', '--calib-size', '4', '--val-size', '4']
DS_CONFIG = 'config_infer_scalable_vit_test.txt'

_UNREADABLE = '''
import builtins, errno, os, runpy, sys
_open = builtins.open


def _checked(file, *args, **kwargs):  # what the kernel does for a non-root user: a mode-000 file cannot be opened
    if isinstance(file, (str, bytes, os.PathLike)) and os.path.isfile(file) and not os.stat(file).st_mode & 0o444:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(file))
    return _open(file, *args, **kwargs)


builtins.open = _checked
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
'''


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _state(folder: Path) -> dict:
    """``_snapshot`` that also holds links that lead nowhere (as their text) without following them."""
    return {p.relative_to(folder).as_posix(): f'-> {os.readlink(p)}' if p.is_symlink() and not p.exists() else
            None if p.is_dir() else _sha256(p) for p in sorted(folder.rglob('*'))}


def _hidden(folder: Path) -> list:
    """Staging folders (``.<name>.export-*``) or temporary files left in ``folder``."""
    return [p.name for p in folder.iterdir() if p.name.startswith('.')]


# ----------------------------------------------------------------------------------- 1. edited files of ours
@pytest.mark.parametrize('tool, edited', [(TRITON, 'config.pbtxt'), (TRITON, '1/model.onnx'),
                                          (DEEPSTREAM, 'labels.txt'), (DEEPSTREAM, DS_CONFIG)])
def test_an_export_never_overwrites_a_file_the_user_edited(bundle, tmp_path, tool, edited):
    folder = tmp_path / 'repo' / NAME if tool == TRITON else tmp_path / 'ds'
    where = ['--repo', tmp_path / 'repo'] if tool == TRITON else ['--out', folder]
    assert _run(tool, bundle, *where).returncode == 0
    marker = json.loads((folder / MARKER).read_text())
    files = [f for f in marker['files'] if not f.endswith('/')]
    assert marker['sha256'] == {f: _sha256(folder / f) for f in files}  # every file written, hashed
    with open(folder / edited, 'a') as f:
        f.write('# my edit\n')
    before = _snapshot(tmp_path)
    tool_name = 'export_triton' if tool == TRITON else 'export_deepstream'
    _one_error(_run(tool, bundle, *where, '--target', 'jetson-orin-nano'),
               f'{folder} holds files changed since {tool_name} wrote them ({edited}): move them away first; '
               'nothing was changed')
    assert _snapshot(tmp_path) == before  # the edit is kept, nothing staged beside it
    (folder / edited).unlink()  # the user moved the edited file away: nothing of theirs is left to lose
    assert _run(tool, bundle, *where, '--target', 'jetson-orin-nano').returncode == 0
    assert (folder / edited).is_file() and '# my edit' not in (folder / edited).read_text(errors='replace')
    assert _hidden(folder.parent) == []


def test_a_file_of_ours_replaced_by_a_link_is_refused(bundle, tmp_path):
    repo = tmp_path / 'repo'
    assert _run(TRITON, bundle, '--repo', repo).returncode == 0
    mine = tmp_path / 'my_labels.txt'
    mine.write_bytes((repo / NAME / 'labels.txt').read_bytes())  # even with the same bytes
    (repo / NAME / 'labels.txt').unlink()
    (repo / NAME / 'labels.txt').symlink_to(mine)
    before = _snapshot(tmp_path)
    _one_error(_run(TRITON, bundle, '--repo', repo), 'holds files changed since export_triton wrote them (labels.txt)')
    assert _snapshot(tmp_path) == before


def test_a_marker_without_hashes_is_refused(bundle, tmp_path):
    """An entry whose marker lists its files but not their sha256 (an older export): edits cannot be ruled out."""
    repo = tmp_path / 'repo'
    assert _run(TRITON, bundle, '--repo', repo).returncode == 0
    marker = json.loads((repo / NAME / MARKER).read_text())
    del marker['sha256']
    write_json(repo / NAME / MARKER, marker)
    before = _snapshot(tmp_path)
    _one_error(_run(TRITON, bundle, '--repo', repo),
               f'{repo / NAME / MARKER} records no sha256 of the files export_triton wrote (an older export)',
               'nothing was changed')
    assert _snapshot(tmp_path) == before


# ------------------------------------------------------------------------- 2. a file where a folder must be
@pytest.mark.parametrize('tool, place', [(TRITON, ['--repo', '{f}']), (TRITON, ['--repo', '{f}/sub']),
                                         (DEEPSTREAM, ['--out', '{f}/ds']), (DEEPSTREAM, ['--out', '{f}'])])
def test_a_destination_under_a_file_names_the_file(bundle, tmp_path, tool, place):
    afile = tmp_path / 'AFILE'
    afile.write_text('not a folder\n')
    args = [a.format(f=afile) for a in place]
    line = _one_error(_run(tool, bundle, *args), f'{afile} is a file, not a folder')
    assert 'staging' not in line and 'File exists' not in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ['AFILE'] and afile.read_text() == 'not a folder\n'


# ---------------------------------------------------------------------- 4. a destination that is a link
def test_a_linked_triton_entry_is_followed_and_the_link_kept(bundle, tmp_path):
    real, repo = tmp_path / 'models', tmp_path / 'repo'
    assert _run(TRITON, bundle, '--repo', real, '--name', NAME).returncode == 0
    repo.mkdir()
    (repo / NAME).symlink_to(real / NAME)  # Triton repositories often link their entries
    result = _run(TRITON, bundle, '--repo', repo, '--target', 'jetson-orin-nano')
    assert result.returncode == 0, result.stderr
    assert (repo / NAME).is_symlink() and os.readlink(repo / NAME) == str(real / NAME)
    assert 'max_batch_size: 8' in (real / NAME / 'config.pbtxt').read_text()  # the folder behind the link, replaced
    assert sorted(p.name for p in real.iterdir()) == [NAME] and sorted(p.name for p in repo.iterdir()) == [NAME]


@pytest.mark.parametrize('target, what', [('missing', 'which is missing'), ('loop', 'which is a loop of links'),
                                          ('AFILE', 'which is a file')])
def test_a_link_that_leads_to_no_folder_is_refused(bundle, tmp_path, target, what):
    repo = tmp_path / 'repo'
    repo.mkdir()
    (tmp_path / 'AFILE').write_text('x\n')
    (repo / 'loop').symlink_to('loop')
    (repo / NAME).symlink_to({'missing': 'missing', 'loop': 'loop', 'AFILE': '../AFILE'}[target])
    before = _state(tmp_path)
    _one_error(_run(TRITON, bundle, '--repo', repo), f'{repo / NAME} is a symbolic link to', what,
               'choose another destination or remove the link')
    assert _state(tmp_path) == before and [p.name for p in repo.iterdir() if p.is_dir()] == []


# ------------------------------------------------------------------------------- 3. an unreadable image
@pytest.fixture
def unreadable_folder(tmp_path):
    folder = tmp_path / 'imgs'
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / f'i{i}.png')
    (folder / 'i0.png').chmod(0)
    yield folder
    (folder / 'i0.png').chmod(0o644)


def _as_user(tmp_path: Path, script: str, *args) -> subprocess.CompletedProcess:
    """``script`` run with permissions enforced as for a non-root user (see the module docstring)."""
    wrapper = tmp_path / 'unreadable.py'
    wrapper.write_text(_UNREADABLE)
    return _run(wrapper, ROOT / script, *args)


def test_an_unreadable_calibration_image_is_skipped_and_counted(unreadable_folder, tmp_path):
    out = tmp_path / 'b'
    result = _as_user(tmp_path, 'deploy/build_engine.py', *SMALL, '--precision', 'fp32', '--calib',
                      unreadable_folder, '--out', out)
    assert result.returncode == 0, result.stderr
    assert 'error:' not in result.stderr
    assert (f'{unreadable_folder}: skipped 1 unreadable of 8 image files when hashing them (e.g. cannot read '
            f'{unreadable_folder}/i0.png: Permission denied)') in result.stderr
    assert 'skipped 1 unreadable of 4 image files' in result.stderr  # decoding skips and counts it too
    calib = np.load(out / 'calibration.npz')
    names = [str(n) for n in calib['names']]
    assert 'i0.png' not in names and len(names) == 3 and int(calib['skipped']) == 1
    manifest = json.loads((out / 'manifest.json').read_text())
    assert manifest['calibration']['count'] == 3 and manifest['reference']['samples'] == 4
    # make_calib.py, given the pipeline's split, writes the very same calibration set
    made = tmp_path / 'calib.npz'
    result = _as_user(tmp_path, 'calib/make_calib.py', '--model', 'test', '--images', unreadable_folder, '--count',
                      '4', '--val-size', '4', '--out', made)
    assert result.returncode == 0, result.stderr
    assert '3 images 3x224x224' in result.stdout and '1 unreadable skipped' in result.stdout
    assert str(np.load(made)['sha256']) == manifest['calibration']['images_sha256'] == str(calib['sha256'])


def test_the_source_key_counts_unreadable_files_and_changes_when_they_read(unreadable_folder, monkeypatch):
    from scalablevit.data import sets
    real = sets.FileHashes.sha256

    def enforced(self, file):
        if not file.stat().st_mode & 0o444:
            raise sets.ScalableViTError(f'cannot read {file}: Permission denied')
        return real(self, file)
    monkeypatch.setattr(sets.FileHashes, 'sha256', enforced)
    locked = sets.source_signature(unreadable_folder)
    assert '(8 images, 1 unreadable, ' in locked
    (unreadable_folder / 'i0.png').chmod(0o644)
    readable = sets.source_signature(unreadable_folder)
    assert readable != locked and '(8 images, ' in readable and 'unreadable' not in readable


def test_a_vanished_image_is_skipped_by_the_hash(tmp_path):
    """A file gone between the folder walk and its hash (stat fails) is one skipped file, not a traceback."""
    from scalablevit.data.sets import FileHashes, ScalableViTError
    with pytest.raises(ScalableViTError, match=f'cannot read {tmp_path}/gone.png: No such file or directory'):
        FileHashes().sha256(tmp_path / 'gone.png')


# --------------------------------------------------------------------------------- 4. pixel values
def _tiff(path: Path, values: np.ndarray) -> Path:
    Image.fromarray(values).save(path)
    return path


@pytest.mark.parametrize('name, values, message', [
    ('neg.tif', np.arange(-800, 800, dtype=np.int32).reshape(40, 40),
     'integer pixels must be within 0..65535 (16 bits), got -800..799'),
    ('wide.tif', np.full((40, 40), 70000, np.int32), 'integer pixels must be within 0..65535 (16 bits), got '
                                                     '70000..70000'),
    ('nan.tif', np.where(np.eye(40, dtype=bool), np.nan, 0.5).astype(np.float32),
     'float pixels must be finite and within 0..1 (or 0..255), got NaN in 40 of 1,600 pixels'),
    ('inf.tif', np.where(np.eye(40, dtype=bool), np.inf, 0.5).astype(np.float32),
     'float pixels must be finite and within 0..1 (or 0..255), got inf in 40 of 1,600 pixels'),
])
def test_pixels_without_an_agreed_meaning_are_refused(bundle, tmp_path, name, values, message):
    image = _tiff(tmp_path / name, values)
    before = _snapshot(tmp_path)
    _one_error(_run('deploy/predict.py', image, '--bundle', bundle), f'{image}: {message}')
    assert _snapshot(tmp_path) == before


def test_sixteen_bit_integer_tiffs_still_scale(bundle, tmp_path):
    image = _tiff(tmp_path / 'ok.tif', np.linspace(0, 65535, 1600).astype(np.int32).reshape(40, 40))
    result = _run('deploy/predict.py', image, '--bundle', bundle, '--json')
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------------------------ 5. --calib given a folder
def test_quantize_calib_folder_says_it_wants_the_npz(bundle, tmp_path):
    folder = tmp_path / 'photos'
    folder.mkdir()
    out = tmp_path / 'model.int8.onnx'
    _one_error(_run('deploy/quantize.py', '--onnx', bundle / 'model.fp32.onnx', '--precision', 'int8', '--calib',
                    folder, '--out', out),
               f'--calib {folder} is a folder: --calib wants the image-set .npz made by calib/make_calib.py')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['photos']
