"""DeepStream: a Gst-nvinfer classifier config, its labels file and a softmax ONNX, from a bundle or an engine.

What nvinfer does (DeepStream ``gstnvinfer`` / ``nvdsinfer`` sources and the plugin manual):

* preprocessing ``y = net-scale-factor * (x - offsets[c])`` on RGB pixels 0-255, ONE scale for all channels.
  Ours is ``(x / 255 - mean[c]) / std[c]``, so it is exact with ``net-scale-factor = 1 / (255 std)`` and
  ``offsets = 255 mean`` when std is the same for every channel (Fashion-MNIST), or ``1`` and ``0`` for a model
  with the normalization folded in (``--fold-normalization``). ImageNet's per-channel std has no exact
  nvinfer form: such a bundle is refused, never approximated.
* resize: the frame (primary) or object crop (secondary) is scaled straight to the network size, a stretch with
  no crop (``maintain-aspect-ratio=0``). Our eval transform resizes the shorter side and center-crops: docs/deploy.md
  "Deploy" section measures what that difference costs.
* output: the default classifier parser takes each output as softmax probabilities (its running maximum starts
  at 0 and ``classifier-threshold`` compares probabilities), so logits would silently lose every frame whose
  logits are all negative. The bundle's ONNX outputs logits; this module writes ``<stem>.probs.onnx``, the same
  graph plus one Softmax (output ``probs``), checked against the bundle's ONNX with onnxruntime.
* labels: a classifier's labels file holds one line per output layer with the class names separated by ';'.

Engines: nvinfer builds ``model-engine-file`` from ``onnx-file`` when it is missing and saves it under its own
name ``<onnx-file>_b<batch>_gpu<id>_<fp32|fp16|int8>.engine``, which is the name written here so later runs
reuse it. nvinfer's builder sets precision flags and needs a calibration file for INT8 (without one it logs
"INT8 calibration file not specified. Trying FP16 mode."), so for an INT8 (Q/DQ) bundle the config says to build
that engine strongly typed with trtexec first; the command is in the config and the manifest. FP8 likewise, and
more so: nvinfer's ``network-mode`` has no FP8 value (FP32, INT8, FP16 and BEST are all its parser accepts), its own
build would be weakly typed, which TensorRT refuses for FP8 Q/DQ, so the config names FP16 (what the rest of the
graph runs in) and an engine trtexec built strongly typed (``_fp8.engine``). That nvinfer loads a prebuilt FP8 engine
is what it does with any plan; no DeepStream release documents it for FP8, and it has not run here.
"""
import dataclasses
import logging
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..core.errors import ScalableViTError, unknown_choice
from ..core.fileio import PathLike, atomic_path, write_json, write_text
from ..data.transforms import normalize_in_model
from .deployable import Deployable
from .exportdir import checked_fraction, checked_int, warn_untrained, write_export_dir

logger = logging.getLogger(__name__)

__all__ = ['nvinfer_normalization', 'write_probs_onnx', 'DeepStreamConfig', 'check_ids', 'export_deepstream']

NETWORK_MODE = {'fp32': 0, 'int8': 1, 'fp16': 2}  # NvDsInferNetworkMode enum order
# bundle precision -> network-mode: FP8 has none; its prebuilt engine runs what is not FP8 in FP16
MODE_OF = {'fp32': 'fp32', 'fp16': 'fp16', 'int8': 'int8', 'fp8': 'fp16'}
PREBUILT = ('int8', 'fp8')  # Q/DQ bundles: the engine is built strongly typed by trtexec, not by nvinfer
PROCESS_MODE = {'primary': 1, 'secondary': 2}
SCALING_FILTER = {'nearest': 0, 'bilinear': 1, 'bicubic': 2}  # NvBufSurfTransformInter_*; 2 = GPU-cubic/VIC 5-tap
PROBS = 'probs'
PROBS_TOLERANCE = 1e-6
TOOL = 'export_deepstream'


