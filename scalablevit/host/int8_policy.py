"""Q/DQ (INT8 and FP8) settings and the exclusion policies: what stays out of INT8 or FP8 and why, validated once.

The policies were measured on INT8 and apply to FP8 unchanged (an FP8 bundle quantizes the layers its INT8 twin
would, less those modelopt's FP8 placement leaves out for TensorRT's FP8 kernels; docs/quantization.md).

Which nodes stay out of INT8 is a small policy table (``INT8_POLICIES``), chosen by measurement on the trained
Fashion-MNIST model (``bench/int8_sweep.py``; docs/quantization.md); the ``auto`` policies start from one of them
and let ``scalablevit.host.autoquant`` move the fewest layers out of INT8 that meet the accuracy budget. Node
patterns are regexes searched in ONNX node names, which our TorchScript export takes from torch module paths,
e.g. ``/stages.2.1/attn/proj/MatMul``.
"""
import logging
import re
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Optional, Tuple


from ..core.errors import ScalableViTError, unknown_choice

logger = logging.getLogger(__name__)

__all__ = ['Int8Policy', 'QdqSettings', 'INT8_POLICIES', 'HAZARDS', 'DEFAULT_METHODS',
           'CALIBRATION_METHODS', 'CALIBRATION_DEVICES', 'HIGH_PRECISION_DTYPES', 'FP16_KEEP_FP32_OP_TYPES',
           'DEFAULT_CALIB_BATCH', 'CALIB_BATCH_MEMORY', 'calibration_batch', 'resolve_policy']

CALIBRATION_METHODS = ('max', 'entropy', 'percentile')  # scalablevit.host.calibrate; all batch-independent
# Q/DQ format -> the method it calibrates with unless told (qdq.QDQ_FORMATS has the formats' types and ranges):
# entropy for INT8 (TensorRT's KL method: it rescued the outlier-channel model where max collapsed,
# docs/calibration.md); max for FP8, whose E4M3 grid is relative (3 mantissa bits at every magnitude), so clipping
# buys the other values no resolution and only costs the clipped ones: on all 10,000 test images max agrees more
# with FP32 on both models (trained 99.69 against 99.60 %, outliers 99.70 against 99.37 %; docs/calibration.md#fp8).
DEFAULT_METHODS = {'int8': 'entropy', 'fp8': 'max'}
# our name -> (modelopt calibration EP, onnxruntime provider that must be present)
CALIBRATION_DEVICES = {'cpu': ('cpu', 'CPUExecutionProvider'), 'cuda': ('cuda:0', 'CUDAExecutionProvider')}
# Precision of everything INT8 does not cover. FP16 by default: TensorRT builds the ONNX strongly typed, so an FP32
# op runs FP32 (CUDA cores, twice the bytes); FP32 stays only where a rule of fp16_rules names the node. 'fp32'
# everywhere else is kept as an option (it won CPU agreement, 99.8 vs 99.3 %, at a GPU cost the census shows).
HIGH_PRECISION_DTYPES = ('fp16', 'fp32')
INT8_HIGH_PRECISION = 'fp16'
# Images per calibration batch when none is given: as many as keep one batch's activations within
# CALIB_BATCH_MEMORY, at most DEFAULT_CALIB_BATCH (calibration_batch), counting every float tensor of the model (S:
# ~0.6 GB per 224 px image), an upper bound of what onnxruntime holds while it runs a batch. The scales do not
# depend on the batch (host.calibrate): it trades memory for per-batch overhead only.
DEFAULT_CALIB_BATCH = 8
CALIB_BATCH_MEMORY = 1 << 30
CALIB_BATCH_CAP = 4 << 30  # what an explicit --calib-batch may take (4x the automatic choice's memory)

