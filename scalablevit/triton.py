"""Triton Inference Server: a model repository entry from a bundle (ONNX Runtime backend) or an engine (TensorRT).

Layout (Triton "Model Repository")::

    <repo>/<name>/config.pbtxt
    <repo>/<name>/labels.txt          one class name per line (Triton's label provider reads lines)
    <repo>/<name>/1/model.onnx        a bundle: its deployed ONNX, served by the onnxruntime backend
    <repo>/<name>/1/model.plan        an engine: served by the tensorrt backend

The config (``ModelConfig`` in text format): ``max_batch_size`` is the engine profile's maximum, or the target's
for ONNX; ``dims`` exclude the batch dimension (Triton prepends -1 when max_batch_size > 0); inputs and outputs
take the bundle's names, shapes and FP32 type (our ONNX and engines keep FP32 IO at every precision); the output
names the labels file; ``dynamic_batching`` is on, preferring the profile's optimal batch. An engine runs only on
the GPU it was built for and needs a profile starting at batch 1 (Triton sends any batch from 1 to
max_batch_size); ONNX instances are ``KIND_AUTO``: GPU where one is available, else CPU. Standard library only
(``parse_model_config``, the check with Triton's own schema, needs tritonclient and protobuf).
"""
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from .deployable import Deployable
from .errors import ScalableViTError
from .fileio import PathLike, write_text

logger = logging.getLogger(__name__)

__all__ = ['model_config_text', 'export_triton', 'parse_model_config']

LABELS = 'labels.txt'
VERSION = '1'


def _tensor(name: str, dims: List[int], labels: Optional[str] = None) -> str:
    extra = f'\n    label_filename: "{labels}"' if labels else ''
    return (f'  {{\n    name: "{name}"\n    data_type: TYPE_FP32\n    dims: [ {", ".join(map(str, dims))} ]'
            f'{extra}\n  }}')


def model_config_text(name: str, backend: str, max_batch: int, preferred_batch: int, input_name: str,
                      chw: List[int], output_name: str, num_classes: int) -> str:
    """config.pbtxt for one classifier (ModelConfig text format)."""
    platform = {'tensorrt': 'tensorrt_plan', 'onnxruntime': 'onnxruntime_onnx'}[backend]
    kind = 'KIND_GPU' if backend == 'tensorrt' else 'KIND_AUTO'
    preferred = f'\n  preferred_batch_size: [ {preferred_batch} ]' if 1 < preferred_batch < max_batch else ''
    return '\n'.join([
        f'name: "{name}"', f'platform: "{platform}"', f'backend: "{backend}"', f'max_batch_size: {max_batch}',
        f'input [\n{_tensor(input_name, chw)}\n]',
        f'output [\n{_tensor(output_name, [num_classes], LABELS)}\n]',
        f'dynamic_batching {{{preferred}\n}}',
        f'instance_group [\n  {{\n    kind: {kind}\n    count: 1\n  }}\n]', ''])


def parse_model_config(text: str) -> Any:
    """``text`` parsed as Triton's own ``inference.ModelConfig`` (tritonclient's generated model_config_pb2).

    The module is loaded by file path: importing it through ``tritonclient.grpc`` would need grpcio. Raises
    ScalableViTError when tritonclient is missing or the text does not parse.
    """
    import importlib.util
    try:
        from google.protobuf import text_format
        spec = importlib.util.find_spec('tritonclient')
    except ImportError as e:
        raise ScalableViTError(f'protobuf is not installed ({e})') from e
    pb2 = Path(spec.origin).parent / 'grpc' / 'model_config_pb2.py' if spec and spec.origin else None
    if pb2 is None or not pb2.is_file():
        raise ScalableViTError("tritonclient is not installed: pip install -e '.[dev]' (tritonclient==2.73.0)")
    loader = importlib.util.spec_from_file_location('triton_model_config_pb2', pb2)
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    try:
        return text_format.Parse(text, module.ModelConfig())
    except text_format.ParseError as e:
        raise ScalableViTError(f'not a valid Triton model configuration: {e}') from e


def export_triton(source: PathLike, repo: PathLike, name: Optional[str] = None, bundle: Optional[PathLike] = None,
                  target: Any = None) -> Dict[str, Any]:
    """Write ``<repo>/<name>/`` for a bundle (ONNX Runtime) or an engine (TensorRT); returns what was written.

    The model directory is assembled beside its final place and renamed onto it, so a failure leaves nothing.
    """
    dep = Deployable.open(source, bundle)
    backend = 'tensorrt' if dep.engine is not None else 'onnxruntime'
    lo, opt, hi = dep.batch_range(target)
    if lo != 1:
        raise ScalableViTError(f'engine {dep.engine} accepts batches {lo}..{hi} only; Triton sends any batch from 1: '
                               'build the engine with a profile starting at 1 (e.g. --batch 1 OPT MAX)')
    name = name or f'{dep.name}_{dep.precision}' + ('_trt' if backend == 'tensorrt' else '_onnx')
    if not name or '/' in name or name.startswith('.'):
        raise ScalableViTError(f'model name {name!r} is not a directory name')
    model_file = dep.engine if dep.engine is not None else dep.onnx()
    labels = dep.class_names
    config = model_config_text(name, backend, hi, opt, dep.input_name, list(dep.input_shape), dep.output_name,
                               len(labels))
    final = Path(repo) / name

    def fill(tmp: Path) -> None:
        (tmp / VERSION).mkdir()
        shutil.copyfile(model_file, tmp / VERSION / ('model.plan' if backend == 'tensorrt' else 'model.onnx'))
        write_text(tmp / 'config.pbtxt', config)
        write_text(tmp / LABELS, ''.join(f'{n}\n' for n in labels))
    _replace_dir(final, fill)
    record = {'repository': str(repo), 'name': name, 'backend': backend, 'model_file': str(model_file),
              'precision': dep.precision, 'max_batch_size': hi, 'source': str(source)}
    logger.info('Triton model %s (%s, max batch %d) in %s', name, backend, hi, repo)
    return record


def _replace_dir(final: Path, fill: Callable[[Path], None]) -> None:
    """Build a directory beside ``final`` with ``fill`` and swap it in: readers see the old or the new one whole."""
    if final.exists() and not final.is_dir():
        raise ScalableViTError(f'{final} exists and is not a directory')
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f'.{final.name}.', dir=final.parent))
    except OSError as e:
        raise ScalableViTError(f'cannot write to {final.parent}: {e.strerror}') from e
    old = tmp.with_name(tmp.name + '.old')
    try:
        fill(tmp)
        tmp.chmod(0o755)
        if final.exists():
            final.rename(old)
        try:
            tmp.rename(final)
        except OSError:
            if old.exists():
                old.rename(final)  # put the previous version back
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
