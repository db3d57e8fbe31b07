"""TensorRT engines: build (profile, workspace, timing cache, DLA), engine manifest, cache key and load checks.

Precision comes from the ONNX (modelopt Q/DQ for INT8, AutoCast for FP16): on TensorRT 10.x a GPU
network is created strongly typed (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``); on 11.x every
network is strongly typed and that flag is deprecated and ignored, so none is passed. Weakly typed, with
the FP16 (+ INT8 for a Q/DQ model) builder flags, are TensorRT 8.6 (JetPack 6.0, no strong typing) and DLA
builds before 11.x, exactly as trtexec builds them (its ``--useDLACore`` sets FP16 and
PREFER_PRECISION_CONSTRAINTS, plus GPU_FALLBACK or DIRECT_IO). One flag list (``build_flags``) drives both
the builder config and the printed ``trtexec`` command, so the two cannot drift apart. What each release
supports is ``compat``'s table; the targets are ``targets``; the bundle -> engine -> validation pipeline is
``device``.

Every engine gets a manifest beside it (``<engine>.json``): TensorRT version, the GPU identity (name,
compute capability, SM count, memory, board model, CPU architecture, OS), target settings, precision, ONNX
sha256, profile shapes, build flags, layers per device, the equivalent ``trtexec`` command line and the
cache key. Loading an engine checks that manifest against the running TensorRT and GPU first (pure
functions below, tested on CPU) and refuses a mismatch, naming what differs.

Only the standard library is imported here; tensorrt and the CUDA binding are imported by ``probe_tensorrt``.
"""
import dataclasses
import hashlib
import json
import logging
import os
import re
import shlex
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ..core import compat
from ..core.bundle import verify_engine
from ..core.errors import ScalableViTError
from ..core.fileio import PathLike, atomic_path, human_size, read_json, sha256_file, write_json
from ..core.report import utc_now
from ..core.runners import INPUT_NAME
from . import cuda
from .engine_rules import (MANIFEST_FORMAT, check_engine_compatible, check_engine_manifest, check_target_platform,
                           describe_gpu, identity, require)
from .inspector import count_layer_devices, layer_placement, layer_precisions
from .targets import Target, check_engine_batch, load_target
from .trt_env import TensorRT, open_tensorrt, trt_logger

logger = logging.getLogger(__name__)

__all__ = ['profile_shapes', 'build_flags', 'builder_flag_names', 'trtexec_command', 'engine_cache_key',
           'build_engine', 'load_engine', 'LoadedEngine', 'read_engine_manifest', 'cached_engine_ok', 'manifest_path',
           'timing_cache_path']

# Our build flag -> the tensorrt.BuilderFlag it sets. Flags not here set none: network creation (typing), TF32
# (cleared), profiling verbosity, DLA core and hardware compatibility are config properties.
_BUILDER_FLAGS = {'fp16': 'FP16', 'int8': 'INT8', 'fp8': 'FP8', 'gpu_fallback': 'GPU_FALLBACK',
                  'prefer_precision_constraints': 'PREFER_PRECISION_CONSTRAINTS', 'direct_io': 'DIRECT_IO',
                  'version_compatible': 'VERSION_COMPATIBLE'}


# ============================================================================================ pure rules
def profile_shapes(target: Target, chw: Sequence[int]) -> Dict[str, Tuple[int, ...]]:
    """min/opt/max input shapes (N, C, H, W) of the target's batch range."""
    c, h, w = (int(x) for x in chw)
    return {k: (b, c, h, w) for k, b in (('min', target.batch_min), ('opt', target.batch_opt),
                                         ('max', target.batch_max))}


def build_flags(target: Target, precision: str, trt_version: str) -> List[str]:
    """The build options that shape an engine, as short strings: the one list the builder config, the trtexec
    command, the manifest and the cache key are all derived from.

    ``precision`` is a bundle's (validated when the bundle is read); it matters only without strong typing,
    where FP16 (and INT8 for a Q/DQ model) become builder flags.
    """
    dla = target.dla_core is not None
    typing = compat.network_typing(trt_version, dla)
    flags = ['strongly_typed'] if typing != 'weak' else ['weakly_typed', *_weak_precision(precision)]
    if not target.tf32:
        flags.append('no_tf32')
    flags.append('profiling_verbosity=detailed')
    if dla:
        flags.append(f'dla_core={target.dla_core}')
        if typing == 'weak':  # trtexec's --useDLACore block sets it before 11.x
            flags.append('prefer_precision_constraints')
        flags.append('gpu_fallback' if target.gpu_fallback else 'direct_io')
    if target.version_compatible:
        flags.append('version_compatible')
    if target.hardware_compatibility_level != 'none':
        flags.append(f'hardware_compatibility={target.hardware_compatibility_level}')
    return flags


