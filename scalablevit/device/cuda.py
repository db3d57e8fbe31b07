"""The CUDA calls the TensorRT runner needs, over one binding: pycuda or cuda-python.

Shape after TensorRT's ``samples/python/common_runtime.py``: every CUDA call goes through one checker
that raises :class:`CudaError` (a ScalableViTError) naming the call and the CUDA error, and device
memory, pinned host memory, streams, events and graphs live in small owners with an idempotent
``free()`` that are also context managers.

The binding is chosen once, on first use: pycuda when it is importable (JetPack images often ship
it), otherwise cuda-python (``cuda.bindings.runtime``, what TensorRT's samples use). The environment
variable ``SCALABLEVIT_CUDA_BINDING=pycuda|cuda-python`` overrides the choice. Only numpy is imported
at module import time. Everything runs on CUDA device 0: select another GPU with CUDA_VISIBLE_DEVICES.

Stream handles go to TensorRT as integers through ``cuda.bindings.utils.get_cuda_native_handle`` (cuda-bindings
12.9.1 / 13.0.0 deprecate ``int(cudaStream_t)``), with ``int()`` on older cuda-python.
"""
import ctypes
import importlib.metadata
import importlib.util
import logging
import os
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from ..core.compat import binding_problem, cuda_version
from ..core.errors import ScalableViTError, unknown_choice

logger = logging.getLogger(__name__)

__all__ = ['CudaError', 'binding_name', 'api', 'check', 'device_count', 'device_info', 'cuda_versions', 'cuda_status',
           'native_handle', 'DeviceBuffer', 'PinnedHostBuffer', 'Stream', 'EventTimer', 'CudaGraph']

BINDINGS = ('pycuda', 'cuda-python')
BINDING_ENV = 'SCALABLEVIT_CUDA_BINDING'
_API: Optional['_Api'] = None


class CudaError(ScalableViTError):
    """A CUDA call failed; the message names the call and the CUDA error."""


# ------------------------------------------------------------------------------------------ binding choice
def binding_name() -> str:
    """The binding to use: $SCALABLEVIT_CUDA_BINDING, else pycuda when importable, else cuda-python."""
    forced = os.environ.get(BINDING_ENV)
    if forced:
        if forced not in BINDINGS:
            raise unknown_choice(f'CUDA binding (${BINDING_ENV})', forced, BINDINGS)
        return forced
    return 'pycuda' if importlib.util.find_spec('pycuda') is not None else 'cuda-python'


def api() -> '_Api':
    """The process-wide CUDA API object, created on first use."""
    global _API
    if _API is None:
        name = binding_name()
        _API = _PyCuda() if name == 'pycuda' else _CudaPython()
        logger.debug('CUDA binding: %s', name)
    return _API


def check(call: str, result: Sequence[Any]) -> Any:
    """cuda-python checker: ``result`` is ``(error, *values)``; raise CudaError naming ``call`` on failure.

    Returns None, the single value, or the tuple of values.
    """
    cudart = _cudart()
    err, values = result[0], tuple(result[1:])
    if err != cudart.cudaError_t.cudaSuccess:
        raise CudaError(f'{call} failed: {_error_text(cudart, err)}')
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def _cudart() -> Any:
    """cuda-python's runtime module (``cuda.bindings.runtime``; ``cuda.cudart`` before cuda-python 12.6)."""
    try:
        from cuda.bindings import runtime  # noqa: PLC0415 (lazy: optional dependency)
        return runtime
    except ImportError:
        from cuda import cudart  # noqa: PLC0415
        return cudart


def native_handle(obj: Any) -> int:
    """The address of a cuda-python object (a ``cudaStream_t``) as an int, the way the binding wants it read."""
    try:
        from cuda.bindings.utils import get_cuda_native_handle  # noqa: PLC0415 (cuda-bindings >= 12.9.1)
    except ImportError:
        return int(obj)
    return int(get_cuda_native_handle(obj))


