"""The TensorRT this process can use, probed once per run, and the one TensorRT logger.

``probe_tensorrt`` imports tensorrt and asks the CUDA binding for a device; the resulting ``TensorRT`` (module,
version, GPU facts) is passed inward by the caller, so one device run imports and probes once. The logger
forwards TensorRT's messages to Python logging and keeps the last errors for the one-line failure messages.
Only the standard library at import time.
"""
import dataclasses
import logging
from typing import Any, Dict, List, Optional, Tuple

from . import compat, cuda
from .errors import ScalableViTError

logger = logging.getLogger(__name__)

__all__ = ['TensorRT', 'probe_tensorrt', 'trt_status', 'open_tensorrt', 'trt_logger']


@dataclasses.dataclass(frozen=True)
class TensorRT:
    """The TensorRT this process can use: the module, its version and GPU 0. Probed once per run, passed inward."""

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
    return TensorRT(trt, trt.__version__, cuda.device_info(0)), f'TensorRT {trt.__version__}, {reason}'


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

            def log(self, severity: Any, msg: str) -> None:
                level = levels.get(severity, logging.DEBUG)
                if level >= logging.ERROR:
                    self.errors = (self.errors + [msg])[-5:]
                logger.log(level, 'TensorRT: %s', msg)

            def pop_errors(self) -> str:
                text, self.errors = '; '.join(self.errors) or 'no error logged', []
                return text

        _TRT_LOGGER = _Logger()
    return _TRT_LOGGER