def _weak_precision(precision: str) -> List[str]:
    """Builder precision flags standing in for strong typing (INT8 comes from the ONNX's Q/DQ scales). FP8 is never
    built weakly typed (``compat``: TensorRT >= 10 strongly typed, no DLA); its entry keeps the table whole."""
    return {'fp32': [], 'fp16': ['fp16'], 'int8': ['int8', 'fp16'], 'fp8': ['fp8', 'fp16']}[precision]


def builder_flag_names(flags: Sequence[str]) -> List[str]:
    """The ``tensorrt.BuilderFlag`` members a build with ``flags`` sets, in order."""
    return [_BUILDER_FLAGS[name] for name in (f.partition('=')[0] for f in flags) if name in _BUILDER_FLAGS]


def _trtexec_option(flag: str, trt_major: int) -> Optional[str]:
    """The trtexec option for one build flag ('name' or 'name=value'); None where trtexec needs none."""
    name, _, value = flag.partition('=')
    if name == 'strongly_typed':
        return '--stronglyTyped' if trt_major == 10 else None  # 11.x: always on, the option is not needed
    if name == 'hardware_compatibility':
        return f'--hardwareCompatibilityLevel={compat.HARDWARE_COMPAT[value][1]}'
    # prefer_precision_constraints and direct_io: trtexec's --useDLACore sets them itself (the first before 11.x,
    # the second without --allowGPUFallback); --precisionConstraints=prefer would only add a warning.
    options = {'weakly_typed': None, 'fp16': '--fp16', 'int8': '--int8', 'fp8': '--fp8', 'no_tf32': '--noTF32',
               'profiling_verbosity': f'--profilingVerbosity={value}', 'dla_core': f'--useDLACore={value}',
               'gpu_fallback': '--allowGPUFallback', 'prefer_precision_constraints': None, 'direct_io': None,
               'version_compatible': '--versionCompatible'}
    return options[name]


def trtexec_command(onnx: PathLike, engine: PathLike, target: Target, precision: str, trt_version: str,
                    input_name: str = INPUT_NAME, chw: Sequence[int] = (3, 224, 224),
                    timing_cache: Optional[PathLike] = None, flags: Optional[Sequence[str]] = None) -> str:
    """The trtexec command line equivalent to our build (for the logs, the manifest and by-hand rebuilds).

    ``flags`` are the build's own ``build_flags`` (computed here when not given).
    """
    shapes = profile_shapes(target, chw)
    args = ['trtexec', f'--onnx={onnx}', f'--saveEngine={engine}']
    args += [f"--{k}Shapes={input_name}:{'x'.join(map(str, shapes[k]))}" for k in ('min', 'opt', 'max')]
    args += [f'--memPoolSize=workspace:{target.workspace_mib}M',
             f'--builderOptimizationLevel={target.builder_optimization_level}']
    if timing_cache is not None:
        args.append(f'--timingCacheFile={timing_cache}')
    # Derived from build_flags, so the command cannot drift from what the build does.
    major = compat.version(trt_version)[0]
    flags = build_flags(target, precision, trt_version) if flags is None else flags
    args += [opt for flag in flags if (opt := _trtexec_option(flag, major))]
    return ' '.join(shlex.quote(a) for a in args)