def nvinfer_normalization(data_cfg: Dict[str, Any]) -> Tuple[float, List[float]]:
    """(net-scale-factor, offsets) with ``nsf * (x - offsets[c]) == (x / 255 - mean[c]) / std[c]`` exactly."""
    if normalize_in_model(data_cfg):
        return 1.0, [0.0, 0.0, 0.0]
    std, mean = _channel_values(data_cfg, 'std', True), _channel_values(data_cfg, 'mean', False)
    if len(set(std)) != 1:
        raise ScalableViTError(
            f'the model normalizes with a different std per channel {tuple(std)}; nvinfer applies one '
            'net-scale-factor to every channel and cannot feed it exactly: rebuild the bundle with '
            '--fold-normalization (the model then takes RGB 0-255)')
    return 1.0 / (255.0 * std[0]), [255.0 * m for m in mean]


def _channel_values(data_cfg: Dict[str, Any], key: str, positive: bool) -> List[float]:
    """Three finite numbers, > 0 (std) or >= 0 (mean: nvinfer's offsets must be >= 0)."""
    values = data_cfg.get(key)
    ok = isinstance(values, (list, tuple)) and len(values) == 3 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and (v > 0 or v == 0 and
                                                                                          not positive)
        for v in values)
    if not ok:
        raise ScalableViTError(f"input.preprocessing {key} must be 3 finite numbers {'above' if positive else 'from'} "
                               f'0 for nvinfer, got {values!r}')
    return [float(v) for v in values]


def write_probs_onnx(onnx_path: Path, out_path: Path, check_inputs: np.ndarray) -> Dict[str, Any]:
    """``onnx_path`` plus a Softmax over the classes, output ``probs``; checked with onnxruntime on ``check_inputs``
    against the softmax of the original logits before the file takes its name."""
    import onnx
    from onnx import helper
    from ..core.runners import OUTPUT_NAME
    from ..host.export import load_onnx
    from ..host.runners import OnnxRuntimeRunner
    from .predict import softmax
    model = load_onnx(onnx_path)
    (out,) = model.graph.output
    if out.name != OUTPUT_NAME:
        raise ScalableViTError(f'{onnx_path}: output {out.name!r}, expected {OUTPUT_NAME!r}')
    model.graph.node.append(helper.make_node('Softmax', [OUTPUT_NAME], [PROBS], name='/deepstream/Softmax', axis=1))
    probs = onnx.ValueInfoProto()
    probs.CopyFrom(out)
    probs.name = PROBS
    model.graph.output.pop()
    model.graph.output.append(probs)
    onnx.checker.check_model(model)
    with OnnxRuntimeRunner(str(onnx_path), name='bundle-onnx') as runner:
        expected = softmax(runner.infer({'input': check_inputs})[OUTPUT_NAME])
    with atomic_path(out_path) as tmp:
        onnx.save_model(model, str(tmp))
        with OnnxRuntimeRunner(str(tmp), name='probs-onnx') as runner:
            got = runner.infer({'input': check_inputs})[PROBS]
        diff = float(np.abs(got - expected).max())
        if diff > PROBS_TOLERANCE:
            raise ScalableViTError(f'{out_path}: softmax output differs from the bundle ONNX by {diff:.3g}')
    return {'file': out_path.name, 'checked_images': int(len(check_inputs)), 'max_abs_diff': diff}


@dataclasses.dataclass
class DeepStreamConfig:
    """The settings of one nvinfer config; ``text()`` renders it."""

    onnx_file: str
    engine_file: str
    labels_file: str
    batch_size: int
    precision: str
    chw: Tuple[int, int, int]
    net_scale_factor: float
    offsets: List[float]
    process_mode: str = 'primary'
    gie_id: int = 1
    operate_on_gie_id: Optional[int] = None
    scaling_filter: int = 1
    classifier_threshold: float = 0.0
    notes: Sequence[str] = ()

    def properties(self) -> Dict[str, str]:
        props = {
            'gpu-id': '0', 'gie-unique-id': str(self.gie_id), 'onnx-file': self.onnx_file,
            'model-engine-file': self.engine_file, 'labelfile-path': self.labels_file,
            'batch-size': str(self.batch_size), 'network-type': '1',
            'network-mode': str(NETWORK_MODE[MODE_OF[self.precision]]),
            'process-mode': str(PROCESS_MODE[self.process_mode]), 'model-color-format': '0',
            'infer-dims': ';'.join(map(str, self.chw)), 'network-input-order': '0',
            'net-scale-factor': repr(self.net_scale_factor), 'offsets': ';'.join(map(repr, self.offsets)),
            'maintain-aspect-ratio': '0', 'scaling-filter': str(self.scaling_filter),
            'output-blob-names': PROBS, 'classifier-threshold': repr(self.classifier_threshold)}
        if self.operate_on_gie_id is not None:
            props['operate-on-gie-id'] = str(self.operate_on_gie_id)
        return props

    def text(self) -> str:
        """The key file; a value with a control character (a newline would add a key) is refused."""
        props = self.properties()
        bad = [k for k, v in props.items() if any(ord(c) < 32 for c in v)]
        if bad:
            raise ScalableViTError(f'nvinfer {bad[0]} value {props[bad[0]]!r} holds a control character')
        lines = [f'# {" ".join(n.split())}' for n in self.notes] + ['[property]']
        return '\n'.join(lines + [f'{k}={v}' for k, v in props.items()]) + '\n'


