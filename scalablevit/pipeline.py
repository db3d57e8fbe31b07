"""The host pipeline: weights -> FP32 ONNX -> calibration/validation data -> INT8/FP16 ONNX -> validation -> bundle.

Each stage is keyed by a hash of everything it depends on (input file hashes, settings, tool versions).
The bundle's ``manifest.json`` records every finished stage with its key and output hashes, so a rerun with
identical inputs reuses the finished stages, an interrupted run resumes after the last finished one, and
``force=True`` rebuilds everything. All files are written atomically.

Bundle layout (the contract the TensorRT stage and the benchmarks read)::

    manifest.json        model, precision, deploy_onnx, onnx{prec: file/sha256/opset}, input, output, weights,
                         calibration, reference, quantization, tools, stages{name: key/outputs/seconds}
    model.fp32.onnx      always; model.int8.onnx or model.fp16.onnx for those precisions
    calibration.npz      INT8 calibration images (eval preprocessing applied)
    reference.npz        held-out 'input' images, PyTorch FP32 'logits', optional 'labels'
    report.json/.md      the deployed ONNX on onnxruntime against PyTorch FP32
"""
import dataclasses
import functools
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import __version__
from .errors import ScalableViTError, unknown_choice
from .fileio import atomic_path, human_size, read_json, sha256_file, write_json
from .report import make_report, peak_rss_mb, tool_versions, write_report

logger = logging.getLogger(__name__)

PRECISIONS = ('fp32', 'fp16', 'int8')
UNTRAINED_SEED = 0
PACKAGE_DIR = Path(__file__).resolve().parent


