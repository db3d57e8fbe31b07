"""Can this engine run here, can this target be built here: pure rules over engine manifests, targets and the
running TensorRT and GPU, tested on CPU with real device figures.

An engine (and a timing cache) is tied to the TensorRT version and the full GPU identity (``IDENTITY_FIELDS``:
Jetson Orin modules all report "Orin", sm_87, so SM count, memory and the board tell them apart), unless it was
built version-compatible or hardware-compatible; what a TensorRT release supports is ``compat``'s table.
"""
import json
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..core import compat
from ..core.errors import ScalableViTError, unknown_choice
from ..core.manifest import MAX_INPUT_SIDE, PRECISIONS
from .targets import INT32_MAX, MAX_ENGINE_BATCH, Target, checked_int, dla_precision_problem

__all__ = ['MANIFEST_FORMAT', 'IDENTITY_FIELDS', 'identity', 'describe_gpu', 'engine_compatibility_problem',
           'check_engine_compatible', 'target_platform_problem', 'check_target_platform', 'require',
           'check_engine_manifest']

MANIFEST_FORMAT = 'scalablevit-engine/2'

# What an engine and a timing cache are tied to (``trt_env.gpu_identity``), with how a message names each field.
IDENTITY_FIELDS = {'name': 'GPU', 'compute_capability': 'compute capability', 'sm_count': 'SM count',
                   'total_memory_mib': 'total memory (MiB)', 'board': 'board', 'cpu_arch': 'CPU architecture',
                   'os': 'OS'}
# Fields a hardware-compatible engine still needs equal: plans are built for one CPU architecture and OS.
_PLATFORM_FIELDS = ('cpu_arch', 'os')
def _cc(text: str) -> Tuple[int, ...]:
    return compat.version(text)


def identity(gpu: Dict[str, Any]) -> Dict[str, Any]:
    """The fields of ``gpu`` an engine is tied to."""
    return {field: gpu.get(field) for field in IDENTITY_FIELDS}


def describe_gpu(gpu: Dict[str, Any]) -> str:
    """'Orin (sm_87, 8 SMs, 7620 MiB, NVIDIA Jetson Orin Nano Developer Kit, aarch64 Linux)'."""
    parts = [f"sm_{str(gpu.get('compute_capability')).replace('.', '')}", f"{gpu.get('sm_count')} SMs",
             f"{gpu.get('total_memory_mib')} MiB"]
    if gpu.get('board'):
        parts.append(str(gpu['board']))
    parts.append(f"{gpu.get('cpu_arch')} {gpu.get('os')}")
    return f"{gpu.get('name')} ({', '.join(parts)})"


def _identity_differences(built: Dict[str, Any], here: Dict[str, Any], level: str) -> List[str]:
    """What differs between the GPU an engine was built on and this one, for its hardware compatibility level."""
    fields = list(IDENTITY_FIELDS) if level == 'none' else \
        (['compute_capability'] if level == 'same_compute_capability' else []) + list(_PLATFORM_FIELDS)
    diffs = [f'{IDENTITY_FIELDS[f]} {built.get(f)!r} != {here.get(f)!r}' for f in fields if built.get(f) != here.get(f)]
    if level == 'ampere_plus':
        diffs += [f'compute capability {cc} is older than Ampere (8.0)' for cc in
                  dict.fromkeys((built.get('compute_capability'), here.get('compute_capability')))
                  if _cc(str(cc)) < (8, 0)]
    return diffs


def engine_compatibility_problem(manifest: Dict[str, Any], trt_version: str, gpu: Dict[str, Any]) -> Optional[str]:
    """Why the engine of ``manifest`` cannot run on this TensorRT and GPU (``gpuidentity()``), or None.

    Names every field that differs. Honours the version-compatible and hardware-compatibility opt-ins recorded in
    the manifest; a manifest of an older format (before the full GPU identity) is refused.
    """
    require(manifest, ('engine', 'tensorrt_version', 'gpu', 'compatibility'), 'engine manifest')
    if manifest.get('format') != MANIFEST_FORMAT:
        return (f"engine {manifest['engine']} has a manifest of format {manifest.get('format')!r}, this toolchain "
                f"writes {MANIFEST_FORMAT!r} (it records the full GPU identity): rebuild it")
    built_trt, built_gpu = manifest['tensorrt_version'], manifest['gpu']
    opt_ins = manifest['compatibility']
    reasons = []
    if not compat.version_compatible(built_trt, trt_version, bool(opt_ins.get('version_compatible'))):
        reasons.append('TensorRT versions differ' + ('' if opt_ins.get('version_compatible')
                                                     else ' and it is not version-compatible'))
    level = opt_ins.get('hardware_compatibility_level', 'none')
    diffs = _identity_differences(built_gpu, gpu, level)
    if diffs:
        reasons.append(f"the GPU differs (hardware compatibility '{level}'): {', '.join(diffs)}")
    if not reasons:
        return None
    return (f"engine {manifest['engine']} was built with TensorRT {built_trt} on {describe_gpu(built_gpu)}; "
            f"this is TensorRT {trt_version} on {describe_gpu(gpu)}: rebuild it ({'; '.join(reasons)})")