def labels_line(names: Sequence[str]) -> str:
    """The classifier labels file: every class on one line, separated by ';' (names must not contain ';')."""
    bad = [n for n in names if ';' in n or '\n' in n or '\r' in n]
    if bad:
        raise ScalableViTError(f"class name {bad[0]!r} contains ';' or a line break, which nvinfer's labels file "
                               'cannot hold')
    return ';'.join(names) + '\n'


def trtexec_line(onnx_file: str, engine_file: str, input_name: str, chw: Sequence[int], batch: int) -> str:
    """A strongly typed build with nvinfer's own profile (min 1, opt = max = batch-size)."""
    dims = 'x'.join(map(str, chw))
    return (f'trtexec --onnx={onnx_file} --saveEngine={engine_file} --stronglyTyped '
            f'--minShapes={input_name}:1x{dims} --optShapes={input_name}:{batch}x{dims} '
            f'--maxShapes={input_name}:{batch}x{dims}')


def check_ids(process_mode: str, gie_id: Optional[int], operate_on_gie_id: Optional[int]) -> Tuple[int, Optional[int]]:
    """(gie-unique-id, operate-on-gie-id or None) checked against nvinfer's ranges (both integers > 0).

    Defaults: id 1 primary, 2 secondary; a secondary operates on gie 1. A secondary may not operate on itself, and
    a primary operates on frames, so an operate-on id there is refused rather than ignored.
    """
    if process_mode not in PROCESS_MODE:
        raise unknown_choice('process mode', process_mode, PROCESS_MODE)
    gie = PROCESS_MODE[process_mode] if gie_id is None else checked_int(gie_id, '--gie-id (gie-unique-id)')
    if process_mode == 'primary':
        if operate_on_gie_id is not None:
            raise ScalableViTError('--operate-on-gie-id is for --process-mode secondary: a primary classifier '
                                   'operates on whole frames')
        return gie, None
    parent = 1 if operate_on_gie_id is None else checked_int(operate_on_gie_id, '--operate-on-gie-id')
    if parent == gie:
        raise ScalableViTError(f'--operate-on-gie-id {parent} is this classifier\'s own --gie-id: a secondary '
                               'classifier operates on the objects of another GIE (its detector)')
    return gie, parent


