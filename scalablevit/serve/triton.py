"""Triton Inference Server: a model repository entry from a bundle (ONNX Runtime backend) or an engine (TensorRT).

Layout (Triton "Model Repository")::

    <repo>/<name>/config.pbtxt
    <repo>/<name>/labels.txt          one class name per line (Triton's label provider reads lines)
    <repo>/<name>/1/model.onnx        a bundle: its deployed ONNX, served by the onnxruntime backend
    <repo>/<name>/1/model.plan        an engine: served by the tensorrt backend
    <repo>/<name>/scalablevit-export.json   what the export wrote and each file's sha256 (its ownership mark),
                                            from what, untrained

The config (``ModelConfig`` in text format): ``max_batch_size`` is the engine profile's maximum, or the target's
for ONNX; ``dims`` exclude the batch dimension (Triton prepends -1 when max_batch_size > 0); inputs and outputs
take the bundle's names, shapes and FP32 type (our ONNX and engines keep FP32 IO at every precision); the output
names the labels file; ``dynamic_batching`` is on, preferring the profile's optimal batch. An engine runs only on
the GPU it was built for and needs a profile starting at batch 1 (Triton sends any batch from 1 to
max_batch_size); ONNX instances are ``KIND_AUTO``: GPU where one is available, else CPU. Standard library only
(``parse_model_config``, the check with Triton's own schema, needs tritonclient and protobuf; the export re-parses
its config with it when installed). Every value is checked and every string escaped before it enters the text;
the entry folder is written by ``scalablevit.serve.exportdir`` (only over an entry of ours, swapped in whole).
"""
import logging
import re
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..core.errors import ScalableViTError
from ..core.fileio import PathLike, sha256_file, write_error, write_text
from .deployable import Deployable
from .exportdir import checked_int, warn_untrained, write_export_dir

logger = logging.getLogger(__name__)

__all__ = ['model_config_text', 'export_triton', 'parse_model_config', 'check_model_name']

LABELS = 'labels.txt'
VERSION = '1'
TOOL = 'export_triton'
# Triton takes the model name from the directory and requires config.pbtxt's name to match it; clients put it in
# URLs (/v2/models/<name>). Triton documents no character set, so ours is the portable one: letters, digits, '_',
# '-', '.', not starting with '.' (hidden; ours are staging folders), at most 128 characters.
MODEL_NAME = re.compile(r'[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}')


def check_model_name(name: Any) -> str:
    """``name`` when it is a usable Triton model (directory) name; else one error saying what is allowed."""
    if not isinstance(name, str) or not MODEL_NAME.fullmatch(name):
        raise ScalableViTError(f"model name {name!r} is not usable: use 1 to 128 letters, digits, '_', '-' or '.' "
                               "(not starting with '.')")
    return name


def _text(value: Any, what: str) -> str:
    """A string for the config, quoted and escaped (protobuf text format); control characters are refused."""
    if not isinstance(value, str) or not value or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ScalableViTError(f'{what} must be a non-empty string without control characters, got {value!r}')
    return '"' + value.replace('\\', '\\\\').replace('"', '\\"') + '"'


def _tensor(name: str, dims: List[int], what: str, labels: Optional[str] = None) -> str:
    extra = f'\n    label_filename: {_text(labels, "label file")}' if labels else ''
    dims = [checked_int(d, f'{what} dimension') for d in dims]
    return (f'  {{\n    name: {_text(name, f"{what} name")}\n    data_type: TYPE_FP32\n    dims: [ '
            f'{", ".join(map(str, dims))} ]{extra}\n  }}')


