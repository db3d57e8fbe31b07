"""Post-training quantization of the exported FP32 ONNX with NVIDIA Model Optimizer (modelopt).

* INT8: explicit Q/DQ (``modelopt.onnx.quantization.quantize``) calibrated with onnxruntime on the host.
  TensorRT 10+ builds a strongly typed engine straight from those Q/DQ nodes (TensorRT 11 has no other
  INT8 path). modelopt writes INT8 models at opset >= 19, which TensorRT 8.6 cannot parse.
* FP8 (E4M3): the same path with modelopt's FP8 Q/DQ placement (``quantize_mode='fp8'``: it leaves out the convs
  TensorRT has no FP8 kernel for: depthwise, fewer than 16 channels, filters over 32 taps) and scales threshold / 448;
  for GPUs of compute capability >= 8.9 (``core.compat.FP8_MIN_COMPUTE_CAPABILITY``).
* FP16: modelopt AutoCast (``convert_to_mixed_precision``) with FP32 inputs/outputs; kept FP32: op types /
  node names asked for, LayerNorms whose measured input range risks FP16 overflow, and what AutoCast's own
  range check on the calibration images flags.

What stays out of INT8 or FP8 is the policy of ``int8_policy``; the Q/DQ graph work is ``qdq``.

modelopt writes intermediate files beside its input and output; it therefore runs in a private temporary
directory, and only the final model is written (atomically) to the output path. modelopt, onnx and
onnxruntime are imported inside the functions that need them.
"""
import contextlib
import io
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..core.compat import QDQ_MIN_TENSORRT
from ..core.errors import ScalableViTError
from ..core.fileio import PathLike, atomic_path, sha256_bytes, sha256_file
from ..core.steps import release_memory, timed_step
from .calibrate import CALIBRATOR
from .fp16_rules import fp16_islands, with_qdq_feeds
from .int8_policy import (CALIBRATION_DEVICES, FP16_KEEP_FP32_OP_TYPES, QdqSettings, calibration_batch,
                          check_calibration_batch, check_choice, resolve_policy)
from .qdq import (COMPUTE_OP_TYPES, QDQ_FORMATS, check_zero_points, exact_patterns, match_nodes, moved_out_of_qdq,
                  nodes_with_dq_inputs, opset_of, qdq_summary, quantized_nodes, reroute_excluded)

logger = logging.getLogger(__name__)

__all__ = ['quantize_qdq', 'convert_fp16', 'fp32_compute_nodes']
GEMV_PROBE_BATCH = 8  # the batch modelopt's GEMV exclusions are decided at (_gemv_probe_shapes)


# --------------------------------------------------------------------------------------- small helpers
def _modelopt_version() -> str:
    import importlib.metadata
    try:
        return importlib.metadata.version('nvidia-modelopt')
    except importlib.metadata.PackageNotFoundError as e:
        raise ScalableViTError('nvidia-modelopt is not installed: pip install -e ".[host]"') from e


def _modelopt_log_level() -> str:
    return 'INFO' if logger.isEnabledFor(logging.DEBUG) else 'WARNING'


# Lines dropped from stdout during a modelopt call: onnxruntime's calibrator prints the first once per batch
# (our progress bar says it); the second marks records of the stdout handler modelopt.onnx re-adds on every
# quantize() call, which also reach our own handler through propagation (so each record prints once); the last two
# are onnx-graphsurgeon's in modelopt's FP8 conversion (an optional colour package; FP8 kept as the ONNX type).
_STDOUT_NOISE = ('Collecting tensor data and making histogram', '- [modelopt][onnx] - ',
                 'colored module is not installed', 'Could not convert: FLOAT8E4M3FN')


class _StderrWithoutNoise(io.TextIOBase):
    """A stdout stand-in for modelopt's and onnxruntime's prints: whole lines go to our log (stderr, our format),
    the known per-batch lines and blank lines are dropped. ``print`` writes a line's end separately, so text is
    buffered up to each newline before it is judged."""

    def __init__(self) -> None:
        super().__init__()
        self._pending = ''

    def write(self, text: str) -> int:
        *lines, self._pending = (self._pending + text).split('\n')
        for line in lines:
            if line.strip() and not any(noise in line for noise in _STDOUT_NOISE):
                logger.info('%s', line.strip())
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self.write('\n')


