"""Atomic file writes, content hashes and small JSON helpers shared by every pipeline stage.

Every failed write of ours (a full disk, a read-only or vanished directory) becomes one ScalableViTError naming
the file and the free space left where it was going (``write_error``), never a raw OSError traceback.
"""
import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional, Union

from .errors import ScalableViTError

PathLike = Union[str, os.PathLike]


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``, on failure removed.

    Readers therefore see either the old file or the complete new one, never a partial write,
    even when the process is interrupted mid-write. An OSError while writing (ENOSPC, EFBIG, EROFS...)
    becomes a ScalableViTError naming ``path`` and the free space (``write_error``). The temporary name is
    ``.<name>.<random>.tmp`` (``TMP_PATTERN``): a run killed with SIGKILL leaves it behind, and the next
    run on a bundle sweeps it.
    """
    path = Path(path)
    if path.is_dir():
        raise ScalableViTError(f'{path} is a directory: give a file name to write')
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    except OSError as e:
        raise write_error(path, e) from e
    os.close(fd)
    tmp = Path(tmp)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; artifacts get the usual permissions
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)  # first, so the free space reported is what is really left
        raise write_error(path, e) from e
    finally:
        tmp.unlink(missing_ok=True)


TMP_PATTERN = '.*.tmp'  # what atomic_path's temporary files look like (glob)


def free_space(path: PathLike) -> str:
    """Free space on the file system holding ``path`` (or its nearest existing parent), human-readable."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return human_size(shutil.disk_usage(path).free)
    except OSError:
        return 'unknown'


def write_error(path: PathLike, error: OSError, description: Optional[str] = None) -> ScalableViTError:
    """One line for a failed write of the file ``path``: what failed, why, and the free space left there.

    With ``description`` (when the file is not known, e.g. a library's write in a work folder) ``path`` is the
    folder and ``description`` names what was being written.
    """
    reason = error.strerror or str(error) or type(error).__name__
    folder = Path(path) if description else Path(path).parent
    return ScalableViTError(f'cannot write {description or path}: {reason} ({free_space(folder)} free there)')


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: PathLike, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + '\n')


def read_json(path: PathLike) -> Any:
    """The JSON value of the file ``path``; a missing, unreadable, undecodable or too deeply nested file (which
    would exhaust Python's recursion limit) is one ScalableViTError naming it."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as e:
        raise ScalableViTError(f'{path}: file not found') from e
    except RecursionError as e:
        raise ScalableViTError(f'{path}: not readable JSON (nested too deeply)') from e
    except (OSError, ValueError) as e:
        raise ScalableViTError(f'{path}: not readable JSON ({e})') from e


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def human_size(num_bytes: int) -> str:
    for unit in ('B', 'KB', 'MB', 'GB'):
        if num_bytes < 1024 or unit == 'GB':
            return f'{num_bytes:.0f} {unit}' if unit == 'B' else f'{num_bytes:.1f} {unit}'
        num_bytes /= 1024
    raise AssertionError('unreachable')
