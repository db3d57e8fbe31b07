"""One Runner interface for every backend: PyTorch, onnxruntime and TensorRT.

Shape after Polygraphy's runners: public ``activate``/``infer``/``deactivate`` do the checks, the logging
and the timing; a backend implements the small ``_activate_impl``/``_infer_impl``/``_deactivate_impl``.
Runners are context managers; inputs and outputs are ``{tensor name: numpy array}``. The model's IO
names are fixed by the exporter: one input ``INPUT_NAME`` (N, 3, H, W) float32, one output
``OUTPUT_NAME`` (N, num_classes) float32.

Backends import their framework lazily, so ``TrtRunner`` (in ``scalablevit.device.trt_runner``) works on a device
that has no torch or onnxruntime.
"""
import logging
import time
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from .errors import ScalableViTError

logger = logging.getLogger(__name__)

INPUT_NAME = 'input'
OUTPUT_NAME = 'logits'

Feed = Dict[str, np.ndarray]
# name -> (numpy dtype, shape with None for dynamic dimensions)
IOMeta = Dict[str, Tuple[np.dtype, Tuple[Optional[int], ...]]]


class Runner:
    """Base class. Subclasses set ``backend`` and implement the ``_impl`` methods."""

    backend = 'base'

    def __init__(self, name: Optional[str] = None):
        self.name = name or self.backend
        self.is_active = False
        self.last_inference_time_s: Optional[float] = None

    # ----------------------------------------------------------------------------------- public API
    def activate(self) -> 'Runner':
        if self.is_active:
            raise ScalableViTError(f'runner {self.name} is already active')
        start = time.perf_counter()
        self._activate_impl()
        self.is_active = True
        logger.debug('%s: activated in %.2f s', self.name, time.perf_counter() - start)
        return self

    def deactivate(self) -> None:
        if self.is_active:
            self._deactivate_impl()
            self.is_active = False

    def input_metadata(self) -> IOMeta:
        self._require_active()
        return self._input_metadata_impl()

    def infer(self, feed: Feed) -> Feed:
        """Run one batch; the time of the backend call alone is kept in ``last_inference_time_s``."""
        self._require_active()
        self._check_feed(feed)
        start = time.perf_counter()
        outputs = self._infer_impl(feed)
        self.last_inference_time_s = time.perf_counter() - start
        return outputs

    def __enter__(self) -> 'Runner':
        return self.activate()

    def __exit__(self, *exc: Any) -> None:
        self.deactivate()

    # ----------------------------------------------------------------------------------- backend hooks
    def _activate_impl(self) -> None:
        raise NotImplementedError

    def _deactivate_impl(self) -> None:
        pass

    def _input_metadata_impl(self) -> IOMeta:
        raise NotImplementedError

    def _infer_impl(self, feed: Feed) -> Feed:
        raise NotImplementedError

    # ----------------------------------------------------------------------------------- checks
    def _require_active(self) -> None:
        if not self.is_active:
            raise ScalableViTError(f'runner {self.name} is not active: use it as a context manager or call activate()')

    def _check_feed(self, feed: Feed) -> None:
        meta = self._input_metadata_impl()
        missing = set(meta) - set(feed)
        extra = set(feed) - set(meta)
        if missing or extra:
            raise ScalableViTError(f'runner {self.name}: inputs {sorted(feed)} do not match the model inputs {sorted(meta)}')
        for name, (dtype, shape) in meta.items():
            arr = feed[name]
            if arr.dtype != dtype:
                raise ScalableViTError(f'runner {self.name}: input {name} has dtype {arr.dtype}, expected {dtype}')
            if len(arr.shape) != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
                raise ScalableViTError(f'runner {self.name}: input {name} has shape {arr.shape}, expected {shape}')


def resolve_loader(obj_or_loader: Any) -> Any:
    """Loaders are small callables (Polygraphy style); plain objects are used as they are."""
    return obj_or_loader() if callable(obj_or_loader) and not hasattr(obj_or_loader, 'forward') else obj_or_loader


def run_batches(runner: Runner, images: np.ndarray, batch_size: int,
                progress: Optional[Callable[[int], None]] = None) -> np.ndarray:
    """Logits of ``runner`` over ``images`` (N, C, H, W) in batches; ``progress(n)`` after each batch."""
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = np.ascontiguousarray(images[start:start + batch_size], dtype=np.float32)
        outputs.append(runner.infer({INPUT_NAME: batch})[OUTPUT_NAME])
        if progress:
            progress(len(batch))
    return np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)
