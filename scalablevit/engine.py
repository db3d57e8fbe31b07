"""TensorRT engines: targets, build (profile, workspace, timing cache, DLA), engine manifest, cache and checks.

Precision comes from the ONNX (modelopt Q/DQ for INT8, AutoCast for FP16): on TensorRT 10.x the
network is created strongly typed (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``); on 11.x every
network is strongly typed and that flag is deprecated and ignored, so none is passed; TensorRT 8.6
(JetPack 6.0) has no strong typing and gets the FP16/INT8 builder flags instead (best effort, logged).
No calibrators, no precision flags or constraints on >= 10.

Every engine gets a manifest beside it (``<engine>.json``): TensorRT version, GPU and compute
capability, target settings, precision, ONNX sha256, profile shapes, build flags, the equivalent
``trtexec`` command line and the cache key. Loading an engine checks that manifest against the running
TensorRT and GPU first (pure functions below, tested on CPU) and refuses a mismatch with a clear error.

Only numpy is imported here; tensorrt and the CUDA binding are imported inside the functions that use them.
"""
import dataclasses
import datetime
import hashlib
import json
import logging
import os
import platform
import re
import shlex
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import cuda
from .errors import ScalableViTError, unknown_choice
from .compare import gate_status
from .fileio import PathLike, atomic_path, human_size, read_json, sha256_file, write_json, write_text
from .report import UNTRAINED, render_markdown
from .runners import INPUT_NAME, OUTPUT_NAME, Runner

logger = logging.getLogger(__name__)

__all__ = ['Target', 'load_target', 'list_targets', 'trt_status', 'profile_shapes', 'build_flags',
           'trtexec_command', 'engine_cache_key', 'engine_compatibility_problem', 'check_engine_compatible',
           'check_target_platform', 'check_onnx_opset', 'count_layer_devices', 'build_engine', 'load_engine',
           'LoadedEngine', 'build_bundle_engine', 'run_padded', 'manifest_path', 'timing_cache_path']

TARGETS_DIR = Path(__file__).with_name('targets')
MANIFEST_FORMAT = 'scalablevit-engine/1'
PRECISIONS = ('fp32', 'fp16', 'int8')
MIN_TRT = (8, 6)
# target value -> (tensorrt.HardwareCompatibilityLevel member, trtexec --hardwareCompatibilityLevel value)
HARDWARE_COMPAT = {'none': ('NONE', None), 'ampere_plus': ('AMPERE_PLUS', 'ampere+'),
                   'same_compute_capability': ('SAME_COMPUTE_CAPABILITY', 'sameComputeCapability')}
# Version-compatible engines run on a newer runtime of the same major, or across these major hops
# (TensorRT support matrix: 8 -> 10 and 10 -> 11).
VERSION_COMPAT_HOPS = {(8, 10), (10, 11)}
# Highest ONNX opset each TensorRT major's parser takes, where it is a hard, documented limit.
MAX_OPSET = {8: 17}
DLA_TRT_GAP = ((11, 0, 0), (11, 4, 1))  # no DLA on JetPack in TensorRT 11.0-11.4.0; back in 11.4.1 (JetPack 7.2.2)


# ============================================================================================ targets
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
    notes: str = ''
    source: str = dataclasses.field(default='', compare=False)

    def settings(self) -> Dict[str, Any]:
        """The settings that change an engine (everything but notes and source), JSON-ready."""
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
    if not 0 <= t.builder_optimization_level <= 5:
        raise ScalableViTError(f"target {source}: field 'builder_optimization_level' must be 0-5, "
                               f"got {t.builder_optimization_level}")
    if t.hardware_compatibility_level not in HARDWARE_COMPAT:
        raise unknown_choice(f"hardware_compatibility_level in target {source}", t.hardware_compatibility_level,
                             HARDWARE_COMPAT)
    if t.dla_core is not None:
        if t.dla_core < 0:
            raise ScalableViTError(f"target {source}: field 'dla_core' must be null or >= 0, got {t.dla_core}")
        if not t.batch_min == t.batch_opt == t.batch_max:
            raise ScalableViTError(f"target {source}: field 'batch' must have min == opt == max with dla_core set "
                                   '(DLA has no dynamic shapes)')
        if t.hardware_compatibility_level != 'none':
            raise ScalableViTError(f"target {source}: field 'hardware_compatibility_level' must be 'none' with "
                                   'dla_core set (hardware compatibility is not supported on Jetson)')


# ============================================================================================ pure rules
def _version(text: str) -> Tuple[int, ...]:
    """'10.3.0.30' -> (10, 3, 0, 30); trailing non-numeric parts are ignored."""
    parts = []
    for piece in str(text).split('.'):
        digits = re.match(r'\d+', piece)
        if not digits:
            break
        parts.append(int(digits.group()))
    if not parts:
        raise ScalableViTError(f"'{text}' is not a version number")
    return tuple(parts)