class _DropNvmlNoise(logging.Filter):
    """modelopt logs an ERROR when NVML is missing, which is the normal case on a CPU-only host."""

    def filter(self, record: logging.LogRecord) -> bool:
        return 'NVML Shared Library Not Found' not in record.getMessage()


@contextlib.contextmanager
def _modelopt_session() -> Iterator[Path]:
    """A private work directory; modelopt's console logging quieted and sent through ours (stderr, our format).

    stdout stays for results (CLIs print JSON there). modelopt binds its own stdout handlers at import; they are
    detached for the session, so each record is printed once, by the root logger's handler.
    The directory is made in ``tempfile``'s default folder (the host pipeline points it at the bundle's own
    temp folder) and is itself that default while open, so the files modelopt and onnxruntime make with
    ``tempfile`` (modelopt's intermediate INT8 model, ORT's ``ort.quant.*``) land in it and go with it, even
    when a run fails or is interrupted before they clean up.
    """
    level = logging.INFO if logger.isEnabledFor(logging.DEBUG) else logging.WARNING
    loggers = [logging.getLogger(name) for name in ('modelopt.onnx', 'modelopt.onnx.autocast')]
    saved = [(lg, lg.level, lg.propagate, list(lg.handlers)) for lg in loggers]
    noise = _DropNvmlNoise()
    for lg, _, _, handlers in saved:
        lg.setLevel(level)
        lg.addFilter(noise)
        lg.propagate = True
        for handler in handlers:
            lg.removeHandler(handler)
    try:
        stdout = _StderrWithoutNoise()
        with tempfile.TemporaryDirectory(prefix='scalablevit-quantize-') as work, contextlib.redirect_stdout(stdout):
            default_dir, tempfile.tempdir = tempfile.tempdir, work
            try:
                yield Path(work)
            finally:
                tempfile.tempdir = default_dir
                stdout.flush()
    finally:
        for lg, old_level, propagate, handlers in saved:
            lg.setLevel(old_level)
            lg.removeFilter(noise)
            lg.propagate = propagate
            for handler in handlers:
                lg.addHandler(handler)


@contextlib.contextmanager
def _without_per_batch_bars() -> Iterator[None]:
    """modelopt's histogram collection opens a tqdm bar per calibration batch (over the tensors); our reader's
    one bar over the images says the same, so those are switched off for the call."""
    import functools

    from modelopt.onnx.quantization import ort_patching
    original = ort_patching.tqdm
    ort_patching.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        ort_patching.tqdm = original


@contextlib.contextmanager
def _linear_dead_end_cleanup() -> Iterator[None]:
    """modelopt AutoCast (0.47) ends by dropping nodes whose outputs nothing reads, asking for each output of each
    node which nodes read it, a scan of the whole graph every time: quadratic, about 27 of the 39 s AutoCast takes on
    ScalableViT-S on 2 cores. For the call, the same removal from one set of the names the graph reads
    (tests/test_quantize.py: the converted model is byte-identical with and without it)."""
    from modelopt.onnx.autocast.precisionconverter import PrecisionConverter
    original = PrecisionConverter.__dict__.get('_cleanup_no_consumer_nodes')
    if original is None:  # another modelopt: nothing to replace
        yield
        return

    def cleanup(self: Any) -> None:
        graph = self.model.graph
        read = {o.name for o in graph.output} | {name for node in graph.node for name in node.input}
        for node in [n for n in graph.node if not any(o in read for o in n.output)]:
            graph.node.remove(node)
    PrecisionConverter._cleanup_no_consumer_nodes = cleanup
    try:
        yield
    finally:
        PrecisionConverter._cleanup_no_consumer_nodes = original


