"""Can this engine run here, can this target be built here: pure rules over engine manifests, targets and the
running TensorRT and GPU, tested on CPU with real device figures.

An engine (and a timing cache) is tied to the TensorRT version and the full GPU identity (``IDENTITY_FIELDS``:
Jetson Orin modules all report "Orin", sm_87, so SM count, memory and the board tell them apart), unless it was
built version-compatible or hardware-compatible; what a TensorRT release supports is ``compat``'s table.
"""
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..core import compat
from ..core.errors import ScalableViTError
from .targets import Target

__all__ = ['MANIFEST_FORMAT', 'IDENTITY_FIELDS', 'identity', 'describe_gpu', 'engine_compatibility_problem',
           'check_engine_compatible', 'target_platform_problem', 'check_target_platform', 'require']

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
        if precision == 'fp32':
            return (f"target {target.name} uses DLA, which runs FP16 and INT8 only: build an fp16 or int8 bundle, "
                    'or use a GPU-only target')
        gap = compat.dla_problem(trt_version)
        if gap:
            return f'target {target.name} asks for DLA core {target.dla_core}, but {gap}'
        if target.dla_core >= num_dla_cores:
            have = (f'has only {num_dla_cores} DLA core(s)' if num_dla_cores else
                    'has no DLA (Jetson AGX Orin and Orin NX have DLA; Orin Nano, Thor and desktop GPUs do not)')
            return (f'target {target.name} asks for DLA core {target.dla_core} but {where} with TensorRT '
                    f'{trt_version} {have}')
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