def _same_version(a: str, b: str) -> bool:
    va, vb = _version(a), _version(b)
    width = max(len(va), len(vb))
    return va + (0,) * (width - len(va)) == vb + (0,) * (width - len(vb))


def _cc(text: str) -> Tuple[int, ...]:
    return _version(text)


def profile_shapes(target: Target, chw: Sequence[int]) -> Dict[str, Tuple[int, ...]]:
    """min/opt/max input shapes (N, C, H, W) of the target's batch range."""
    c, h, w = (int(x) for x in chw)
    return {k: (b, c, h, w) for k, b in (('min', target.batch_min), ('opt', target.batch_opt),
                                         ('max', target.batch_max))}


def build_flags(target: Target, precision: str, trt_version: str) -> List[str]:
    """The build options that shape an engine, as short strings (manifest, cache key, logs)."""
    if precision not in PRECISIONS:
        raise unknown_choice('precision', precision, PRECISIONS)
    flags = ['strongly_typed'] if _version(trt_version)[0] >= 10 else ['weakly_typed', *_weak_precision(precision)]
    if not target.tf32:
        flags.append('no_tf32')
    flags.append('profiling_verbosity=detailed')
    if target.dla_core is not None:
        flags.append(f'dla_core={target.dla_core}')
        if target.gpu_fallback:
            flags.append('gpu_fallback')
    if target.version_compatible:
        flags.append('version_compatible')
    if target.hardware_compatibility_level != 'none':
        flags.append(f'hardware_compatibility={target.hardware_compatibility_level}')
    return flags


def _weak_precision(precision: str) -> List[str]:
    """TensorRT 8.6 builder precision flags standing in for strong typing."""
    return {'fp32': [], 'fp16': ['fp16'], 'int8': ['int8', 'fp16']}[precision]


def _trtexec_option(flag: str, trt_major: int) -> Optional[str]:
    """The trtexec option for one build flag ('name' or 'name=value'); None where trtexec needs none."""
    name, _, value = flag.partition('=')
    if name == 'strongly_typed':
        return '--stronglyTyped' if trt_major == 10 else None  # 11.x: always on, the option is not needed
    if name == 'hardware_compatibility':
        return f'--hardwareCompatibilityLevel={HARDWARE_COMPAT[value][1]}'
    options = {'weakly_typed': None, 'fp16': '--fp16', 'int8': '--int8', 'no_tf32': '--noTF32',
               'profiling_verbosity': f'--profilingVerbosity={value}', 'dla_core': f'--useDLACore={value}',
               'gpu_fallback': '--allowGPUFallback', 'version_compatible': '--versionCompatible'}
    return options[name]


def trtexec_command(onnx: PathLike, engine: PathLike, target: Target, precision: str, trt_version: str,
                    input_name: str = INPUT_NAME, chw: Sequence[int] = (3, 224, 224),
                    timing_cache: Optional[PathLike] = None) -> str:
    """The trtexec command line equivalent to our build (for the logs, the manifest and by-hand rebuilds)."""
    shapes = profile_shapes(target, chw)
    args = ['trtexec', f'--onnx={onnx}', f'--saveEngine={engine}']
    args += [f"--{k}Shapes={input_name}:{'x'.join(map(str, shapes[k]))}" for k in ('min', 'opt', 'max')]
    args += [f'--memPoolSize=workspace:{target.workspace_mib}M',
             f'--builderOptimizationLevel={target.builder_optimization_level}']
    if timing_cache is not None:
        args.append(f'--timingCacheFile={timing_cache}')
    # Derived from build_flags, so the command cannot drift from what the build does.
    major = _version(trt_version)[0]
    args += [opt for flag in build_flags(target, precision, trt_version) if (opt := _trtexec_option(flag, major))]
    return ' '.join(shlex.quote(a) for a in args)


