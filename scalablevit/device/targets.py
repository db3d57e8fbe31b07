"""Deployment targets: the TensorRT build settings of ``scalablevit/targets/<name>.json`` or a user's JSON file.

A target says how to build (batch profile, workspace, optimization level, DLA core, TF32, version and
hardware compatibility); what a TensorRT release can do lives in ``compat``. Validated when loaded, so a bad
file fails with one line naming the field before any build starts. Standard library only.
"""
import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from ..core.compat import HARDWARE_COMPAT
from ..core.errors import ScalableViTError, unknown_choice
from ..core.fileio import PathLike, read_json

__all__ = ['Target', 'TARGETS_DIR', 'INT32_MAX', 'MAX_ENGINE_BATCH', 'MAX_WORKSPACE_MIB', 'checked_int', 'list_targets',
           'load_target', 'target_from_dict', 'check_engine_batch', 'dla_precision_problem',
           'target_precision_problem', 'check_target_precision']

TARGETS_DIR = Path(__file__).with_name('targets')
INT32_MAX = 2 ** 31 - 1  # TensorRT's dimensions, profile shapes and DLA core are 32-bit
# No deployment batches more: 4096 images of 224 px are 2.3 GiB of float32 input per call.
MAX_ENGINE_BATCH = 4096
MAX_WORKSPACE_MIB = 1 << 20  # 1 TiB: more than any GPU has

@dataclasses.dataclass(frozen=True)
class Target:
    """One deployment target: the build settings of ``scalablevit/targets/<name>.json``."""

    name: str
    workspace_mib: int
    batch_min: int
    batch_opt: int
    batch_max: int
    builder_optimization_level: int = 3
    dla_core: Optional[int] = None
    gpu_fallback: bool = True
    tf32: bool = False
    version_compatible: bool = False
    hardware_compatibility_level: str = 'none'
    reference_device: Optional[str] = None  # device_peaks.json key the cost estimate uses for this target
    notes: str = ''
    source: str = dataclasses.field(default='', compare=False)

    def settings(self) -> Dict[str, Any]:
        """The settings that change an engine (all but reference_device, notes and source), JSON-ready."""
        return {'name': self.name, 'workspace_mib': self.workspace_mib,
                'batch': {'min': self.batch_min, 'opt': self.batch_opt, 'max': self.batch_max},
                'builder_optimization_level': self.builder_optimization_level, 'dla_core': self.dla_core,
                'gpu_fallback': self.gpu_fallback, 'tf32': self.tf32, 'version_compatible': self.version_compatible,
                'hardware_compatibility_level': self.hardware_compatibility_level}


# field -> (accepted types, default or _REQUIRED); keys starting with '_' are comments
_REQUIRED = object()
_TARGET_FIELDS: Dict[str, Tuple[Tuple[type, ...], Any]] = {
    'name': ((str,), _REQUIRED),
    'workspace_mib': ((int,), _REQUIRED),
    'batch': ((dict,), _REQUIRED),
    'builder_optimization_level': ((int,), 3),
    'dla_core': ((int, type(None)), None),
    'gpu_fallback': ((bool,), True),
    'tf32': ((bool,), False),
    'version_compatible': ((bool,), False),
    'hardware_compatibility_level': ((str,), 'none'),
    'reference_device': ((str, type(None)), None),
    'notes': ((str,), ''),
}


def list_targets() -> List[str]:
    return sorted(p.stem for p in TARGETS_DIR.glob('*.json'))


def load_target(name_or_path: Union[str, PathLike, Target]) -> Target:
    """A registered target name (``list_targets()``) or the path of a target JSON file."""
    if isinstance(name_or_path, Target):
        return name_or_path
    text = str(name_or_path)
    if text.endswith('.json') or os.sep in text or '/' in text:
        path = Path(text)
        if not path.is_file():
            raise ScalableViTError(f'target file {path} not found')
        return target_from_dict(read_json(path), source=str(path))
    if text not in list_targets():
        raise unknown_choice('target', text, list_targets())
    path = TARGETS_DIR / f'{text}.json'
    return target_from_dict(read_json(path), source=str(path))


def target_from_dict(data: Any, source: str = '<dict>') -> Target:
    """Validate a target mapping; errors name the source and the field at fault."""
    if not isinstance(data, dict):
        raise ScalableViTError(f'target {source}: expected a JSON object, got {type(data).__name__}')
    values = {k: v for k, v in data.items() if not k.startswith('_')}
    for key in values:
        if key not in _TARGET_FIELDS:
            raise unknown_choice(f'field in target {source}', key, _TARGET_FIELDS)
    out = {}
    for field, (types, default) in _TARGET_FIELDS.items():
        if field not in values:
            if default is _REQUIRED:
                raise ScalableViTError(f"target {source}: field '{field}' is required")
            out[field] = default
            continue
        out[field] = _typed(source, field, values[field], types)
    batch = _batch(source, out.pop('batch'))
    target = Target(**out, **batch, source=source)
    _check_target_values(source, target)
    return target