def check_engine_compatible(manifest: Dict[str, Any], trt_version: str, gpu: Dict[str, Any]) -> None:
    problem = engine_compatibility_problem(manifest, trt_version, gpu)
    if problem:
        raise ScalableViTError(problem)


def target_platform_problem(target: Target, precision: str, trt_version: str, gpu: Dict[str, Any],
                            num_dla_cores: int) -> Optional[str]:
    """Why this TensorRT and GPU cannot build ``target`` at ``precision``, or None. Pure: the self-test's table
    and ``check_target_platform`` (before the ONNX is parsed) both use it."""
    if compat.version(trt_version) < compat.MIN_TENSORRT:
        return f'TensorRT {trt_version} is too old: this toolchain needs TensorRT >= 8.6'
    where = f"{gpu['name']} (sm_{gpu['compute_capability'].replace('.', '')})"
    if target.dla_core is not None:
        problem = dla_precision_problem(target, precision)
        if problem:
            return problem
        gap = compat.dla_problem(trt_version)
        if gap:
            return f'target {target.name} asks for DLA core {target.dla_core}, but {gap}'
        if target.dla_core >= num_dla_cores:
            have = (f'has only {num_dla_cores} DLA core(s)' if num_dla_cores else
                    'has no DLA (Jetson AGX Orin and Orin NX have DLA; Orin Nano, Thor and desktop GPUs do not)')
            return (f'target {target.name} asks for DLA core {target.dla_core} but {where} with TensorRT '
                    f'{trt_version} {have}')
    if precision == 'fp8':
        problem = compat.fp8_problem(gpu['compute_capability'], gpu['name'])
        if problem:
            return f'cannot build an FP8 engine here: {problem}'
    level = target.hardware_compatibility_level
    if level != 'none':
        if gpu.get('integrated'):
            return f'target {target.name}: hardware compatibility is not supported on Jetson ({where})'
        problem = compat.hardware_compat_problem(level, trt_version)
        if problem:
            return f'target {target.name}: {problem}'
        if level == 'ampere_plus' and _cc(gpu['compute_capability']) < (8, 0):
            return (f"target {target.name}: hardware compatibility 'ampere_plus' needs an Ampere or newer GPU to "
                    f'build on, this is {where}')
    return None


def check_target_platform(target: Target, precision: str, trt_version: str, gpu: Dict[str, Any],
                          num_dla_cores: int) -> None:
    """Refuse a target this TensorRT and GPU cannot build, before spending minutes on it."""
    problem = target_platform_problem(target, precision, trt_version, gpu, num_dla_cores)
    if problem:
        raise ScalableViTError(problem)


def require(mapping: Dict[str, Any], keys: Sequence[str], what: str) -> None:
    missing = [k for k in keys if k not in mapping]
    if missing:
        raise ScalableViTError(f"{what} is missing {', '.join(repr(k) for k in missing)}")


# ============================================================================================ manifest schema
# field -> the JSON types it must have wherever it is present (readers use nothing else of a manifest)
_ENGINE_FIELDS: Dict[str, Tuple[type, ...]] = {
    'format': (str,), 'engine': (str,), 'engine_sha256': (str,), 'engine_bytes': (int,), 'cache_key': (str,),
    'tensorrt_version': (str,), 'precision': (str,), 'gpu': (dict,), 'compatibility': (dict,), 'target': (dict,),
    'onnx': (dict,), 'input': (dict,), 'layers': (dict,), 'build_flags': (list,)}
_JSON_NAMES = {dict: 'an object', list: 'an array', str: 'a string', int: 'an integer', float: 'a number',
               bool: 'true or false', type(None): 'null'}
_SHA256 = re.compile(r'[0-9a-f]{64}')