def engine_cache_key(onnx_sha256: str, target: Union[Target, Dict[str, Any]], precision: str, trt_version: str,
                     gpu: str, cc: str, build_flags: Sequence[str]) -> str:
    """16 hex digits naming one engine: an engine is reused only when every input here matches."""
    settings = target.settings() if isinstance(target, Target) else target
    payload = {'format': MANIFEST_FORMAT, 'onnx_sha256': onnx_sha256, 'target': settings, 'precision': precision,
               'tensorrt': trt_version, 'gpu': gpu, 'compute_capability': cc, 'build_flags': sorted(build_flags)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def engine_compatibility_problem(manifest: Dict[str, Any], trt_version: str, gpu: str, cc: str) -> Optional[str]:
    """Why the engine of ``manifest`` cannot run on this TensorRT and GPU, or None when it can.

    Honours the version-compatible and hardware-compatibility opt-ins recorded in the manifest.
    """
    _require(manifest, ('engine', 'tensorrt_version', 'gpu', 'compatibility'), 'engine manifest')
    built_trt, built_gpu = manifest['tensorrt_version'], manifest['gpu']
    compat = manifest['compatibility']
    reasons = []
    if not _version_compatible(built_trt, trt_version, bool(compat.get('version_compatible'))):
        reasons.append('TensorRT versions differ' + ('' if compat.get('version_compatible')
                                                     else ' and it is not version-compatible'))
    level = compat.get('hardware_compatibility_level', 'none')
    if not _hardware_compatible(built_gpu['name'], built_gpu['compute_capability'], gpu, cc, level):
        reasons.append(f"the GPU differs (hardware compatibility '{level}')")
    if not reasons:
        return None
    return (f"engine {manifest['engine']} was built with TensorRT {built_trt} on {built_gpu['name']} "
            f"(sm_{built_gpu['compute_capability'].replace('.', '')}); this is TensorRT {trt_version} on {gpu} "
            f"(sm_{cc.replace('.', '')}): rebuild it ({'; '.join(reasons)})")


def check_engine_compatible(manifest: Dict[str, Any], trt_version: str, gpu: str, cc: str) -> None:
    problem = engine_compatibility_problem(manifest, trt_version, gpu, cc)
    if problem:
        raise ScalableViTError(problem)


def _version_compatible(built: str, running: str, opted_in: bool) -> bool:
    if _same_version(built, running):
        return True
    b, r = _version(built), _version(running)
    if not opted_in or b < MIN_TRT or r < b:
        return False
    return r[0] == b[0] or (b[0], r[0]) in VERSION_COMPAT_HOPS


def _hardware_compatible(built_gpu: str, built_cc: str, gpu: str, cc: str, level: str) -> bool:
    if level == 'ampere_plus':
        return _cc(built_cc) >= (8, 0) and _cc(cc) >= (8, 0)
    same_cc = _cc(built_cc) == _cc(cc)
    return same_cc if level == 'same_compute_capability' else same_cc and built_gpu == gpu


def check_target_platform(target: Target, precision: str, trt_version: str, gpu: Dict[str, Any],
                          num_dla_cores: int) -> None:
    """Refuse a target this TensorRT and GPU cannot build, before spending minutes on it."""
    v = _version(trt_version)
    if v < MIN_TRT:
        raise ScalableViTError(f'TensorRT {trt_version} is too old: this toolchain needs TensorRT >= 8.6')
    where = f"{gpu['name']} (sm_{gpu['compute_capability'].replace('.', '')})"
    if target.dla_core is not None:
        if precision == 'fp32':
            raise ScalableViTError(f"target {target.name} uses DLA, which runs FP16 and INT8 only: "
                                   'build an fp16 or int8 bundle, or use a GPU-only target')
        if target.dla_core >= num_dla_cores:
            in_gap = DLA_TRT_GAP[0] <= v[:3] < DLA_TRT_GAP[1]
            gap = ' (TensorRT 11.0-11.4.0 have no DLA support on Jetson)' if in_gap else ''
            have = f'has only {num_dla_cores} DLA core(s)' if num_dla_cores else 'has no DLA'
            raise ScalableViTError(f'target {target.name} asks for DLA core {target.dla_core} but {where} with '
                                   f'TensorRT {trt_version} {have}{gap}')
    if target.hardware_compatibility_level != 'none':
        if gpu.get('integrated'):
            raise ScalableViTError(f'target {target.name}: hardware compatibility is not supported on Jetson '
                                   f'({where})')
        if target.hardware_compatibility_level == 'ampere_plus' and _cc(gpu['compute_capability']) < (8, 0):
            raise ScalableViTError(f"target {target.name}: hardware compatibility 'ampere_plus' needs an Ampere "
                                   f'or newer GPU to build on, this is {where}')


def check_onnx_opset(opset: Optional[int], precision: str, trt_version: str) -> None:
    """Refuse ONNX files the TensorRT parser cannot read (INT8 Q/DQ from modelopt is opset >= 19)."""
    major = _version(trt_version)[0]
    if precision == 'int8' and major < 10:
        raise ScalableViTError(f'INT8 bundles need TensorRT >= 10 (JetPack >= 6.1): modelopt writes Q/DQ models at '
                               f'opset >= 19 and TensorRT {trt_version} parses opset <= 17')
    if opset is not None and major in MAX_OPSET and opset > MAX_OPSET[major]:
        raise ScalableViTError(f'the ONNX has opset {opset} but TensorRT {trt_version} parses opset <= '
                               f'{MAX_OPSET[major]}: export at opset {MAX_OPSET[major]} or use TensorRT >= 10')


def count_layer_devices(engine_information: Union[str, Dict[str, Any]]) -> Dict[str, int]:
    """Per-layer device counts from the engine inspector's JSON (ProfilingVerbosity.DETAILED).

    A DLA subgraph is one engine layer whose LayerType names DLA; every other layer runs on the GPU.
    """
    info = json.loads(engine_information) if isinstance(engine_information, str) else engine_information
    layers = info.get('Layers', []) if isinstance(info, dict) else []
    dla = sum(1 for layer in layers if isinstance(layer, dict) and 'dla' in str(layer.get('LayerType', '')).lower())
    return {'total': len(layers), 'dla': dla, 'gpu': len(layers) - dla}


def _require(mapping: Dict[str, Any], keys: Sequence[str], what: str) -> None:
    missing = [k for k in keys if k not in mapping]
    if missing:
        raise ScalableViTError(f"{what} is missing {', '.join(repr(k) for k in missing)}")


# ============================================================================================ environment
def trt_status() -> Tuple[bool, str]:
    """(True, description) when tensorrt imports and a CUDA device answers, else (False, the reason)."""
    try:
        import tensorrt as trt  # noqa: PLC0415
    except (ImportError, OSError) as e:
        return False, f'tensorrt not importable ({e})'
    ok, reason = cuda.cuda_status()
    return (True, f'TensorRT {trt.__version__}, {reason}') if ok else (False, reason)


def _import_trt() -> Any:
    ok, reason = trt_status()
    if not ok:
        raise ScalableViTError(f'TensorRT is not usable here: {reason}')
    import tensorrt as trt  # noqa: PLC0415
    return trt


def current_gpu() -> Dict[str, Any]:
    return cuda.device_info(0)


def manifest_path(engine_path: PathLike) -> Path:
    path = Path(engine_path)
    return path.with_name(path.name + '.json')


def default_cache_dir() -> Path:
    root = os.environ.get('SCALABLEVIT_CACHE_DIR') or Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache'))
    return Path(root) / 'scalablevit' / 'tensorrt'


def timing_cache_path(cache_dir: PathLike, gpu: str, cc: str, trt_version: str) -> Path:
    """One timing cache per (GPU name, compute capability, TensorRT version), shared by every build."""
    slug = re.sub(r'[^A-Za-z0-9]+', '-', gpu).strip('-').lower() or 'gpu'
    return Path(cache_dir) / f"{slug}-sm{cc.replace('.', '')}-trt{trt_version}.timing"


_TRT_LOGGER = None


def _trt_logger(trt: Any) -> Any:
    """One TensorRT logger for the process, forwarding to Python logging and keeping recent errors."""
    global _TRT_LOGGER
    if _TRT_LOGGER is None:
        levels = {trt.Logger.INTERNAL_ERROR: logging.ERROR, trt.Logger.ERROR: logging.ERROR,
                  trt.Logger.WARNING: logging.WARNING, trt.Logger.INFO: logging.DEBUG}

        class _Logger(trt.ILogger):
            def __init__(self):
                trt.ILogger.__init__(self)
                self.errors: List[str] = []

            def log(self, severity: Any, msg: str) -> None:
                level = levels.get(severity, logging.DEBUG)
                if level >= logging.ERROR:
                    self.errors = (self.errors + [msg])[-5:]
                logger.log(level, 'TensorRT: %s', msg)

            def pop_errors(self) -> str:
                text, self.errors = '; '.join(self.errors) or 'no error logged', []
                return text

        _TRT_LOGGER = _Logger()
    return _TRT_LOGGER


# ============================================================================================ build
def _create_network(trt: Any, builder: Any, major: int) -> Any:
    if major >= 11:
        flags = 0  # strongly typed always; STRONGLY_TYPED is deprecated and ignored
    elif major == 10:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    else:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    if network is None:
        raise ScalableViTError(f'TensorRT could not create a network: {_trt_logger(trt).pop_errors()}')
    return network


def _parse_onnx(trt: Any, network: Any, onnx_path: Path) -> Any:
    parser = trt.OnnxParser(network, _trt_logger(trt))
    if parser.parse_from_file(str(onnx_path)):
        return parser
    errors = [_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
    more = f' (+{len(errors) - 5} more)' if len(errors) > 5 else ''
    raise ScalableViTError(f'TensorRT {trt.__version__} cannot parse {onnx_path}: ' + '; '.join(errors[:5]) + more)


def _parser_error(error: Any) -> str:
    def opt(method: str) -> str:
        fn = getattr(error, method, None)
        return str(fn()) if callable(fn) else ''
    node = opt('node_name') or (f'#{error.node()}' if error.node() >= 0 else '')
    op = opt('node_operator')
    where = f"node {node}{f' ({op})' if op else ''}: " if node or op else ''
    return f'{where}{error.desc()}'


def _network_input(network: Any, input_name: str, chw: Optional[Sequence[int]], onnx: Path) -> Tuple[int, int, int]:
    """Check the parsed network has our one (N, C, H, W) input; return its C, H, W."""
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    if len(inputs) != 1 or inputs[0].name != input_name:
        raise ScalableViTError(f"{onnx}: expected one input '{input_name}', found {[t.name for t in inputs]}")
    shape = tuple(inputs[0].shape)
    if len(shape) != 4:
        raise ScalableViTError(f"{onnx}: input '{input_name}' has shape {shape}, expected (N, C, H, W)")
    if shape[0] != -1:
        raise ScalableViTError(f"{onnx}: input '{input_name}' has a static batch {shape[0]}; export it with a "
                               'dynamic batch dimension')
    if chw is None and -1 in shape[1:]:
        raise ScalableViTError(f"{onnx}: input '{input_name}' has dynamic C/H/W {shape[1:]}: give the input size")
    if chw is not None and any(s not in (-1, int(c)) for s, c in zip(shape[1:], chw)):
        raise ScalableViTError(f"{onnx}: input '{input_name}' is {shape[1:]}, the bundle says {tuple(chw)}")
    return tuple(int(c) for c in chw) if chw is not None else tuple(shape[1:])


def _configure(trt: Any, builder: Any, network: Any, config: Any, target: Target, precision: str,
               input_name: str, shapes: Dict[str, Tuple[int, ...]], major: int) -> Dict[str, Any]:
    """Apply the target to the builder config; return DLA eligibility when DLA is asked for."""
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, target.workspace_mib << 20)
    config.builder_optimization_level = target.builder_optimization_level
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if not target.tf32 and hasattr(trt.BuilderFlag, 'TF32'):
        config.clear_flag(trt.BuilderFlag.TF32)
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, shapes['min'], shapes['opt'], shapes['max'])
    if config.add_optimization_profile(profile) < 0:
        raise ScalableViTError(f'TensorRT rejected the profile {shapes}: {_trt_logger(trt).pop_errors()}')
    if major < 10:
        for flag in _weak_precision(precision):
            config.set_flag(getattr(trt.BuilderFlag, flag.upper()))
        if precision != 'fp32':
            logger.warning('TensorRT %s has no strongly typed networks: building with BuilderFlag %s; TensorRT may '
                           'run any layer at that precision', trt.__version__, '+'.join(_weak_precision(precision)))
    if target.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if target.hardware_compatibility_level != 'none':
        member = HARDWARE_COMPAT[target.hardware_compatibility_level][0]
        if not hasattr(trt.HardwareCompatibilityLevel, member):
            raise ScalableViTError(f"TensorRT {trt.__version__} has no hardware compatibility level {member}")
        config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel, member)
    if target.dla_core is None:
        return {}
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = target.dla_core
    if target.gpu_fallback:
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    eligible = sum(bool(config.can_run_on_DLA(network.get_layer(i))) for i in range(network.num_layers))
    logger.info('DLA core %d: %d of %d network layers can run on DLA', target.dla_core, eligible, network.num_layers)
    return {'dla_eligible_network_layers': eligible, 'network_layers': network.num_layers}


