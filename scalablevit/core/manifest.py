"""The bundle manifest's schema: one check of every field a reader uses, run on every read.

A manifest is plain JSON that anyone can edit, so every value a reader acts on is checked here before it is used:
types, ranges (finite numbers, sizes within what memory allows, 32-bit counts), names that are names (no paths),
hashes that are hashes, and consistency between fields (the deployed file is the precision's file, the recorded
preprocessing is the input's, the class count is the output's). ``check_manifest(..., complete=True)`` is what a
reader runs; a writer checks the earlier manifest it resumes from with ``complete=False`` (fields may be missing).
Fields not named here are free: a newer writer may add some. One ScalableViTError names the first fault.
"""
import json
import math
import re
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from .errors import ScalableViTError, unknown_choice

__all__ = ['PRECISIONS', 'STAGES', 'MAX_INPUT_SIDE', 'INTERPOLATIONS', 'LABEL_SETS', 'check_precision',
           'check_manifest', 'check_preprocessing']

PRECISIONS = ('fp32', 'fp16', 'int8', 'fp8')
SCHEMA = 1
STAGES = ('export', 'data', 'quantize')  # the host pipeline's stages, in order (fp32 has no quantize)
INPUT_NAME, OUTPUT_NAME = 'input', 'logits'  # fixed by the exporter (core.runners)
# Preprocessing bounds: a side beyond MAX_INPUT_SIDE (a 4096 px crop is 201 MB of float32 per image) or a resize
# beyond MAX_RESIZE_RATIO times the crop is no model's eval transform, only a way to exhaust memory. Means and
# stds are statistics of 0..1 pixels; a std below MIN_STD would scale a pixel past float32's range.
MAX_INPUT_SIDE = 4096
MAX_RESIZE_RATIO = 4
INTERPOLATIONS = ('bicubic', 'bilinear', 'nearest')
MIN_STD = 1e-3
MAX_CLASSES = 100_000  # ImageNet-21k has 21,841: a count beyond this is no classifier's
LABEL_SETS = {'imagenet-1k': 1000, 'fashion-mnist': 10}  # the class-name sets models.labels knows, and their size
OPSETS = (7, 30)
MAX_SAMPLES = 10_000_000
_NAME = re.compile(r'[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}')  # a model or target name: never a path
_SHA256 = re.compile(r'[0-9a-f]{64}')

_JSON_TYPES = {dict: 'an object', list: 'an array', str: 'a string', int: 'an integer', float: 'a number',
               bool: 'true or false', type(None): 'null'}
_FILE_ENTRY = {'file': str, 'sha256': str}
# field -> expected type(s), wherever it appears
_SCHEMA: Dict[str, Tuple[type, ...]] = {
    'schema': (int,), 'model': (str,), 'precision': (str,), 'untrained': (bool,), 'weights': (dict, type(None)),
    'input': (dict,), 'output': (dict,), 'opset': (int,), 'deploy_onnx': (str,), 'gmacs': (int, float),
    'target': (str,), 'tools': (dict,), 'onnx': (dict,), 'stages': (dict,), 'calibration': (dict,),
    'reference': (dict,), 'quantization': (dict,), 'validation': (dict,), 'census': (dict,),
    'latency_estimate': (dict,)}
_PARTS = {'input': {'name': str, 'shape': list}, 'output': {'name': str, 'num_classes': int},
          'reference': _FILE_ENTRY, 'calibration': _FILE_ENTRY}
# What a reader needs; the host pipeline writes more.
_REQUIRED = ('model', 'precision', 'untrained', 'deploy_onnx', 'onnx', 'input', 'output', 'reference')


def check_precision(value: str, what: str = 'precision') -> str:
    if value not in PRECISIONS:
        raise unknown_choice(what, value, PRECISIONS)
    return value


def check_manifest(manifest: Any, where: str, complete: bool) -> None:
    """``manifest`` against the schema; ``complete``: a reader's check (every required field, a finished build)."""
    if not isinstance(manifest, dict):
        raise ScalableViTError(f'{where}: not a bundle manifest (a JSON object is expected, got '
                               f'{_json_type(manifest)})')
    for field, types in _SCHEMA.items():
        if field in manifest and not _is_type(manifest[field], types):
            raise ScalableViTError(f"{where}: field '{field}' must be {' or '.join(_JSON_TYPES[t] for t in types)}, "
                                   f'got {_show(manifest[field])}')
    if complete:
        _check_finished(manifest, where)
        missing = [k for k in _REQUIRED if k not in manifest]
        if missing:
            raise ScalableViTError(f"{where} is missing {', '.join(repr(k) for k in missing)}")
    if manifest.get('schema', SCHEMA) > SCHEMA:
        raise ScalableViTError(f"{where}: schema {manifest['schema']} is newer than this scalablevit reads "
                               f'({SCHEMA}): update the package')
    if 'precision' in manifest:
        check_precision(manifest['precision'], f'precision in {where}')
    _check_scalars(manifest, where)
    for part, fields in _PARTS.items():
        if part in manifest:
            _require(manifest[part], fields, f"{where} '{part}'")
    _check_files(manifest, where)
    for name, stage in manifest.get('stages', {}).items():
        _require(stage, {'key': str, 'outputs': dict}, f"{where} stage '{name}'")
    if complete:
        _check_deployed(manifest, where)
        _check_input(manifest, where)