@dataclass
class HostOptions:
    """Everything the host pipeline depends on; the CLI fills it from its flags."""
    model: str = 'scalable_vit_small'
    precision: str = 'int8'
    weights: Optional[Path] = None
    out: Optional[Path] = None
    calib_dir: Optional[Path] = None
    calib_size: int = 512
    val_dir: Optional[Path] = None
    val_size: int = 100
    input_size: Optional[int] = None
    opset: int = 17
    int8_method: str = 'entropy'
    int8_policy: str = 'default'
    exclude_op_types: Tuple[str, ...] = ()
    exclude_nodes: Tuple[str, ...] = ()
    seed: int = 0
    force: bool = False

    def validate(self) -> None:
        from .model import resolve_model_name
        self.model = resolve_model_name(self.model)
        from .export import check_opset
        from .quantize import check_int8_settings
        if self.precision not in PRECISIONS:
            raise unknown_choice('precision', self.precision, PRECISIONS)
        check_opset(self.opset)
        if self.precision == 'int8':
            check_int8_settings(self.int8_method, self.int8_policy, self.exclude_nodes)
        if self.calib_size < 1 or self.val_size < 1:
            raise ScalableViTError('--calib-size and --val-size must be positive')
        if self.input_size is not None and self.input_size < 1:
            raise ScalableViTError(f'--input-size must be positive, got {self.input_size}')
        bundled = PACKAGE_DIR / 'weights' / f'{self.model}.safetensors'
        if self.weights is None and bundled.is_file():
            logger.info('using the weights shipped with the package: %s', bundled)
            self.weights = bundled
        if self.weights is not None and not Path(self.weights).is_file():
            raise ScalableViTError(f'{self.weights}: weights file not found')
        if self.out is None:
            self.out = Path('out') / f'{self.model}-{self.precision}'


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Bundle:
    """A bundle directory and its manifest; ``run_stage`` gives the content-keyed reuse."""
    path: Path
    force: bool = False
    manifest: Dict[str, Any] = field(default_factory=dict)
    timings: Dict[str, Dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / '.write-probe'
            probe.write_bytes(b'')
            probe.unlink()
        except OSError as e:
            raise ScalableViTError(f'output directory {self.path} is not writable ({e.strerror})') from e
        manifest_path = self.path / 'manifest.json'
        if manifest_path.exists() and not self.force:
            self.manifest = read_json(manifest_path)
        self.manifest.setdefault('stages', {})

    def file(self, name: str) -> Path:
        return self.path / name

    def _finished(self, name: str, key: str) -> bool:
        done = self.manifest['stages'].get(name)
        if self.force or not done or done.get('key') != key:
            return False
        return all(self.file(f).is_file() and sha256_file(self.file(f)) == sha for f, sha in done['outputs'].items())

    def run_stage(self, name: str, key: str, outputs: Sequence[str], work: Callable[[], None]) -> None:
        """Run ``work`` unless a finished stage with the same key and intact outputs is recorded."""
        if self._finished(name, key):
            logger.info('%s: reusing finished stage (inputs unchanged)', name)
            self.timings[name] = {'seconds': 0.0, 'reused': True}
            return
        logger.info('%s: started', name)
        start = time.perf_counter()
        work()
        seconds = time.perf_counter() - start
        record = {'key': key, 'seconds': round(seconds, 2), 'outputs': {f: sha256_file(self.file(f)) for f in outputs}}
        self.manifest['stages'][name] = record
        self.timings[name] = {'seconds': seconds, 'reused': False}
        self.save()
        sizes = ', '.join(f'{f} ({human_size(self.file(f).stat().st_size)})' for f in outputs)
        logger.info('%s: done in %.1f s, saved %s', name, seconds, sizes)

    def save(self) -> None:
        write_json(self.file('manifest.json'), self.manifest)


class HostPipeline:
    """Runs the host stages for one model and precision into one bundle directory."""

    def __init__(self, options: HostOptions):
        options.validate()
        self.opt = options
        self.data_source = self._data_source()  # checks the image folders before anything is written
        self.bundle = Bundle(options.out, force=options.force)
        self._model = None
        self.untrained = options.weights is None

    # ----------------------------------------------------------------------------------- model
    @property
    def model(self) -> Any:
        if self._model is None:
            import torch
            from .model import create_model
            if self.untrained:
                logger.warning('no --weights given: %s uses RANDOM weights (seed %d); every report is marked '
                               '"untrained weights"', self.opt.model, UNTRAINED_SEED)
                torch.manual_seed(UNTRAINED_SEED)
            self._model = create_model(self.opt.model, weights=self.opt.weights).eval()
            size = self.input_size
            self._model.check_input_size(size, size)
        return self._model

    @property
    def input_size(self) -> int:
        from .model import data_config
        size = self.opt.input_size
        return size if size is not None else data_config(self.opt.model)['input_size'][-1]

    def _data_source(self) -> str:
        """Where calibration/validation images come from, as a cache key.

        A model trained on Fashion-MNIST calibrates on its train split and validates, with labels, on its test
        split; other models use the given folders or the bundled sample photos.
        """
        from . import data
        from .model import data_config
        opt = self.opt
        if opt.calib_dir is None and opt.val_dir is None and data_config(opt.model).get('labels') == 'fashion-mnist':
            return 'fashion-mnist'
        return data.source_signature(opt.calib_dir, opt.val_dir)

    @functools.cached_property
    def weights_id(self) -> str:
        """The weights' sha256 (hashed once: official checkpoints are 128-440 MB), or the untrained seed."""
        return f'untrained-seed{UNTRAINED_SEED}' if self.untrained else sha256_file(self.opt.weights)

    # ----------------------------------------------------------------------------------- stages
    def run(self) -> Dict[str, Any]:
        start = time.perf_counter()
        self._describe()
        self._export()
        calib_sha = self._data()
        deploy = self._quantize(calib_sha)
        report = self._validate(deploy)
        report['host'] = {'wall_s': round(time.perf_counter() - start, 1), 'peak_rss_mb': round(peak_rss_mb())}
        write_report(self.bundle.path, report)
        return report

    def _describe(self) -> None:
        from .complexity import model_complexity
        from .model import data_config
        opt, m = self.opt, self.bundle.manifest
        dcfg = data_config(opt.model)
        m.update({
            'schema': 1, 'package_version': __version__, 'model': opt.model, 'precision': opt.precision,
            'untrained': self.untrained,
            'weights': None if self.untrained else {'file': str(opt.weights), 'sha256': self.weights_id},
            'input': {'name': 'input', 'shape': [None, 3, self.input_size, self.input_size], 'preprocessing': dcfg},
            'output': {'name': 'logits', 'num_classes': dcfg['num_classes']},
            'opset': opt.opset, 'deploy_onnx': f'model.{opt.precision}.onnx',
            'gmacs': round(model_complexity(opt.model, self.input_size)['gmacs'], 4),  # for the device's roofline
            'tools': {k: v for k, v in tool_versions().items() if v},
        })
        m.setdefault('onnx', {})

    def _export(self) -> None:
        from .export import export_onnx
        opt = self.opt
        name = 'model.fp32.onnx'
        key = _key('export', opt.model, self.weights_id, opt.opset, self.input_size, __version__,
                   tool_versions(('torch', 'onnx', 'onnxslim')))

        def work() -> None:
            export_onnx(self.model, self.bundle.file(name), opset=opt.opset, input_size=self.input_size,
                        weights_sha256=None if self.untrained else self.weights_id)
        self.bundle.run_stage('export', key, [name], work)
        self.bundle.manifest['onnx']['fp32'] = {
            'file': name, 'sha256': self.bundle.manifest['stages']['export']['outputs'][name], 'opset': opt.opset}

    def _data(self) -> str:
        from . import data
        from .model import data_config
        opt = self.opt
        dcfg = data_config(opt.model)
        use_fmnist = self.data_source == 'fashion-mnist'
        key = _key('data', opt.model, self.data_source, opt.calib_size, opt.val_size, opt.seed, self.input_size,
                   self.weights_id, __version__, tool_versions(('torch', 'numpy', 'pillow')))

        def work() -> None:
            from .runners import TorchRunner, run_batches
            if use_fmnist:
                calib, val = data.fashion_mnist_sets(dcfg, opt.calib_size, opt.val_size, opt.seed)
            else:
                calib, val = data.calibration_and_validation(
                    dcfg, calib_dir=opt.calib_dir, calib_size=opt.calib_size, val_dir=opt.val_dir,
                    val_size=opt.val_size, seed=opt.seed, input_size=self.input_size)
            calib.save_npz(self.bundle.file('calibration.npz'))
            with TorchRunner(self.model, name='torch-fp32') as runner:
                logits = run_batches(runner, val.images, batch_size=8, progress=data.progress_bar(
                    len(val.images), 'reference (PyTorch FP32)'))
            arrays = {'input': val.images, 'logits': logits}
            if val.labels is not None:
                arrays['labels'] = val.labels
            with atomic_path(self.bundle.file('reference.npz')) as tmp:
                with open(tmp, 'wb') as f:
                    np.savez(f, **arrays)
            self.bundle.manifest['calibration'] = {'file': 'calibration.npz', 'source': calib.source,
                                                   'count': len(calib.images), 'images_sha256': calib.sha256}
            self.bundle.manifest['reference'] = {'file': 'reference.npz', 'source': val.source,
                                                 'samples': len(val.images), 'labelled': val.labels is not None}
        self.bundle.run_stage('data', key, ['calibration.npz', 'reference.npz'], work)
        outputs = self.bundle.manifest['stages']['data']['outputs']
        calib_sha = outputs['calibration.npz']
        self.bundle.manifest['calibration']['sha256'] = calib_sha
        self.bundle.manifest['reference']['sha256'] = outputs['reference.npz']
        return calib_sha

    def _quantize(self, calib_sha: str) -> str:
        opt = self.opt
        if opt.precision == 'fp32':
            return 'model.fp32.onnx'
        from . import quantize
        name = f'model.{opt.precision}.onnx'
        fp32 = self.bundle.file('model.fp32.onnx')
        settings: Dict[str, Any] = {'precision': opt.precision}
        if opt.precision == 'int8':
            settings.update(method=opt.int8_method, policy=opt.int8_policy,
                            exclude_op_types=list(opt.exclude_op_types), exclude_nodes=list(opt.exclude_nodes))
        # The key also holds what the policy name and the module constants stand for, so editing them rebuilds.
        behaviour = (dataclasses.asdict(quantize.resolve_policy(opt.int8_policy)), quantize.HAZARDS,
                     quantize.INT8_HIGH_PRECISION, quantize.FP16_LAYERNORM_LIMIT, quantize.FP16_RANGE_CHECK_IMAGES)
        key = _key('quantize', __version__, sha256_file(fp32), calib_sha, settings, behaviour,
                   tool_versions(('nvidia-modelopt', 'onnx', 'onnxruntime')))
        info: Dict[str, Any] = {}

        def work() -> None:
            from .data import ImageSet
            if opt.precision == 'int8':
                calib = ImageSet.load_npz(self.bundle.file('calibration.npz'))
                info.update(quantize.quantize_int8(
                    fp32, self.bundle.file(name), calib.images, method=opt.int8_method, policy=opt.int8_policy,
                    exclude_op_types=opt.exclude_op_types, exclude_nodes=opt.exclude_nodes))
            else:
                # The calibration images let AutoCast keep only the LayerNorms at risk of FP16 overflow in FP32.
                calib = ImageSet.load_npz(self.bundle.file('calibration.npz'))
                info.update(quantize.convert_fp16(fp32, self.bundle.file(name), calibration=calib.images))
            self.bundle.manifest['quantization'] = {**settings, **_jsonable(info)}
        self.bundle.run_stage('quantize', key, [name], work)
        self.bundle.manifest['onnx'][opt.precision] = {
            'file': name, 'sha256': self.bundle.manifest['stages']['quantize']['outputs'][name],
            'opset': self.bundle.manifest['quantization']['opset']}
        return name

    def _validate(self, deploy: str) -> Dict[str, Any]:
        from .compare import accuracy_metrics, budget_violations, gate_status
        from .data import progress_bar
        from .runners import OnnxRuntimeRunner, run_batches
        with np.load(self.bundle.file('reference.npz')) as npz:
            ref = {k: npz[k] for k in npz.files}
        labels = ref.get('labels')
        with OnnxRuntimeRunner(str(self.bundle.file(deploy)), name=f'onnxruntime-{self.opt.precision}') as runner:
            start = time.perf_counter()
            logits = run_batches(runner, ref['input'], batch_size=8,
                                 progress=progress_bar(len(ref['input']), f'validation ({self.opt.precision} ONNX)'))
            self.bundle.timings['validate'] = {'seconds': time.perf_counter() - start, 'reused': False}
            latency = _quick_latency(runner, ref['input'][:1])
        metrics = accuracy_metrics(ref['logits'], logits, labels, reference_name='pytorch-fp32')
        status = gate_status(budget_violations(metrics, self.opt.precision), self.untrained)
        self.bundle.save()
        files = [{'file': f, 'bytes': self.bundle.file(f).stat().st_size, 'sha256': sha256_file(self.bundle.file(f))}
                 for f in sorted({'model.fp32.onnx', deploy, 'calibration.npz', 'reference.npz'})]
        return make_report(self.opt.model, self.opt.precision, 'onnxruntime-cpu', metrics, latency, self.untrained,
                           status=status, stages=self.bundle.timings, files=files, bundle=str(self.bundle.path))


def _quick_latency(runner: Any, one: np.ndarray, runs: int = 20) -> Dict[str, Any]:
    """Batch-1 latency of the validation runner (a sanity figure; bench/ has the full harness)."""
    from .bench import latency_stats
    times = []
    for _ in range(runs + 3):
        runner.infer({'input': one})
        times.append(runner.last_inference_time_s * 1000)
    return latency_stats(times[3:], batch=1)


def _jsonable(info: Dict[str, Any]) -> Dict[str, Any]:
    return json.loads(json.dumps(info, default=str))