def _load_timing_cache(trt: Any, config: Any, path: Path) -> None:
    data = path.read_bytes() if path.is_file() else b''
    cache = config.create_timing_cache(data)
    if cache is None or not config.set_timing_cache(cache, False):
        logger.warning('timing cache %s does not fit this TensorRT/GPU: starting a new one', path)
        config.set_timing_cache(config.create_timing_cache(b''), False)
    elif data:
        logger.info('timing cache: %s (%s)', path, human_size(len(data)))


def _save_timing_cache(config: Any, path: Path) -> None:
    cache = config.get_timing_cache()
    if cache is None:
        return
    with atomic_path(path) as tmp:
        tmp.write_bytes(memoryview(cache.serialize()))


def _inspect_layers(trt: Any, plan: Any, target: Target) -> Dict[str, int]:
    """Deserialize the fresh plan (proving it loads) and count its layers per device."""
    runtime = trt.Runtime(_trt_logger(trt))
    if target.version_compatible:
        runtime.engine_host_code_allowed = True
    if target.dla_core is not None:
        runtime.DLA_core = target.dla_core
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise ScalableViTError(f'the engine TensorRT just built does not deserialize: {_trt_logger(trt).pop_errors()}')
    inspector = engine.create_engine_inspector()
    return count_layer_devices(inspector.get_engine_information(trt.LayerInformationFormat.JSON))