def _check_scalars(manifest: Dict[str, Any], where: str) -> None:
    """Names are names, counts are in range, numbers are finite."""
    for field in ('model', 'target'):
        if field in manifest and not _NAME.fullmatch(manifest[field]):
            raise ScalableViTError(f"{where}: {field} must be a name (letters, digits, '_', '.', '-'), not a path: "
                                   f'got {_show(manifest[field])}')
    if 'opset' in manifest:
        _in_range(manifest['opset'], *OPSETS, f'{where}: opset')
    if 'gmacs' in manifest and not (math.isfinite(manifest['gmacs']) and manifest['gmacs'] > 0):
        raise ScalableViTError(f"{where}: gmacs must be a finite positive number, got {_show(manifest['gmacs'])}")
    weights = manifest.get('weights')
    if weights is not None:
        _require(weights, _FILE_ENTRY, f"{where} 'weights'")
        _check_sha(weights['sha256'], f"{where} 'weights'")
    if 'reference' in manifest and 'samples' in manifest['reference']:
        _in_range(manifest['reference']['samples'], 1, MAX_SAMPLES, f'{where} reference.samples')


def _check_files(manifest: Dict[str, Any], where: str) -> None:
    """Every file entry names a plain file inside the bundle, with a sha256 and a sane opset."""
    entries = [(f"{where} onnx entry '{k}'", v) for k, v in manifest.get('onnx', {}).items()]
    entries += [(f"{where} '{part}'", manifest[part]) for part in ('reference', 'calibration') if part in manifest]
    for what, entry in entries:
        _require(entry, _FILE_ENTRY, what)
        if Path(entry['file']).name != entry['file'] or entry['file'] in ('', '.', '..'):
            raise ScalableViTError(f"{what}: file '{entry['file']}' must be a plain name inside the bundle")
        _check_sha(entry['sha256'], what)
        if 'opset' in entry:
            _in_range(entry['opset'], *OPSETS, f'{what} opset')


def _check_finished(manifest: Dict[str, Any], where: str) -> None:
    """A manifest whose stages stop short of its precision's, or whose validation never finished, is an unfinished
    build: say so, naming the step. (Bundles not made by the host pipeline, such as the self-test's, record no
    stages.)"""
    done = manifest.get('stages') or {}
    if not done:
        return
    needed = STAGES if manifest.get('precision', 'fp32') != 'fp32' else STAGES[:2]
    absent = [s for s in needed if s not in done] + ([] if 'validation' in manifest else ['validate'])
    if absent:
        raise ScalableViTError(f"{where}: the build did not finish (stage '{absent[0]}' never completed; "
                               f"finished: {', '.join(s for s in needed if s in done) or 'none'}): rerun the host "
                               'build for this bundle')


def _check_deployed(manifest: Dict[str, Any], where: str) -> None:
    """The deployed ONNX is the entry of the bundle's precision, and each entry is that precision's file."""
    for precision, entry in manifest['onnx'].items():
        check_precision(precision, f"onnx entry in {where}")
        if entry['file'] != f'model.{precision}.onnx':
            raise ScalableViTError(f"{where}: onnx entry '{precision}' points at '{entry['file']}', not "
                                   f"'model.{precision}.onnx': refusing a manifest that mislabels a file")
    entry = manifest['onnx'].get(manifest['precision'])
    if entry is None or manifest['deploy_onnx'] != entry['file']:
        raise ScalableViTError(f"{where}: an {manifest['precision']} bundle must deploy "
                               f"'model.{manifest['precision']}.onnx' from its onnx entry, not "
                               f"'{manifest['deploy_onnx']}'")


def _check_input(manifest: Dict[str, Any], where: str) -> None:
    """input is 'input' [null, 3, S, S], output 'logits' with 1..MAX_CLASSES classes, and input.preprocessing
    (when recorded) agrees with both."""
    entry, output = manifest['input'], manifest['output']
    if entry['name'] != INPUT_NAME or output['name'] != OUTPUT_NAME:
        raise ScalableViTError(f"{where}: the model's tensors are '{INPUT_NAME}' and '{OUTPUT_NAME}', the manifest "
                               f"names {_show(entry['name'])} and {_show(output['name'])}")
    shape = entry['shape']
    if (len(shape) != 4 or shape[0] is not None or shape[1] != 3 or not all(_is_int(v) for v in shape[1:])
            or shape[2] != shape[3] or not 1 <= shape[2] <= MAX_INPUT_SIDE):
        raise ScalableViTError(f'{where}: input.shape must be [null, 3, S, S] with S in 1..{MAX_INPUT_SIDE} '
                               f'(got {_show(shape)})')
    _in_range(output['num_classes'], 1, MAX_CLASSES, f'{where} output.num_classes')
    if 'preprocessing' in entry:
        check_preprocessing(entry['preprocessing'], f'{where} input.preprocessing', shape[2], output['num_classes'])