def model_config_text(name: str, backend: str, max_batch: int, preferred_batch: int, input_name: str,
                      chw: List[int], output_name: str, num_classes: int, notes: List[str] = ()) -> str:
    """config.pbtxt for one classifier (ModelConfig text format), from checked values only; ``notes`` become
    comment lines at the top."""
    platform = {'tensorrt': 'tensorrt_plan', 'onnxruntime': 'onnxruntime_onnx'}[backend]
    kind = 'KIND_GPU' if backend == 'tensorrt' else 'KIND_AUTO'
    max_batch = checked_int(max_batch, 'max_batch_size (the batch maximum)')
    preferred_batch = checked_int(preferred_batch, 'preferred batch (the batch optimum)', 1, max_batch)
    preferred = f'\n  preferred_batch_size: [ {preferred_batch} ]' if 1 < preferred_batch < max_batch else ''
    comments = [f'# {" ".join(n.split())}' for n in notes]
    return '\n'.join([
        *comments, f'name: {_text(check_model_name(name), "model name")}', f'platform: "{platform}"',
        f'backend: "{backend}"', f'max_batch_size: {max_batch}',
        f'input [\n{_tensor(input_name, chw, "input")}\n]',
        f'output [\n{_tensor(output_name, [num_classes], "output", LABELS)}\n]',
        f'dynamic_batching {{{preferred}\n}}',
        f'instance_group [\n  {{\n    kind: {kind}\n    count: 1\n  }}\n]', ''])


def _config_module() -> Any:
    """tritonclient's generated model_config_pb2 (Triton's own ModelConfig), or None when it is not installed.

    The module is loaded by file path: importing it through ``tritonclient.grpc`` would need grpcio.
    """
    import importlib.util
    try:
        if importlib.util.find_spec('google.protobuf') is None:  # model_config_pb2 needs it
            return None
        spec = importlib.util.find_spec('tritonclient')
    except ImportError:
        return None
    pb2 = Path(spec.origin).parent / 'grpc' / 'model_config_pb2.py' if spec and spec.origin else None
    if pb2 is None or not pb2.is_file():
        return None
    loader = importlib.util.spec_from_file_location('triton_model_config_pb2', pb2)
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    return module


def parse_model_config(text: str, module: Any = None) -> Any:
    """``text`` parsed as Triton's own ``inference.ModelConfig``; raises ScalableViTError when tritonclient is
    missing or the text does not parse."""
    module = module or _config_module()
    if module is None:
        raise ScalableViTError("tritonclient (with protobuf) is not installed: pip install -e '.[dev]' "
                               '(tritonclient==2.73.0)')
    from google.protobuf import text_format
    try:
        return text_format.Parse(text, module.ModelConfig())
    except text_format.ParseError as e:
        raise ScalableViTError(f'not a valid Triton model configuration: {e}') from e


def _reparse(text: str, expected: Dict[str, Any]) -> None:
    """Parse the config about to be written and compare it with the values it was built from."""
    module = _config_module()
    if module is None:
        logger.info('config.pbtxt not re-parsed: tritonclient is not installed (its values were checked)')
        return
    cfg = parse_model_config(text, module)
    got = {'name': cfg.name, 'max_batch_size': cfg.max_batch_size,
           'inputs': [(t.name, list(t.dims)) for t in cfg.input],
           'outputs': [(t.name, list(t.dims)) for t in cfg.output], 'instance_groups': len(cfg.instance_group)}
    if got != expected:
        raise ScalableViTError(f'the generated config.pbtxt does not say what it was built from ({got} != {expected})')


def _copy_verified(source: Path, dest: Path, sha256: str, what: str) -> None:
    """Copy ``source`` and hash the copy: what is served is what the manifest describes, or nothing."""
    try:
        shutil.copyfile(source, dest)
    except OSError as e:
        raise write_error(dest, e) from e
    actual = sha256_file(dest)
    if actual != sha256:
        raise ScalableViTError(f'{what} {source} does not match the sha256 in its manifest ({dest.stat().st_size} '
                               f'bytes, sha256 {actual[:12]}... != {str(sha256)[:12]}...): refusing a truncated or '
                               'modified file; rebuild it')


def _model_file(dep: Deployable) -> tuple:
    """(file to copy, its name in the bundle, manifest sha256, what) of the file to serve: the engine, else the
    bundle's deployed ONNX (copied from its verified private copy, recorded under its name in the bundle)."""
    if dep.engine is not None:
        return dep.engine, dep.engine, dep.engine_manifest.get('engine_sha256'), 'engine'
    path, entry = dep.bundle.deploy_onnx()
    return path, dep.bundle.path / entry['file'], entry['sha256'], 'ONNX'