def build_engine(onnx_path: PathLike, engine_path: PathLike, target: Union[str, Target], precision: str, *,
                 input_name: str = INPUT_NAME, chw: Optional[Sequence[int]] = None, onnx_opset: Optional[int] = None,
                 timing_cache_dir: Optional[PathLike] = None, onnx_sha256: Optional[str] = None) -> Dict[str, Any]:
    """Build ``onnx_path`` into ``engine_path`` for ``target``; write and return the engine manifest."""
    trt = _import_trt()
    target, onnx_path, engine_path = load_target(target), Path(onnx_path), Path(engine_path)
    gpu, version, major = current_gpu(), trt.__version__, _version(trt.__version__)[0]
    check_onnx_opset(onnx_opset, precision, version)
    log = _trt_logger(trt)
    builder = trt.Builder(log)
    check_target_platform(target, precision, version, gpu, int(getattr(builder, 'num_DLA_cores', 0)))
    network = _create_network(trt, builder, major)
    parser = _parse_onnx(trt, network, onnx_path)  # noqa: F841 (the parser must outlive the network's use)
    chw = _network_input(network, input_name, chw, onnx_path)
    shapes = profile_shapes(target, chw)
    config = builder.create_builder_config()
    dla = _configure(trt, builder, network, config, target, precision, input_name, shapes, major)
    cache_file = timing_cache_path(timing_cache_dir or default_cache_dir(), gpu['name'], gpu['compute_capability'],
                                   version)
    _load_timing_cache(trt, config, cache_file)
    command = trtexec_command(onnx_path, engine_path, target, precision, version, input_name, chw, cache_file)
    flags = build_flags(target, precision, version)
    logger.info('building %s engine for target %s with TensorRT %s on %s; equivalent: %s', precision, target.name,
                version, gpu['name'], command)
    start = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ScalableViTError(f'TensorRT {version} failed to build {onnx_path} for target {target.name}: '
                               f'{log.pop_errors()}')
    build_time = time.perf_counter() - start
    _save_timing_cache(config, cache_file)
    del parser, network, config, builder  # free the build's memory before the plan is deserialized (Orin Nano)
    layers = {**_inspect_layers(trt, plan, target), **dla}  # also proves the plan loads before it is written
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(memoryview(plan))
    onnx_sha256 = onnx_sha256 or sha256_file(onnx_path)
    manifest = {
        'format': MANIFEST_FORMAT, 'engine': engine_path.name, 'engine_sha256': sha256_file(engine_path),
        'engine_bytes': engine_path.stat().st_size,
        'cache_key': engine_cache_key(onnx_sha256, target, precision, version, gpu['name'],
                                      gpu['compute_capability'], flags),
        'tensorrt_version': version, 'cuda_binding': cuda.api().name,
        'gpu': {k: gpu[k] for k in ('name', 'compute_capability', 'integrated')},
        'target': {**target.settings(), 'notes': target.notes},
        'compatibility': {'version_compatible': target.version_compatible,
                          'hardware_compatibility_level': target.hardware_compatibility_level},
        'precision': precision, 'onnx': {'file': onnx_path.name, 'sha256': onnx_sha256, 'opset': onnx_opset},
        'input': {'name': input_name, 'profile': {k: list(v) for k, v in shapes.items()}},
        'build_flags': flags, 'layers': layers, 'build_time_s': round(build_time, 2), 'trtexec': command,
        'created_at': _now(),
    }
    write_json(manifest_path(engine_path), manifest)
    logger.info('engine built in %.1f s, saved as %s (%s); layers: %s', build_time, engine_path,
                human_size(manifest['engine_bytes']), layers)
    return manifest


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')