def no_driver_text(error: RuntimeError) -> str:
    """cuda-python 12.6.x's RuntimeError without a driver ("Failed to dlopen libcuda.so.1", 'Function "cuInit" not
    found') as the error code 13.x returns for the same case."""
    return f'cudaErrorInsufficientDriver (no usable CUDA driver; the binding says: {error})'


def _error_text(cudart: Any, err: Any) -> str:
    name = getattr(err, 'name', str(err))
    try:
        status, text = cudart.cudaGetErrorString(err)
    except RuntimeError:  # cuda-python 12.6.x without a driver fails even here
        return name
    text = text.decode() if isinstance(text, bytes) else str(text)
    return f'{name} ({text})' if status == cudart.cudaError_t.cudaSuccess else name


def device_count() -> int:
    return api().device_count()


def device_info(device: int = 0) -> Dict[str, Any]:
    """``{'name', 'compute_capability' ("8.7"), 'sm_count', 'total_memory_mib', 'integrated' (True on Jetson)}``."""
    return api().device_info(device)


def cuda_versions() -> Dict[str, Any]:
    """The binding (name and package version), the CUDA version the driver supports and the binding's runtime.

    Versions are CUDA's integers (12060 = 12.6; ``*_text`` as '12.6'); the driver's is 0 without a driver.
    """
    a = api()
    driver, runtime = a.driver_version(), a.runtime_version()
    return {'binding': a.name, 'binding_version': _package_version(a.packages), 'driver': driver,
            'driver_text': cuda_version(driver), 'runtime': runtime, 'runtime_text': cuda_version(runtime)}


def _package_version(names: Sequence[str]) -> Optional[str]:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _binding_hint() -> str:
    """'; <how to fix it>' when the binding's CUDA runtime is too new for the driver, else ''."""
    try:
        v = cuda_versions()
    except CudaError:
        return ''
    hint = binding_problem(v['runtime'], v['driver'], jetson=Path('/etc/nv_tegra_release').is_file())
    return f'; {hint}' if hint else ''


def cuda_status() -> Tuple[bool, str]:
    """(True, '<binding>: <GPU name> (sm_XY)') when a CUDA device answers, else (False, reason)."""
    try:
        count = device_count()
    except ImportError as e:
        return False, f'no CUDA binding ({e}): install cuda-python or pycuda'
    except CudaError as e:
        return False, f'no CUDA device ({e})' + _binding_hint()
    if count < 1:
        return False, 'no CUDA device (cudaGetDeviceCount returned 0)'
    info = device_info(0)
    return True, f"{binding_name()}: {info['name']} (sm_{info['compute_capability'].replace('.', '')})"


