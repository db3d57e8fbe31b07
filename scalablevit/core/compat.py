"""What each TensorRT release can do with our bundles: one table that export, quantize and engine read.

Facts (with their sources in the comments), not policy:

* ONNX opset -> the oldest TensorRT whose parser reads it (onnx-tensorrt ``docs/operators.md`` per release):
  TensorRT 8.6 (JetPack 6.0) parses up to opset 17, TensorRT 10.x and 11.x up to 20 and beyond.
* INT8: modelopt writes every Q/DQ model at opset >= 19 (``BASE_MIN_OPSET`` in ``modelopt/onnx/utils.py``), so an
  INT8 bundle needs TensorRT >= 10 (JetPack >= 6.1).
* FP8 (E4M3): FP8 Q/DQ is opset >= 19 too (FLOAT8E4M3FN zero points). TensorRT 8.6 cannot build it (release/8.6
  ``NvInfer.h``: "kFP8 is not supported yet"); the ONNX parser reads FP8 from 9.0 (onnx-tensorrt Changelog, "TensorRT
  9.0 GA Release ... Added support for FP8"), and FP8 convolutions, which our patch embeddings have, work strongly
  typed from 10.2 (NVIDIA/TensorRT issue 3987), so the floor is 10.2, strongly typed (no DLA). FP8 tensor cores need
  compute capability >= 8.9 (Ada 8.9, Hopper 9.0, Blackwell 10.x/12.0, Jetson Thor 11.0; Transformer Engine's support
  matrix: "requires compute capability 8.9 or higher"; TensorRT-RTX's: Ampere 8.6 and Turing "FP8 No"); Orin is 8.7
  (CUDA GPUs list). TensorRT refuses it there at build time ("Networks with FP8 Q/DQ layers require hardware with FP8
  support", NVIDIA/Model-Optimizer issue 70); ``fp8_problem`` says so before any work.
* Typing: TensorRT 8.6 has no strongly typed networks (precision from builder flags); 10.x has them behind
  ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``; 11.x types every network strongly (the flag is deprecated and
  ignored, the FP16/INT8 builder flags are gone).
* DLA: TensorRT 8.6 and 10.x build DLA networks weakly typed with the FP16 (+ INT8) builder flags, as trtexec
  does (``samples/common/sampleEngines.cpp``, the ``--useDLACore`` block, release/8.6 through 10.16); strongly typed
  DLA is documented from 11.4.1 only ("DLA builds on NVIDIA Jetson AGX Orin use strongly typed networks", 11.4.1
  release notes). No DLA on Orin with TensorRT 10.16 (JetPack 7.2; 10.16.1 release notes: "Orin DLA is not
  supported at this time") nor on Jetson with 11.0-11.4.0 (11.4.1 "Working with DLA").
* Hardware compatibility: ``AMPERE_PLUS`` from 8.6, ``SAME_COMPUTE_CAPABILITY`` from 10.9 (``NvInfer.h``: absent in
  release/10.8, present in release/10.9; 10.9.0 release notes).
* Version-compatible engines run on a newer runtime of the same major, or across the 8 -> 10 and 10 -> 11 hops.
* CUDA bindings: cuda-python 13.x needs a CUDA 13 driver (it links the CUDA 13 runtime statically and dropped
  ``cuda.cudart``; cuda-bindings 13.0.0 notes); from 12.9.0 the 12.x bindings link the 12.9 runtime statically.
  ``BINDING_EXTRAS`` pins one per platform; pyproject.toml's extras are checked against it by the tests.

numpy-free and import-free: the device path, the host pipeline and the tests all read it.
"""
import re
from typing import Optional, Tuple

from .errors import ScalableViTError

__all__ = ['MIN_TENSORRT', 'OPSETS', 'DEFAULT_OPSET', 'QDQ_MIN_TENSORRT', 'FP8_MIN_COMPUTE_CAPABILITY',
           'fp8_problem', 'HARDWARE_COMPAT', 'BINDING_EXTRAS',
           'version', 'same_version', 'max_opset', 'typing_mode', 'network_typing', 'check_opset', 'onnx_opset_problem',
           'check_onnx_opset', 'dla_problem', 'hardware_compat_problem', 'version_compatible', 'cuda_version',
           'binding_extra', 'binding_problem']

