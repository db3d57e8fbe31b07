"""TensorRT runner: named-tensor IO on one stream, pinned host buffers, GPU time from CUDA events.

Shape after TensorRT's ``samples/python/common_runtime.py`` and Polygraphy's ``TrtRunner``: buffers
are sized once for the profile's maximum batch, every tensor address is set by name, each ``infer``
sets the input shape, copies in, enqueues with ``execute_async_v3``, copies out and syncs once.
Optionally the enqueue is captured into a CUDA graph (after one warm-up run) and replayed while the
input shape stays the same; a new shape is warmed up and captured again.

Imports only numpy at module level; tensorrt and the CUDA binding are imported on ``activate()``.
"""
import logging
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple, Union

import numpy as np

from ..core.errors import ScalableViTError
from ..core.runners import Feed, IOMeta, Runner
from . import cuda
from .engine import LoadedEngine, load_engine

logger = logging.getLogger(__name__)

__all__ = ['TrtRunner', 'numpy_dtype']

EngineSource = Union[str, Path, LoadedEngine, Callable[[], Any], Any]


def numpy_dtype(trt: Any, dtype: Any, tensor: str) -> np.dtype:
    """The numpy dtype of an IO tensor; a clear error naming the tensor where numpy has none.

    ``tensorrt.nptype`` raises a bare TypeError for BF16, FP8, INT4 and FP4 (they have no numpy type).
    """
    try:
        return np.dtype(trt.nptype(dtype))
    except TypeError as e:
        raise ScalableViTError(f"engine tensor '{tensor}' has TensorRT type {dtype}, which numpy cannot hold: "
                               'export the model with float32 or float16 inputs and outputs') from e


