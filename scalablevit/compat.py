"""What each TensorRT release can do with our bundles: one table that export, quantize and engine read.

Facts (with their sources in the comments), not policy:

* ONNX opset -> the oldest TensorRT whose parser reads it (onnx-tensorrt ``docs/operators.md`` per release):
  TensorRT 8.6 (JetPack 6.0) parses up to opset 17, TensorRT 10.x and 11.x up to 20 and beyond.
* INT8: modelopt writes every Q/DQ model at opset >= 19 (``BASE_MIN_OPSET`` in ``modelopt/onnx/utils.py``), so an
  INT8 bundle needs TensorRT >= 10 (JetPack >= 6.1).
* Typing: TensorRT 8.6 has no strongly typed networks (precision from builder flags); 10.x has them behind
  ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``; 11.x types every network strongly (the flag is deprecated and
  ignored, the FP16/INT8 builder flags are gone).
* DLA: absent from TensorRT 11.0 through 11.4.0 on Jetson, back in 11.4.1 (JetPack 7.2.2).
* Version-compatible engines run on a newer runtime of the same major, or across the 8 -> 10 and 10 -> 11 hops.

numpy-free and import-free: the device path, the host pipeline and the tests all read it.
"""
import re
from typing import Optional, Tuple

from .errors import ScalableViTError

__all__ = ['MIN_TENSORRT', 'OPSETS', 'DEFAULT_OPSET', 'INT8_MIN_TENSORRT', 'HARDWARE_COMPAT', 'version',
           'same_version', 'max_opset', 'typing_mode', 'check_opset', 'check_onnx_opset', 'in_dla_gap',
           'version_compatible']

MIN_TENSORRT = (8, 6)
# opset -> oldest TensorRT whose ONNX parser reads it
OPSETS = {17: '8.6', 18: '10.0', 19: '10.0', 20: '10.0'}
DEFAULT_OPSET = 17
INT8_MIN_TENSORRT = '10.0'
# TensorRT major -> how a network gets its precision: 'weak' (builder flags), 'flag' (STRONGLY_TYPED), 'always'
_TYPING = {8: 'weak', 10: 'flag'}
DLA_GAP = ((11, 0, 0), (11, 4, 1))
VERSION_COMPAT_HOPS = {(8, 10), (10, 11)}
# target value -> (tensorrt.HardwareCompatibilityLevel member, trtexec --hardwareCompatibilityLevel value)
HARDWARE_COMPAT = {'none': ('NONE', None), 'ampere_plus': ('AMPERE_PLUS', 'ampere+'),
                   'same_compute_capability': ('SAME_COMPUTE_CAPABILITY', 'sameComputeCapability')}


def version(text: str) -> Tuple[int, ...]:
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


def same_version(a: str, b: str) -> bool:
    va, vb = version(a), version(b)
    width = max(len(va), len(vb))
    return va + (0,) * (width - len(va)) == vb + (0,) * (width - len(vb))


def max_opset(trt_version: str) -> int:
    """The newest opset of ``OPSETS`` this TensorRT parses."""
    v = version(trt_version)
    return max(opset for opset, oldest in OPSETS.items() if version(oldest) <= v)


def typing_mode(trt_version: str) -> str:
    """'weak' (8.6: builder precision flags), 'flag' (10.x: STRONGLY_TYPED) or 'always' (11.x and later)."""
    return _TYPING.get(version(trt_version)[0], 'always')


def check_opset(opset: int) -> int:
    """The opset if the exporter supports it, else a ScalableViTError naming the range and TensorRT versions."""
    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in OPSETS:
        lo, hi = min(OPSETS), max(OPSETS)
        raise ScalableViTError(f'opset {opset!r} is not supported: choose {lo}..{hi} ({lo} parses on TensorRT '
                               f'{OPSETS[lo]} through 11, {lo + 1}..{hi} need TensorRT >= {OPSETS[hi]})')
    return opset


def check_onnx_opset(opset: Optional[int], precision: str, trt_version: str) -> None:
    """Refuse ONNX files the TensorRT parser cannot read (INT8 Q/DQ from modelopt is opset >= 19)."""
    if precision == 'int8' and version(trt_version) < version(INT8_MIN_TENSORRT):
        raise ScalableViTError(f'INT8 bundles need TensorRT >= {version(INT8_MIN_TENSORRT)[0]} (JetPack >= 6.1): '
                               f'modelopt writes Q/DQ models at opset >= 19 and TensorRT {trt_version} parses opset '
                               f'<= {max_opset(trt_version)}')
    newest = max_opset(trt_version)
    if opset is not None and opset > newest:
        raise ScalableViTError(f'the ONNX has opset {opset} but TensorRT {trt_version} parses opset <= {newest}: '
                               f'export at opset {newest} or use TensorRT >= {OPSETS[opset]}')


def in_dla_gap(trt_version: str) -> bool:
    """True for the TensorRT releases that have no DLA support on Jetson."""
    return DLA_GAP[0] <= version(trt_version)[:3] < DLA_GAP[1]


def version_compatible(built: str, running: str, opted_in: bool) -> bool:
    """Can an engine built with TensorRT ``built`` run on ``running``? (``opted_in``: built version-compatible)."""
    if same_version(built, running):
        return True
    b, r = version(built), version(running)
    if not opted_in or b < MIN_TENSORRT or r < b:
        return False
    return r[0] == b[0] or (b[0], r[0]) in VERSION_COMPAT_HOPS