MIN_TENSORRT = (8, 6)
# opset -> oldest TensorRT whose ONNX parser reads it
OPSETS = {17: '8.6', 18: '10.0', 19: '10.0', 20: '10.0'}
DEFAULT_OPSET = 17
# Q/DQ format -> oldest TensorRT that parses and builds it (opset 19; FP8 Q/DQ on Conv and GEMM)
QDQ_MIN_TENSORRT = {'int8': '10.0', 'fp8': '10.2'}
FP8_MIN_COMPUTE_CAPABILITY = (8, 9)
# TensorRT major -> how a network gets its precision: 'weak' (builder flags), 'flag' (STRONGLY_TYPED), 'always'
_TYPING = {8: 'weak', 10: 'flag'}
# [first, end) TensorRT releases without DLA on Jetson, and the reason a DLA target is refused there
NO_DLA = (
    ((10, 16), (10, 17), 'TensorRT 10.16 (JetPack 7.2) has no DLA on Orin ("Orin DLA is not supported at this '
                         'time", 10.16.1 release notes); DLA needs TensorRT 10.3 (JetPack 6.1/6.2) or 11.4.1 with '
                         'JetPack >= 7.2.2'),
    ((11, 0, 0), (11, 4, 1), 'TensorRT 11.0-11.4.0 have no DLA support on Jetson (back in 11.4.1 for AGX Orin with '
                             'JetPack >= 7.2.2)'),
)
VERSION_COMPAT_HOPS = {(8, 10), (10, 11)}
# target value -> (tensorrt.HardwareCompatibilityLevel member, trtexec --hardwareCompatibilityLevel value)
HARDWARE_COMPAT = {'none': ('NONE', None), 'ampere_plus': ('AMPERE_PLUS', 'ampere+'),
                   'same_compute_capability': ('SAME_COMPUTE_CAPABILITY', 'sameComputeCapability')}
HARDWARE_COMPAT_MIN_TENSORRT = {'ampere_plus': '8.6', 'same_compute_capability': '10.9'}
# pyproject extra -> (the platform it is for, the CUDA major of that platform's driver, the pip requirement).
# JetPack 6.1/6.2 ship CUDA 12.6: cuda-python 12.6.2.post1 is that CUDA's release (cp310 aarch64 wheel on PyPI);
# 12.9 and later link the 12.9 runtime statically, newer than the board's driver. JetPack 7.0/7.1 ship CUDA 13.0 and
# 7.2 CUDA 13.2: a 13.0 runtime runs on both drivers.
BINDING_EXTRAS = {
    'jetpack6': ('Jetson with JetPack 6.1/6.2 (CUDA 12.6)', 12, 'cuda-python==12.6.2.post1'),
    'jetpack7': ('Jetson with JetPack 7.x (CUDA 13.0/13.2)', 13, 'cuda-python~=13.0.3'),
    'cuda12': ('x86_64/SBSA GPU with a CUDA 12 driver (R525-R575)', 12, 'cuda-python>=12.6.1,<13'),
    'cuda13': ('x86_64/SBSA GPU with a CUDA 13 driver (R580 or newer)', 13, 'cuda-python>=13.0,<14'),
}


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


def network_typing(trt_version: str, dla: bool) -> str:
    """How a network for this build gets its precision: ``typing_mode``, except that DLA builds before 11.x are weakly
    typed with precision builder flags (trtexec's ``--useDLACore`` sets FP16, which a strongly typed 10.x network
    rejects; strongly typed DLA is documented from 11.4.1)."""
    mode = typing_mode(trt_version)
    return 'weak' if dla and mode == 'flag' else mode


def check_opset(opset: int) -> int:
    """The opset if the exporter supports it, else a ScalableViTError naming the range and TensorRT versions."""
    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in OPSETS:
        lo, hi = min(OPSETS), max(OPSETS)
        raise ScalableViTError(f'opset {opset!r} is not supported: choose {lo}..{hi} ({lo} parses on TensorRT '
                               f'{OPSETS[lo]} through 11, {lo + 1}..{hi} need TensorRT >= {OPSETS[hi]})')
    return opset


def onnx_opset_problem(opset: Optional[int], precision: str, trt_version: str) -> Optional[str]:
    """Why this TensorRT's parser cannot read the ONNX (INT8 and FP8 Q/DQ from modelopt are opset >= 19), or None."""
    oldest = QDQ_MIN_TENSORRT.get(precision)
    if oldest and version(trt_version) < version(oldest):
        if precision == 'int8':
            return (f'INT8 bundles need TensorRT >= {version(oldest)[0]} (JetPack >= 6.1): modelopt writes Q/DQ models '
                    f'at opset >= 19 and TensorRT {trt_version} parses opset <= {max_opset(trt_version)}')
        return (f'{precision.upper()} bundles need TensorRT >= {oldest} (strongly typed FP8 Q/DQ on convolutions and '
                f'GEMMs), this is TensorRT {trt_version}')
    newest = max_opset(trt_version)
    if opset is not None and opset > newest:
        return (f'the ONNX has opset {opset} but TensorRT {trt_version} parses opset <= {newest}: '
                f'export at opset {newest} or use TensorRT >= {OPSETS[opset]}')
    return None


