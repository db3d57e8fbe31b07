"""Predict: images through any backend, with the preprocessing its model expects; top-k classes and probabilities.

A ``ModelSource`` says how to run one model and how to feed it:

* a bundle (``from_bundle``): its deployed ONNX on onnxruntime, the manifest's preprocessing;
* an engine (``from_engine``): TensorRT, the preprocessing of the bundle it was built from;
* an ONNX file (``from_onnx``): onnxruntime, the preprocessing its ``scalablevit.*`` metadata names (a folded
  export takes RGB 0-255);
* PyTorch weights (``from_weights``): the registered model's eval preprocessing.

Probabilities are the softmax of the logits (float64). Every image is decoded and checked before anything is
reported, so an unreadable file fails the run with one line naming it, never half a result.
"""
import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from ..core.bundle import ENGINE_SUFFIXES, MANIFEST
from ..core.errors import ScalableViTError
from ..core.fileio import PathLike
from ..core.runners import Runner

logger = logging.getLogger(__name__)

__all__ = ['ModelSource', 'from_bundle', 'from_engine', 'from_onnx', 'from_weights', 'image_files', 'predict',
           'softmax']

DEFAULT_BATCH = 32
CHUNK = 64  # images decoded at a time


@dataclasses.dataclass
class ModelSource:
    """How to run one model (an inactive Runner from ``make_runner``) and what it expects and returns."""

    backend: str
    precision: str
    file: Optional[Path]
    data_cfg: Dict[str, Any]
    class_names: List[str]
    make_runner: Callable[[], Runner]
    min_batch: int = 1
    max_batch: int = DEFAULT_BATCH

    def describe(self) -> Dict[str, Any]:
        from ..data.transforms import normalize_in_model
        return {'backend': self.backend, 'precision': self.precision, 'file': str(self.file) if self.file else None,
                'input': 'RGB 0-255 (normalization in the model)' if normalize_in_model(self.data_cfg)
                else 'normalized (mean/std)'}


# ------------------------------------------------------------------------------------------- sources
_KINDS = {'bundle': 'a bundle directory', 'engine': 'a TensorRT engine', 'onnx': 'an ONNX file',
          'weights': 'a weights file'}


def _kind(path: Path) -> str:
    if path.is_dir():
        return 'bundle'
    if path.suffix in ENGINE_SUFFIXES:
        return 'engine'
    return {'.onnx': 'onnx', '.pth': 'weights', '.pt': 'weights', '.safetensors': 'weights'}.get(path.suffix, '?')


def _expect(path: PathLike, kind: str) -> Path:
    """``path`` unless it is plainly another kind of model (then the flag it belongs to is named)."""
    path = Path(path)
    if not path.exists():
        raise ScalableViTError(f'{path}: not found')
    found = _kind(path)
    if found not in (kind, '?'):
        raise ScalableViTError(f'{path} is {_KINDS[found]}, not {_KINDS[kind]}: pass it with --{found}')
    return path


def from_bundle(bundle: PathLike) -> ModelSource:
    """The bundle's deployed ONNX (sha256-verified) on onnxruntime."""
    from ..host.runners import OnnxRuntimeRunner
    from .deployable import Deployable
    path = _expect(bundle, 'bundle')
    if not (path / MANIFEST).is_file():
        raise ScalableViTError(f'{path}: not a bundle (no {MANIFEST})')
    from ..host.export import check_bundle_onnx
    dep = _warn_untrained(Deployable.open(path))
    onnx, shown = dep.onnx(), dep.bundle.file(dep.bundle.manifest['deploy_onnx'])  # run the copy, name the file
    check_bundle_onnx(onnx, dep.bundle.manifest, shown)
    return ModelSource('onnxruntime', dep.precision, shown, dep.data_cfg, dep.class_names,
                       lambda: OnnxRuntimeRunner(str(onnx), name=f'onnxruntime-{dep.precision}'))


def from_engine(engine: PathLike, bundle: Optional[PathLike] = None) -> ModelSource:
    """A TensorRT engine of a bundle; its profile's batch range is respected."""
    from .deployable import Deployable
    dep = _warn_untrained(Deployable.open(_expect(engine, 'engine'), bundle))
    lo, _, hi = dep.batch_range()

    def runner() -> Runner:
        from ..device.trt_runner import TrtRunner
        return TrtRunner(dep.engine, name=f'tensorrt-{dep.precision}')
    return ModelSource('tensorrt', dep.precision, dep.engine, dep.data_cfg, dep.class_names, runner, lo, hi)


