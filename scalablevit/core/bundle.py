"""The bundle: one directory for one model and precision, described by ``manifest.json``. This module owns it.

Everything that writes a bundle (the host pipeline) or reads one (the device pipeline, the benchmarks) goes
through ``Bundle``: the manifest and its required fields, the stage cache, the one sha256 rule (a file belongs to
the bundle only while its sha256 is the one the manifest records), the one reader of ``reference.npz`` and the
one list of precisions. numpy only: a Jetson with TensorRT and no torch reads bundles too.

What it guarantees (docs/reliability.md): a bundle is one model, precision and input size (a writer for
another one is refused, or starts it clean with ``force``); the manifest is checked against its schema (``core.manifest``) on
every read; a reader verifies every file the manifest lists before anything else; one writer at a time (an OS file
lock, ``fcntl.flock`` on ``.lock``); temporary work lives in ``.tmp/`` inside the bundle and is removed on
success, error and SIGINT/SIGTERM, and what a killed run left there (or as ``.*.tmp`` beside a file) is swept by
the next writer, who holds the lock and so knows no live run owns it.

Layout (the host pipeline writes it; see docs/pipeline.md, "The bundle")::

    manifest.json        model, precision, deploy_onnx, onnx{precision: file/sha256/opset}, input, output,
                         weights, calibration, reference, quantization, tools,
                         stages{name: key/outputs/facts/seconds/peak_rss_mb/parts}
    model.fp32.onnx      always; model.int8.onnx or model.fp16.onnx for those precisions
    calibration.npz      INT8 calibration images (eval preprocessing applied)
    reference.npz        held-out 'input' images, PyTorch FP32 'logits', optional 'labels'
    report.json/.md      the deployed ONNX on onnxruntime against PyTorch FP32
    engines/             TensorRT engines, each with <engine>.json (its manifest) and <engine>.report.json/.md
"""
import atexit
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .errors import ScalableViTError
from .fileio import TMP_PATTERN, PathLike, read_json, sha256_file, write_error, write_json
from .manifest import PRECISIONS, check_manifest
from .steps import timed_step

logger = logging.getLogger(__name__)

__all__ = ['MANIFEST', 'ENGINE_SUFFIXES', 'stage_key', 'verify_engine', 'Bundle']

MANIFEST = 'manifest.json'
ENGINE_SUFFIXES = ('.engine', '.plan')
LOCK = '.lock'
TEMP_DIR = '.tmp'
COPY_PREFIX = 'scalablevit-verified-'  # + pid: a reader's private verified copies, in the temp folder
# The names of the bundle layout: what starting a bundle clean removes (nothing else, whatever a manifest says).
LAYOUT_FILES = (MANIFEST, *(f'model.{p}.onnx' for p in PRECISIONS), 'calibration.npz', 'reference.npz',
                'report.json', 'report.md')
HASH_CACHE = '.cache/image-sha256.json'  # data.FileHashes of the source images (an accelerator)
LAYOUT_DIRS = ('engines', 'compare', 'deepstream', 'divergence', TEMP_DIR, '.cache')  # the tools' default outputs


