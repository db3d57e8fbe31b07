"""The device self-test: what this machine is, what it can build, and whether engines built here compute the model.

``run_self_test`` (the command ``python deploy/check_device.py``) records the host, the Jetson board and JetPack,
the CUDA binding with the driver's and its runtime's CUDA versions, the GPU identity, TensorRT and its DLA cores,
and which precisions and targets this TensorRT and GPU can build (``compat`` + ``engine_rules.target_platform_problem``).
Then it builds engines from the fixtures shipped in the package (``scalablevit/fixtures/``: the FP32, FP16 and INT8
ONNX of the trained ``scalable_vit_fmnist`` with held-out images, their PyTorch FP32 logits and the onnxruntime
logits of each ONNX), on the GPU and on DLA where present, through the same device pipeline a user runs
(``device.build_bundle_engine``: build, then the accuracy budget against PyTorch). Each engine is also compared
with onnxruntime running the same ONNX (tighter) and timed. Everything goes into one JSON for bug reports; any
failure makes the run fail.

numpy, tensorrt and a CUDA binding only (no torch, onnx or onnxruntime): it runs on a bare JetPack image.
"""
import dataclasses
import logging
import tarfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..core import compat, numerics
from ..core.bundle import Bundle
from ..core.manifest import PRECISIONS, check_precision
from ..core.compare import accuracy_metrics, load_budgets
from ..core.errors import ScalableViTError
from ..core.fileio import read_json, sha256_bytes, write_bytes, write_json
from ..core.report import environment, utc_now
from ..core.timing import BenchConfig, benchmark
from . import cuda
from .engine import load_engine, read_engine_manifest
from .engine_rules import describe_gpu, target_platform_problem
from .jetson import describe_jetson, jetson_info
from .pipeline import build_bundle_engine, run_padded
from .targets import Target, list_targets, load_target, target_from_dict
from .trt_env import gpu_identity, probe_tensorrt, trt_logger

logger = logging.getLogger(__name__)

__all__ = ['FIXTURES_DIR', 'fixture_manifest', 'extract_fixture', 'same_graph_violations', 'SelfTestOptions',
           'run_self_test']

FIXTURES_DIR = Path(__file__).with_name('fixtures')
FIXTURE = 'fmnist'
FIXTURE_FORMAT = 'scalablevit-fixture/1'
REPORT_FORMAT = 'scalablevit-check-device/1'
REPORT_NAME = 'check_device.json'
# The GPU build: the fixture's 64 images in one batch, timed at batch 1 and 8.
SELFTEST_TARGET = {'name': 'selftest', 'workspace_mib': 1024, 'batch': {'min': 1, 'opt': 8, 'max': 64},
                   'notes': 'check_device: the fixtures on the GPU'}
DLA_TARGET = 'jetson-agx-orin-dla'
# Engine vs onnxruntime running the same ONNX: both follow the same precision plan, so they may differ only by the
# rounding the format allows through the fixture model's depth (scalablevit.core.numerics: FP16 0.99763, INT8 0.99706,
# FP8 0.98121).
# FP32 is floored at 0.99999 (its format bound, 1 - 4e-11, is below what a cosine of float logits resolves). Weakly
# typed builds (TensorRT 8.6, DLA before 11.x) may run any layer in FP16, so they get the precision's budget instead.
# Not yet calibrated on a GPU: the JSON keeps every measured value.
FIXTURE_DEPTHS = (2, 2, 2, 2)  # scalable_vit_fmnist's stage depths (the tests check it against the model table)
SAME_GRAPH_MIN_COSINE = {p: min(floor, numerics.min_cosine(p, FIXTURE_DEPTHS))
                         for p, floor in {'fp32': 0.99999, 'fp16': 0.9999, 'int8': 0.999, 'fp8': 0.999}.items()}


# ============================================================================================ fixtures
def fixture_manifest(name: str = FIXTURE) -> Dict[str, Any]:
    """The fixture's description (``fixtures/<name>.json``): files with sha256, input, output, how it was made."""
    manifest = read_json(FIXTURES_DIR / f'{name}.json')
    if manifest.get('format') != FIXTURE_FORMAT:
        raise ScalableViTError(f"fixture {name}: format {manifest.get('format')!r}, expected {FIXTURE_FORMAT!r}")
    return manifest