def engine_cache_key(onnx_sha256: str, target: Union[Target, Dict[str, Any]], precision: str, trt_version: str,
                     gpu: Dict[str, Any], build_flags: Sequence[str]) -> str:
    """16 hex digits naming one engine: an engine is reused only when every input here matches.

    ``gpu`` is ``trt_env.gpuidentity()``: every field of ``IDENTITY_FIELDS`` counts.
    """
    settings = target.settings() if isinstance(target, Target) else target
    payload = {'format': MANIFEST_FORMAT, 'onnx_sha256': onnx_sha256, 'target': settings, 'precision': precision,
               'tensorrt': trt_version, 'gpu': identity(gpu), 'build_flags': sorted(build_flags)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


# ============================================================================================ files
def manifest_path(engine_path: PathLike) -> Path:
    path = Path(engine_path)
    return path.with_name(path.name + '.json')


def default_cache_dir() -> Path:
    root = os.environ.get('SCALABLEVIT_CACHE_DIR') or Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache'))
    return Path(root) / 'scalablevit' / 'tensorrt'


def timing_cache_path(cache_dir: PathLike, gpu: Dict[str, Any], trt_version: str) -> Path:
    """One timing cache per GPU identity (``IDENTITY_FIELDS``) and TensorRT version, shared by every build.

    The name reads '<gpu>-sm<cc>-trt<version>-<8 hex digits of the full identity>.timing'.
    """
    slug = re.sub(r'[^A-Za-z0-9]+', '-', str(gpu['name'])).strip('-').lower() or 'gpu'
    ident = hashlib.sha256(json.dumps(identity(gpu), sort_keys=True).encode()).hexdigest()[:8]
    cc = str(gpu['compute_capability']).replace('.', '')
    return Path(cache_dir) / f'{slug}-sm{cc}-trt{trt_version}-{ident}.timing'


# ============================================================================================ build
def _create_network(trt: Any, builder: Any, flags: Sequence[str], trt_major: int) -> Any:
    if 'strongly_typed' in flags:  # 11.x: always strongly typed, STRONGLY_TYPED is deprecated and ignored
        creation = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if trt_major == 10 else 0
    else:  # weakly typed: 8.6 needs EXPLICIT_BATCH, 10.x networks are explicit-batch by default
        creation = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) if trt_major < 10 else 0
    network = builder.create_network(creation)
    if network is None:
        raise ScalableViTError(f'TensorRT could not create a network: {trt_logger(trt).pop_errors()}')
    return network


def _parse_onnx(trt: Any, network: Any, onnx_path: Path) -> Any:
    parser = trt.OnnxParser(network, trt_logger(trt))
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


def _check_qdq(trt: Any, network: Any, onnx: Path) -> None:
    """A weakly typed INT8 build takes its scales from the ONNX's Q/DQ nodes: refuse a model without them (trtexec
    would invent random dynamic ranges instead)."""
    kinds = {trt.LayerType.QUANTIZE, trt.LayerType.DEQUANTIZE}
    if not any(network.get_layer(i).type in kinds for i in range(network.num_layers)):
        raise ScalableViTError(f'{onnx}: an INT8 build needs Q/DQ nodes (modelopt INT8), this ONNX has none')


def _configure(trt: Any, builder: Any, network: Any, config: Any, target: Target, flags: Sequence[str],
               input_name: str, shapes: Dict[str, Tuple[int, ...]], onnx: Path) -> Dict[str, Any]:
    """Apply the target and ``flags`` to the builder config; return DLA eligibility when DLA is asked for."""
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, target.workspace_mib << 20)
    config.builder_optimization_level = target.builder_optimization_level
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if 'no_tf32' in flags and hasattr(trt.BuilderFlag, 'TF32'):
        config.clear_flag(trt.BuilderFlag.TF32)
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, shapes['min'], shapes['opt'], shapes['max'])
    if config.add_optimization_profile(profile) < 0:
        raise ScalableViTError(f'TensorRT rejected the profile {shapes}: {trt_logger(trt).pop_errors()}')
    for name in builder_flag_names(flags):
        config.set_flag(getattr(trt.BuilderFlag, name))
    if 'int8' in flags or 'fp8' in flags:
        _check_qdq(trt, network, onnx)
    weak = [f for f in flags if f in ('fp16', 'int8', 'fp8')]
    if weak:
        logger.warning('weakly typed build (TensorRT %s%s) with BuilderFlag %s: TensorRT may run any layer at that '
                       'precision, not only where the ONNX says', trt.__version__,
                       ', DLA' if target.dla_core is not None else '', '+'.join(weak))
    if target.hardware_compatibility_level != 'none':
        member = compat.HARDWARE_COMPAT[target.hardware_compatibility_level][0]
        if not hasattr(trt.HardwareCompatibilityLevel, member):
            raise ScalableViTError(f"TensorRT {trt.__version__} has no hardware compatibility level {member}")
        config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel, member)
    if target.dla_core is None:
        return {}
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = target.dla_core
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