def _warn_untrained(dep: Any) -> Any:
    if dep.bundle.untrained:
        logger.warning('%s was built from untrained (random) weights: its classes and probabilities mean '
                       'nothing', dep.bundle.path)
    return dep


def from_onnx(onnx: PathLike, model: Optional[str] = None) -> ModelSource:
    """An exported ONNX; its metadata names the model (``model``, when given, must agree)."""
    from ..benchmarks.harness import file_precision
    from ..host.export import load_onnx, onnx_data_config, read_metadata
    from ..host.runners import OnnxRuntimeRunner
    from ..models.labels import class_names
    path = _expect(onnx, 'onnx')
    loaded = load_onnx(path)
    meta = read_metadata(loaded)
    if 'model' not in meta:
        raise ScalableViTError(f'{path}: not a ScalableViT export (no scalablevit.model metadata): its preprocessing '
                               'is unknown')
    if model is not None:
        from ..models.scalablevit import resolve_model_name
        if resolve_model_name(model) != meta['model']:
            raise ScalableViTError(f"{path} was exported from '{meta['model']}', not '{resolve_model_name(model)}'")
    dcfg = onnx_data_config(loaded, path)  # the graph's input side and class count, not the config's
    return ModelSource('onnxruntime', file_precision(path), path, dcfg, class_names(dcfg),
                       lambda: OnnxRuntimeRunner(str(path), name='onnxruntime'))


def from_weights(model: str, weights: Optional[PathLike] = None) -> ModelSource:
    """PyTorch FP32 on the CPU; without ``weights`` the weights shipped for ``model`` (random ones are refused)."""
    from ..host.runners import TorchRunner
    from ..models.labels import class_names
    from ..models.scalablevit import create_model, data_config, resolve_model_name
    name = resolve_model_name(model)
    from ..models.checkpoint import read_state_dict, shipped_weights
    weights = weights if weights is not None else shipped_weights(name)
    if weights is None:
        raise ScalableViTError(f'no weights for {name}: pass --weights (random weights predict nothing)')
    path = _expect(weights, 'weights')
    from ..models.scalablevit import class_config, head_classes
    carried = head_classes(read_state_dict(path), name, path)  # the checkpoint defines its head, and so the labels
    dcfg = class_config(data_config(name), carried if carried is not None else data_config(name)['num_classes'])
    return ModelSource('torch', 'fp32', path, dcfg, class_names(dcfg),
                       lambda: TorchRunner(lambda: create_model(name, weights=str(path)), name='torch-fp32'))


# ------------------------------------------------------------------------------------------- prediction
def image_files(paths: Sequence[PathLike]) -> List[Path]:
    """Image files given one by one or as folders (searched recursively), in the order given."""
    from ..data.images import find_images
    files: List[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += find_images(p)
        elif p.is_file():
            files.append(p)
        else:
            raise ScalableViTError(f'{p}: no such image file or folder')
    if not files:
        raise ScalableViTError('no images given')
    return files


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (stable: the row maximum is subtracted first)."""
    z = np.asarray(logits, np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _top(probs: np.ndarray, names: Sequence[str], k: int) -> List[Dict[str, Any]]:
    order = np.argsort(-probs, kind='stable')[:k]
    return [{'index': int(i), 'label': names[i], 'probability': float(probs[i])} for i in order]


def predict(source: ModelSource, files: Sequence[Path], top: int = 5) -> List[Dict[str, Any]]:
    """``[{'image', 'top': [{'index', 'label', 'probability'}, ...]}]`` for every file, in order."""
    from ..data.images import load_image
    from ..data.transforms import preprocess
    from ..device.pipeline import run_padded
    if top < 1:
        raise ScalableViTError(f'--top must be at least 1, got {top}')
    k = min(top, len(source.class_names))
    results: List[Dict[str, Any]] = []
    with source.make_runner() as runner:
        for start in range(0, len(files), CHUNK):
            chunk = files[start:start + CHUNK]
            images = np.stack([preprocess(load_image(f), source.data_cfg) for f in chunk])
            logits = run_padded(runner, images, source.min_batch, source.max_batch)
            if logits.shape[-1] != len(source.class_names):
                raise ScalableViTError(f'{source.file}: {logits.shape[-1]} outputs for {len(source.class_names)} '
                                       'class names')
            for f, p in zip(chunk, softmax(logits)):
                results.append({'image': str(f), 'top': _top(p, source.class_names, k)})
    return results