# Known ViT INT8 hazards as node-name regexes over our export's names (torch module paths).
HAZARDS: Dict[str, str] = {
    # the two attention batched matmuls: q @ k^T, and softmax(attn) @ v (its input is the softmax output)
    'attention_bmm': r'/attn/MatMul(_1)?$',
    # the block residual adds, and the PEG residual (x + dwconv(x))
    'residual_add': r'^/stages\.\d+\.\d+/Add(_1)?$|^/pos_block\.\d+/Add$',
    # the classifier: plain Linear (/head/Gemm) or the 4096-wide MLP head (/head/head.N/...)
    'head': r'^/head/',
    # depthwise convs: LIM (IWSA), the SSA spatial reduction, PEG
    'depthwise_conv': r'/attn/lim_func/Conv$|/attn/reduction/reduction\.0/Conv$|^/pos_block\.\d+/proj/',
    # the stem: the first conv sees raw normalised pixels
    'stem_conv': r'^/patch_embeds\.0/proj/Conv$',
}


@dataclass(frozen=True)
class Int8Policy:
    """What stays out of INT8, and why. Patterns are ``re.search``-ed in node names; absent ones are skipped."""

    description: str
    exclude_op_types: Tuple[str, ...] = ()
    exclude_nodes: Tuple[str, ...] = ()
    disable_mha_qdq: bool = False
    search: bool = False  # then autoquant moves the fewest layers out of INT8 that meet the accuracy budget


# Chosen by measurement: bench/int8_sweep.py on the trained Fashion-MNIST model, 10k test images (docs/quantization.md).
# With FP32 as the non-INT8 dtype every setting lands within 0.1 pt and 99.5-99.8 % agreement; with FP16
# (less headroom) these three exclusions are what lifts agreement from 98.7 % to 99.3 %: the attention
# matmuls (their input is the softmax output), the residual adds, the stem conv (raw pixels). Every
# qkv/q/k/v/kv/proj/fc1/fc2 Linear stays INT8.
INT8_POLICIES: Dict[str, Int8Policy] = {
    'none': Int8Policy('modelopt heuristics only: nothing excluded by us'),
    'default': Int8Policy(
        'attention matmuls (disable_mha_qdq), residual adds and the stem conv kept out of INT8',
        exclude_nodes=(HAZARDS['residual_add'], HAZARDS['stem_conv']), disable_mha_qdq=True),
}
# auto: a start policy, then the measured search of scalablevit.host.autoquant (one calibration, graph rewrites).
INT8_POLICIES.update({
    'auto': Int8Policy('the default policy, then the fewest layers moved out of INT8 that meet the accuracy budget',
                       exclude_nodes=INT8_POLICIES['default'].exclude_nodes, disable_mha_qdq=True, search=True),
    'auto-none': Int8Policy('modelopt heuristics only, then the fewest layers moved out of INT8 that meet the '
                            'accuracy budget', search=True),
})

# FP16: op types kept FP32 unless told otherwise. Empty by measurement (docs/quantization.md): on the trained Fashion-MNIST model
# every op runs FP16 at 100 % top-1 agreement. What would overflow FP16 stays FP32 node by node, by the measured
# rules of fp16_rules (LayerNorm variance, |x| range), for FP16 bundles and the FP16 part of INT8 bundles alike.
FP16_KEEP_FP32_OP_TYPES: Tuple[str, ...] = ()


def check_choice(what: str, value: str, choices: Iterable[str]) -> str:
    if value not in choices:
        raise unknown_choice(what, value, choices)
    return value


def resolve_policy(name: str) -> Int8Policy:
    """The INT8 exclusion policy called ``name``; unknown names get the closest suggestion."""
    return INT8_POLICIES[check_choice('INT8 policy', name, INT8_POLICIES)]


