"""The output folders of the export tools (a Triton model entry, a DeepStream config folder): checked values,
made whole beside their place, swapped in whole, and never written over something the tool did not make.

Every folder an export writes holds ``scalablevit-export.json`` (``MARKER``): which tool wrote it, every path it
wrote with the sha256 of each file, the source and whether its weights are untrained. A folder already at the
destination is replaced only when its marker names the same tool, it holds nothing else and each of its files still
has the recorded sha256; anything else there (another model's entry, a version folder or a file a user added, a
file a user edited) is refused in one line and left as it is. A destination that is a link to a folder is followed
(the folder it names is replaced, the link kept); a dangling or looping link, or a file where a folder must be, is
refused in one line naming it.

The swap is one ``renameat2(RENAME_EXCHANGE)`` of the complete new folder with the old one (Linux >= 3.15), so at
every instant the destination is the old folder or the new one, whole, whatever signal arrives. Where the file
system lacks the exchange, two renames run with SIGINT/SIGTERM blocked; only a SIGKILL between them can leave the
old folder under its staging name (``.<name>.export-<pid>-*``). A staging folder of a process that no longer runs
(a SIGKILL) is swept by the next export to the same place.
"""
import ctypes
import errno
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from ..core.errors import ScalableViTError
from ..core.fileio import read_json, sha256_file, write_error, write_json

logger = logging.getLogger(__name__)

__all__ = ['MARKER', 'INT32_MAX', 'checked_int', 'checked_fraction', 'warn_untrained', 'write_export_dir']

MARKER = 'scalablevit-export.json'
INT32_MAX = 2 ** 31 - 1  # Triton's max_batch_size and nvinfer's ids and batch-size are 32-bit
PAUSE_ENV = 'SCALABLEVIT_TEST_PAUSE_BEFORE_SWAP'  # tests: seconds to wait just before the swap (signal tests)
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_NO_EXCHANGE = (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP)


def checked_int(value: Any, what: str, lo: int = 1, hi: int = INT32_MAX) -> int:
    """``value`` when it is an integer (not a bool) in ``lo..hi``; else one error naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ScalableViTError(f'{what} must be an integer from {lo} to {hi}, got {value!r}')
    return value


def checked_fraction(value: Any, what: str, why: str = '') -> float:
    """A finite number in [0, 1) (a probability threshold that some probability can pass)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 <= value < 1:
        raise ScalableViTError(f'{what} must be a number from 0 to below 1{why}, got {value!r}')
    return float(value) + 0.0  # -0.0 -> 0.0


def warn_untrained(dep: Any, tool: str) -> bool:
    """Log a WARNING when the bundle behind ``dep`` holds random weights; returns the manifest's untrained flag."""
    untrained = dep.bundle.untrained
    if untrained:
        logger.warning('%s: bundle %s has UNTRAINED (random) weights: its answers mean nothing; exporting it '
                       'anyway, marked untrained', tool, dep.bundle.path)
    return untrained


def write_export_dir(final: Path, tool: str, fill: Callable[[Path], None], record: Dict[str, Any]) -> None:
    """Make ``final`` with ``fill(staging)`` plus the marker (``record`` + the list of files and their sha256), then
    swap it in."""
    final = _destination(Path(os.path.abspath(final)))  # a name of its own, also for '.' or 'out/..'
    _check_replaceable(final, tool)
    _sweep_stale(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f'.{final.name}.export-{os.getpid()}-', dir=final.parent))
    except OSError as e:
        raise write_error(final.parent, e, f'a staging folder for {final.name}') from e
    try:
        fill(staging)
        files = _listing(staging)
        write_json(staging / MARKER, {'tool': tool, 'files': files, 'sha256': _hashes(staging, files), **record})
        staging.chmod(0o755)
        _pause_for_tests()
        _swap(staging, final)
    finally:
        _remove(staging)


def _listing(folder: Path) -> List[str]:
    """Every path under ``folder``, relative, folders with a trailing '/', sorted; links are listed, not followed."""
    found = []
    for top, dirs, files in os.walk(folder):
        rel = Path(top).relative_to(folder)
        found += [(rel / d).as_posix() + ('' if (Path(top) / d).is_symlink() else '/') for d in dirs]
        found += [(rel / f).as_posix() for f in files]
    return sorted(found)


def _hashes(folder: Path, files: List[str]) -> Dict[str, str]:
    """The sha256 of every file of ``files`` (folders, with their trailing '/', have none)."""
    try:
        return {f: sha256_file(folder / f) for f in files if not f.endswith('/')}
    except OSError as e:
        raise write_error(folder, e, f'{MARKER} (hashing what was written)') from e


def _changed(folder: Path, hashes: Dict[str, str]) -> List[str]:
    """The files of ``hashes`` that are no longer the regular files with those contents (edited, replaced by a
    link or a folder); a file that is gone is not listed: nothing of anyone's would be lost with it."""
    changed = []
    for name, expected in sorted(hashes.items()):
        path = folder / name
        if not os.path.lexists(path):
            continue
        if path.is_symlink() or not path.is_file() or _sha256_or_none(path) != expected:
            changed.append(name)
    return changed