def _inspect_layers(trt: Any, plan: Any, target: Target, placement: Dict[str, List[str]]) -> Dict[str, Any]:
    """Deserialize the fresh plan (proving it loads), count its layers per device, read each layer's precision.

    ``placement`` is the build log's layer list (``inspector.layer_placement``): its DLA layer names are kept in
    the manifest (``dla_layers``) and identify the DLA layers of the inspector's JSON. ``per_layer`` is what
    TensorRT runs each layer in (``inspector.layer_precisions``), held against the ONNX by the device pipeline.
    """
    runtime = trt.Runtime(trt_logger(trt))
    if target.version_compatible:
        runtime.engine_host_code_allowed = True
    if target.dla_core is not None:
        runtime.DLA_core = target.dla_core
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise ScalableViTError(f'the engine TensorRT just built does not deserialize: {trt_logger(trt).pop_errors()}')
    inspector = engine.create_engine_inspector()
    information = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    counts = count_layer_devices(information, placement['dla'])
    return {**counts, 'dla_layers': placement['dla'], 'build_log_gpu_layers': len(placement['gpu']),
            'per_layer': layer_precisions(information)}


def build_engine(onnx_path: PathLike, engine_path: PathLike, target: Union[str, Target], precision: str, *,
                 input_name: str = INPUT_NAME, chw: Optional[Sequence[int]] = None, onnx_opset: Optional[int] = None,
                 timing_cache_dir: Optional[PathLike] = None, onnx_sha256: Optional[str] = None,
                 flags: Optional[Sequence[str]] = None, env: Optional[TensorRT] = None) -> Dict[str, Any]:
    """Build ``onnx_path`` into ``engine_path`` for ``target``; write and return the engine manifest.

    ``flags``, ``onnx_sha256`` and ``env`` are what the caller already computed (``build_flags``, the bundle
    manifest's sha256, ``probe_tensorrt``); each is derived here when not given.
    """
    env = open_tensorrt(env)
    trt, version, gpu = env.trt, env.version, env.gpu
    target, onnx_path, engine_path = check_engine_batch(load_target(target)), Path(onnx_path), Path(engine_path)
    compat.check_onnx_opset(onnx_opset, precision, version)
    flags = list(build_flags(target, precision, version) if flags is None else flags)
    log = trt_logger(trt)
    builder = trt.Builder(log)
    check_target_platform(target, precision, version, gpu, int(getattr(builder, 'num_DLA_cores', 0)))
    network = _create_network(trt, builder, flags, env.major)
    parser = _parse_onnx(trt, network, onnx_path)  # noqa: F841 (the parser must outlive the network's use)
    chw = _network_input(network, input_name, chw, onnx_path)
    shapes = profile_shapes(target, chw)
    config = builder.create_builder_config()
    dla = _configure(trt, builder, network, config, target, flags, input_name, shapes, onnx_path)
    cache_file = timing_cache_path(timing_cache_dir or default_cache_dir(), gpu, version)
    _load_timing_cache(trt, config, cache_file)
    command = trtexec_command(onnx_path, engine_path, target, precision, version, input_name, chw, cache_file, flags)
    logger.info('building %s engine for target %s with TensorRT %s on %s; equivalent: %s', precision, target.name,
                version, describe_gpu(gpu), command)
    start = time.perf_counter()
    log.placement = []
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ScalableViTError(f'TensorRT {version} failed to build {onnx_path} for target {target.name}: '
                               f'{log.pop_errors()}')
    build_time = time.perf_counter() - start
    placement = layer_placement(log.placement)
    _save_timing_cache(config, cache_file)
    del parser, network, config, builder  # free the build's memory before the plan is deserialized (Orin Nano)
    layers = {**_inspect_layers(trt, plan, target, placement), **dla}  # also proves the plan loads
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(memoryview(plan))
    onnx_sha256 = onnx_sha256 or sha256_file(onnx_path)
    manifest = {
        'format': MANIFEST_FORMAT, 'engine': engine_path.name, 'engine_sha256': sha256_file(engine_path),
        'engine_bytes': engine_path.stat().st_size,
        'cache_key': engine_cache_key(onnx_sha256, target, precision, version, gpu, flags),
        'tensorrt_version': version, 'cuda_binding': cuda.api().name,
        'gpu': {**identity(gpu), 'integrated': gpu.get('integrated')},
        'target': {**target.settings(), 'notes': target.notes},
        'compatibility': {'version_compatible': target.version_compatible,
                          'hardware_compatibility_level': target.hardware_compatibility_level},
        'precision': precision, 'onnx': {'file': onnx_path.name, 'sha256': onnx_sha256, 'opset': onnx_opset},
        'input': {'name': input_name, 'profile': {k: list(v) for k, v in shapes.items()}},
        'build_flags': flags, 'builder_flags': builder_flag_names(flags), 'layers': layers,
        'build_time_s': round(build_time, 2), 'trtexec': command, 'timing_cache': cache_file.name,
        'created_at': utc_now(),
    }
    write_json(manifest_path(engine_path), manifest)
    logger.info('engine: %s (%s), layers: %d total, %d on DLA', engine_path, human_size(manifest['engine_bytes']),
                layers['total'], layers['dla'])
    return manifest