def _gemv_probe_shapes(input_name: str, images: Any) -> str:
    """The input shape modelopt decides its GEMV exclusions at (a MatMul/Gemm whose M or N is 1 gets no Q/DQ).

    Left to itself modelopt runs the first calibration batch, so at batch 1 (L's default) the classifier's Gemm
    was a GEMV and stayed FP32 while batch 2 and 8 quantized it: the graph depended on the calibration batch. The
    decision is made by shape inference at the batch the INT8 policy was validated at instead, for any batch.
    """
    c, h, w = images.shape[1:]
    return f'{input_name}:{GEMV_PROBE_BATCH}x{c}x{h}x{w}'


# --------------------------------------------------------------------------------------- model input
def _load_checked(fp32_onnx: PathLike, sha256: Optional[str] = None) -> Tuple[Any, Dict[str, Any]]:
    """The FP32 export (validated by ``export.check_onnx_model``) and its facts, ``sha256`` included (hashed
    here unless the caller knows it); refuses already quantized models."""
    from .export import check_onnx_model, load_onnx
    model = load_onnx(fp32_onnx)
    info = check_onnx_model(model, fp32_onnx)
    info['sha256'] = sha256 or sha256_file(fp32_onnx)
    info['metadata_props'] = {p.key: p.value for p in model.metadata_props}  # modelopt drops them
    done = sorted({n.op_type for n in model.graph.node if n.op_type in ('QuantizeLinear', 'DequantizeLinear')})
    if done:
        raise ScalableViTError(f'{fp32_onnx}: already quantized (has {", ".join(done)}); give the FP32 export')
    return model, info


def _stage_copy(model: Any, work: Path, name: str = 'model.fp32.onnx') -> Path:
    """Save ``model`` into the work directory with every node named (modelopt and our patterns need names)."""
    import onnx
    for i, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f'{node.op_type}_{i}'
    path = work / name
    onnx.save_model(model, str(path), save_as_external_data=False)
    return path


def _check_calibration(images: Any, info: Dict[str, Any], what: str = 'calibration') -> Any:
    """(N, C, H, W) finite float images matching the ONNX input: an array (returned as contiguous float32), or a
    ``data.StoredImages`` set (checked as it was opened; read a batch at a time, never loaded whole)."""
    from ..data.store import StoredImages
    stored = isinstance(images, StoredImages)
    arr = images if stored else np.asarray(images)
    expected = (info['in_chans'], *info['input_size'])
    if len(arr.shape) != 4 or tuple(arr.shape[1:]) != expected:
        raise ScalableViTError(f"{what} images have shape {arr.shape}, the ONNX input {info['path']} needs "
                               f"(N, {', '.join(map(str, expected))})")
    if len(arr) == 0:
        raise ScalableViTError(f'{what} set is empty: give at least one image (a few hundred for INT8)')
    if not stored:
        if not np.issubdtype(arr.dtype, np.floating):
            raise ScalableViTError(f'{what} images are {arr.dtype}; expected preprocessed float32 (scalablevit.data.sets)')
        arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not (images.finite if stored else np.isfinite(arr).all()):
        raise ScalableViTError(f'{what} images contain NaN or Inf values')
    return arr


def _images_sha256(images: Any) -> str:
    """sha256 of the float32 image bytes (what ImageSet records), of an array or a stored set."""
    from ..data.store import StoredImages
    return images.sha256 if isinstance(images, StoredImages) else sha256_bytes(images.data)


def _check_device(device: str) -> str:
    """modelopt's calibration EP for ``device``; never falls back to another device."""
    import onnxruntime as ort
    ep, provider = CALIBRATION_DEVICES[check_choice('calibration device', device, CALIBRATION_DEVICES)]
    if provider not in ort.get_available_providers():
        raise ScalableViTError(f"calibration device '{device}' asked for, but onnxruntime {ort.__version__} has no "
                               f"{provider} (available: {', '.join(ort.get_available_providers())}); "
                               f"use calibration_device='cpu' or install onnxruntime-gpu")
    return ep