def _sha256_or_none(path: Path) -> Optional[str]:
    try:
        return sha256_file(path)
    except OSError:
        return None  # unreadable now: it is not the file that was written, as far as anyone can tell


def _shown(paths: List[str]) -> str:
    """The paths for a message: a folder stands for what it holds; at most four, then a count."""
    top = [p for p in paths if not any(p != d and p.startswith(d) for d in paths if d.endswith('/'))]
    more = f' and {len(top) - 4} more' if len(top) > 4 else ''
    return ', '.join(top[:4]) + more


def _destination(final: Path) -> Path:
    """Where the folder goes: ``final``, or the folder a link at ``final`` leads to (links are followed, as the
    image walker follows them; a chain or a loop is resolved by ``realpath``, which ends). Refused in one line: a
    file at ``final`` or on the way to it, and a link that leads nowhere."""
    _check_parents(final)
    if not final.is_symlink():
        if final.exists() and not final.is_dir():
            raise ScalableViTError(f'{final} is {_kind(final)}, not a folder: choose another destination')
        return final
    target = Path(os.path.realpath(final))
    if not target.is_dir():
        what = _kind(target) if target.exists() else 'a loop of links' if target.is_symlink() else 'missing'
        raise ScalableViTError(f'{final} is a symbolic link to {target}, which is {what}, not a folder: choose '
                               'another destination or remove the link')
    logger.info('%s is a link to %s: the export replaces that folder and keeps the link', final, target)
    return target


def _check_parents(final: Path) -> None:
    """Refuse a path whose nearest existing parent is not a folder (``--repo FILE``), naming that parent."""
    parent = final.parent
    while not os.path.lexists(parent) and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ScalableViTError(f'{parent} is {_kind(parent)}, not a folder: cannot make {final} in it; choose '
                               'another destination')


def _kind(path: Path) -> str:
    """What a path that is not a folder is, for a message."""
    if path.is_file():
        return 'a file'
    return 'a link to nothing' if path.is_symlink() else 'a special file'


def _check_replaceable(final: Path, tool: str) -> None:
    """Refuse a destination that holds anything ``tool`` did not write there, or a file of its own since edited."""
    contents = _listing(final) if final.exists() else []
    if not contents:
        return
    marker = read_json(final / MARKER) if (final / MARKER).is_file() else None
    files = marker.get('files') if isinstance(marker, dict) and marker.get('tool') == tool else None
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise ScalableViTError(f'{final} was not written by {tool} (it holds {_shown(contents)}): choose another '
                               'destination or move it away; nothing was changed')
    extra = [p for p in contents if p != MARKER and p not in set(files)]
    if extra:
        raise ScalableViTError(f'{final} holds what {tool} did not write ({_shown(extra)}): move it away first; '
                               'nothing was changed')
    hashes = marker.get('sha256')
    if not isinstance(hashes, dict) or set(hashes) != {f for f in files if not f.endswith('/')} \
            or not all(isinstance(h, str) for h in hashes.values()):
        raise ScalableViTError(f'{final / MARKER} records no sha256 of the files {tool} wrote (an older export), so '
                               'edits to them cannot be ruled out: move the folder away first; nothing was changed')
    changed = _changed(final, hashes)
    if changed:
        raise ScalableViTError(f'{final} holds files changed since {tool} wrote them ({_shown(changed)}): move them '
                               'away first; nothing was changed')


def _sweep_stale(final: Path) -> None:
    """Remove staging folders left beside ``final`` by a process that no longer runs (SIGKILL)."""
    prefix = f'.{final.name}.export-'
    if not final.parent.is_dir():
        return
    for path in final.parent.iterdir():
        pid = path.name[len(prefix):].split('-')[0] if path.name.startswith(prefix) else ''
        if pid.isdigit() and path.is_dir() and not _alive(int(pid)):
            logger.info('removing %s, left by an interrupted export (process %s)', path, pid)
            _remove(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path) -> None:
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        logger.warning('could not remove %s: %s', path, e.strerror)


def _pause_for_tests() -> None:
    seconds = os.environ.get(PAUSE_ENV)
    if seconds:
        print(f'paused before swap ({PAUSE_ENV})', file=sys.stderr, flush=True)
        time.sleep(float(seconds))


def _swap(staging: Path, final: Path) -> None:
    """Put ``staging`` at ``final`` in one step; afterwards ``staging`` holds the old folder (if there was one)."""
    try:
        if not final.exists():
            os.rename(staging, final)  # refuses (ENOTEMPTY/EEXIST) a folder that appeared meanwhile
        elif not _exchange(staging, final):
            _two_renames(staging, final)
    except OSError as e:
        raise write_error(final.parent, e, f'{final.name} (the new folder was not swapped in)') from e


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths (renameat2 RENAME_EXCHANGE); False where the system has no such call."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), 'renameat2', None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in _NO_EXCHANGE:
        return False
    raise OSError(err, os.strerror(err), str(b))


def _two_renames(staging: Path, final: Path) -> None:
    """The fallback: final -> aside, staging -> final, aside -> staging, with SIGINT/SIGTERM held back."""
    aside = staging.with_name(staging.name + '-old')
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        os.rename(final, aside)
        try:
            os.rename(staging, final)
        except OSError:
            os.rename(aside, final)
            raise
        os.rename(aside, staging)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
