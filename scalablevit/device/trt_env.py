"""The TensorRT this process can use, probed once per run, and the one TensorRT logger.

``probe_tensorrt`` imports tensorrt and asks the CUDA binding for a device; the resulting ``TensorRT`` (module,
version, GPU identity) is passed inward by the caller, so one device run imports and probes once. The logger
forwards TensorRT's messages to Python logging, keeps the last errors for the one-line failure messages and the
build's per-device layer list. Only the standard library at import time.
"""
import dataclasses
import logging
import platform
from typing import Any, Dict, List, Optional, Tuple

from ..core import compat
from ..core.errors import ScalableViTError
from . import cuda
from .jetson import board_model

logger = logging.getLogger(__name__)

__all__ = ['TensorRT', 'probe_tensorrt', 'gpu_identity', 'trt_status', 'open_tensorrt', 'trt_logger']


@dataclasses.dataclass(frozen=True)
class TensorRT:
    """The TensorRT this process can use: the module, its version and GPU 0's identity (``gpu_identity``)."""

    trt: Any
    version: str
    gpu: Dict[str, Any]

    @property
    def major(self) -> int:
        return compat.version(self.version)[0]


def probe_tensorrt() -> Tuple[Optional[TensorRT], str]:
    """(TensorRT, description) when tensorrt imports and a CUDA device answers, else (None, the reason)."""
    try:
        import tensorrt as trt  # noqa: PLC0415
    except (ImportError, OSError) as e:
        return None, f'tensorrt not importable ({e})'
    ok, reason = cuda.cuda_status()
    if not ok:
        return None, reason
    return TensorRT(trt, trt.__version__, gpu_identity(0)), f'TensorRT {trt.__version__}, {reason}'


def gpu_identity(device: int = 0) -> Dict[str, Any]:
    """What an engine and a timing cache are tied to: the GPU (name, compute capability, SM count, memory) and the
    machine around it (device-tree board model on Jetson, CPU architecture, OS).

    Jetson AGX Orin, Orin NX and Orin Nano all report "Orin" and sm_87; SM count, memory and the board model tell
    them apart.
    """
    return {**cuda.device_info(device), 'board': board_model(), 'cpu_arch': platform.machine(),
            'os': platform.system()}


def trt_status() -> Tuple[bool, str]:
    """(True, description) when tensorrt imports and a CUDA device answers, else (False, the reason)."""
    env, reason = probe_tensorrt()
    return env is not None, reason


def open_tensorrt(env: Optional[TensorRT] = None) -> TensorRT:
    """``env`` when the caller already probed, else a fresh probe; ScalableViTError when unusable."""
    if env is not None:
        return env
    env, reason = probe_tensorrt()
    if env is None:
        raise ScalableViTError(f'TensorRT is not usable here: {reason}')
    return env



_TRT_LOGGER = None


def trt_logger(trt: Any) -> Any:
    """One TensorRT logger for the process, forwarding to Python logging and keeping recent errors."""
    global _TRT_LOGGER
    if _TRT_LOGGER is None:
        levels = {trt.Logger.INTERNAL_ERROR: logging.ERROR, trt.Logger.ERROR: logging.ERROR,
                  trt.Logger.WARNING: logging.WARNING, trt.Logger.INFO: logging.DEBUG}

        class _Logger(trt.ILogger):
            def __init__(self):
                trt.ILogger.__init__(self)
                self.errors: List[str] = []
                self.placement: List[str] = []  # "[DlaLayer] ..." / "[GpuLayer] ..." of the last build

            def log(self, severity: Any, msg: str) -> None:
                level = levels.get(severity, logging.DEBUG)
                if level >= logging.ERROR:
                    self.errors = (self.errors + [msg])[-5:]
                if '[DlaLayer]' in msg or '[GpuLayer]' in msg:  # INFO or VERBOSE, depending on the release
                    self.placement.append(msg)
                logger.log(level, 'TensorRT: %s', msg)

            def pop_errors(self) -> str:
                text, self.errors = '; '.join(self.errors) or 'no error logged', []
                return text

        _TRT_LOGGER = _Logger()
    return _TRT_LOGGER