# ============================================================================================ load
@dataclasses.dataclass
class LoadedEngine:
    """A deserialized engine with the runtime that must outlive it, and its manifest when checked."""

    engine: Any
    runtime: Any
    path: Optional[Path] = None
    manifest: Optional[Dict[str, Any]] = None


def read_engine_manifest(engine_path: PathLike) -> Dict[str, Any]:
    path = manifest_path(engine_path)
    if not path.is_file():
        raise ScalableViTError(f'no manifest {path.name} beside engine {engine_path}: rebuild the engine with '
                               'deploy/build_engine.py (or load it with check_manifest=False)')
    manifest = read_json(path)
    _require(manifest, ('engine', 'engine_sha256', 'tensorrt_version', 'gpu', 'compatibility', 'target'),
             f'engine manifest {path}')
    return manifest


def load_engine(engine_path: PathLike, check_manifest: bool = True) -> LoadedEngine:
    """Deserialize an engine file after checking its manifest against this TensorRT and GPU."""
    trt = _import_trt()
    path = Path(engine_path)
    if not path.is_file():
        raise ScalableViTError(f'engine {path} not found')
    manifest = read_engine_manifest(path) if check_manifest else None
    if manifest is not None:
        gpu = current_gpu()
        check_engine_compatible(manifest, trt.__version__, gpu['name'], gpu['compute_capability'])
        if sha256_file(path) != manifest['engine_sha256']:
            raise ScalableViTError(f'engine {path} does not match the sha256 in its manifest: rebuild it')
    runtime = trt.Runtime(_trt_logger(trt))
    if manifest is not None and manifest['compatibility'].get('version_compatible'):
        runtime.engine_host_code_allowed = True  # the lean runtime inside the plan; only for plans you trust
    if manifest is not None and manifest['target'].get('dla_core') is not None:
        runtime.DLA_core = int(manifest['target']['dla_core'])
    engine, detail = None, None
    try:
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
    except (RuntimeError, TypeError) as e:  # some TensorRT versions raise instead of returning None
        detail = str(e)
    if engine is None:
        raise ScalableViTError(f'TensorRT {trt.__version__} cannot deserialize {path}: '
                               f'{detail or _trt_logger(trt).pop_errors()}; rebuild it for this TensorRT and GPU')
    return LoadedEngine(engine=engine, runtime=runtime, path=path, manifest=manifest)