@dataclass(frozen=True)
class QdqSettings:
    """Validated Q/DQ options (``fmt``: INT8 or FP8): built once at the edge (CLI, pipeline options), trusted by
    ``quantize_qdq``. ``method`` None: the format's ``DEFAULT_METHODS``."""

    fmt: str = 'int8'
    method: Optional[str] = None
    policy: str = 'default'
    exclude_op_types: Tuple[str, ...] = ()
    exclude_nodes: Tuple[str, ...] = ()
    disable_mha_qdq: Optional[bool] = None  # None: the policy's choice
    high_precision_dtype: str = INT8_HIGH_PRECISION
    calibration_device: str = 'cpu'
    batch_size: Optional[int] = None  # None: calibration_batch(model)
    target: Optional[str] = None  # auto policies: a budget tighter than accuracy_budgets.json (autoquant.parse_target)

    def __post_init__(self) -> None:
        object.__setattr__(self, 'exclude_op_types', tuple(self.exclude_op_types))
        object.__setattr__(self, 'exclude_nodes', tuple(self.exclude_nodes))
        check_choice('Q/DQ format', self.fmt, DEFAULT_METHODS)
        object.__setattr__(self, 'method', self.method or DEFAULT_METHODS[self.fmt])
        check_choice('calibration method', self.method, CALIBRATION_METHODS)
        resolve_policy(self.policy)
        check_choice('high-precision dtype', self.high_precision_dtype, HIGH_PRECISION_DTYPES)
        check_choice('calibration device', self.calibration_device, CALIBRATION_DEVICES)
        for pattern in self.exclude_nodes:
            compile_pattern(pattern)
        if self.batch_size is not None:
            _check_batch(self.batch_size)
        from .autoquant import parse_target
        object.__setattr__(self, 'target', parse_target(self.target))
        if self.target and not resolve_policy(self.policy).search:
            raise ScalableViTError(f"an INT8 target ('{self.target}') needs a searching policy: "
                                   f"{' or '.join(repr(n) for n, p in INT8_POLICIES.items() if p.search)}, "
                                   f"not '{self.policy}'")

    def record(self) -> Dict[str, Any]:
        """The settings as the manifest and the stage key record them, with what the policy name stands for."""
        pol = resolve_policy(self.policy)
        return {'format': self.fmt, 'policy': self.policy, 'method': self.method,
                'policy_exclude_op_types': list(pol.exclude_op_types), 'policy_exclude_nodes': list(pol.exclude_nodes),
                'exclude_op_types': list(self.exclude_op_types), 'exclude_nodes': list(self.exclude_nodes),
                'disable_mha_qdq': pol.disable_mha_qdq if self.disable_mha_qdq is None else bool(self.disable_mha_qdq),
                'high_precision_dtype': self.high_precision_dtype, 'search': pol.search, 'target': self.target}


def calibration_batch(model: Any) -> int:
    """Images per calibration batch for ``model``: as many as keep the float tensors of one batch within
    ``CALIB_BATCH_MEMORY``, from 1 to ``DEFAULT_CALIB_BATCH`` (8 for the small test and Fashion-MNIST models,
    2 for ScalableViT-S and 1 for L at 224 px)."""
    from .fp16_rules import float_tensors
    per_image = max(1, sum(float_tensors(model).values()))
    return max(1, min(DEFAULT_CALIB_BATCH, CALIB_BATCH_MEMORY // per_image))


def check_calibration_batch(model: Any, batch: int) -> None:
    """Refuse a calibration batch whose float tensors (at most what onnxruntime holds for it) would exceed
    ``CALIB_BATCH_CAP``, before any is allocated; the message names the flag and the largest batch that fits."""
    from .fp16_rules import float_tensors
    per_image = max(1, sum(float_tensors(model).values()))
    if batch * per_image > CALIB_BATCH_CAP:
        raise ScalableViTError(f'--calib-batch {batch}: one calibration batch of {batch} images holds '
                               f'{batch * per_image / 2**30:.1f} '
                               f'GiB of activations for this model, beyond the {CALIB_BATCH_CAP >> 30} GiB cap '
                               f'(at most {max(1, CALIB_BATCH_CAP // per_image)})')


def _check_batch(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ScalableViTError(f'calibration batch size must be a positive integer, got {batch_size!r}')


# --------------------------------------------------------------------------------------- node selection
def compile_pattern(pattern: str) -> 're.Pattern[str]':
    try:
        return re.compile(pattern)
    except re.error as e:
        raise ScalableViTError(f"node pattern '{pattern}' is not a valid regular expression ({e})") from e