def export_deepstream(source: PathLike, out_dir: PathLike, bundle: Optional[PathLike] = None, target: Any = None,
                      process_mode: str = 'primary', gie_id: Optional[int] = None,
                      operate_on_gie_id: Optional[int] = None, classifier_threshold: float = 0.0) -> Dict[str, Any]:
    """Write ``config_infer_<model>.txt``, ``labels.txt``, ``<stem>.probs.onnx`` and ``deepstream.json`` as the
    folder ``out_dir``.

    ``source`` is a bundle or one of its engines (its profile's max batch is the batch size; else ``target``'s).
    Every option is checked against nvinfer's documented range before anything is written; the folder is made
    whole beside its place and swapped in (``scalablevit.serve.exportdir``), replacing only a folder of ours.
    """
    gie, parent = check_ids(process_mode, gie_id, operate_on_gie_id)
    threshold = checked_fraction(classifier_threshold, '--classifier-threshold',
                                 ' (nvinfer labels an object only when its top probability is above it)')
    dep = Deployable.open(source, bundle)
    dcfg = dep.data_cfg
    nsf, offsets = nvinfer_normalization(dcfg)
    labels = labels_line(dep.class_names)
    batch = checked_int(dep.batch_range(target)[2], 'batch-size (the batch maximum)')
    chw = tuple(checked_int(d, 'input dimension') for d in dep.input_shape)
    untrained = warn_untrained(dep, TOOL)
    onnx = dep.onnx()
    precision = dep.precision
    probs_name = f'{onnx.stem}.probs.onnx'
    engine_name = f'{probs_name}_b{batch}_gpu0_{precision}.engine'
    build = trtexec_line(probs_name, engine_name, dep.input_name, chw, batch)
    config = DeepStreamConfig(
        onnx_file=probs_name, engine_file=engine_name, labels_file='labels.txt', batch_size=batch,
        precision=precision, chw=chw, net_scale_factor=nsf, offsets=offsets, process_mode=process_mode,
        gie_id=gie, operate_on_gie_id=parent, scaling_filter=SCALING_FILTER.get(dcfg['interpolation'], 1),
        classifier_threshold=threshold, notes=_notes(dep, dcfg, build, untrained))
    reference = dep.bundle.reference(samples=8)['input']
    config_name = f'config_infer_{dep.name}.txt'
    record = {'config': config_name, 'labels': 'labels.txt', 'probs_onnx': None, 'source': str(source),
              'bundle': str(dep.bundle.path), 'precision': precision, 'untrained': untrained,
              'properties': config.properties(), 'engine_build': build if precision in PREBUILT else None}

    def fill(tmp: Path) -> None:
        record['probs_onnx'] = write_probs_onnx(onnx, tmp / probs_name, reference)
        write_text(tmp / 'labels.txt', labels)
        write_text(tmp / config_name, config.text())
        write_json(tmp / 'deepstream.json', record)
    write_export_dir(Path(out_dir), TOOL, fill, {'source': str(source), 'untrained': untrained})
    logger.info('DeepStream config: %s (%s, batch %d, net-scale-factor %r)', Path(out_dir) / config_name, precision,
                batch, nsf)
    return record


def _notes(dep: Deployable, dcfg: Dict[str, Any], build: str, untrained: bool) -> List[str]:
    """The comment block at the top of the config: where it came from and what nvinfer does differently."""
    resize, crop = dcfg['resize'], dcfg['input_size'][-1]
    notes = [f'nvinfer classifier for {dep.name} ({dep.precision}), written by scalablevit-export-deepstream from '
             f'{dep.engine or dep.bundle.path}.',
             'Input: ' + ('RGB 0-255 as nvinfer delivers it: mean/std are folded into the model (scale 1, offsets 0).'
                          if normalize_in_model(dcfg) else
                          f"y = net-scale-factor * (x - offsets) = (x / 255 - mean) / std, mean {dcfg['mean']}, "
                          f"std {dcfg['std']}."),
             f'Resize: nvinfer stretches each frame/object to {crop}x{crop} (no crop); the model was validated on '
             f"shorter side {resize} ({dcfg['interpolation']}) then center crop {crop}.",
             f'Output: {PROBS} = softmax(logits), added for the default classifier parser (it reads probabilities).']
    if untrained:
        notes.append('UNTRAINED: random weights (the bundle manifest says untrained); its labels mean nothing.')
    if dep.engine is not None:
        notes.append(f'{dep.engine.name} outputs logits, so it is not used here; its batch range gives batch-size.')
    if dep.precision == 'int8':
        notes += ['INT8 (explicit Q/DQ): nvinfer has no calibration file and would build with FP16 flags; build the '
                  'engine strongly typed first:', f'  {build}']
    if dep.precision == 'fp8':
        notes += ['FP8 (explicit Q/DQ, GPUs of compute capability >= 8.9 only): nvinfer has no FP8 network-mode '
                  '(FP16 is set, for what is not FP8) and its own build is weakly typed, which TensorRT refuses for '
                  'FP8; build the engine strongly typed first:', f'  {build}']
    return notes