class TrtRunner(Runner):
    """Run a TensorRT engine: a path (manifest checked), a LoadedEngine, an ICudaEngine, or a loader callable."""

    backend = 'tensorrt'

    def __init__(self, engine: EngineSource, cuda_graph: bool = False, check_manifest: bool = True,
                 name: Optional[str] = None):
        label = Path(engine).name if isinstance(engine, (str, Path)) else 'engine'
        super().__init__(name or f'tensorrt-{label}')
        self._source = engine
        self.cuda_graph = cuda_graph
        self.check_manifest = check_manifest
        self.last_gpu_time_s: Optional[float] = None
        self.trt_version: Optional[str] = None
        self.manifest: Optional[Dict[str, Any]] = None

    # ----------------------------------------------------------------------------------- activation
    def _activate_impl(self) -> None:
        if self.cuda_graph and cuda.api().name != 'cuda-python':
            raise ScalableViTError(f'{self.name}: CUDA graphs need the cuda-python binding, this process uses '
                                   f'{cuda.api().name}; set {cuda.BINDING_ENV}=cuda-python or drop cuda_graph')
        try:
            import tensorrt as trt  # noqa: PLC0415
        except (ImportError, OSError) as e:
            raise ScalableViTError(f'{self.name}: TensorRT engines need the tensorrt package, which is not '
                                   f'importable here ({e})') from e
        self._trt = trt
        self.trt_version = trt.__version__
        self._loaded = self._load()
        engine = self._loaded.engine
        self._owners: list = []
        self._graph: Optional[cuda.CudaGraph] = None
        self._graph_shape: Optional[Tuple[int, ...]] = None
        self._shape: Optional[Tuple[int, ...]] = None
        try:
            self._context = engine.create_execution_context()
            if self._context is None:
                raise ScalableViTError(f'{self.name}: TensorRT could not create an execution context '
                                       '(out of GPU memory?)')
            self._stream = self._own(cuda.Stream())
            self._timer = self._own(cuda.EventTimer())
            self._setup_io(engine)
        except BaseException:
            self._release()
            raise

    def _load(self) -> LoadedEngine:
        source = self._source
        if isinstance(source, (str, Path)):
            loaded = load_engine(source, check_manifest=self.check_manifest)
        elif isinstance(source, LoadedEngine):
            loaded = source
        else:
            obj = source() if callable(source) else source
            loaded = obj if isinstance(obj, LoadedEngine) else LoadedEngine(engine=obj, runtime=None)
        if loaded.engine is None:
            raise ScalableViTError(f'{self.name}: the engine loader returned None (deserialization failed)')
        self.manifest = loaded.manifest
        return loaded

    def _own(self, owner: Any) -> Any:
        self._owners.append(owner)
        return owner

    def _setup_io(self, engine: Any) -> None:
        """Named IO: pinned host + device buffers for the largest shape of profile 0, addresses set once."""
        trt = self._trt
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self._inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if n not in self._inputs]
        self._dtypes = {n: numpy_dtype(trt, engine.get_tensor_dtype(n), n) for n in names}
        self._profile = {n: tuple(tuple(s) for s in engine.get_tensor_profile_shape(n, 0)) for n in self._inputs}
        self._meta: IOMeta = {n: (self._dtypes[n], tuple(None if d < 0 else int(d) for d in engine.get_tensor_shape(n)))
                              for n in self._inputs}
        for n in self._inputs:
            self._set_shape(n, self._profile[n][2])
        self._host: Dict[str, cuda.PinnedHostBuffer] = {}
        self._device: Dict[str, cuda.DeviceBuffer] = {}
        for n in names:
            shape = self._profile[n][2] if n in self._inputs else tuple(self._context.get_tensor_shape(n))
            if any(d < 0 for d in shape):
                raise ScalableViTError(f'{self.name}: output {n} has a data-dependent shape {shape}, not supported')
            self._host[n] = self._own(cuda.PinnedHostBuffer(shape, self._dtypes[n]))
            self._device[n] = self._own(cuda.DeviceBuffer(self._host[n].nbytes))
            if not self._context.set_tensor_address(n, self._device[n].ptr):
                raise ScalableViTError(f'{self.name}: TensorRT refused the address of tensor {n}')

    def _deactivate_impl(self) -> None:
        self._release()

    def _release(self) -> None:
        """Free graph, buffers, events and stream, then drop context and engine (in that order)."""
        errors = []
        for owner in ([self._graph] if getattr(self, '_graph', None) else []) + getattr(self, '_owners', [])[::-1]:
            try:
                owner.free()
            except cuda.CudaError as e:
                errors.append(str(e))
        self._graph, self._owners = None, []
        self._context = None
        self._loaded = None
        if errors:
            raise ScalableViTError(f'{self.name}: freeing CUDA resources failed: ' + '; '.join(errors))

    # ----------------------------------------------------------------------------------- inference
    def _input_metadata_impl(self) -> IOMeta:
        return self._meta

    def _set_shape(self, name: str, shape: Tuple[int, ...]) -> None:
        lo, _, hi = self._profile[name]
        if any(s < a or s > b for s, a, b in zip(shape, lo, hi)):
            raise ScalableViTError(f'{self.name}: input {name} shape {shape} is outside the engine profile '
                                   f'{lo}..{hi}; rebuild with a wider batch range')
        if not self._context.set_input_shape(name, shape):
            raise ScalableViTError(f'{self.name}: TensorRT rejected input shape {shape} for {name}')

    def _infer_impl(self, feed: Feed) -> Feed:
        shape = tuple(feed[self._inputs[0]].shape)
        if shape != self._shape:
            for n in self._inputs:
                self._set_shape(n, tuple(feed[n].shape))
            self._shape = shape
        views = {}
        for n in self._inputs:
            host = self._host[n].array.reshape(-1)[:feed[n].size].reshape(feed[n].shape)
            np.copyto(host, feed[n], casting='no')
            self._stream.copy_to_device(self._device[n], host)
        if self.cuda_graph and (self._graph is None or self._graph_shape != shape):
            self._capture(shape)  # before the timer: the warm-up run is not part of the measured call
        self._timer.start(self._stream)
        if self.cuda_graph:
            self._graph.launch(self._stream)
        else:
            self._execute()
        self._timer.stop(self._stream)
        for n in self._outputs:
            out_shape = tuple(self._context.get_tensor_shape(n))
            views[n] = self._host[n].array.reshape(-1)[:int(np.prod(out_shape))].reshape(out_shape)
            self._stream.copy_to_host(views[n], self._device[n])
        self._stream.synchronize()
        self.last_gpu_time_s = self._timer.elapsed_s()
        return {n: v.copy() for n, v in views.items()}  # the pinned buffers are reused by the next call

    def _execute(self) -> None:
        if not self._context.execute_async_v3(self._stream.handle):
            raise ScalableViTError(f'{self.name}: execute_async_v3 failed (see the TensorRT log)')

    def _capture(self, shape: Tuple[int, ...]) -> None:
        """Warm up once for this shape (TensorRT's deferred shape work), then capture the enqueue."""
        if self._graph is not None:
            self._graph.free()
            self._graph = None
        self._execute()
        self._stream.synchronize()
        self._graph = cuda.CudaGraph(self._stream, self._execute)
        self._graph_shape = shape
        logger.debug('%s: captured a CUDA graph for input shape %s', self.name, shape)