def check_preprocessing(cfg: Any, where: str, side: Optional[int] = None,
                        num_classes: Optional[int] = None) -> Dict[str, Any]:
    """``cfg`` as ``data.transforms.preprocess`` needs it: input_size [3, S, S] (S = ``side`` when given), an integer
    resize from S to MAX_RESIZE_RATIO * S, a known interpolation, three means in [0, 1] and three stds in
    [MIN_STD, 1]; ``normalize_in_model`` true or false; ``num_classes`` (= ``num_classes`` when given) and
    ``labels`` (a known class-name set of that size, or null) when present."""
    _require(cfg, {'input_size': list, 'resize': int, 'interpolation': str, 'mean': list, 'std': list}, where)
    size = cfg['input_size']
    if (len(size) != 3 or size[0] != 3 or not all(_is_int(v) for v in size) or size[1] != size[2]
            or not 1 <= size[2] <= MAX_INPUT_SIDE or (side is not None and size[2] != side)):
        raise ScalableViTError(f"{where}: input_size must be [3, S, S] with S in 1..{MAX_INPUT_SIDE}"
                               f"{f' and S = {side} (the input shape)' if side is not None else ''}, "
                               f'got {_show(size)}')
    crop = size[2]
    if not _is_int(cfg['resize']) or not crop <= cfg['resize'] <= MAX_RESIZE_RATIO * crop:
        raise ScalableViTError(f"{where}: resize must be an integer from the crop ({crop}) to "
                               f"{MAX_RESIZE_RATIO * crop}, got {_show(cfg['resize'])}")
    if cfg['interpolation'] not in INTERPOLATIONS:
        raise unknown_choice(f'interpolation in {where}', cfg['interpolation'], INTERPOLATIONS)
    for field, low, high, above in (('mean', 0.0, 1.0, ''), ('std', MIN_STD, 1.0, ', each above 0')):
        values = cfg[field]
        if len(values) != 3 or not all(_is_number(v) and low <= v <= high for v in values):
            raise ScalableViTError(f'{where}: {field} must be three finite numbers{above}, in [{low:g}, {high:g}] '
                                   f'(statistics of 0..1 pixels), got {_show(values)}')
    if 'normalize_in_model' in cfg and not isinstance(cfg['normalize_in_model'], bool):
        raise ScalableViTError(f"{where}: normalize_in_model must be true or false, got "
                               f"{_show(cfg['normalize_in_model'])}")
    _check_classes(cfg, where, num_classes)
    return cfg


def _check_classes(cfg: Dict[str, Any], where: str, num_classes: Optional[int]) -> None:
    if 'num_classes' in cfg:
        _in_range(cfg['num_classes'], 1, MAX_CLASSES, f'{where} num_classes')
        if num_classes is not None and cfg['num_classes'] != num_classes:
            raise ScalableViTError(f"{where}: num_classes {cfg['num_classes']} is not the output's {num_classes}")
    labels = cfg.get('labels')
    if labels is None:
        return
    if not isinstance(labels, str) or labels not in LABEL_SETS:
        raise ScalableViTError(f"{where}: labels must be one of {', '.join(LABEL_SETS)} or null, got {_show(labels)}")
    count = cfg.get('num_classes', num_classes)
    if count is not None and LABEL_SETS[labels] != count:
        raise ScalableViTError(f'{where}: labels {labels} name {LABEL_SETS[labels]} classes, the model has {count}')


def _check_sha(value: str, what: str) -> None:
    if not _SHA256.fullmatch(value):
        raise ScalableViTError(f'{what}: sha256 must be 64 lowercase hex digits, got {_show(value)}')


def _in_range(value: Any, low: int, high: int, what: str) -> None:
    if not _is_int(value) or not low <= value <= high:
        raise ScalableViTError(f'{what} must be an integer in {low}..{high}, got {_show(value)}')


def _is_type(value: Any, types: Tuple[type, ...]) -> bool:
    """isinstance, except that true/false is no number and a number must be finite."""
    if isinstance(value, bool) and bool not in types:
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return isinstance(value, types)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    return json.dumps(value)[:60]


def _require(mapping: Any, fields: Dict[str, Any], what: str) -> None:
    """``mapping`` must be a dict holding ``fields`` (name -> expected type)."""
    if not isinstance(mapping, dict):
        raise ScalableViTError(f'{what} is not a JSON object')
    missing = [k for k in fields if k not in mapping]
    if missing:
        raise ScalableViTError(f"{what} is missing {', '.join(repr(k) for k in missing)}")
    wrong = [k for k, t in fields.items() if not _is_type(mapping[k], (t,))]
    if wrong:
        raise ScalableViTError(f"{what}: field {wrong[0]!r} must be {_json_type_name(fields[wrong[0]])}, "
                               f"got {_show(mapping[wrong[0]])}")


def _json_type_name(t: type) -> str:
    return _JSON_TYPES.get(t, t.__name__)
