"""The bundle: one directory for one model and precision, described by ``manifest.json``. This module owns it.

Everything that writes a bundle (the host pipeline) or reads one (the device pipeline, the benchmarks) goes
through ``Bundle``: the manifest and its required fields, the stage cache, the one sha256 rule (a file belongs to
the bundle only while its sha256 is the one the manifest records), the one reader of ``reference.npz`` and the
one list of precisions. numpy only: a Jetson with TensorRT and no torch reads bundles too.

Layout (the host pipeline writes it; see README "The bundle")::

    manifest.json        model, precision, deploy_onnx, onnx{precision: file/sha256/opset}, input, output,
                         weights, calibration, reference, quantization, tools, stages{name: key/outputs/facts/seconds}
    model.fp32.onnx      always; model.int8.onnx or model.fp16.onnx for those precisions
    calibration.npz      INT8 calibration images (eval preprocessing applied)
    reference.npz        held-out 'input' images, PyTorch FP32 'logits', optional 'labels'
    report.json/.md      the deployed ONNX on onnxruntime against PyTorch FP32
    engines/             TensorRT engines, each with <engine>.json (its manifest) and <engine>.report.json/.md
"""
import hashlib
import json
import logging
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import ScalableViTError, unknown_choice
from .fileio import PathLike, read_json, sha256_file, write_json
from .steps import timed_step

logger = logging.getLogger(__name__)

__all__ = ['PRECISIONS', 'MANIFEST', 'ENGINE_SUFFIXES', 'check_precision', 'stage_key', 'Bundle']

PRECISIONS = ('fp32', 'fp16', 'int8')
MANIFEST = 'manifest.json'
SCHEMA = 1
ENGINE_SUFFIXES = ('.engine', '.plan')
# What a reader needs; the host pipeline writes more (see the module docstring).
_REQUIRED = {'model': str, 'precision': str, 'deploy_onnx': str, 'onnx': dict, 'input': dict, 'output': dict,
             'reference': dict}
_REQUIRED_PARTS = {'input': ('name', 'shape'), 'reference': ('file', 'sha256')}


def check_precision(value: str, what: str = 'precision') -> str:
    """``value`` when it is one of PRECISIONS, else an error suggesting the closest one."""
    if value not in PRECISIONS:
        raise unknown_choice(what, value, PRECISIONS)
    return value