# --------------------------------------------------------------------------------------- INT8 and FP8
def _calibration_reader(images: Any, input_name: str, batch_size: int, what: str) -> Any:
    """onnxruntime CalibrationDataReader over ``images`` (an array or a ``data.StoredImages``) in batches read as
    they are asked for, with one progress bar per pass: memory holds a batch, not the set."""
    from onnxruntime.quantization import CalibrationDataReader

    from ..core.progress import progress
    from ..data.store import image_batches

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.first: Optional[np.ndarray] = None
            self.rewind()

        def get_first(self) -> Dict[str, np.ndarray]:  # modelopt's shape probes
            if self.first is None:
                self.first = next(image_batches(images, batch_size))
            return {input_name: self.first}

        def rewind(self) -> None:
            self.batches = image_batches(images, batch_size)
            self.advance = progress(len(images), what)

        def get_next(self) -> Optional[Dict[str, np.ndarray]]:
            batch = next(self.batches, None)
            if batch is None:
                return None
            self.advance(len(batch))
            return {input_name: batch}
    return _Reader()


def quantize_qdq(fp32_onnx: PathLike, out_path: PathLike, calibration: Any,
                 settings: Optional[QdqSettings] = None, source_sha256: Optional[str] = None,
                 evaluation: Optional[Dict[str, np.ndarray]] = None, **options: Any) -> Dict[str, Any]:
    """Explicit-Q/DQ INT8 or FP8 (``settings.fmt``) model of ``fp32_onnx`` calibrated on ``calibration`` (N, C, H,
    W float32, an array or a ``data.StoredImages`` read a batch at a time).

    ``settings`` (or ``QdqSettings(**options)``): nodes kept out of the Q/DQ format are the policy's (see
    INT8_POLICIES) plus ``exclude_op_types`` and ``exclude_nodes`` (regexes searched in node names); calibration runs
    on ``calibration_device`` ('cpu' or 'cuda', never silently another). ``source_sha256`` is the FP32 file's hash
    when the caller knows it. A searching policy ('auto') also needs ``evaluation``, the held-out reference set
    ('input', FP32 'logits', optional 'labels') its accuracy budget is measured on. Returns the facts for the
    manifest: settings, opset, Q/DQ counts, calibration size and hash, time, size, sha256 (and the search's steps).
    """
    settings = settings or QdqSettings(**options)
    out_path = Path(out_path)
    with timed_step('load'):
        model, src = _load_checked(fp32_onnx, source_sha256)
        images = _check_calibration(calibration, src)
        search = resolve_policy(settings.policy).search
        if search:
            evaluation = _check_evaluation(evaluation, src, settings.policy)
    ep = _check_device(settings.calibration_device)
    record = settings.record()
    excluded = _excluded_nodes(model, record)
    batch = settings.batch_size or calibration_batch(model)
    check_calibration_batch(model, min(batch, len(images)))
    fp16 = settings.high_precision_dtype == 'fp16'
    with timed_step('fp16 ranges'):
        islands = fp16_islands(model, images) if fp16 else {}
    version = _modelopt_version()
    fmt = settings.fmt.upper()
    logger.info('%s quantization of %s: modelopt %s Q/DQ placement, %s calibration on %d images (%d batches of '
                '<= %d%s) on %s, policy %s, %d nodes excluded, disable_mha_qdq=%s, %s elsewhere', fmt, fp32_onnx,
                version, settings.method, len(images), -(-len(images) // batch), batch,
                '' if settings.batch_size else ', for the model size', settings.calibration_device,
                settings.policy, len(excluded), record['disable_mha_qdq'], settings.high_precision_dtype.upper())
    start = time.perf_counter()
    with _modelopt_session() as work:
        staged, input_name = _stage_copy(model, work), model.graph.input[0].name
        del model  # modelopt reads the staged file: the FP32 model is not held beside modelopt's own copies
        release_memory()
        with timed_step(f'{settings.fmt} calibration'):
            quantized = _run_modelopt_qdq(staged, input_name, images, record, excluded, ep, batch, work)
            rerouted = reroute_excluded(quantized, set(excluded))
        if fp16:
            with timed_step('fp16 autocast'):
                keep = with_qdq_feeds(quantized, islands)
                fp16_file = _stage_copy(quantized, work, 'model.to_fp16.onnx')
                del quantized  # AutoCast reads the staged file
                release_memory()
                quantized = _to_fp16(fp16_file, keep)
                _check_fp16(quantized, list(islands), fp32_onnx)
        if search:  # the deployable graph above is the start; the search reroutes layers of it out of INT8
            with timed_step('auto search'):
                quantized, moved_rerouted = _search(quantized, staged, images, evaluation, settings, record)
            excluded, rerouted = excluded + record['exclude_nodes_auto'], rerouted + moved_rerouted
    if not fp16:  # FP32 everywhere INT8 is not: by request, so each such compute node is named for the census
        done = set(quantized_nodes(quantized))
        islands = {n.name: {'rule': 'requested', 'value': None, 'limit': None,
                            'note': f'{settings.fmt} high precision fp32'}
                   for n in quantized.graph.node if n.op_type in COMPUTE_OP_TYPES and n.name not in done}
    record['fp32_islands'] = islands
    with timed_step('check and save', [out_path]):
        info = _finish_qdq(quantized, src, out_path, record, excluded, rerouted, images, batch, settings, version,
                           start)
    logger.info('%s: %d/%d MatMul/Gemm/Conv nodes quantized, %d FP32 island(s), opset %d', fmt,
                info['qdq']['quantized_total'], info['qdq']['compute_total'], len(islands), info['opset'])
    return info


def _check_evaluation(evaluation: Optional[Dict[str, np.ndarray]], src: Dict[str, Any], policy: str
                      ) -> Dict[str, np.ndarray]:
    """The reference set a searching policy evaluates on: images like the calibration's, one FP32 logit row each."""
    if evaluation is None or 'input' not in evaluation or 'logits' not in evaluation:
        raise ScalableViTError(f"INT8 policy '{policy}' measures its accuracy budget on held-out images and their FP32 "
                               f"logits, and none were given: build through deploy/build_engine.py (it passes the "
                               f"bundle's reference set)")
    images = _check_calibration(evaluation['input'], src, 'reference')
    if len(evaluation['logits']) != len(images):
        raise ScalableViTError(f"reference set: {len(evaluation['logits'])} logit rows for {len(images)} images")
    return {**evaluation, 'input': images}


def _search(start: Any, fp32_file: Path, images: Any, evaluation: Dict[str, np.ndarray], settings: QdqSettings,
            record: Dict[str, Any]) -> Tuple[Any, int]:
    """autoquant's search from the deployable ``start`` graph; its facts go into ``record['auto']``. The FP32 model
    is read back from the staged ``fp32_file`` now, so it was not held through calibration."""
    import onnx

    from ..core.compare import load_budgets
    from .autoquant import search, target_budget
    budget = target_budget(load_budgets()[settings.fmt], settings.target)
    result = search(lambda moved: moved_out_of_qdq(start, moved), onnx.load(str(fp32_file)), images, evaluation,
                    budget, settings.fmt)
    record['auto'] = result.record()
    record['exclude_nodes_auto'] = list(result.moved)  # the chosen exclusion set, also stamped in the ONNX
    return result.model, result.rerouted


def _excluded_nodes(model: Any, settings: Dict[str, Any]) -> List[str]:
    """Policy exclusions (lenient) plus the caller's (strict: typos are errors), in graph order."""
    policy = set(match_nodes(model, settings['policy_exclude_op_types'], settings['policy_exclude_nodes'],
                             strict=False))
    user = set(match_nodes(model, settings['exclude_op_types'], settings['exclude_nodes'], strict=True))
    return [n.name for n in model.graph.node if n.name in policy | user]


def _run_modelopt_qdq(staged: Path, input_name: str, images: Any, settings: Dict[str, Any], excluded: List[str],
                      ep: str, batch_size: int, work: Path) -> Any:
    """modelopt's INT8 or FP8 (``settings['format']``) Q/DQ placement on the ``staged`` FP32 file with FP32
    elsewhere (the FP16 step, with our islands, comes after), its activation scales then replaced by ``calibrate``'s
    over every image: modelopt calibrates on the first batch only (its own calibration is batch-dependent and slow;
    see calibrate). FP8 mode is modelopt's INT8 placement less the convs TensorRT has no FP8 kernel for, converted
    to E4M3 Q/DQ; its weight scales are replaced too (``_fp8_weight_scales``)."""
    import onnx
    from modelopt.onnx.quantization import quantize
    output = work / f"model.{settings['format']}.onnx"
    try:
        from ..data.store import image_batches
        first = next(image_batches(images, 1))  # placement only (shapes, GEMVs): the scales come from _calibrate
        reader = _calibration_reader(first, input_name, 1, 'Q/DQ placement')
        with _without_per_batch_bars():
            quantize(str(staged), quantize_mode=settings['format'], calibration_method='max',
                     calibration_data_reader=reader, calibration_shapes=_gemv_probe_shapes(input_name, images),
                     calibration_eps=[ep], nodes_to_exclude=exact_patterns(excluded) or None,
                     disable_mha_qdq=settings['disable_mha_qdq'], high_precision_dtype='fp32',
                     output_path=str(output), log_level=_modelopt_log_level())
    except (RuntimeError, ValueError, AssertionError, onnx.checker.ValidationError) as e:
        raise ScalableViTError(f"modelopt {settings['format'].upper()} quantization failed: {type(e).__name__}: {e}"
                               ) from e
    if not output.is_file():
        raise ScalableViTError(f"modelopt {settings['format'].upper()} quantization wrote no model (see its log "
                               "above)")
    quantized = onnx.load(str(output))
    provider = next(p for e, p in CALIBRATION_DEVICES.values() if e == ep)  # the same device as modelopt's
    _calibrate(quantized, staged, input_name, images, settings['method'], batch_size, provider, settings['format'])
    return quantized


def _calibrate(quantized: Any, staged: Path, input_name: str, images: Any, method: str, batch_size: int,
               provider: str, fmt: str) -> None:
    """Replace the activation scales of ``quantized`` (format ``fmt``) with ``method``'s over every image."""
    from onnx import numpy_helper

    from ..core.progress import progress
    from ..data.store import image_batches
    from .calibrate import calibrate, fixed_thresholds, quantized_activations, scales_of
    tensors = quantized_activations(quantized)
    fixed = fixed_thresholds(quantized, tensors)
    hists = calibrate(staged, [t for t in tensors if t not in fixed], image_batches(images, batch_size), input_name,
                      progress(len(images), f'{fmt.upper()} calibration ({method})'), provider)
    scales = scales_of(hists, method, fixed, qmax=QDQ_FORMATS[fmt][1])
    initializers = {t.name: t for t in quantized.graph.initializer}
    for node in quantized.graph.node:
        if node.op_type == 'QuantizeLinear' and node.input[0] in scales:
            scale = initializers[node.input[1]]
            scale.CopyFrom(numpy_helper.from_array(
                np.array(scales[node.input[0]], dtype=numpy_helper.to_array(scale).dtype), scale.name))
    if fmt == 'fp8':
        _fp8_weight_scales(quantized, QDQ_FORMATS[fmt][1])


def _fp8_weight_scales(quantized: Any, qmax: float) -> None:
    """Weight scales of max|w| / 448 per output channel. modelopt's ``int8_to_fp8`` multiplies INT8 scales by
    448 / 127, which puts the weights on +-127^2/448 = +-36 of E4M3's +-448 (NVIDIA/Model-Optimizer issue 215): a
    weight below max|w| / 2304 turns subnormal instead of below max|w| / 28672. TensorRT's FP8 quantization (scale =
    amax / 448) and modelopt's PyTorch FP8 recipe use the whole range; so do our activation scales."""
    from onnx import numpy_helper
    initializers = {t.name: t for t in quantized.graph.initializer}
    readers: Dict[str, List[Any]] = {}
    for node in quantized.graph.node:
        for tensor in node.input:
            readers.setdefault(tensor, []).append(node)
    for node in quantized.graph.node:
        if node.op_type != 'QuantizeLinear' or node.input[0] not in initializers:
            continue
        weight = np.abs(numpy_helper.to_array(initializers[node.input[0]]).astype(np.float32))
        axis = next((a.i for a in node.attribute if a.name == 'axis'), 1) % max(weight.ndim, 1)
        names = {node.input[1]} | {r.input[1] for r in readers.get(node.output[0], [])
                                   if r.op_type == 'DequantizeLinear'}
        for name in names:
            old = numpy_helper.to_array(initializers[name])
            amax = weight.max() if old.ndim == 0 else weight.max(axis=tuple(i for i in range(weight.ndim) if i != axis))
            new = np.maximum(amax, np.finfo(np.float32).tiny) / qmax
            initializers[name].CopyFrom(numpy_helper.from_array(new.astype(old.dtype).reshape(old.shape), name))


def _to_fp16(staged: Path, keep_fp32: List[str]) -> Any:
    """modelopt AutoCast of the ``staged`` file to FP16 with FP32 IO, keeping exactly ``keep_fp32`` FP32.

    AutoCast's own range check is off (``data_max`` infinite): our islands are the measured rules, and without the
    check AutoCast needs no reference run, which would hold every activation of its images in memory.
    """
    from modelopt.onnx.autocast import convert_to_mixed_precision
    try:
        with _linear_dead_end_cleanup():
            return convert_to_mixed_precision(onnx_path=str(staged), low_precision_type='fp16',
                                              nodes_to_exclude=exact_patterns(keep_fp32) or None,
                                              keep_io_types=True, data_max=np.inf, providers=['cpu'])
    except (RuntimeError, ValueError, AssertionError) as e:
        raise ScalableViTError(f'modelopt AutoCast FP16 conversion failed: {type(e).__name__}: {e}') from e


def _finish_qdq(model: Any, src: Dict[str, Any], out_path: Path, record: Dict[str, Any], excluded: List[str],
                 rerouted: int, images: Any, batch: int, settings: QdqSettings, version: str,
                 start: float) -> Dict[str, Any]:
    """Check the result (zero points, TensorRT ops, exclusions), stamp metadata, write it atomically."""
    from .export import check_tensorrt_ops
    name = f'{settings.fmt.upper()} model of {src["path"]}'
    checked = check_zero_points(model, name, settings.fmt)
    if checked == 0:
        raise ScalableViTError(f'{name}: modelopt inserted no Q/DQ node (everything excluded?)')
    check_tensorrt_ops(model, name)
    leaks = nodes_with_dq_inputs(model, excluded)
    if leaks:
        raise ScalableViTError(f'{name}: excluded nodes still read {settings.fmt.upper()} tensors: '
                               f'{", ".join(leaks[:3])}')
    info = {**record, 'precision': settings.fmt, 'calibration_device': settings.calibration_device,
            'modelopt_version': version, 'calibration_images': int(len(images)),
            'calibration_batch_size': batch, 'calibrator': CALIBRATOR[0],
            'calibration_sha256': _images_sha256(images), 'excluded_nodes': len(excluded),
            'rerouted_inputs': rerouted, 'opset': opset_of(model), 'min_tensorrt': QDQ_MIN_TENSORRT[settings.fmt],
            'qdq': qdq_summary(model), 'source_sha256': src['sha256']}
    stamped = ('format', 'policy', 'method', 'calibrator', 'disable_mha_qdq', 'high_precision_dtype',
               'calibration_sha256', 'modelopt_version', 'min_tensorrt')
    _stamp(model, src, info, stamped + (('exclude_nodes_auto',) if 'auto' in info else ()))
    _save(model, out_path)
    info.update(time_s=time.perf_counter() - start, size_bytes=out_path.stat().st_size, sha256=sha256_file(out_path),
                path=str(out_path))
    return info


def _stamp(model: Any, src: Dict[str, Any], info: Dict[str, Any], keys: Sequence[str]) -> None:
    """The source's metadata plus scalablevit.* precision, the real opset and the settings that made the file."""
    from onnx import helper
    from .export import stamp_metadata
    helper.set_model_props(model, {**src['metadata_props'], **{p.key: p.value for p in model.metadata_props}})
    stamp_metadata(model, {'precision': info['precision'], 'opset': info['opset'],
                           **{f'quantization.{k}': info[k] for k in keys}})


def _save(model: Any, out_path: Path) -> None:
    import onnx
    with atomic_path(out_path) as tmp:
        onnx.save_model(model, str(tmp), save_as_external_data=False)


# --------------------------------------------------------------------------------------- FP16
def _fp32_nodes(model: Any) -> List[str]:
    """Names of the nodes whose first output is float32 (after type inference)."""
    import onnx

    from .export import infer_shapes
    inferred = infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in (*inferred.graph.value_info, *inferred.graph.output)}
    return [n.name for n in model.graph.node if n.output and types.get(n.output[0]) == onnx.TensorProto.FLOAT]


