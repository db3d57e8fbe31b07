"""The host pipeline: weights -> FP32 ONNX -> calibration/validation data -> INT8/FP16 ONNX -> validation -> bundle.

Each stage is keyed by a hash of everything it depends on (input file hashes, settings, tool versions) and
recorded in the bundle's manifest (``scalablevit.core.bundle``), so a rerun with identical inputs reuses the
finished stages, an interrupted run resumes after the last finished one, and ``force=True`` starts the bundle
clean. All files are written atomically; the run holds the bundle's lock and keeps its temporary files in the
bundle's own temp folder, removed however the run ends.
"""
import dataclasses
import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np

from .. import __version__
from ..core.bundle import HASH_CACHE, Bundle, stage_key
from ..core.manifest import check_precision
from ..core.errors import ScalableViTError
from ..core.fileio import sha256_file
from ..core.progress import progress
from ..core.report import make_report, peak_rss_mb, tool_versions, write_report
from ..core.steps import release_memory, timed_step

logger = logging.getLogger(__name__)

UNTRAINED_SEED = 0


@dataclass
class HostOptions:
    """Everything the host pipeline depends on; the CLI fills it from its flags, ``validate`` checks it once."""
    model: str = 'scalable_vit_small'
    precision: str = 'int8'
    weights: Optional[Path] = None
    out: Optional[Path] = None
    calib_dir: Optional[Path] = None
    calib_size: int = 512
    calib_batch: Optional[int] = None  # INT8/FP8 calibration batch; None: quantize.calibration_batch (model size)
    val_dir: Optional[Path] = None
    val_size: int = 100
    input_size: Optional[int] = None
    opset: int = 17
    int8_method: Optional[str] = None  # None: the format's default (int8_policy.DEFAULT_METHODS)
    int8_policy: str = 'default'
    int8_high_precision: str = 'fp16'
    int8_target: Optional[str] = None  # auto policies: 'agreement=99.5,drop=0.2' (tighter than the budget)
    exclude_op_types: Tuple[str, ...] = ()
    exclude_nodes: Tuple[str, ...] = ()
    seed: int = 0
    target: str = 'desktop'  # the report's cost estimate is for this target's reference device
    force: bool = False
    fold_normalization: bool = False  # the ONNX takes RGB 0-255 (scalablevit.models.fold); data fed to match
    qdq: Any = dataclasses.field(default=None, init=False)  # int8_policy.QdqSettings (int8, fp8), set by validate()

    def validate(self) -> 'HostOptions':
        from ..core.compat import check_opset
        from ..device.targets import load_target
        from ..models.scalablevit import resolve_model_name
        self.model = resolve_model_name(self.model)
        load_target(self.target)
        check_precision(self.precision)
        check_opset(self.opset)
        from .int8_policy import DEFAULT_METHODS, QdqSettings
        qdq_only = [flag for flag, value in (('--int8-target', self.int8_target), ('--calib-batch', self.calib_batch))
                    if value is not None]
        if self.precision not in DEFAULT_METHODS and qdq_only:
            raise ScalableViTError(f"{' and '.join(qdq_only)}: for --precision int8 or fp8 only, not {self.precision}")
        if self.precision in DEFAULT_METHODS:
            from ..device.targets import check_target_precision
            check_target_precision(load_target(self.target), self.precision)
            self.qdq = QdqSettings(fmt=self.precision, method=self.int8_method, policy=self.int8_policy,
                                   exclude_op_types=self.exclude_op_types, exclude_nodes=self.exclude_nodes,
                                   high_precision_dtype=self.int8_high_precision, target=self.int8_target,
                                   batch_size=self.calib_batch)
        if self.calib_size < 1 or self.val_size < 1:
            raise ScalableViTError('--calib-size and --val-size must be positive')
        if self.input_size is not None:
            from ..models.scalablevit import check_model_input_size
            check_model_input_size(self.model, self.input_size)  # before the bundle directory is made
        if self.weights is None:
            from ..models.checkpoint import shipped_weights
            self.weights = shipped_weights(self.model)
        if self.weights is not None and not Path(self.weights).is_file():
            raise ScalableViTError(f'{self.weights}: weights file not found')
        if self.out is None:
            self.out = Path('out') / f"{self.model}-{self.precision}{'-folded' if self.fold_normalization else ''}"
        return self


