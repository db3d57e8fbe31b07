"""The device pipeline: bundle -> TensorRT engine -> validation against the bundle's reference -> report.

Runs where the engine will run (a Jetson, a GPU server) and imports only numpy, tensorrt and a CUDA binding.
The bundle is verified first (manifest, sha256 of the deployed ONNX and of reference.npz); the engine lands
in ``<bundle>/engines/`` and is reused when its cache key (ONNX, target, precision, TensorRT, GPU identity, build
flags) matches; validation runs the reference images through the engine and enforces the precision's accuracy budget.
"""
import logging
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np

from ..core.bundle import Bundle
from ..core.compare import accuracy_metrics, budget_verdict, check_budget, gate_status
from ..core.errors import ScalableViTError
from ..core.fileio import PathLike
from ..core.peaks import detect_device
from ..core.report import make_report, write_report
from ..core.runners import INPUT_NAME, OUTPUT_NAME, Runner
from ..core.steps import timed_step
from . import cuda
from .engine import (build_engine, build_flags, cached_engine_ok, engine_cache_key, load_engine, manifest_path,
                     read_engine_manifest)
from .inspector import precision_mismatches
from .targets import Target, check_engine_batch, check_target_precision, load_target
from .trt_env import TensorRT, open_tensorrt

logger = logging.getLogger(__name__)

__all__ = ['build_bundle_engine', 'run_padded']


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


def build_bundle_engine(bundle: Union[PathLike, Bundle], target: Union[str, Target], force: bool = False,
                        timing_cache_dir: Optional[PathLike] = None, env: Optional[TensorRT] = None) -> Path:
    """Build (or reuse) the engine of a host-made bundle for ``target``, validate it, write its report.

    Exceeding the precision's accuracy budget fails the build and removes the engine, unless the bundle is
    marked ``untrained`` (random weights), where it only warns. ``env`` is the caller's ``probe_tensorrt()``.
    """
    bundle = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
    onnx_path, onnx_entry = bundle.deploy_onnx()
    reference = bundle.reference()
    target = check_engine_batch(load_target(target))
    check_target_precision(target, bundle.precision)
    env = open_tensorrt(env)
    flags = build_flags(target, bundle.precision, env.version)
    key = engine_cache_key(onnx_entry['sha256'], target, bundle.precision, env.version, env.gpu, flags)
    engine_path = bundle.path / 'engines' / f'{onnx_path.stem}.{target.name}.{key[:12]}.engine'
    reused = not force and cached_engine_ok(engine_path, key)
    if reused:
        logger.info('engine: reusing %s (cache key %s)', engine_path, key)
    else:
        with timed_step('engine', [engine_path]):
            build_engine(onnx_path, engine_path, target, bundle.precision, input_name=bundle.input_name,
                         chw=bundle.input_shape, onnx_opset=onnx_entry.get('opset'),
                         timing_cache_dir=timing_cache_dir, onnx_sha256=onnx_entry['sha256'], flags=flags, env=env)
    validate_engine(engine_path, bundle, reference, target, reused, env)
    return engine_path