def fp32_compute_nodes(model: Any) -> List[str]:
    """Names of nodes that compute in FP32: float32 output, not a Cast or a shape/data-movement op."""
    skip = {'Cast', 'Shape', 'Constant', 'Concat', 'Gather', 'Unsqueeze', 'Squeeze', 'Slice', 'Reshape'}
    ops = {n.name: n.op_type for n in model.graph.node}
    return [name for name in _fp32_nodes(model) if ops[name] not in skip]


def convert_fp16(fp32_onnx: PathLike, out_path: PathLike,
                 keep_fp32_op_types: Sequence[str] = FP16_KEEP_FP32_OP_TYPES, keep_fp32_nodes: Sequence[str] = (),
                 calibration: Any = None, source_sha256: Optional[str] = None) -> Dict[str, Any]:
    """FP16 model of ``fp32_onnx`` by modelopt AutoCast, FP32 inputs/outputs kept.

    FP32 stays: ``keep_fp32_op_types``, ``keep_fp32_nodes`` (regexes searched in node names) and the islands the
    rules of ``fp16_rules`` measure on the ``calibration`` images (every LayerNorm without images). Returns the
    facts for the manifest, the islands with their rules and values among them.
    """
    out_path = Path(out_path)
    with timed_step('load'):
        model, src = _load_checked(fp32_onnx, source_sha256)
        images = None if calibration is None else _check_calibration(calibration, src, 'FP16 reference')
    requested = match_nodes(model, keep_fp32_op_types, keep_fp32_nodes, strict=True)
    with timed_step('fp16 ranges'):
        islands = fp16_islands(model, images, requested)
    version = _modelopt_version()
    logger.info('FP16 conversion of %s with modelopt %s AutoCast: %d node(s) kept FP32 (%d requested)', fp32_onnx,
                version, len(islands), len(requested))
    start = time.perf_counter()
    with _modelopt_session() as work, timed_step('fp16 autocast'):
        staged = _stage_copy(model, work, 'model.to_fp16.onnx')
        del model  # AutoCast reads the staged file
        release_memory()
        converted = _to_fp16(staged, list(islands))
        _check_fp16(converted, list(islands), fp32_onnx)
    info = {'precision': 'fp16', 'keep_fp32_op_types': list(keep_fp32_op_types),
            'keep_fp32_nodes': list(keep_fp32_nodes), 'fp32_islands': islands, 'modelopt_version': version,
            'opset': opset_of(converted), 'fp32_nodes': len(fp32_compute_nodes(converted)),
            'nodes': len(converted.graph.node), 'source_sha256': src['sha256']}
    with timed_step('check and save', [out_path]):
        _stamp(converted, src, info, ('modelopt_version',))
        _save(converted, out_path)
    info.update(time_s=time.perf_counter() - start, size_bytes=out_path.stat().st_size, sha256=sha256_file(out_path),
                path=str(out_path))
    logger.info('FP16: %d nodes still FP32, opset %d', info['fp32_nodes'], info['opset'])
    return info


def _check_fp16(model: Any, keep: List[str], source: PathLike) -> None:
    """AutoCast's contract: FP32 graph inputs/outputs, and the nodes we asked to keep still FP32."""
    import onnx
    fp32 = set(_fp32_nodes(model))
    leaked = [n for n in keep if n not in fp32]
    io_types = [v.type.tensor_type.elem_type for v in (*model.graph.input, *model.graph.output)]
    if leaked or any(t != onnx.TensorProto.FLOAT for t in io_types):
        raise ScalableViTError(f'AutoCast broke its contract on {source}: FP16 IO or kept nodes converted '
                               f'({", ".join(leaked[:3]) or "IO types"})')