class HostPipeline:
    """Runs the host stages for one model and precision into one bundle directory (locked while it exists;
    ``run`` releases it)."""

    def __init__(self, options: HostOptions):
        from ..data.images import find_images
        self.opt = options.validate()
        for folder in (options.calib_dir, options.val_dir):  # bad image folders fail before anything is written
            if folder is not None:
                find_images(folder)
        self.bundle = Bundle.create(options.out, force=options.force, identity={
            'model': options.model, 'precision': options.precision, 'input_size': self.input_size})
        self._model = None
        self.untrained = options.weights is None
        try:
            self.data_source = self._data_source()
        except BaseException:
            self.bundle.close()
            raise

    # ----------------------------------------------------------------------------------- model
    @property
    def model(self) -> Any:
        if self._model is None:
            import torch
            from ..models.scalablevit import create_model
            if self.untrained:
                logger.warning('no --weights given: %s uses RANDOM weights (seed %d); every report is marked '
                               '"untrained weights"', self.opt.model, UNTRAINED_SEED)
                torch.manual_seed(UNTRAINED_SEED)
            # the bytes loaded must be the ones hashed into the stage keys and the manifest
            self._model = create_model(self.opt.model, weights=self.opt.weights,
                                       weights_sha256=None if self.untrained else self.weights_id).eval()
            size = self.input_size
            self._model.check_input_size(size, size)
        return self._model

    @property
    def data_cfg(self) -> Dict[str, Any]:
        """The preprocessing of the exported model: the model's, with 0-255 input when the normalization is folded."""
        from ..data.transforms import folded_config, sized_config
        from ..models.scalablevit import class_config, data_config
        dcfg = sized_config(class_config(data_config(self.opt.model), self.num_classes), self.input_size)
        return folded_config(dcfg) if self.opt.fold_normalization else dcfg

    @functools.cached_property
    def num_classes(self) -> int:
        """The class count of the head the weights carry (the config's for random weights)."""
        from ..models.checkpoint import read_state_dict
        from ..models.scalablevit import data_config, head_classes
        weights = self.opt.weights
        carried = None if self.untrained else head_classes(read_state_dict(weights, self.weights_id), self.opt.model,
                                                           weights)
        return carried if carried is not None else data_config(self.opt.model)['num_classes']

    @property
    def fold_key(self) -> Tuple[str, ...]:
        """Added to the export and data stage keys when folding (unfolded bundles keep their earlier keys)."""
        return ('fold_normalization',) if self.opt.fold_normalization else ()

    @property
    def input_size(self) -> int:
        from ..models.scalablevit import data_config
        size = self.opt.input_size
        return size if size is not None else data_config(self.opt.model)['input_size'][-1]

    def _data_source(self) -> str:
        """Where calibration/validation images come from, as a cache key.

        A model trained on Fashion-MNIST calibrates on its train split and validates, with labels, on its test
        split; other models use the given folders or the bundled sample photos.
        """
        from ..data.sets import source_signature
        from ..models.scalablevit import data_config
        opt = self.opt
        if opt.calib_dir is None and opt.val_dir is None and data_config(opt.model).get('labels') == 'fashion-mnist':
            return 'fashion-mnist'
        return source_signature(opt.calib_dir, opt.val_dir, hash_cache=self.bundle.file(HASH_CACHE))

    @functools.cached_property
    def weights_id(self) -> str:
        """The weights' sha256 (hashed once: official checkpoints are 128-440 MB), or the untrained seed."""
        return f'untrained-seed{UNTRAINED_SEED}' if self.untrained else sha256_file(self.opt.weights)

    # ----------------------------------------------------------------------------------- stages
    def run(self) -> Dict[str, Any]:
        """All stages, inside the bundle's work folder; the bundle's lock is released at the end, however it ends."""
        start = time.perf_counter()
        with self.bundle, self.bundle.work_dir():
            self._describe()
            self._export()
            self._data()
            self._model = None  # the PyTorch model's last use is the reference logits
            release_memory()
            deploy = self._quantize()
            report = self._validate(deploy)
            report['host'] = {'wall_s': round(time.perf_counter() - start, 1), 'peak_rss_mb': round(peak_rss_mb())}
            write_report(self.bundle.path, report)
            # written last: readers refuse a bundle without it (a build stopped before its gate)
            deployed = self.bundle.manifest['onnx'][self.opt.precision]['sha256']
            self.bundle.manifest['validation'] = {'status': report['status'], 'report': 'report.json',
                                                  'onnx_sha256': deployed}
            self.bundle.save()
        return report

    def _describe(self) -> None:
        from ..device.targets import load_target
        from ..models.complexity import model_complexity
        opt, m = self.opt, self.bundle.manifest
        dcfg = self.data_cfg
        m.pop('validation', None)  # this run validates anew
        m.update({
            'schema': 1, 'package_version': __version__, 'model': opt.model, 'precision': opt.precision,
            'untrained': self.untrained,
            'weights': None if self.untrained else {'file': str(opt.weights), 'sha256': self.weights_id},
            'input': {'name': 'input', 'shape': [None, 3, self.input_size, self.input_size], 'preprocessing': dcfg},
            'output': {'name': 'logits', 'num_classes': dcfg['num_classes']},
            'opset': opt.opset, 'deploy_onnx': f'model.{opt.precision}.onnx',
            'target': load_target(opt.target).name,  # a name: a host path means nothing on the device
            'gmacs': round(model_complexity(opt.model, self.input_size)['gmacs'], 4),  # for the device's roofline
            'tools': {k: v for k, v in tool_versions().items() if v},
        })
        m.setdefault('onnx', {})

    def _export(self) -> None:
        from .export import export_onnx
        opt = self.opt
        name = 'model.fp32.onnx'
        key = stage_key('export', opt.model, self.weights_id, opt.opset, self.input_size, __version__,
                        tool_versions(('torch', 'onnx', 'onnxslim')), *self.fold_key)

        def work() -> Dict[str, Any]:
            with timed_step('model'):
                model = self.model
            info = export_onnx(model, self.bundle.file(name), opset=opt.opset, input_size=self.input_size,
                               weights_sha256=None if self.untrained else self.weights_id,
                               fold_normalization=opt.fold_normalization)
            return {'opset': info['opset'], 'normalize_in_model': opt.fold_normalization}
        facts = self.bundle.run_stage('export', key, [name], work)
        self.bundle.manifest['onnx']['fp32'] = {'file': name, 'sha256': self.bundle.output_sha256('export', name),
                                                'opset': facts['opset']}

    def _data(self) -> None:
        from ..data.sets import calibration_stream_and_validation
        from ..data.store import ImageStream
        from ..data.transforms import normalize
        from ..models.scalablevit import data_config
        opt = self.opt
        dcfg = self.data_cfg  # calibration and validation images are what the exported model takes
        use_fmnist = self.data_source == 'fashion-mnist'
        key = stage_key('data', opt.model, self.data_source, opt.calib_size, opt.val_size, opt.seed, self.input_size,
                        self.weights_id, __version__, tool_versions(('torch', 'numpy', 'pillow')), *self.fold_key)

        def work() -> Dict[str, Any]:
            from ..core.fileio import atomic_path
            from ..core.runners import run_batches
            from ..data import fmnist
            from .runners import TorchRunner
            with timed_step('images', [self.bundle.file('calibration.npz')]):
                if use_fmnist:
                    calib_set, val = fmnist.fashion_mnist_sets(dcfg, opt.calib_size, opt.val_size, opt.seed)
                    calib = ImageStream.of(calib_set)
                else:  # calibration images are written as they are made: memory holds one, not the set
                    calib, val = calibration_stream_and_validation(
                        dcfg, calib_dir=opt.calib_dir, calib_size=opt.calib_size, val_dir=opt.val_dir,
                        val_size=opt.val_size, seed=opt.seed, input_size=self.input_size)
                calib.save_npz(self.bundle.file('calibration.npz'))
            # The reference is the unfolded PyTorch model on normalized pixels, so validation measures the fold too.
            torch_input = normalize(val.images, data_config(opt.model)) if opt.fold_normalization else val.images
            with timed_step('reference logits'), TorchRunner(self.model, name='torch-fp32') as runner:
                logits = run_batches(runner, torch_input, batch_size=8, progress=progress(
                    len(val.images), 'reference (PyTorch FP32)'))
            expected = (3, self.input_size, self.input_size)
            if tuple(val.images.shape[1:]) != expected:  # checked before the stage is recorded: never reused
                raise ScalableViTError(f'internal: validation images are {tuple(val.images.shape[1:])}, the model '
                                       f'takes {expected}')
            arrays = {'input': val.images, 'logits': logits}
            if val.labels is not None:
                arrays['labels'] = val.labels
            with atomic_path(self.bundle.file('reference.npz')) as tmp:
                with open(tmp, 'wb') as f:
                    np.savez(f, **arrays)
            return {'calibration': {'file': 'calibration.npz', 'source': calib.source, 'count': calib.count,
                                    'images_sha256': calib.sha256},
                    'reference': {'file': 'reference.npz', 'source': val.source, 'samples': len(val.images),
                                  'labelled': val.labels is not None}}
        facts = self.bundle.run_stage('data', key, ['calibration.npz', 'reference.npz'], work)
        for part, file in (('calibration', 'calibration.npz'), ('reference', 'reference.npz')):
            self.bundle.manifest[part] = {**facts[part], 'sha256': self.bundle.output_sha256('data', file)}

    def _quantize(self) -> str:
        opt = self.opt
        if opt.precision == 'fp32':
            return 'model.fp32.onnx'
        from . import calibrate, fp16_rules, int8_policy, quantize
        name = f'model.{opt.precision}.onnx'
        fp32 = self.bundle.file('model.fp32.onnx')
        fp32_sha = self.bundle.manifest['onnx']['fp32']['sha256']
        calib_file = self.bundle.file('calibration.npz')
        settings: Dict[str, Any] = {'precision': opt.precision}
        if opt.qdq:  # not the batch: the scales do not depend on it (host.calibrate)
            settings.update({k: v for k, v in dataclasses.asdict(opt.qdq).items() if k != 'batch_size'})
        # The key also holds what the policy name and the module constants stand for, so editing them rebuilds.
        behaviour = (opt.qdq.record() if opt.qdq else None, int8_policy.HAZARDS, int8_policy.FP16_KEEP_FP32_OP_TYPES,
                     fp16_rules.LAYERNORM_LIMIT, fp16_rules.RANGE_LIMIT, fp16_rules.RANGE_CHECK_IMAGES,
                     *((quantize.GEMV_PROBE_BATCH, calibrate.CALIBRATOR) if opt.qdq else ()))
        search = bool(opt.qdq and opt.qdq.record()['search'])
        if search:  # the search also depends on the reference set it evaluates on, the budgets and its bounds
            behaviour += (self.bundle.manifest['reference']['sha256'], _auto_behaviour())
        key = stage_key('quantize', __version__, fp32_sha, self.bundle.manifest['calibration']['sha256'], settings,
                        behaviour, tool_versions(('nvidia-modelopt', 'onnx', 'onnxruntime')))

        def work() -> Dict[str, Any]:
            from ..data.store import StoredImages
            # INT8 and FP8 calibrate on these images; FP16 measures on them which nodes risk FP16 overflow. All
            # read them from the file a batch at a time, never the whole set.
            calib = StoredImages(calib_file)
            if opt.qdq:
                info = quantize.quantize_qdq(fp32, self.bundle.file(name), calib, opt.qdq, source_sha256=fp32_sha,
                                             evaluation=self.bundle.reference() if search else None)
            else:
                info = quantize.convert_fp16(fp32, self.bundle.file(name), calibration=calib, source_sha256=fp32_sha)
            return {**settings, **info}
        facts = self.bundle.run_stage('quantize', key, [name], work)
        self.bundle.manifest['quantization'] = facts
        self.bundle.manifest['onnx'][opt.precision] = {
            'file': name, 'sha256': self.bundle.output_sha256('quantize', name), 'opset': facts['opset']}
        return name

    def _validate(self, deploy: str) -> Dict[str, Any]:
        from ..core.compare import accuracy_metrics, budget_verdict, gate_status, load_budgets
        from ..core.runners import run_batches
        from .census import census_violations
        from .runners import OnnxRuntimeRunner
        self.bundle.save()
        ref = self.bundle.reference()
        with timed_step('validate') as step:
            with timed_step('census'):
                precision_plan = self._precision_plan(deploy)
            onnx_path, runner_name = str(self.bundle.file(deploy)), f'onnxruntime-{self.opt.precision}'
            with timed_step('onnxruntime'), OnnxRuntimeRunner(onnx_path, name=runner_name) as runner:
                logits = run_batches(runner, ref['input'], batch_size=8, progress=progress(
                    len(ref['input']), f'validation ({self.opt.precision} ONNX)'))
                latency = _quick_latency(runner, ref['input'][:1])
            metrics = accuracy_metrics(ref['logits'], logits, ref.get('labels'), reference_name='pytorch-fp32')
            step['detail'] = (f"top-1 agreement {metrics['top1_agreement'] * 100:.2f} %, worst cosine "
                              f"{metrics['cosine_min']:.5f}")
        self.bundle.timings['validate'] = {'seconds': step['seconds'], 'reused': False,
                                           'peak_rss_mb': step['peak_rss_mb'], 'parts': step['parts']}
        auto = (self.bundle.manifest.get('quantization') or {}).get('auto')  # its budget may be tighter (a target)
        verdict = budget_verdict(metrics, self.opt.precision, budget=auto['budget'] if auto else None)
        verdict.failed += census_violations(precision_plan['census'], self.opt.precision,
                                            load_budgets()[self.opt.precision])
        status = gate_status(verdict.failed, self.untrained, verdict.undecided)
        recorded = {'model.fp32.onnx': self.bundle.output_sha256('export', 'model.fp32.onnx'),
                    'calibration.npz': self.bundle.manifest['calibration']['sha256'],
                    'reference.npz': self.bundle.manifest['reference']['sha256'],
                    deploy: self.bundle.manifest['onnx'][self.opt.precision]['sha256']}
        files = [{'file': f, 'bytes': self.bundle.file(f).stat().st_size, 'sha256': sha}
                 for f, sha in sorted(recorded.items())]
        extra = {'int8_auto': auto} if auto else {}
        return make_report(self.opt.model, self.opt.precision, 'onnxruntime-cpu', metrics, latency, self.untrained,
                           status=status, stages=self.bundle.timings, files=files, bundle=str(self.bundle.path),
                           **precision_plan, **extra)

    def _precision_plan(self, deploy: str) -> Dict[str, Any]:
        """The deployed ONNX's precision census and latency estimate (both also in the manifest, for the device)."""
        from ..core.peaks import load_peaks
        from ..device.targets import load_target
        from .census import DTYPES, census, layers_of
        from .costmodel import error_band, estimate, limits_note, unsupported
        from .export import load_onnx
        from .fusion import group_summary, groups_of
        model = load_onnx(self.bundle.file(deploy))
        layers = layers_of(model)
        islands = (self.bundle.manifest.get('quantization') or {}).get('fp32_islands') or {}
        summary = census(layers, islands)
        groups = groups_of(model)
        # node -> dtype too, so a device without onnx can hold the engine's layers against the ONNX; the estimate on
        # every table device, so the device's reports put it beside the engine it measures
        self.bundle.manifest['census'] = {**summary, 'node_dtypes': {la.name: la.dtype for la in layers
                                                                     if la.dtype in DTYPES}}
        self.bundle.manifest['latency_estimate'] = {
            'error_band': error_band(), 'fusion': group_summary(groups),
            'ms': {device: {str(b): round(estimate(groups, device, b)['latency_ms'], 4) for b in (1, 8)}
                   for device in load_peaks() if not unsupported(groups, device)}}  # FP8: GPUs with FP8 only
        self.bundle.save()
        target = load_target(self.opt.target)
        devices = [target.reference_device] if target.reference_device else []
        fp32 = groups if deploy == 'model.fp32.onnx' else groups_of(load_onnx(self.bundle.file('model.fp32.onnx')))
        rows = [{**estimate(groups, device, batch, kernels=batch == 1),
                 'fp32_latency_ms': estimate(fp32, device, batch)['latency_ms']}  # what the plan gains over FP32
                for device in devices for batch in (1, 8)]
        return {'census': summary, 'cost_estimate': {'target': target.name, 'note': limits_note(), 'rows': rows}}


def _auto_behaviour() -> Tuple[Any, ...]:
    """What an auto policy's result depends on beyond its settings: the budgets and the search's bounds."""
    from ..core.compare import load_budgets
    from . import autoquant
    return (load_budgets(), autoquant.MAX_STEPS, autoquant.TIME_LIMIT_S, autoquant.SENSITIVITY_IMAGES)


def _quick_latency(runner: Any, one: np.ndarray, runs: int = 20) -> Dict[str, Any]:
    """Batch-1 latency of the validation runner (a sanity figure; bench/ has the full harness)."""
    from ..core.stats import latency_stats
    times = []
    for _ in range(runs + 3):
        runner.infer({'input': one})
        times.append(runner.last_inference_time_s * 1000)
    return latency_stats(times[3:], batch=1)