def _cached_engine_ok(engine_path: Path, key: str) -> bool:
    """True when ``engine_path`` exists with a manifest of the same cache key and a matching sha256."""
    mpath = manifest_path(engine_path)
    if not (engine_path.is_file() and mpath.is_file()):
        return False
    try:
        manifest = read_json(mpath)
    except ScalableViTError as e:
        logger.warning('ignoring cached engine %s: %s', engine_path.name, e)
        return False
    return manifest.get('cache_key') == key and manifest.get('engine_sha256') == sha256_file(engine_path)


# ============================================================================================ bundles
def _bundle_manifest(bundle_dir: Path) -> Dict[str, Any]:
    manifest = read_json(bundle_dir / 'manifest.json')
    what = f'bundle manifest {bundle_dir / "manifest.json"}'
    _require(manifest, ('model', 'precision', 'deploy_onnx', 'onnx', 'input', 'output', 'reference'), what)
    _require(manifest['input'], ('name', 'shape'), f"{what} 'input'")
    _require(manifest['reference'], ('file', 'sha256'), f"{what} 'reference'")
    if manifest['precision'] not in PRECISIONS:
        raise unknown_choice(f'precision in {what}', manifest['precision'], PRECISIONS)
    return manifest


def _verified_file(bundle_dir: Path, name: str, sha256: str, what: str) -> Path:
    """The bundle file ``name``, refused when missing or when its sha256 is not the manifest's."""
    path = bundle_dir / name
    if not path.is_file():
        raise ScalableViTError(f'{what} {path} not found')
    actual = sha256_file(path)
    if actual != sha256:
        raise ScalableViTError(f'{what} {path} does not match the bundle manifest (sha256 {actual[:12]}... != '
                               f'{sha256[:12]}...): refusing a modified or foreign file')
    return path


def _deploy_onnx(bundle_dir: Path, manifest: Dict[str, Any]) -> Tuple[Path, Dict[str, Any]]:
    deploy = manifest['deploy_onnx']
    entries = [e for e in manifest['onnx'].values() if isinstance(e, dict) and e.get('file') == deploy]
    if not entries:
        raise ScalableViTError(f"bundle {bundle_dir}: deploy_onnx '{deploy}' has no entry in the manifest's 'onnx'")
    _require(entries[0], ('sha256',), f"bundle {bundle_dir} onnx entry '{deploy}'")
    return _verified_file(bundle_dir, deploy, entries[0]['sha256'], 'ONNX'), entries[0]


def _load_reference(bundle_dir: Path, manifest: Dict[str, Any]) -> Dict[str, np.ndarray]:
    ref = manifest['reference']
    path = _verified_file(bundle_dir, ref['file'], ref['sha256'], 'reference')
    with np.load(path, allow_pickle=False) as data:
        if 'input' not in data or 'logits' not in data:
            raise ScalableViTError(f"reference {path} needs arrays 'input' and 'logits', has {sorted(data.files)}")
        return {k: data[k] for k in data.files}


def run_padded(runner: Runner, images: np.ndarray, min_batch: int, max_batch: int) -> np.ndarray:
    """Logits of ``runner`` over ``images`` in batches of at most ``max_batch``.

    A last batch smaller than ``min_batch`` (the engine profile's minimum; DLA engines have
    min == max) is padded with zeros to ``min_batch`` and the padding's outputs are dropped.
    """
    outputs = []
    for start in range(0, len(images), max_batch):
        batch = np.ascontiguousarray(images[start:start + max_batch], dtype=np.float32)
        n = len(batch)
        if n < min_batch:
            batch = np.concatenate([batch, np.zeros((min_batch - n, *batch.shape[1:]), np.float32)])
        outputs.append(runner.infer({INPUT_NAME: batch})[OUTPUT_NAME][:n])
    if not outputs:
        raise ScalableViTError('no reference images to validate with')
    return np.concatenate(outputs)