def _unpack(archive: Path, files: Dict[str, str]) -> Dict[str, bytes]:
    """The named members of ``archive``, each checked against its sha256 (only these names are read)."""
    out = {}
    try:
        with tarfile.open(archive, 'r:xz') as tar:
            for name, sha in files.items():
                member = tar.extractfile(name)
                data = member.read() if member is not None else b''
                if sha256_bytes(data) != sha:
                    raise ScalableViTError(f'fixture {archive.name}: {name} does not match its sha256')
                out[name] = data
    except (OSError, KeyError, tarfile.TarError, EOFError) as e:
        raise ScalableViTError(f'fixture {archive}: cannot read it ({e}); reinstall the package') from e
    return out


def extract_fixture(dest: Path, name: str = FIXTURE) -> Dict[str, Path]:
    """Unpack the fixture into one bundle per precision under ``dest``; ``{precision: bundle directory}``.

    The archive and every file in it are checked against the sha256 in the fixture's JSON; the bundles are the
    ones the host pipeline writes, reduced to what the device reads (deployed ONNX, reference.npz, manifest).
    """
    manifest = fixture_manifest(name)
    archive = FIXTURES_DIR / manifest['archive']['file']
    if not archive.is_file() or sha256_bytes(archive.read_bytes()) != manifest['archive']['sha256']:
        raise ScalableViTError(f'fixture {archive}: missing or not the file its JSON describes; reinstall the package')
    ref = manifest['reference']
    files = {ref['file']: ref['sha256'], **{e['file']: e['sha256'] for e in manifest['onnx'].values()}}
    data = _unpack(archive, files)
    bundles = {}
    for precision, entry in manifest['onnx'].items():
        bundle = Path(dest) / f'{name}-{precision}'
        for file in (entry['file'], ref['file']):
            write_bytes(bundle / file, data[file])
        write_json(bundle / 'manifest.json', {
            'model': manifest['model'], 'precision': precision, 'deploy_onnx': entry['file'],
            'onnx': {precision: {k: entry[k] for k in ('file', 'sha256', 'opset')}}, 'input': manifest['input'],
            'output': manifest['output'], 'reference': {k: ref[k] for k in ('file', 'sha256', 'samples')},
            'untrained': False, 'fixture': name})
        bundles[precision] = bundle
    return bundles


def same_graph_violations(metrics: Dict[str, Any], precision: str, weakly_typed: bool) -> List[str]:
    """What an engine's outputs break against onnxruntime running the same ONNX (empty = fine).

    ``weakly_typed``: built with precision builder flags, where TensorRT may run any layer in FP16.
    """
    budget = load_budgets()[precision]
    min_cosine = budget['min_cosine_min'] if weakly_typed else SAME_GRAPH_MIN_COSINE[precision]
    broken = []
    if metrics.get('nonfinite_samples'):
        broken.append(f"{metrics['nonfinite_samples']} samples with NaN/inf logits")
    if metrics['top1_agreement'] < budget['min_top1_agreement']:
        broken.append(f"top-1 agreement with onnxruntime {metrics['top1_agreement']:.4f} < "
                      f"{budget['min_top1_agreement']}")
    if metrics['cosine_min'] < min_cosine:
        broken.append(f"worst cosine with onnxruntime {metrics['cosine_min']:.6f} < {min_cosine:.6g}")
    return broken


# ============================================================================================ facts
@dataclasses.dataclass
class SelfTestOptions:
    """What ``run_self_test`` checks and where it writes (engines, timing cache, the JSON)."""

    out: Path = Path('out/check-device')
    precisions: Sequence[str] = PRECISIONS
    dla: bool = True
    warmup: int = 10
    iters: int = 50

    def validate(self) -> 'SelfTestOptions':
        self.out = Path(self.out)
        self.precisions = [check_precision(p) for p in dict.fromkeys(self.precisions)]
        BenchConfig(warmup=self.warmup, iters=self.iters).validate()
        return self