def _output_name(dep: Deployable) -> Any:
    """The manifest's output name as written there (a list stays a list, and is refused by the config builder)."""
    output = dep.bundle.manifest.get('output')
    return output.get('name', 'logits') if isinstance(output, dict) else None


def _labels_text(labels: List[str]) -> str:
    """labels.txt: one class name per line (Triton's label provider reads lines), so no name may hold a newline."""
    bad = [n for n in labels if not isinstance(n, str) or '\n' in n or '\r' in n]
    if bad:
        raise ScalableViTError(f'class name {bad[0]!r} cannot be a line of labels.txt')
    return ''.join(f'{n}\n' for n in labels)


def export_triton(source: PathLike, repo: PathLike, name: Optional[str] = None, bundle: Optional[PathLike] = None,
                  target: Any = None) -> Dict[str, Any]:
    """Write ``<repo>/<name>/`` for a bundle (ONNX Runtime) or an engine (TensorRT); returns what was written.

    Every value of the config is checked and the text re-parsed before anything is written; the entry is made
    whole beside its place and swapped in (``scalablevit.serve.exportdir``), replacing only an entry of ours.
    """
    dep = Deployable.open(source, bundle)
    backend = 'tensorrt' if dep.engine is not None else 'onnxruntime'
    lo, opt, hi = dep.batch_range(target)
    if lo != 1:
        if dep.engine is not None:
            raise ScalableViTError(f'engine {dep.engine} accepts batches {lo}..{hi} only; Triton sends any batch '
                                   'from 1: build the engine with a profile starting at 1 (e.g. --batch 1 OPT MAX)')
        raise ScalableViTError(f'target batch range {lo}..{hi} does not start at 1, and Triton sends any batch from '
                               '1: use a target whose batch min is 1')
    if name is None:
        name = f'{dep.name}_{dep.precision}' + ('_trt' if backend == 'tensorrt' else '_onnx')
    check_model_name(name)
    untrained = warn_untrained(dep, TOOL)
    model_file, recorded, sha256, what = _model_file(dep)
    labels = dep.class_names
    num_classes = dep.bundle.manifest['output'].get('num_classes')
    if num_classes != len(labels):
        raise ScalableViTError(f'bundle {dep.bundle.path}: {len(labels)} class names for an output of '
                               f'{num_classes!r} classes; the labels file would not match the model')
    chw = list(dep.input_shape)
    notes = [f'Written by scalablevit-export-triton from {dep.engine or dep.bundle.path} ({dep.precision}).']
    if untrained:
        notes.append('UNTRAINED: random weights (the bundle manifest says untrained); answers mean nothing.')
    if dep.precision == 'fp8':  # FP8 lives inside the model; the IO stays FP32, which Triton's backends need
        notes.append('FP8 (E4M3) Q/DQ inside, FP32 IO: the TensorRT plan runs on GPUs of compute capability >= 8.9 '
                     'only; the ONNX was validated on the onnxruntime CPU provider (its CUDA provider is not checked).'
                     if backend == 'onnxruntime' else
                     'FP8 (E4M3) inside, FP32 IO (Triton\'s TensorRT backend takes no FP8 IO); runs only on the GPU '
                     'it was built for (compute capability >= 8.9).')
    config = model_config_text(name, backend, hi, opt, dep.input_name, chw, _output_name(dep), len(labels), notes)
    _reparse(config, {'name': name, 'max_batch_size': hi, 'inputs': [(dep.input_name, chw)],
                      'outputs': [(_output_name(dep), [len(labels)])], 'instance_groups': 1})
    served = 'model.plan' if backend == 'tensorrt' else 'model.onnx'

    def fill(tmp: Path) -> None:
        (tmp / VERSION).mkdir()
        _copy_verified(model_file, tmp / VERSION / served, sha256, what)
        write_text(tmp / 'config.pbtxt', config)
        write_text(tmp / LABELS, _labels_text(labels))
    record = {'repository': str(repo), 'name': name, 'backend': backend, 'model_file': str(recorded),
              'precision': dep.precision, 'max_batch_size': hi, 'source': str(source), 'untrained': untrained}
    write_export_dir(Path(repo) / name, TOOL, fill, record)
    logger.info('Triton model %s (%s, max batch %d) in %s', name, backend, hi, repo)
    return record