def checked_int(value: Any, what: str, lo: int = 1, hi: int = INT32_MAX) -> int:
    """``value`` when it is an integer (not a bool) in ``lo..hi``; else one error naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ScalableViTError(f'{what} must be an integer from {lo} to {hi}, got {value!r}')
    return value


def check_engine_batch(target: Target) -> Target:
    """``target`` when its batch range fits a TensorRT optimization profile this toolchain builds (at most
    MAX_ENGINE_BATCH); the exports, which only read a target's batch, apply their own 32-bit bounds."""
    for key, value in (('min', target.batch_min), ('opt', target.batch_opt), ('max', target.batch_max)):
        checked_int(value, f"target {target.source or target.name}: field 'batch.{key}' (an engine profile batch)",
                    1, MAX_ENGINE_BATCH)
    return target


def _typed(source: str, field: str, value: Any, types: Tuple[type, ...]) -> Any:
    stray_bool = isinstance(value, bool) and bool not in types  # bool is an int in Python: refuse `true` MiB
    if stray_bool or not isinstance(value, types):
        names = ' or '.join('null' if t is type(None) else t.__name__ for t in types)
        raise ScalableViTError(f"target {source}: field '{field}' must be {names}, got {json.dumps(value)}")
    return value


def _batch(source: str, batch: Dict[str, Any]) -> Dict[str, int]:
    if set(batch) != {'min', 'opt', 'max'}:
        raise ScalableViTError(f"target {source}: field 'batch' needs exactly the keys min, opt, max "
                               f"(got {', '.join(sorted(batch)) or 'none'})")
    for key in ('min', 'opt', 'max'):
        _typed(source, f'batch.{key}', batch[key], (int,))
        if batch[key] < 1:
            raise ScalableViTError(f"target {source}: field 'batch.{key}' must be >= 1, got {batch[key]}")
    if not batch['min'] <= batch['opt'] <= batch['max']:
        raise ScalableViTError(f"target {source}: field 'batch' must satisfy min <= opt <= max "
                               f"(got {batch['min']}/{batch['opt']}/{batch['max']})")
    return {'batch_min': batch['min'], 'batch_opt': batch['opt'], 'batch_max': batch['max']}


def _check_target_values(source: str, t: Target) -> None:
    if not re.fullmatch(r'[A-Za-z0-9][A-Za-z0-9_.-]*', t.name):
        raise ScalableViTError(f"target {source}: field 'name' must be letters, digits, '_', '.', '-' (got '{t.name}')")
    if t.workspace_mib < 1:
        raise ScalableViTError(f"target {source}: field 'workspace_mib' must be >= 1, got {t.workspace_mib}")
    checked_int(t.workspace_mib, f"target {source}: field 'workspace_mib' (at most 1 TiB)", 1, MAX_WORKSPACE_MIB)
    if not 0 <= t.builder_optimization_level <= 5:
        raise ScalableViTError(f"target {source}: field 'builder_optimization_level' must be 0-5, "
                               f"got {t.builder_optimization_level}")
    if t.hardware_compatibility_level not in HARDWARE_COMPAT:
        raise unknown_choice(f"hardware_compatibility_level in target {source}", t.hardware_compatibility_level,
                             HARDWARE_COMPAT)
    if t.reference_device is not None:
        from ..core.peaks import load_peaks
        if t.reference_device not in load_peaks():
            raise unknown_choice(f"reference_device in target {source}", t.reference_device, load_peaks())
    if t.dla_core is not None:
        if t.dla_core < 0:
            raise ScalableViTError(f"target {source}: field 'dla_core' must be null or >= 0, got {t.dla_core}")
        checked_int(t.dla_core, f"target {source}: field 'dla_core'", 0)
        if not t.batch_min == t.batch_opt == t.batch_max:
            raise ScalableViTError(f"target {source}: field 'batch' must have min == opt == max with dla_core set "
                                   '(DLA has no dynamic shapes)')
        if t.hardware_compatibility_level != 'none':
            raise ScalableViTError(f"target {source}: field 'hardware_compatibility_level' must be 'none' with "
                                   'dla_core set (hardware compatibility is not supported on Jetson)')


def dla_precision_problem(target: Target, precision: str) -> Optional[str]:
    """Why ``target``'s DLA cannot run ``precision`` (DLA runs FP16 and INT8 only), or None."""
    if target.dla_core is None or precision in ('fp16', 'int8'):
        return None
    return (f'target {target.name} uses DLA, which runs FP16 and INT8 only: build an fp16 or int8 bundle, or use a '
            'GPU-only target')


def target_precision_problem(target: Target, precision: str) -> Optional[str]:
    """Why ``target`` cannot run an FP8 bundle, known before any GPU is at hand, or None: on DLA, or on a target
    whose reference GPU has no FP8 tensor cores (every Orin). The build on the GPU itself checks its real compute
    capability (``engine_rules.target_platform_problem``)."""
    if precision != 'fp8':
        return None
    if target.dla_core is not None:
        return dla_precision_problem(target, precision)
    if target.reference_device is None:
        return None
    from ..core.compat import fp8_problem
    from ..core.peaks import load_peaks
    device = load_peaks()[target.reference_device]
    problem = fp8_problem(device['compute_capability'], device['name'])
    return f'target {target.name}: {problem}' if problem else None


def check_target_precision(target: Target, precision: str) -> None:
    problem = target_precision_problem(target, precision)
    if problem:
        raise ScalableViTError(problem)