def _cuda_facts(is_jetson: bool) -> Dict[str, Any]:
    """The CUDA binding, the driver's and the binding's CUDA versions, GPU 0's identity; never raises."""
    try:
        facts: Dict[str, Any] = cuda.cuda_versions()
    except ImportError as e:
        extras = ('jetpack6', 'jetpack7') if is_jetson else ('cuda12', 'cuda13')
        fix = ' or '.join(f"pip install -e '.[{x}]' ({compat.BINDING_EXTRAS[x][0]})" for x in extras)
        return {'binding': None, 'error': f'no CUDA binding ({e})', 'fix': fix}
    except cuda.CudaError as e:
        return {'binding': cuda.api().name, 'error': str(e)}
    facts['recommended_extra'] = compat.binding_extra(facts['driver'], is_jetson)
    facts['problem'] = compat.binding_problem(facts['runtime'], facts['driver'], is_jetson)
    ok, reason = cuda.cuda_status()
    facts['device'] = reason
    facts['gpu'] = gpu_identity(0) if ok else None
    return facts


def _describe_cuda(facts: Dict[str, Any]) -> str:
    if not facts.get('binding'):
        return f"CUDA: {facts['error']}; {facts['fix']}"
    if 'driver' not in facts:
        return f"CUDA: {facts['binding']}: {facts['error']}"
    line = (f"CUDA: {facts['binding']} {facts['binding_version'] or '(version unknown)'} (runtime "
            f"{facts['runtime_text']}), driver {facts['driver_text'] or 'none'}; {facts['device']}")
    return line + (f"; PROBLEM: {facts['problem']}" if facts['problem'] else '')


def _support(env: Any, dla_cores: int, opsets: Dict[str, int]) -> Dict[str, Any]:
    """Which precisions and registered targets this TensorRT and GPU can build, each with the reason when not."""
    precisions = {p: compat.onnx_opset_problem(opsets[p], p, env.version) for p in PRECISIONS}
    targets = {}
    for name in list_targets():
        target = load_target(name)
        targets[name] = {p: precisions[p] or target_platform_problem(target, p, env.version, env.gpu, dla_cores)
                         for p in PRECISIONS}
    return {'precisions': precisions, 'targets': targets}


def _describe_support(table: Dict[str, Optional[str]]) -> str:
    return ', '.join(f'{p} yes' if why is None else f'{p} NO ({why})' for p, why in table.items())


# ============================================================================================ checks
def _check_engine(bundle_dir: Path, target: Target, env: Any, options: SelfTestOptions) -> Dict[str, Any]:
    """Build, validate (budget vs PyTorch), compare with onnxruntime and time one engine; the check's record."""
    from .trt_runner import TrtRunner  # noqa: PLC0415 (imports the CUDA binding)
    bundle = Bundle.open(bundle_dir)
    precision = bundle.precision
    engine_path = build_bundle_engine(bundle, target, force=True, timing_cache_dir=options.out / 'timing-cache',
                                      env=env)
    manifest = read_engine_manifest(engine_path)
    record: Dict[str, Any] = {
        'engine': str(engine_path), 'build_time_s': manifest['build_time_s'], 'build_flags': manifest['build_flags'],
        'builder_flags': manifest['builder_flags'], 'trtexec': manifest['trtexec'], 'layers': manifest['layers'],
        'accuracy_vs_pytorch': read_json(engine_path.with_name(f'{engine_path.stem}.report.json'))['accuracy']}
    reference = bundle.reference()
    with TrtRunner(lambda: load_engine(engine_path, env=env), name=f'tensorrt-{precision}-{target.name}') as runner:
        logits = run_padded(runner, reference['input'], target.batch_min, target.batch_max)
        record['accuracy_vs_onnxruntime'] = accuracy_metrics(
            reference[f'onnxruntime_{precision}'], logits, reference_name=f'onnxruntime-{precision}')
        config = BenchConfig(warmup=options.warmup, iters=options.iters)
        record['latency_ms'] = [benchmark(runner, bundle.input_shape, b, config)
                                for b in sorted({target.batch_min, target.batch_opt})]
    record['problems'] = same_graph_violations(record['accuracy_vs_onnxruntime'], precision,
                                               bool({'FP16', 'INT8', 'FP8'} & set(manifest['builder_flags'])))
    if target.dla_core is not None and not (manifest['layers']['dla'] or manifest['layers']['dla_layers']):
        record['problems'].append('no layer runs on DLA (engine inspector and build log agree)')
    return record


