"""What the deployment tools start from: a bundle, or one of its TensorRT engines (which names its bundle).

``predict``, ``deepstream`` and ``triton`` need the same facts about either: the preprocessing the model
expects (the manifest's ``input.preprocessing``, which says when the normalization is folded in), the class
names, the IO names and shapes, the precision and the batch range. An engine is accepted only with the bundle
it was built from (its manifest's ONNX sha256 must be one of the bundle's): preprocessing and labels are
facts of the bundle, not of the engine file. Needs neither torch, onnx nor tensorrt.
"""
import dataclasses
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..core.bundle import ENGINE_SUFFIXES, MANIFEST, Bundle, verify_engine
from ..core.errors import ScalableViTError
from ..core.fileio import PathLike

__all__ = ['Deployable', 'verify_engine']


@dataclasses.dataclass
class Deployable:
    """A bundle, optionally with one of its engines and that engine's manifest."""

    bundle: Bundle
    engine: Optional[Path] = None
    engine_manifest: Optional[Dict[str, Any]] = None

    @classmethod
    def open(cls, path: PathLike, bundle: Optional[PathLike] = None) -> 'Deployable':
        """A bundle directory, or an engine file (its bundle is ``bundle``, else the folder above ``engines/``)."""
        path = Path(path)
        if path.is_dir():
            return cls(Bundle.open(path))
        if path.suffix not in ENGINE_SUFFIXES:
            raise ScalableViTError(f'{path}: not a bundle directory or a TensorRT engine '
                                   f'({", ".join(ENGINE_SUFFIXES)})')
        if not path.is_file():
            raise ScalableViTError(f'{path}: engine file not found')
        from ..device.engine import read_engine_manifest
        manifest = read_engine_manifest(path)
        home = Path(bundle) if bundle else path.resolve().parent.parent
        if not (home / MANIFEST).is_file():
            raise ScalableViTError(f'engine {path} is not inside a bundle (<bundle>/engines/) and no bundle was '
                                   'given: pass --bundle, whose preprocessing and labels the engine needs')
        verify_engine(path, manifest)  # a truncated or replaced engine is refused now (and again at load)
        found = cls(Bundle.open(home), path, manifest)
        found.engine_onnx()  # refuses an engine of another bundle now
        return found

    # ------------------------------------------------------------------------------------------- facts
    @property
    def name(self) -> str:
        return self.bundle.model

    @property
    def precision(self) -> str:
        return str(self.engine_manifest['precision']) if self.engine_manifest else self.bundle.precision

    @property
    def data_cfg(self) -> Dict[str, Any]:
        """The preprocessing the model file expects (``scalablevit.data.transforms.preprocess`` takes it as it is)."""
        dcfg = self.bundle.manifest['input'].get('preprocessing')
        if dcfg is None:  # present ones were checked when the bundle was opened (core.manifest.check_preprocessing)
            raise ScalableViTError(f'{self.bundle.path / MANIFEST}: input.preprocessing is missing; rebuild the '
                                   'bundle with deploy/build_engine.py')
        return dcfg

    @property
    def class_names(self) -> List[str]:
        from ..models.labels import class_names
        return class_names(self.data_cfg)

    @property
    def input_name(self) -> str:
        return self.bundle.input_name

    @property
    def output_name(self) -> str:
        return str(self.bundle.manifest['output'].get('name', 'logits'))

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        return self.bundle.input_shape

    def engine_onnx(self) -> Tuple[str, Dict[str, Any]]:
        """(precision, manifest entry) of the bundle ONNX the engine was built from."""
        sha = (self.engine_manifest or {}).get('onnx', {}).get('sha256')
        for precision, entry in self.bundle.manifest['onnx'].items():
            if isinstance(entry, dict) and entry.get('sha256') == sha:
                return precision, entry
        raise ScalableViTError(f'engine {self.engine} was built from an ONNX (sha256 {str(sha)[:12]}...) that is not '
                               f'in bundle {self.bundle.path}: use the bundle it was built from')

    def onnx(self) -> Path:
        """The ONNX file behind the deployment (verified): the engine's source, else the bundle's deployed one."""
        if self.engine is None:
            return self.bundle.deploy_onnx()[0]
        _, entry = self.engine_onnx()
        return self.bundle.verified(entry['file'], entry['sha256'], 'ONNX')

    def batch_range(self, target: Any = None) -> Tuple[int, int, int]:
        """(min, opt, max) batch: the engine's optimization profile, else the target's (a name or Target)."""
        if self.engine_manifest:
            profile = self.engine_manifest.get('input', {}).get('profile') or {}
            try:
                return tuple(int(profile[k][0]) for k in ('min', 'opt', 'max'))
            except (KeyError, IndexError, TypeError, ValueError) as e:
                raise ScalableViTError(f'engine manifest of {self.engine}: no input.profile min/opt/max') from e
        from ..device.targets import load_target
        t = load_target(target or 'desktop')
        return t.batch_min, t.batch_opt, t.batch_max