def stage_key(*parts: Any) -> str:
    """The cache key of a stage: sha256 of everything it depends on, as canonical JSON."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _file_id(path: Path) -> Tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


class Bundle:
    """A bundle directory and its manifest.

    ``Bundle.create`` is the writer's door: the directory is made, locked for this process (``close`` or exit
    releases it), checked writable, swept of what dead runs left, and an earlier manifest of the same model,
    precision and input size is kept for stage reuse (``force`` starts the bundle clean instead).
    ``Bundle.open`` is the reader's: the manifest must be complete and every file it lists must carry its
    recorded sha256. Hashes are computed once per file per process: a file this object hashed is not hashed
    again while its inode, size and modification time stay the same.
    """

    def __init__(self, path: PathLike, manifest: Dict[str, Any]):
        self.path = Path(path)
        self.manifest = manifest
        self.manifest.setdefault('stages', {})
        self.timings: Dict[str, Dict[str, Any]] = {}
        self._hashes: Dict[str, Tuple[Tuple[int, int, int], str]] = {}
        self._lock_fd: Optional[int] = None
        self._shared = False  # the lock held is a reader's (LOCK_SH)
        self._copies: Dict[str, Path] = {}  # bundle file -> its verified private copy (``verified``)
        self._copy_dir: Optional[Path] = None
        self._made = False  # this writer made the directory: ``close`` removes it again while it holds nothing

    # ------------------------------------------------------------------------------------------- doors
    @classmethod
    def create(cls, path: PathLike, identity: Optional[Dict[str, Any]] = None, force: bool = False) -> 'Bundle':
        """The bundle at ``path`` for writing, locked. ``identity`` ({'model', 'precision', 'input_size'}) must
        match an existing manifest's, else the run is refused (``force``: the bundle is started clean)."""
        path = Path(path)
        made = not path.exists()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ScalableViTError(f'output directory {path} is not writable ({e.strerror})') from e
        bundle = cls(path, {})
        bundle._made = made
        bundle.lock()
        try:
            bundle._probe_writable()
            if force:
                bundle._clean()
            else:
                bundle.manifest = bundle._read_for_writer()
                bundle.manifest.setdefault('stages', {})
                if identity:
                    bundle._check_identity(identity)
        except BaseException:
            bundle.close()
            raise
        return bundle

    @classmethod
    def open(cls, path: PathLike) -> 'Bundle':
        """The bundle at ``path`` for reading: complete manifest, every listed file verified (sha256)."""
        path = Path(path)
        if not path.exists():
            raise ScalableViTError(f'{path}: bundle directory not found')
        if not path.is_dir():
            raise ScalableViTError(f'{path}: not a bundle directory (a regular file)')
        bundle = cls(path, {})
        bundle._share_lock()
        try:
            if (path / MANIFEST).is_symlink() and (path / MANIFEST).resolve().parent != path.resolve():
                raise ScalableViTError(f'{path / MANIFEST} is a link to {(path / MANIFEST).resolve()}, outside the '
                                       'bundle: refusing it')
            bundle.manifest = read_json(path / MANIFEST)
            check_manifest(bundle.manifest, f'bundle manifest {path / MANIFEST}', complete=True)
            bundle.verify()
        except BaseException:
            bundle.close()
            raise
        return bundle

    def close(self) -> None:
        """Release the lock, writer's or reader's, and remove the verified copies (idempotent)."""
        if self._lock_fd is not None:
            if self._made and {p.name for p in self.path.iterdir()} == {LOCK}:  # a run that wrote nothing
                (self.path / LOCK).unlink()
                with contextlib.suppress(OSError):
                    self.path.rmdir()
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None
            self._shared = False
        if self._copy_dir is not None:
            _remove_tree(self._copy_dir)
            self._copy_dir, self._copies = None, {}

    def __enter__(self) -> 'Bundle':
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------- writer's checks
    def lock(self) -> 'Bundle':
        """Take the writer's lock (``close`` releases it) and sweep what dead runs left; returns self.

        An exclusive, non-blocking ``flock`` on ``.lock``: one writer per bundle, the holder's pid in the file.
        The kernel drops the lock when the process ends however it ends, so a killed run never leaves it held.
        """
        if self._shared:  # a reader becoming the writer (device mode): flock cannot upgrade atomically
            self.close()
        if self._lock_fd is None:
            self._lock()
            self._sweep()
        return self

    def _share_lock(self) -> None:
        """Take a reader's lock: a shared ``flock`` on ``.lock``, held until ``close`` or exit, so no writer of this
        project replaces a file between its verification and its use. A writer at work refuses the read."""
        lock = self.path / LOCK
        try:
            fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError:
                logger.debug('%s: no %s and the folder is read-only: no writer can work here', self.path, LOCK)
                return
        except OSError as e:
            raise ScalableViTError(f'{lock}: cannot open the lock file ({e.strerror})') from e
        holder = _flock(fd, fcntl.LOCK_SH)
        if holder:
            raise ScalableViTError(f'{self.path} is being written by another run (pid {holder}): wait for it to '
                                   'finish')
        self._lock_fd, self._shared = fd, True

    def _lock(self) -> None:
        lock = self.path / LOCK
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise ScalableViTError(f'output directory {self.path} is not writable ({e.strerror})') from e
        holder = _flock(fd, fcntl.LOCK_EX)
        if holder:
            raise ScalableViTError(f'another run holds {self.path} (pid {holder}): wait for it to finish, '
                                   'or use another --out')
        self._lock_fd = fd
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f'{os.getpid()}\n'.encode(), 0)
        except OSError as e:
            self.close()
            raise write_error(lock, e) from e

    def _probe_writable(self) -> None:
        """Create and remove a uniquely named file: the directory takes new files (unique: no run collides)."""
        try:
            fd, probe = tempfile.mkstemp(prefix='.write-probe.', dir=self.path)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise ScalableViTError(f'output directory {self.path} is not writable ({e.strerror})') from e

    def _sweep(self) -> None:
        """Remove the temporary files of dead runs: safe, because holding the lock proves no live run owns them."""
        stale = [f for folder in (self.path, self.path / 'engines') if folder.is_dir()
                 for f in folder.glob(TMP_PATTERN) if f.is_file()]
        temp = self.path / TEMP_DIR
        if temp.is_symlink():  # work folders are made here: never inside what a link points at
            temp.unlink()
        stale_dirs = sorted(temp.iterdir()) if temp.is_dir() else []
        for f in stale:
            f.unlink(missing_ok=True)
        _remove_tree(temp)
        if stale or stale_dirs:
            logger.info('%s: removed %d temporary file(s) and %d work folder(s) left by an earlier run',
                        self.path, len(stale), len(stale_dirs))

    def _clean(self) -> None:
        """Start clean: remove the files and folders of the bundle layout (only those names, nothing else)."""
        removed = []
        for name in LAYOUT_FILES:  # the manifest first: a half-cleaned bundle never describes missing files
            if (self.path / name).is_file():
                (self.path / name).unlink()
                removed.append(name)
        for name in LAYOUT_DIRS:
            if (self.path / name).is_symlink():  # the link goes, never what it points at
                (self.path / name).unlink()
                removed.append(name)
            elif (self.path / name).is_dir():
                _remove_tree(self.path / name)
                removed.append(name + '/')
        if removed:
            logger.info('%s: started clean (--force), removed %s', self.path, ', '.join(removed))

    def _read_for_writer(self) -> Dict[str, Any]:
        """The earlier manifest (checked against the schema), or {} for a new bundle."""
        path = self.path / MANIFEST
        if not path.exists():
            return {}
        try:
            manifest = read_json(path)
            check_manifest(manifest, str(path), complete=False)
        except ScalableViTError as e:
            raise ScalableViTError(f'{e} (--force starts the bundle clean)') from e
        return manifest

    def identity(self) -> Dict[str, Any]:
        """What makes this bundle this bundle: model, precision and input size (None where not recorded)."""
        shape = (self.manifest.get('input') or {}).get('shape')
        size = shape[-1] if isinstance(shape, list) and shape else None
        return {'model': self.manifest.get('model'), 'precision': self.manifest.get('precision'), 'input_size': size}

    def _check_identity(self, identity: Dict[str, Any]) -> None:
        recorded = self.identity()
        if any(recorded.get(k) is not None and recorded[k] != v for k, v in identity.items()):
            raise ScalableViTError(f'{self.path} is a bundle of {_describe(recorded)}, this run makes '
                                   f'{_describe(identity)}: use another --out, or --force to start it clean')

    @contextlib.contextmanager
    def work_dir(self) -> Iterator[Path]:
        """This run's private temporary folder ``.tmp/run-<pid>`` inside the bundle, removed on exit however the
        run ends (success, error, SIGINT/SIGTERM raised as exceptions). While open it is ``tempfile``'s default
        folder, so temporary files of the libraries we call (modelopt, onnxruntime) land here too."""
        work = self.path / TEMP_DIR / f'run-{os.getpid()}'
        try:
            work.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise write_error(work, e) from e
        saved, tempfile.tempdir = tempfile.tempdir, str(work)
        try:
            yield work
        finally:
            tempfile.tempdir = saved
            _remove_tree(work)
            with contextlib.suppress(OSError):  # only succeeds when empty: another writer may come later
                (self.path / TEMP_DIR).rmdir()

    # ------------------------------------------------------------------------------------------- facts
    @property
    def model(self) -> str:
        return self.manifest['model']

    @property
    def precision(self) -> str:
        return self.manifest['precision']

    @property
    def untrained(self) -> bool:
        return bool(self.manifest.get('untrained', False))

    @property
    def input_name(self) -> str:
        return self.manifest['input']['name']

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        """(C, H, W) of the model input; the batch is dynamic."""
        shape = self.manifest['input']['shape']
        if not isinstance(shape, list) or len(shape) != 4 or not all(isinstance(s, int) for s in shape[1:]):
            raise ScalableViTError(f'{self.path / MANIFEST}: input.shape must be [null, C, H, W] (got {shape})')
        return tuple(shape[1:])

    @property
    def weights_file(self) -> Optional[Path]:
        """The weights the bundle was made from, when that file is on this machine (load it with
        ``weights_sha256``: the file may have changed since)."""
        file = (self.manifest.get('weights') or {}).get('file')
        return Path(file) if file and Path(file).is_file() else None

    @property
    def weights_sha256(self) -> Optional[str]:
        return (self.manifest.get('weights') or {}).get('sha256')

    def file(self, name: str) -> Path:
        return self.path / name

    # ------------------------------------------------------------------------------------------- verified files
    def sha256(self, name: str) -> str:
        """sha256 of the bundle file ``name``, computed once per process while the file is unchanged."""
        path = self.file(name)
        ident = _file_id(path)
        known = self._hashes.get(name)
        if known is None or known[0] != ident:
            known = (ident, sha256_file(path))
            self._hashes[name] = known
        return known[1]

    def check(self, name: str, sha256: str, what: str) -> Path:
        """The bundle file ``name`` as it is now, refused when missing, a link out of the bundle, or when its
        sha256 is not the manifest's. For a first check; what is loaded comes from ``verified``."""
        path = self._inside(name, what)
        _match(path, self.sha256(name), sha256, what)
        return path

    def verified(self, name: str, sha256: str, what: str) -> Path:
        """A private copy of the bundle file ``name`` whose bytes (the ones copied) carry the manifest's sha256:
        what a reader loads, so a file replaced after ``verify`` is refused instead of used. The copies live in
        a temporary folder of this process, removed by ``close`` or at exit (the paths outlive this object)."""
        source = self._inside(name, what)
        if name in self._copies:
            return self._copies[name]
        if self._copy_dir is None:
            _sweep_copies()
            self._copy_dir = Path(tempfile.mkdtemp(prefix=f'{COPY_PREFIX}{os.getpid()}-'))
            atexit.register(_remove_tree, self._copy_dir)  # not on garbage collection: callers keep paths
        copy = self._copy_dir / name
        digest = hashlib.sha256()
        try:
            with open(source, 'rb') as src, open(copy, 'wb') as dst:
                for block in iter(lambda: src.read(1 << 20), b''):
                    digest.update(block)
                    dst.write(block)
        except OSError as e:
            raise ScalableViTError(f'{what} {source}: cannot make a verified copy in {self._copy_dir} '
                                   f'({e.strerror})') from e
        _match(source, digest.hexdigest(), sha256, what)
        self._copies[name] = copy
        return copy

    def _inside(self, name: str, what: str) -> Path:
        """The bundle file ``name``: a regular file inside the bundle (a link may not lead out of it)."""
        path = self.file(name)
        if not path.is_file():
            raise ScalableViTError(f'{path}: {what} file not found (listed in {MANIFEST})')
        if path.resolve().parent != self.path.resolve():
            raise ScalableViTError(f'{what} {path} is a link to {path.resolve()}, outside the bundle: refusing it')
        return path

    def onnx_files(self) -> Dict[str, Path]:
        """Every ONNX the manifest lists, verified, by precision in PRECISIONS order."""
        entries = self.manifest['onnx']
        found = {}
        for precision in sorted(entries, key=lambda p: PRECISIONS.index(p) if p in PRECISIONS else len(PRECISIONS)):
            entry = entries[precision]
            found[precision] = self.verified(entry['file'], entry['sha256'], 'ONNX')
        return found

    def deploy_onnx(self) -> Tuple[Path, Dict[str, Any]]:
        """The ONNX file the engine is built from (a verified copy) and its manifest entry (sha256, opset)."""
        entry = self.manifest['onnx'][self.precision]  # the schema ties deploy_onnx to this entry
        return self.verified(entry['file'], entry['sha256'], 'ONNX'), entry

    def verify(self) -> 'Bundle':
        """Check every file the manifest lists (ONNX files, reference, calibration) against its sha256.

        Readers call this (``open``) before anything else, so a flipped byte or a missing file is refused before
        TensorRT is looked for or a benchmark starts; what they load later comes from ``verified`` copies.
        """
        for part, entry in [*self.manifest['onnx'].items(), *((p, self.manifest.get(p)) for p in
                                                               ('reference', 'calibration'))]:
            if entry is not None:
                self.check(entry['file'], entry['sha256'], 'ONNX' if part in PRECISIONS else part)
        return self

    def reference(self, samples: Optional[int] = None) -> Dict[str, np.ndarray]:
        """reference.npz, verified and checked against the contract: 'input' (N, C, H, W) float32,
        'logits' (N, classes), optional 'labels' (N,). ``samples`` keeps the first N images."""
        ref = self.manifest['reference']
        path = self.verified(ref['file'], ref['sha256'], 'reference')
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise ScalableViTError(f'{path}: not a readable .npz ({e})') from e
        missing = {'input', 'logits'} - set(arrays)
        if missing:
            raise ScalableViTError(f"reference {path} needs arrays 'input' and 'logits', has {sorted(arrays)}")
        x, logits = arrays['input'], arrays['logits']
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape or logits.ndim != 2 or len(logits) != len(x):
            raise ScalableViTError(f'{path}: input {x.shape} / logits {logits.shape} do not match the manifest input '
                                   f'[N, {", ".join(map(str, self.input_shape))}] and N rows of logits')
        if 'labels' in arrays and len(arrays['labels']) != len(x):
            raise ScalableViTError(f"{path}: {len(arrays['labels'])} labels for {len(x)} images")
        keep = slice(0, samples) if samples else slice(None)
        return {k: (v[keep].astype(np.float32) if k == 'input' else v[keep]) for k, v in arrays.items()}

    def engines(self) -> List[Path]:
        """The engine files under ``engines/``, sorted by name."""
        folder = self.path / 'engines'
        return sorted(f for f in folder.iterdir() if f.suffix in ENGINE_SUFFIXES) if folder.is_dir() else []

    # ------------------------------------------------------------------------------------------- stages
    def _finished(self, name: str, key: str) -> bool:
        done = self.manifest['stages'].get(name)
        if not isinstance(done, dict) or done.get('key') != key or not isinstance(done.get('outputs'), dict):
            return False
        return all(self.file(f).is_file() and self.sha256(f) == sha for f, sha in done['outputs'].items())

    def run_stage(self, name: str, key: str, outputs: Sequence[str],
                  work: Callable[[], Optional[Dict[str, Any]]]) -> Dict[str, Any]:
        """Run ``work`` unless a finished stage with the same key and intact outputs is recorded.

        ``work`` writes ``outputs`` (bundle file names) and may return facts (JSON-ready) kept in the stage
        record; the facts are returned, from the record when the stage is reused.
        """
        if self._finished(name, key):
            logger.info('%s: reusing finished stage (inputs unchanged)', name)
            self.timings[name] = {'seconds': 0.0, 'reused': True}
            return self.manifest['stages'][name].get('facts') or {}
        with timed_step(name, [self.file(f) for f in outputs]) as step:
            try:
                facts = json.loads(json.dumps(work() or {}, default=str))
            except OSError as e:  # a write of a library we called (ours are ScalableViTErrors already)
                if e.filename:
                    raise write_error(e.filename, e) from e
                folder = tempfile.gettempdir()  # where the libraries write: this run's work folder
                raise write_error(folder, e, f"the {name} stage's temporary files in {folder}") from e
        memory = {'peak_rss_mb': step['peak_rss_mb'], **({'parts': step['parts']} if 'parts' in step else {})}
        self.manifest['stages'][name] = {'key': key, 'seconds': round(step['seconds'], 2), **memory,
                                         'outputs': {f: self.sha256(f) for f in outputs}, 'facts': facts}
        self.timings[name] = {'seconds': step['seconds'], 'reused': False, **memory}
        self.save()
        return facts

    def output_sha256(self, stage: str, name: str) -> str:
        """The sha256 a finished stage recorded for its output ``name``."""
        return self.manifest['stages'][stage]['outputs'][name]

    def save(self) -> None:
        write_json(self.file(MANIFEST), self.manifest)