def _run_check(precision: str, bundle_dir: Path, target: Target, problem: Optional[str], env: Any,
               options: SelfTestOptions) -> Dict[str, Any]:
    """One check, never raising: 'passed', 'failed' (with why, and the traceback of an unexpected error) or
    'not applicable' (what this TensorRT and GPU cannot build, with the reason)."""
    entry: Dict[str, Any] = {'name': f'{precision}/{target.name}', 'target': target.name, 'precision': precision}
    if problem:
        return {**entry, 'status': 'not applicable', 'reason': problem}
    start = time.perf_counter()
    try:
        entry.update(_check_engine(bundle_dir, target, env, options))
        entry['status'] = 'failed' if entry['problems'] else 'passed'
        entry['reason'] = '; '.join(entry['problems']) or None
    except ScalableViTError as e:
        entry.update(status='failed', reason=str(e))
    except Exception as e:  # a bug or a TensorRT exception: keep going, the JSON is for the bug report
        entry.update(status='failed', reason=f'{type(e).__name__}: {e}', traceback=traceback.format_exc())
    entry['seconds'] = round(time.perf_counter() - start, 1)
    return entry


def _describe_check(entry: Dict[str, Any]) -> str:
    head = f"check {entry['name']}: {entry['status'].upper()}"
    if entry['status'] != 'passed':
        return f"{head}: {entry['reason']}"
    torch, ort = entry['accuracy_vs_pytorch'], entry['accuracy_vs_onnxruntime']
    times = ', '.join(f"batch {b['batch']} p50 {b['p50']:.2f} ms" + (f" (GPU {b['gpu_p50']:.2f} ms)"
                                                                     if b.get('gpu_p50') is not None else '')
                      for b in entry['latency_ms'])
    dla = f", {entry['layers']['dla']} of {entry['layers']['total']} layers on DLA" if 'dla_core=' in \
        ' '.join(entry['build_flags']) else ''
    return (f"{head} in {entry['seconds']:.0f} s: vs PyTorch agreement {torch['top1_agreement'] * 100:.2f} %, worst "
            f"cosine {torch['cosine_min']:.6f}; vs onnxruntime worst cosine {ort['cosine_min']:.6f}; {times}{dla}")


# ============================================================================================ the run
def _tensorrt_facts(report: Dict[str, Any], emit: Callable[[str], None]) -> Tuple[Any, int]:
    """Probe TensorRT (the one place the run stops when it is missing); record and print what it can build."""
    env, reason = probe_tensorrt()
    if env is None:
        hint = report['cuda'].get('problem')
        raise ScalableViTError(f'TensorRT is not usable here: {reason}' +
                               (f'; {hint}' if hint and hint not in reason else ''))
    dla_cores = int(getattr(env.trt.Builder(trt_logger(env.trt)), 'num_DLA_cores', 0))
    typing = {'gpu': compat.network_typing(env.version, False), 'dla': compat.network_typing(env.version, True)}
    report['tensorrt'] = {'version': env.version, 'dla_cores': dla_cores, 'gpu': env.gpu, 'typing': typing,
                          'no_dla': compat.dla_problem(env.version)}
    report['support'] = _support(env, dla_cores, {p: e['opset'] for p, e in fixture_manifest()['onnx'].items()})
    words = {'weak': 'weakly typed', 'flag': 'strongly typed', 'always': 'strongly typed'}
    no_dla = report['tensorrt']['no_dla']
    emit(f"TensorRT {env.version}: GPU builds {words[typing['gpu']]}, DLA builds {words[typing['dla']]}; "
         f"{dla_cores} DLA core(s){f' ({no_dla})' if no_dla else ''}")
    emit(f"precisions here: {_describe_support(report['support']['precisions'])}")
    for name, table in report['support']['targets'].items():
        emit(f'target {name}: {_describe_support(table)}')
    return env, dla_cores