def check_onnx_opset(opset: Optional[int], precision: str, trt_version: str) -> None:
    """Refuse ONNX files the TensorRT parser cannot read, before the parse."""
    problem = onnx_opset_problem(opset, precision, trt_version)
    if problem:
        raise ScalableViTError(problem)


def fp8_problem(compute_capability: Optional[str], gpu: str) -> Optional[str]:
    """Why ``gpu`` (compute capability '8.7', or None when unknown) cannot run FP8, or None."""
    if compute_capability is None:
        return None
    if version(compute_capability)[:2] < FP8_MIN_COMPUTE_CAPABILITY:
        need = '.'.join(map(str, FP8_MIN_COMPUTE_CAPABILITY))
        supports = 'FP32, FP16 and INT8' if version(compute_capability)[:2] >= (7, 5) else 'FP32 and FP16'
        return (f'{gpu} (compute capability {compute_capability}) has no FP8 tensor cores: FP8 needs compute '
                f'capability >= {need} (Ada, Hopper, Blackwell, Jetson Thor); it runs {supports}: build an int8 or '
                f'fp16 bundle')
    return None


def _in_range(trt_version: str, first: Tuple[int, ...], end: Tuple[int, ...]) -> bool:
    """first <= version < end, comparing as many fields as ``first`` has ('10.16.1.11' is in [(10, 16), (10, 17)))."""
    n = len(first)
    return first <= (version(trt_version) + (0,) * n)[:n] < end


def dla_problem(trt_version: str) -> Optional[str]:
    """Why this TensorRT release has no DLA on Jetson (10.16 on Orin, 11.0-11.4.0), or None."""
    return next((why for first, end, why in NO_DLA if _in_range(trt_version, first, end)), None)


def hardware_compat_problem(level: str, trt_version: str) -> Optional[str]:
    """Why this TensorRT cannot build engines of hardware compatibility ``level``, or None."""
    oldest = HARDWARE_COMPAT_MIN_TENSORRT.get(level)
    if oldest and version(trt_version) < version(oldest):
        return (f"hardware compatibility '{level}' needs TensorRT >= {oldest} (HardwareCompatibilityLevel."
                f"{HARDWARE_COMPAT[level][0]}), this is TensorRT {trt_version}")
    return None


def version_compatible(built: str, running: str, opted_in: bool) -> bool:
    """Can an engine built with TensorRT ``built`` run on ``running``? (``opted_in``: built version-compatible)."""
    if same_version(built, running):
        return True
    b, r = version(built), version(running)
    if not opted_in or b < MIN_TENSORRT or r < b:
        return False
    return r[0] == b[0] or (b[0], r[0]) in VERSION_COMPAT_HOPS


# ------------------------------------------------------------------------------------------ CUDA bindings
def cuda_version(encoded: Optional[int]) -> Optional[str]:
    """CUDA's integer version (12060) as text ('12.6'); None for 0 or None (no driver)."""
    return f'{encoded // 1000}.{encoded % 1000 // 10}' if encoded else None


def binding_extra(driver: Optional[int], jetson: bool) -> Optional[str]:
    """The pyproject extra whose CUDA binding fits this driver (``cudaDriverGetVersion``), None when none does.

    JetPack 6.0 (CUDA 12.2) has none: cuda-python 12.6 is newer than its CUDA.
    """
    if not driver:
        return None
    major, minor = driver // 1000, driver % 1000 // 10
    if jetson:
        return {12: 'jetpack6' if minor >= 6 else None, 13: 'jetpack7'}.get(major)
    return {12: 'cuda12', 13: 'cuda13'}.get(major)


def binding_problem(runtime: Optional[int], driver: Optional[int], jetson: bool = False) -> Optional[str]:
    """Why the CUDA binding's runtime (``cudaRuntimeGetVersion``) cannot work with this driver, or None.

    A runtime of a newer CUDA major than the driver fails every call with cudaErrorInsufficientDriver.
    """
    if not runtime or not driver or runtime // 1000 <= driver // 1000:
        return None
    extra = binding_extra(driver, jetson)
    fix = (f"pip install -e '.[{extra}]' ({BINDING_EXTRAS[extra][2]})" if extra else
           'install a CUDA binding built for this CUDA (JetPack 6.0: cuda-python==12.2.1, or pycuda)')
    return (f'the CUDA binding is built for CUDA {cuda_version(runtime)} but the driver supports CUDA '
            f'{cuda_version(driver)}: {fix}')