def _show(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + '...'


def _field(manifest: Dict[str, Any], name: str, types: Tuple[type, ...], where: str) -> None:
    value = manifest[name]
    if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
        names = ' or '.join(_JSON_NAMES[t] for t in types)
        raise ScalableViTError(f"{where}: field '{name}' must be {names}, got {_show(value)}")


def check_engine_manifest(manifest: Any, where: str) -> Dict[str, Any]:
    """``manifest`` (an engine's ``<engine>.json``) when every field a reader uses has its type and range: a JSON
    object; precision one of PRECISIONS; sha256 values that are sha256; profile batches from 1 to
    MAX_ENGINE_BATCH with min <= opt <= max and one C, H, W (each 1..MAX_INPUT_SIDE); the DLA core 32-bit.
    Fields may be absent (``require`` asks for the ones a reader needs); one error names the first fault."""
    if not isinstance(manifest, dict):
        raise ScalableViTError(f'{where}: not an engine manifest (a JSON object is expected, got '
                               f'{_JSON_NAMES.get(type(manifest), type(manifest).__name__)})')
    for name, types in _ENGINE_FIELDS.items():
        if name in manifest:
            _field(manifest, name, types, where)
    if 'precision' in manifest and manifest['precision'] not in PRECISIONS:
        raise unknown_choice(f'precision in {where}', manifest['precision'], PRECISIONS)
    for name, value in (('engine_sha256', manifest.get('engine_sha256')),
                        ('onnx.sha256', (manifest.get('onnx') or {}).get('sha256'))):
        if value is not None and not (isinstance(value, str) and _SHA256.fullmatch(value)):
            raise ScalableViTError(f'{where}: {name} must be 64 lowercase hex digits, got {_show(value)}')
    if 'engine' in manifest and (Path(manifest['engine']).name != manifest['engine'] or
                                 manifest['engine'] in ('', '.', '..')):
        raise ScalableViTError(f"{where}: engine must be a file name, got {_show(manifest['engine'])}")
    if manifest.get('engine_bytes', 0) < 0:  # an int here (checked above); an empty file is the reader's to refuse
        raise ScalableViTError(f"{where}: engine_bytes must be a byte count, got {manifest['engine_bytes']}")
    if 'tensorrt_version' in manifest:
        compat.version(manifest['tensorrt_version'])
    _check_engine_compatibility(manifest.get('compatibility') or {}, where)
    _check_engine_target(manifest.get('target') or {}, where)
    profile = (manifest.get('input') or {}).get('profile')
    if profile is not None:
        _check_profile(profile, where)
    return manifest


def _check_engine_compatibility(opt_ins: Dict[str, Any], where: str) -> None:
    if not isinstance(opt_ins.get('version_compatible', False), bool):
        raise ScalableViTError(f'{where}: compatibility.version_compatible must be true or false, '
                               f"got {_show(opt_ins['version_compatible'])}")
    level = opt_ins.get('hardware_compatibility_level', 'none')
    if not isinstance(level, str) or level not in compat.HARDWARE_COMPAT:
        raise unknown_choice(f'hardware_compatibility_level in {where}', level if isinstance(level, str) else
                             _show(level), compat.HARDWARE_COMPAT)


def _check_engine_target(target: Dict[str, Any], where: str) -> None:
    if target.get('dla_core') is not None:
        checked_int(target['dla_core'], f'{where}: target.dla_core', 0, INT32_MAX)
    batch = target.get('batch')
    if batch is not None:
        if not isinstance(batch, dict):
            raise ScalableViTError(f'{where}: target.batch must be an object of min, opt, max, got {_show(batch)}')
        for key in ('min', 'opt', 'max'):
            if key in batch:
                checked_int(batch[key], f'{where}: target.batch.{key}', 1, MAX_ENGINE_BATCH)


def _check_profile(profile: Any, where: str) -> None:
    """input.profile: {min, opt, max} shapes [N, C, H, W] as the builder writes them (``engine.profile_shapes``)."""
    if not isinstance(profile, dict) or set(profile) != {'min', 'opt', 'max'}:
        raise ScalableViTError(f'{where}: input.profile must be an object of exactly min, opt, max, got '
                               f'{_show(profile)}')
    for key in ('min', 'opt', 'max'):
        shape = profile[key]
        if not isinstance(shape, list) or len(shape) != 4:
            raise ScalableViTError(f'{where}: input.profile.{key} must be [N, C, H, W], got {_show(shape)}')
        checked_int(shape[0], f'{where}: input.profile.{key} batch', 1, MAX_ENGINE_BATCH)
        for dim in shape[1:]:
            checked_int(dim, f'{where}: input.profile.{key} dimension', 1, MAX_INPUT_SIDE)
    lo, opt, hi = (profile[k] for k in ('min', 'opt', 'max'))
    if not lo[0] <= opt[0] <= hi[0]:
        raise ScalableViTError(f'{where}: input.profile batch must satisfy min <= opt <= max '
                               f'(got {lo[0]}/{opt[0]}/{hi[0]})')
    if not lo[1:] == opt[1:] == hi[1:]:
        raise ScalableViTError(f'{where}: input.profile min/opt/max must share C, H, W (got {lo[1:]}, {opt[1:]}, '
                               f'{hi[1:]})')