def _checks(report: Dict[str, Any], bundles: Dict[str, Path], env: Any, dla_cores: int, options: SelfTestOptions,
            emit: Callable[[str], None]) -> None:
    """Each precision on the self-test GPU target and, unless ``options.dla`` is off, on DLA core 0."""
    targets = [target_from_dict(SELFTEST_TARGET, source='check_device')]
    if options.dla:
        targets.append(load_target(DLA_TARGET))
    for precision in options.precisions:
        for target in targets:
            problem = report['support']['precisions'][precision] or \
                target_platform_problem(target, precision, env.version, env.gpu, dla_cores)
            if not problem:
                emit(f'check {precision}/{target.name}: building and running...')
            entry = _run_check(precision, bundles[precision], target, problem, env, options)
            report['checks'].append(entry)
            emit(_describe_check(entry))


def _run(report: Dict[str, Any], options: SelfTestOptions, emit: Callable[[str], None]) -> None:
    host = report['host']
    emit(f"host: Python {host['python']}, {host['platform']}, numpy {np.__version__}")
    report['jetson'] = jetson_info()
    for line in describe_jetson(report['jetson']):
        emit(line)
    report['cuda'] = _cuda_facts(report['jetson']['is_jetson'])
    emit(_describe_cuda(report['cuda']))
    if report['cuda'].get('gpu'):
        emit(f"GPU 0: {describe_gpu(report['cuda']['gpu'])}")
    bundles = extract_fixture(options.out / 'fixtures')
    fixture = fixture_manifest()
    report['fixture'] = {k: fixture[k] for k in ('name', 'model', 'archive', 'made_with')}
    emit(f"fixtures: {fixture['model']} {'/'.join(fixture['onnx'])} ONNX, {fixture['reference']['samples']} "
         f"reference images, sha256 verified ({options.out / 'fixtures'})")
    env, dla_cores = _tensorrt_facts(report, emit)
    _checks(report, bundles, env, dla_cores, options, emit)


def run_self_test(options: SelfTestOptions, emit: Callable[[str], None] = logger.info) -> Dict[str, Any]:
    """Run every check, write ``<out>/check_device.json`` and return it; raise when anything failed.

    ``emit`` receives one human-readable line per fact and check (the CLI prints them). The JSON is written in
    every case, also when TensorRT is missing or a bug stops the run (then with its traceback).
    """
    options = options.validate()
    path = options.out / REPORT_NAME
    report: Dict[str, Any] = {'format': REPORT_FORMAT, 'created_at': utc_now(), 'status': 'running',
                              'options': {**dataclasses.asdict(options), 'out': str(options.out)},
                              'host': environment(), 'checks': []}
    try:
        _run(report, options, emit)
    except ScalableViTError as e:
        report.update(status='error', error=str(e))
        write_json(path, report)
        raise ScalableViTError(f'{e} (facts so far: {path})') from e
    except Exception as e:
        report.update(status='crashed', error=f'{type(e).__name__}: {e}', traceback=traceback.format_exc())
        write_json(path, report)
        raise
    failed = [c['name'] for c in report['checks'] if c['status'] == 'failed']
    ran = [c for c in report['checks'] if c['status'] != 'not applicable']
    report['status'] = 'failed' if failed or not ran else 'passed'
    write_json(path, report)
    emit(f"result: {len(ran) - len(failed)} passed, {len(failed)} failed, "
         f"{len(report['checks']) - len(ran)} not applicable; report: {path}")
    if failed:
        raise ScalableViTError(f"{len(failed)} of {len(ran)} device checks failed ({', '.join(failed)}); "
                               f'details in {path}')
    if not ran:
        raise ScalableViTError(f'no device check could run here (see {path})')
    return report