def validate_engine(engine_path: Path, bundle: Bundle, reference: Dict[str, np.ndarray], target: Target,
                    reused: bool, env: TensorRT) -> Dict[str, Any]:
    """Run the reference inputs through the engine, write the report, enforce the accuracy budget."""
    from .trt_runner import TrtRunner  # noqa: PLC0415 (the runner is only needed once there is an engine)
    precision, untrained = bundle.precision, bundle.untrained
    with timed_step('engine validation') as step:
        with TrtRunner(lambda: load_engine(engine_path, env=env), name=f'tensorrt-{engine_path.name}') as runner:
            logits = run_padded(runner, reference['input'], target.batch_min, target.batch_max)
        metrics = accuracy_metrics(reference['logits'], logits, reference.get('labels'), reference_name='torch-fp32')
        step['detail'] = (f"agreement {metrics['top1_agreement']:.4f}, worst cosine {metrics['cosine_min']:.5f}, "
                          f"max |diff| {metrics['max_abs_diff']:.4g}")
    verdict = budget_verdict(metrics, precision)
    violations = verdict.failed
    engine_manifest = read_engine_manifest(engine_path, empty_ok=True)  # TensorRT has just deserialized it
    engine_precision = _engine_precision(engine_manifest, bundle)
    report = make_report(
        bundle.model, precision, 'tensorrt', metrics, None, untrained,
        environment_extra={'tensorrt': env.version, 'gpu': engine_manifest['gpu'], 'target': target.name,
                           'cuda_binding': cuda.api().name},
        budget={'passed': not violations, 'violations': violations, 'undecided': verdict.undecided,
                'enforced': not untrained},
        engine={'file': engine_path.name, 'manifest': manifest_path(engine_path).name,
                'sha256': engine_manifest['engine_sha256'], 'cache_key': engine_manifest['cache_key'],
                'reused': reused, 'layers': engine_manifest.get('layers'),
                'build_time_s': engine_manifest.get('build_time_s'), 'trtexec': engine_manifest.get('trtexec')},
        census={k: v for k, v in (bundle.manifest.get('census') or {}).items() if k != 'node_dtypes'} or None,
        engine_precision=engine_precision, latency_estimate=_latency_estimate(engine_manifest, bundle),
        status=gate_status(violations, untrained, verdict.undecided))
    report_path = write_report(engine_path.parent, report, stem=f'{engine_path.stem}.report')
    if violations and untrained:
        logger.warning('engine %s exceeds the %s budget (%s), allowed because the bundle is marked untrained',
                       engine_path.name, precision, '; '.join(violations))
    elif violations:
        engine_path.unlink(missing_ok=True)  # never let the cache hand out an engine that failed its budget
        manifest_path(engine_path).unlink(missing_ok=True)
        check_budget(metrics, precision, f'TensorRT engine {engine_path.name} (report: {report_path})')
    return report


def _latency_estimate(engine_manifest: Dict[str, Any], bundle: Bundle) -> Optional[Dict[str, Any]]:
    """The host's latency estimate for this GPU (the bundle carries it for every table device) beside TensorRT's
    own layer count, so the first real run checks the estimate's fusion model; None when the GPU is not in the
    table or the bundle predates the estimate."""
    recorded = bundle.manifest.get('latency_estimate')
    gpu = engine_manifest.get('gpu') or {}
    memory = gpu.get('total_memory_mib')
    device = detect_device(gpu_name=gpu.get('name'), board_model=gpu.get('board'),
                           mem_total_gb=memory / 1024 if memory else None)
    if not recorded or device not in recorded['ms']:
        return None
    layers = engine_manifest.get('layers') or {}
    return {'device': device, 'ms': recorded['ms'][device], 'error_band': recorded['error_band'],
            'estimated_kernels': recorded['fusion']['kernels'], 'engine_layers': layers.get('total'),
            'attention_fused': recorded['fusion']['attention_fused'],
            'attention_blocks': recorded['fusion']['attention_blocks']}


def _engine_precision(engine_manifest: Dict[str, Any], bundle: Bundle) -> Dict[str, Any]:
    """TensorRT's own per-layer precision (engine inspector) against the bundle's census: every layer that runs an
    ONNX node at a higher precision than the ONNX gave it is flagged (a warning: it costs speed, not accuracy)."""
    layers = (engine_manifest.get('layers') or {}).get('per_layer') or []
    node_dtypes = (bundle.manifest.get('census') or {}).get('node_dtypes') or {}
    flagged = precision_mismatches(layers, node_dtypes)
    for item in flagged:
        logger.warning('TensorRT runs %s (%s) in %s where the ONNX asked %s for %s', item['layer'], item['type'],
                       item['engine_precision'].upper(), item['onnx_dtype'].upper(), item['onnx_node'])
    counts: Dict[str, int] = {}
    for layer in layers:
        counts[layer['precision'] or 'unknown'] = counts.get(layer['precision'] or 'unknown', 0) + 1
    return {'layers': counts, 'higher_than_onnx': flagged, 'compared': bool(layers and node_dtypes)}