# ============================================================================================ load
@dataclasses.dataclass
class LoadedEngine:
    """A deserialized engine with the runtime that must outlive it, and its manifest when checked."""

    engine: Any
    runtime: Any
    path: Optional[Path] = None
    manifest: Optional[Dict[str, Any]] = None


def read_engine_manifest(engine_path: PathLike, complete: bool = True, empty_ok: bool = False) -> Dict[str, Any]:
    """The manifest beside ``engine_path``, checked (``check_engine_manifest``) on every read, by every reader.

    ``complete``: a loader's read (every field a load and an export need); without it only what is present is
    checked (what ``file_precision`` reads). An empty engine file is refused (no TensorRT plan is 0 bytes) unless
    ``empty_ok``: where TensorRT deserializes the bytes (``load_engine``, the device pipeline after it), TensorRT
    is the judge of what is a plan.
    """
    path = manifest_path(engine_path)
    if not path.is_file():
        raise ScalableViTError(f'no manifest {path.name} beside engine {engine_path}: rebuild the engine with '
                               'deploy/build_engine.py (or load it with check_manifest=False)')
    where = f'engine manifest {path}'
    manifest = check_engine_manifest(read_json(path), where)
    if complete:
        require(manifest, ('engine', 'engine_sha256', 'tensorrt_version', 'gpu', 'compatibility', 'target',
                           'precision'), where)
    if not empty_ok:
        _refuse_empty(Path(engine_path))
    return manifest


def _refuse_empty(engine: Path) -> None:
    try:
        empty = engine.stat().st_size == 0
    except OSError:  # missing or unreadable: the caller's own check names it
        return
    if empty:
        raise ScalableViTError(f'engine {engine} is empty (0 bytes): no TensorRT plan is; rebuild it')


def load_engine(engine_path: PathLike, check_manifest: bool = True, env: Optional[TensorRT] = None) -> LoadedEngine:
    """Deserialize an engine file after checking its manifest against this TensorRT and GPU."""
    env = open_tensorrt(env)
    trt = env.trt
    path = Path(engine_path)
    if not path.is_file():
        raise ScalableViTError(f'engine {path} not found')
    manifest = read_engine_manifest(path, empty_ok=True) if check_manifest else None  # TensorRT judges the bytes
    if manifest is not None:
        check_engine_compatible(manifest, env.version, env.gpu)
    data = verify_engine(path, manifest) if manifest is not None else path.read_bytes()  # the bytes checked
    runtime = trt.Runtime(trt_logger(trt))
    if manifest is not None and manifest['compatibility'].get('version_compatible'):
        runtime.engine_host_code_allowed = True  # the lean runtime inside the plan; only for plans you trust
    if manifest is not None and manifest['target'].get('dla_core') is not None:
        runtime.DLA_core = int(manifest['target']['dla_core'])
    engine, detail = None, None
    try:
        engine = runtime.deserialize_cuda_engine(data)
    except (RuntimeError, TypeError) as e:  # some TensorRT versions raise instead of returning None
        detail = str(e)
    if engine is None:
        raise ScalableViTError(f'TensorRT {trt.__version__} cannot deserialize {path}: '
                               f'{detail or trt_logger(trt).pop_errors()}; rebuild it for this TensorRT and GPU')
    return LoadedEngine(engine=engine, runtime=runtime, path=path, manifest=manifest)


def cached_engine_ok(engine_path: Path, key: str) -> bool:
    """True when ``engine_path`` exists with a manifest of the same cache key and a matching sha256."""
    mpath = manifest_path(engine_path)
    if not (engine_path.is_file() and mpath.is_file()):
        return False
    try:
        manifest = check_engine_manifest(read_json(mpath), f'engine manifest {mpath}')
    except ScalableViTError as e:
        logger.warning('ignoring cached engine %s: %s', engine_path.name, e)
        return False
    return manifest.get('cache_key') == key and manifest.get('engine_sha256') == sha256_file(engine_path)