def build_bundle_engine(bundle_dir: PathLike, target: Union[str, Target], force: bool = False,
                        timing_cache_dir: Optional[PathLike] = None) -> Path:
    """Build (or reuse) the engine of a host-made bundle for ``target``, validate it, write its report.

    The ONNX and reference files must match the bundle manifest's sha256. The engine lands in
    ``bundle_dir/engines/`` and is reused when its cache key (ONNX, target, precision, TensorRT, GPU,
    build flags) matches, unless ``force``. Validation runs the bundle's reference inputs and checks
    the precision's accuracy budget: exceeding it fails the build and removes the engine, unless the
    bundle is marked ``untrained`` (random weights), where it only warns.
    """
    bundle_dir = Path(bundle_dir)
    manifest = _bundle_manifest(bundle_dir)
    onnx_path, onnx_entry = _deploy_onnx(bundle_dir, manifest)
    reference = _load_reference(bundle_dir, manifest)
    target = load_target(target)
    precision = manifest['precision']
    trt = _import_trt()
    gpu, version = current_gpu(), trt.__version__
    flags = build_flags(target, precision, version)
    key = engine_cache_key(onnx_entry['sha256'], target, precision, version, gpu['name'], gpu['compute_capability'],
                           flags)
    engine_path = bundle_dir / 'engines' / f'{onnx_path.stem}.{target.name}.{key[:12]}.engine'
    reused = not force and _cached_engine_ok(engine_path, key)
    if reused:
        logger.info('reusing engine %s (cache key %s)', engine_path, key)
    else:
        build_engine(onnx_path, engine_path, target, precision, input_name=manifest['input']['name'],
                     chw=manifest['input']['shape'][1:], onnx_opset=onnx_entry.get('opset'),
                     timing_cache_dir=timing_cache_dir, onnx_sha256=onnx_entry['sha256'])
    _validate(engine_path, manifest, reference, target, precision, reused)
    return engine_path


def _validate(engine_path: Path, bundle: Dict[str, Any], reference: Dict[str, np.ndarray], target: Target,
              precision: str, reused: bool) -> Dict[str, Any]:
    """Run the reference inputs through the engine, write the report, enforce the accuracy budget."""
    from .compare import accuracy_metrics, budget_violations, check_budget  # noqa: PLC0415
    from .trt_runner import TrtRunner  # noqa: PLC0415 (trt_runner imports this module)
    with TrtRunner(engine_path) as runner:
        logits = run_padded(runner, reference['input'], target.batch_min, target.batch_max)
        trt_version = runner.trt_version
    metrics = accuracy_metrics(reference['logits'], logits, reference.get('labels'), reference_name='torch-fp32')
    violations = budget_violations(metrics, precision)
    untrained = bool(bundle.get('untrained', False))
    engine_manifest = read_json(manifest_path(engine_path))
    report = {
        'model': bundle['model'], 'precision': precision, 'backend': 'tensorrt', 'accuracy': metrics,
        'latency_ms': None,
        'budget': {'passed': not violations, 'violations': violations, 'enforced': not untrained},
        'engine': {'file': engine_path.name, 'manifest': manifest_path(engine_path).name,
                   'sha256': engine_manifest['engine_sha256'], 'cache_key': engine_manifest['cache_key'],
                   'reused': reused, 'layers': engine_manifest.get('layers'),
                   'build_time_s': engine_manifest.get('build_time_s'), 'trtexec': engine_manifest.get('trtexec')},
        'environment': {'tensorrt': trt_version, 'gpu': engine_manifest['gpu'], 'target': target.name,
                        'cuda_binding': cuda.api().name, 'python': platform.python_version(),
                        'numpy': np.__version__, 'platform': platform.platform()},
        'created_at': _now(),
        'status': gate_status(violations, untrained),
    }
    if untrained:
        report['warning'] = UNTRAINED
    report_path = engine_path.with_name(engine_path.stem + '.report.json')
    write_json(report_path, report)
    write_text(report_path.with_suffix('.md'), render_markdown(report))
    logger.info('engine %s vs reference: agreement %.4f, worst cosine %.5f, max |diff| %.4g; report %s',
                engine_path.name, metrics['top1_agreement'], metrics['cosine_min'], metrics['max_abs_diff'], report_path)
    if violations and untrained:
        logger.warning('engine %s exceeds the %s budget (%s), allowed because the bundle is marked untrained',
                       engine_path.name, precision, '; '.join(violations))
    elif violations:
        engine_path.unlink(missing_ok=True)  # never let the cache hand out an engine that failed its budget
        manifest_path(engine_path).unlink(missing_ok=True)
        check_budget(metrics, precision, f'TensorRT engine {engine_path.name} (report: {report_path})')
    return report