def _flock(fd: int, mode: int) -> Optional[str]:
    """Take ``flock`` ``mode`` on ``fd`` without waiting: None when taken, else (``fd`` closed) the pid the
    holder wrote into the lock file."""
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors='replace').strip() or 'unknown'
        os.close(fd)
        return holder


def verify_engine(engine: PathLike, manifest: Dict[str, Any]) -> bytes:
    """The bytes of the TensorRT engine file ``engine``, read once and checked against its manifest's
    ``engine_sha256``: load or copy these bytes, never the file again (it may be replaced meanwhile)."""
    path = Path(engine)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ScalableViTError(f'engine {path}: cannot read it ({e.strerror})') from e
    expected = manifest.get('engine_sha256')
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ScalableViTError(f'engine {path} does not match the engine_sha256 of its manifest ({actual[:12]}... != '
                               f'{str(expected)[:12]}..., {len(data):,} bytes): rebuild it')
    return data


def _match(path: Path, actual: str, expected: str, what: str) -> None:
    if actual != expected:
        raise ScalableViTError(f'{what} {path} does not match the bundle manifest (sha256 {actual[:12]}... != '
                               f'{expected[:12]}...): refusing a modified or foreign file')


def _sweep_copies() -> None:
    """Remove the verified copies of readers that died without cleaning up (SIGKILL): their folder names the pid."""
    for folder in Path(tempfile.gettempdir()).glob(f'{COPY_PREFIX}*'):
        pid = folder.name[len(COPY_PREFIX):].split('-', 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            _remove_tree(folder)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _describe(identity: Dict[str, Any]) -> str:
    return f"{identity.get('model')} {identity.get('precision')} at {identity.get('input_size')} px"


def _remove_tree(folder: Path) -> None:
    """``shutil.rmtree`` that logs, and does not raise, what it cannot remove (the next writer sweeps again)."""
    def warn(error: BaseException, path: str) -> None:
        if not isinstance(error, FileNotFoundError):
            logger.warning('could not remove %s: %s', path, error)
    if not folder.is_dir():
        return
    if sys.version_info >= (3, 12):
        shutil.rmtree(folder, onexc=lambda function, path, error: warn(error, path))
    else:
        shutil.rmtree(folder, onerror=lambda function, path, info: warn(info[1], path))