def stage_key(*parts: Any) -> str:
    """The cache key of a stage: sha256 of everything it depends on, as canonical JSON."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _file_id(path: Path) -> Tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


class Bundle:
    """A bundle directory and its manifest.

    ``Bundle.create`` is the writer's door (the directory is made and checked writable, an earlier manifest is
    kept for stage reuse unless ``force``); ``Bundle.open`` is the reader's (the manifest must be complete).
    Hashes are computed once per file per process: a file this object hashed is not hashed again while its
    inode, size and modification time stay the same.
    """

    def __init__(self, path: PathLike, manifest: Dict[str, Any]):
        self.path = Path(path)
        self.manifest = manifest
        self.manifest.setdefault('stages', {})
        self.timings: Dict[str, Dict[str, Any]] = {}
        self._hashes: Dict[str, Tuple[Tuple[int, int, int], str]] = {}

    # ------------------------------------------------------------------------------------------- doors
    @classmethod
    def create(cls, path: PathLike, force: bool = False) -> 'Bundle':
        path = Path(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / '.write-probe'
            probe.write_bytes(b'')
            probe.unlink()
        except OSError as e:
            raise ScalableViTError(f'output directory {path} is not writable ({e.strerror})') from e
        manifest_path = path / MANIFEST
        manifest = read_json(manifest_path) if manifest_path.exists() and not force else {}
        if not isinstance(manifest, dict):
            raise ScalableViTError(f'{manifest_path}: not a bundle manifest (a JSON object is expected)')
        return cls(path, manifest)

    @classmethod
    def open(cls, path: PathLike) -> 'Bundle':
        path = Path(path)
        if not path.is_dir():
            raise ScalableViTError(f'{path}: bundle directory not found')
        manifest = read_json(path / MANIFEST)
        what = f'bundle manifest {path / MANIFEST}'
        _require(manifest, _REQUIRED, what)
        for part, keys in _REQUIRED_PARTS.items():
            _require(manifest[part], dict.fromkeys(keys, object), f"{what} '{part}'")
        check_precision(manifest['precision'], f'precision in {what}')
        return cls(path, manifest)

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
        """The weights the bundle was made from, when that file is on this machine."""
        file = (self.manifest.get('weights') or {}).get('file')
        return Path(file) if file and Path(file).is_file() else None

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

    def verified(self, name: str, sha256: str, what: str) -> Path:
        """The bundle file ``name``, refused when missing or when its sha256 is not the manifest's."""
        path = self.file(name)
        if not path.is_file():
            raise ScalableViTError(f'{path}: {what} file not found (listed in {MANIFEST})')
        actual = self.sha256(name)
        if actual != sha256:
            raise ScalableViTError(f'{what} {path} does not match the bundle manifest (sha256 {actual[:12]}... != '
                                   f'{sha256[:12]}...): refusing a modified or foreign file')
        return path

    def onnx_files(self) -> Dict[str, Path]:
        """Every ONNX the manifest lists, verified, by precision in PRECISIONS order."""
        entries = self.manifest['onnx']
        found = {}
        for precision in sorted(entries, key=lambda p: PRECISIONS.index(p) if p in PRECISIONS else len(PRECISIONS)):
            entry = entries[precision]
            _require(entry, {'file': str, 'sha256': str}, f"bundle {self.path} onnx entry '{precision}'")
            found[precision] = self.verified(entry['file'], entry['sha256'], 'ONNX')
        return found

    def deploy_onnx(self) -> Tuple[Path, Dict[str, Any]]:
        """The ONNX file the engine is built from (verified) and its manifest entry (sha256, opset)."""
        deploy = self.manifest['deploy_onnx']
        entries = [e for e in self.manifest['onnx'].values() if isinstance(e, dict) and e.get('file') == deploy]
        if not entries:
            raise ScalableViTError(f"bundle {self.path}: deploy_onnx '{deploy}' has no entry in the manifest's 'onnx'")
        _require(entries[0], {'sha256': str}, f"bundle {self.path} onnx entry '{deploy}'")
        return self.verified(deploy, entries[0]['sha256'], 'ONNX'), entries[0]

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
            facts = json.loads(json.dumps(work() or {}, default=str))
        self.manifest['stages'][name] = {'key': key, 'seconds': round(step['seconds'], 2),
                                         'peak_rss_mb': step['peak_rss_mb'],
                                         'outputs': {f: self.sha256(f) for f in outputs}, 'facts': facts}
        self.timings[name] = {'seconds': step['seconds'], 'reused': False, 'peak_rss_mb': step['peak_rss_mb']}
        self.save()
        return facts

    def output_sha256(self, stage: str, name: str) -> str:
        """The sha256 a finished stage recorded for its output ``name``."""
        return self.manifest['stages'][stage]['outputs'][name]

    def save(self) -> None:
        write_json(self.file(MANIFEST), self.manifest)


def _require(mapping: Any, fields: Dict[str, Any], what: str) -> None:
    """``mapping`` must be a dict holding ``fields`` (name -> expected type, ``object`` for any)."""
    if not isinstance(mapping, dict):
        raise ScalableViTError(f'{what} is not a JSON object')
    missing = [k for k in fields if k not in mapping]
    if missing:
        raise ScalableViTError(f"{what} is missing {', '.join(repr(k) for k in missing)}")
    wrong = [k for k, t in fields.items() if not isinstance(mapping[k], t)]
    if wrong:
        raise ScalableViTError(f"{what}: field {wrong[0]!r} must be {fields[wrong[0]].__name__}, "
                               f"got {json.dumps(mapping[wrong[0]])[:40]}")