# ------------------------------------------------------------------------------------------ owners
class _Owner:
    """Base for the resource owners: idempotent ``free()``, context manager, freed on garbage collection."""

    _freed = True

    def free(self) -> None:
        if not self._freed:
            self._freed = True
            self._free_impl()

    def _free_impl(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> '_Owner':
        return self

    def __exit__(self, *exc: Any) -> None:
        self.free()

    def __del__(self) -> None:
        if not self._freed:
            try:
                self.free()
            except CudaError as e:  # interpreter shutdown or a dead context: report, do not raise in __del__
                logger.warning('%s: %s', type(self).__name__, e)


class DeviceBuffer(_Owner):
    """``nbytes`` of device memory at the integer address ``ptr``."""

    def __init__(self, nbytes: int):
        self.nbytes = int(nbytes)
        self._handle = api().malloc(self.nbytes)
        self.ptr = api().device_ptr(self._handle)
        self._freed = False

    def _free_impl(self) -> None:
        api().free(self._handle)


class PinnedHostBuffer(_Owner):
    """Page-locked host memory seen as a numpy array ``array`` of ``shape`` and ``dtype``."""

    def __init__(self, shape: Sequence[int], dtype: Any):
        dtype = np.dtype(dtype)
        self.array, self._handle = api().malloc_host(tuple(int(s) for s in shape), dtype)
        self.nbytes = self.array.nbytes
        self._freed = False

    def _free_impl(self) -> None:
        handle, self._handle, self.array = self._handle, None, None
        api().free_host(handle)


class Stream(_Owner):
    """A non-default CUDA stream; ``handle`` is the integer TensorRT's ``execute_async_v3`` takes."""

    def __init__(self):
        self._stream = api().stream_create()
        self.handle = api().stream_handle(self._stream)
        self._freed = False

    def synchronize(self) -> None:
        api().stream_synchronize(self._stream)

    def copy_to_device(self, dst: DeviceBuffer, src: np.ndarray) -> None:
        """Enqueue a copy of the contiguous (pinned) array ``src`` to the start of ``dst``."""
        _check_fits(src.nbytes, dst.nbytes)
        api().memcpy_htod_async(dst.ptr, src, src.nbytes, self._stream)

    def copy_to_host(self, dst: np.ndarray, src: DeviceBuffer) -> None:
        """Enqueue a copy of the start of ``src`` into the contiguous (pinned) array ``dst``."""
        _check_fits(dst.nbytes, src.nbytes)
        api().memcpy_dtoh_async(dst, src.ptr, dst.nbytes, self._stream)

    def _free_impl(self) -> None:
        api().stream_destroy(self._stream)


class EventTimer(_Owner):
    """A start/end CUDA event pair timing the GPU work enqueued between ``start()`` and ``stop()``."""

    def __init__(self):
        self._start = api().event_create()
        self._end = api().event_create()
        self._freed = False

    def start(self, stream: Stream) -> None:
        api().event_record(self._start, stream._stream)

    def stop(self, stream: Stream) -> None:
        api().event_record(self._end, stream._stream)

    def elapsed_s(self) -> float:
        """GPU seconds between the two events (waits for the end event)."""
        api().event_synchronize(self._end)
        return api().event_elapsed_ms(self._start, self._end) / 1000.0

    def _free_impl(self) -> None:
        api().event_destroy(self._start)
        api().event_destroy(self._end)


class CudaGraph(_Owner):
    """Work captured from a stream once and replayed with one launch (cuda-python binding only)."""

    def __init__(self, stream: Stream, enqueue: Any):
        """Capture what ``enqueue()`` puts on ``stream``; it must enqueue asynchronous work only."""
        a = api()
        a.begin_capture(stream._stream)
        try:
            enqueue()
        except Exception:
            a.graph_destroy(a.end_capture(stream._stream))  # end the capture so the stream stays usable
            raise
        self._graph = a.end_capture(stream._stream)
        self._exec = None
        self._freed = False
        self._exec = a.graph_instantiate(self._graph)

    def launch(self, stream: Stream) -> None:
        api().graph_launch(self._exec, stream._stream)

    def _free_impl(self) -> None:
        a = api()
        if self._exec is not None:
            a.graph_exec_destroy(self._exec)
        a.graph_destroy(self._graph)


def _check_fits(nbytes: int, capacity: int) -> None:
    if nbytes > capacity:
        raise ScalableViTError(f'copy of {nbytes} bytes does not fit a buffer of {capacity} bytes')


# ------------------------------------------------------------------------------------------ bindings
class _Api:
    """The CUDA operations the owners need; one subclass per binding."""

    name = 'base'


class _CudaPython(_Api):
    """cuda-python runtime API (``cuda.bindings.runtime``; ``cuda.cudart`` on cuda-python < 12.6)."""

    name = 'cuda-python'
    packages = ('cuda-python', 'cuda-bindings')

    def __init__(self):
        self.rt = _cudart()

    def _rt(self, call: str, *args: Any) -> Any:
        """Call runtime function ``call`` and check it; a binding's RuntimeError is one more error code."""
        try:
            result = getattr(self.rt, call)(*args)
        except RuntimeError as e:  # cuda-python 12.6.x without libcuda.so.1: raised by every call, not returned
            raise CudaError(f'{call} failed: {no_driver_text(e)}') from e
        return check(call, result)

    def device_count(self) -> int:
        return self._rt('cudaGetDeviceCount')

    def driver_version(self) -> int:
        return int(self._rt('cudaDriverGetVersion'))

    def runtime_version(self) -> int:
        return int(self._rt('cudaRuntimeGetVersion'))

    def device_info(self, device: int) -> Dict[str, Any]:
        prop = self._rt('cudaGetDeviceProperties', device)
        name = prop.name.decode(errors='replace') if isinstance(prop.name, bytes) else str(prop.name)
        return {'name': name.split('\x00')[0].strip(), 'compute_capability': f'{prop.major}.{prop.minor}',
                'sm_count': int(prop.multiProcessorCount), 'total_memory_mib': int(prop.totalGlobalMem) // (1 << 20),
                'integrated': bool(prop.integrated)}

    def malloc(self, nbytes: int) -> int:
        return int(self._rt('cudaMalloc', nbytes))

    def device_ptr(self, handle: Any) -> int:
        return int(handle)

    def free(self, handle: Any) -> None:
        self._rt('cudaFree', handle)

    def malloc_host(self, shape: Tuple[int, ...], dtype: np.dtype) -> Tuple[np.ndarray, Any]:
        nbytes = int(np.prod(shape)) * dtype.itemsize
        ptr = int(self._rt('cudaMallocHost', max(nbytes, 1)))
        raw = (ctypes.c_byte * max(nbytes, 1)).from_address(ptr)
        return np.frombuffer(raw, dtype=np.uint8)[:nbytes].view(dtype).reshape(shape), ptr

    def free_host(self, handle: Any) -> None:
        self._rt('cudaFreeHost', handle)

    def memcpy_htod_async(self, dst: int, src: np.ndarray, nbytes: int, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._rt('cudaMemcpyAsync', dst, src.ctypes.data, nbytes, kind, stream)

    def memcpy_dtoh_async(self, dst: np.ndarray, src: int, nbytes: int, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._rt('cudaMemcpyAsync', dst.ctypes.data, src, nbytes, kind, stream)

    def stream_create(self) -> Any:
        return self._rt('cudaStreamCreate')

    def stream_handle(self, stream: Any) -> int:
        return native_handle(stream)

    def stream_synchronize(self, stream: Any) -> None:
        self._rt('cudaStreamSynchronize', stream)

    def stream_destroy(self, stream: Any) -> None:
        self._rt('cudaStreamDestroy', stream)

    def event_create(self) -> Any:
        return self._rt('cudaEventCreate')

    def event_record(self, event: Any, stream: Any) -> None:
        self._rt('cudaEventRecord', event, stream)

    def event_synchronize(self, event: Any) -> None:
        self._rt('cudaEventSynchronize', event)

    def event_elapsed_ms(self, start: Any, end: Any) -> float:
        return float(self._rt('cudaEventElapsedTime', start, end))

    def event_destroy(self, event: Any) -> None:
        self._rt('cudaEventDestroy', event)

    def begin_capture(self, stream: Any) -> None:
        mode = self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        self._rt('cudaStreamBeginCapture', stream, mode)

    def end_capture(self, stream: Any) -> Any:
        return self._rt('cudaStreamEndCapture', stream)

    def graph_instantiate(self, graph: Any) -> Any:
        return self._rt('cudaGraphInstantiate', graph, 0)

    def graph_launch(self, graph_exec: Any, stream: Any) -> None:
        self._rt('cudaGraphLaunch', graph_exec, stream)

    def graph_exec_destroy(self, graph_exec: Any) -> None:
        self._rt('cudaGraphExecDestroy', graph_exec)

    def graph_destroy(self, graph: Any) -> None:
        self._rt('cudaGraphDestroy', graph)


class _PyCuda(_Api):
    """pycuda driver API on the device's primary context (the one TensorRT's runtime API uses)."""

    name = 'pycuda'
    packages = ('pycuda',)

    def __init__(self):
        import pycuda.driver as drv  # noqa: PLC0415
        self.drv = drv
        self._context = None

    def _call(self, call: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except self.drv.Error as e:
            raise CudaError(f'{call} failed: {e}') from e

    def _ensure_context(self) -> None:
        """Make the primary context of device 0 current once (TensorRT shares it through the runtime API)."""
        if self._context is None:
            import atexit  # noqa: PLC0415
            self._call('cuInit', self.drv.init)
            device = self._call('cuDeviceGet', self.drv.Device, 0)
            self._context = self._call('cuDevicePrimaryCtxRetain', device.retain_primary_context)
            self._call('cuCtxPushCurrent', self._context.push)
            atexit.register(self._context.pop)

    def device_count(self) -> int:
        self._call('cuInit', self.drv.init)
        return self._call('cuDeviceGetCount', self.drv.Device.count)

    def driver_version(self) -> int:
        return int(self._call('cuDriverGetVersion', self.drv.get_driver_version))

    def runtime_version(self) -> int:
        major, minor = self.drv.get_version()[:2]  # the CUDA pycuda was built against
        return major * 1000 + minor * 10

    def device_info(self, device: int) -> Dict[str, Any]:
        self._call('cuInit', self.drv.init)
        dev = self._call('cuDeviceGet', self.drv.Device, device)
        major, minor = dev.compute_capability()
        attr = self.drv.device_attribute
        return {'name': dev.name(), 'compute_capability': f'{major}.{minor}',
                'sm_count': int(dev.get_attribute(attr.MULTIPROCESSOR_COUNT)),
                'total_memory_mib': int(dev.total_memory()) // (1 << 20),
                'integrated': bool(dev.get_attribute(attr.INTEGRATED))}

    def malloc(self, nbytes: int) -> Any:
        self._ensure_context()
        return self._call('cuMemAlloc', self.drv.mem_alloc, max(nbytes, 1))

    def device_ptr(self, handle: Any) -> int:
        return int(handle)

    def free(self, handle: Any) -> None:
        self._call('cuMemFree', handle.free)

    def malloc_host(self, shape: Tuple[int, ...], dtype: np.dtype) -> Tuple[np.ndarray, Any]:
        self._ensure_context()
        array = self._call('cuMemHostAlloc', self.drv.pagelocked_empty, shape, dtype)
        return array, array.base

    def free_host(self, handle: Any) -> None:
        self._call('cuMemFreeHost', handle.free)

    def memcpy_htod_async(self, dst: int, src: np.ndarray, nbytes: int, stream: Any) -> None:
        data = src.reshape(-1).view(np.uint8)[:nbytes]
        self._call('cuMemcpyHtoDAsync', self.drv.memcpy_htod_async, dst, data, stream)

    def memcpy_dtoh_async(self, dst: np.ndarray, src: int, nbytes: int, stream: Any) -> None:
        data = dst.reshape(-1).view(np.uint8)[:nbytes]
        self._call('cuMemcpyDtoHAsync', self.drv.memcpy_dtoh_async, data, src, stream)

    def stream_create(self) -> Any:
        self._ensure_context()
        return self._call('cuStreamCreate', self.drv.Stream)

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle)

    def stream_synchronize(self, stream: Any) -> None:
        self._call('cuStreamSynchronize', stream.synchronize)

    def stream_destroy(self, stream: Any) -> None:
        pass  # pycuda destroys the stream when the object is collected

    def event_create(self) -> Any:
        self._ensure_context()
        return self._call('cuEventCreate', self.drv.Event)

    def event_record(self, event: Any, stream: Any) -> None:
        self._call('cuEventRecord', event.record, stream)

    def event_synchronize(self, event: Any) -> None:
        self._call('cuEventSynchronize', event.synchronize)

    def event_elapsed_ms(self, start: Any, end: Any) -> float:
        return float(self._call('cuEventElapsedTime', end.time_since, start))

    def event_destroy(self, event: Any) -> None:
        pass  # pycuda destroys the event when the object is collected

    def _no_graphs(self, *args: Any) -> Any:
        raise CudaError('CUDA graph capture needs the cuda-python binding '
                        f'(pip install cuda-python, then set {BINDING_ENV}=cuda-python)')

    begin_capture = end_capture = graph_instantiate = graph_launch = _no_graphs
    graph_exec_destroy = graph_destroy = _no_graphs
