"""The CUDA layer on a real GPU, without TensorRT: identity, allocation, pinned copies, streams, events, graphs.

Needs a CUDA device and a CUDA binding (cuda-python, or pycuda where it is what ``scalablevit.device.cuda`` picks);
skipped with the reason elsewhere (``SCALABLEVIT_REQUIRE_GPU=1`` turns the skip into a failure). Runs as
``pytest -m cuda`` on any NVIDIA GPU, TensorRT or not.
"""
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from scalablevit.core import compat
from scalablevit.core.errors import ScalableViTError
from scalablevit.device import cuda
from scalablevit.device.trt_env import gpu_identity

CUDA_OK, CUDA_REASON = cuda.cuda_status()
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not CUDA_OK, reason=CUDA_REASON)]
REPO = Path(__file__).resolve().parents[1]
MIB = 1 << 20


def _needs_cuda_python(what: str) -> None:
    if cuda.api().name != 'cuda-python':
        pytest.skip(f'{what} needs the cuda-python binding; this process uses {cuda.api().name} '
                    f'(install cuda-python and set {cuda.BINDING_ENV}=cuda-python)')


def test_device_identity_and_versions():
    assert cuda.device_count() >= 1
    info = gpu_identity(0)
    print('GPU identity:', info, '\nCUDA:', cuda.cuda_versions())
    assert info['name'] and compat.version(info['compute_capability']) >= (5, 0)
    assert info['sm_count'] >= 1 and info['total_memory_mib'] > 0 and info['cpu_arch'] and info['os']
    versions = cuda.cuda_versions()
    assert versions['driver'] > 0 and versions['runtime'] > 0 and versions['binding'] == cuda.api().name
    assert compat.binding_problem(versions['runtime'], versions['driver']) is None  # it just ran, so it fits


def test_device_buffers_allocate_and_free_once():
    with cuda.DeviceBuffer(4 * MIB) as a, cuda.DeviceBuffer(4 * MIB) as b:
        assert a.ptr and b.ptr and a.ptr != b.ptr and a.nbytes == 4 * MIB
    a.free()  # idempotent after the context exit
    with pytest.raises(ScalableViTError, match='does not fit a buffer'):
        with cuda.Stream() as stream, cuda.DeviceBuffer(16) as small, cuda.PinnedHostBuffer((8,), np.float32) as host:
            stream.copy_to_device(small, host.array)


def test_pinned_copies_round_trip_on_a_stream():
    data = np.random.default_rng(0).standard_normal((64, 1024), dtype=np.float32)
    with cuda.Stream() as stream, cuda.PinnedHostBuffer(data.shape, np.float32) as src, \
            cuda.PinnedHostBuffer(data.shape, np.float32) as dst, cuda.DeviceBuffer(data.nbytes) as dev:
        src.array[...] = data
        dst.array[...] = 0
        stream.copy_to_device(dev, src.array)
        stream.copy_to_host(dst.array, dev)
        stream.synchronize()
        np.testing.assert_array_equal(dst.array, data)
        part = dst.array.reshape(-1)[:100]  # a prefix copy: only the first 400 bytes come back
        part[...] = -1
        stream.copy_to_host(part, dev)
        stream.synchronize()
        np.testing.assert_array_equal(part, data.reshape(-1)[:100])


def test_streams_have_distinct_integer_handles():
    with cuda.Stream() as a, cuda.Stream() as b:
        assert isinstance(a.handle, int) and a.handle and a.handle != b.handle
        if cuda.api().name == 'cuda-python':
            assert a.handle == cuda.native_handle(a._stream)
        a.synchronize()
        b.synchronize()


def test_event_timer_measures_enqueued_work():
    size = 64 * MIB
    with cuda.Stream() as stream, cuda.EventTimer() as timer, cuda.PinnedHostBuffer((size,), np.uint8) as host, \
            cuda.DeviceBuffer(size) as dev:
        host.array[...] = 7
        start = time.perf_counter()
        timer.start(stream)
        for _ in range(4):
            stream.copy_to_device(dev, host.array)
        timer.stop(stream)
        gpu_s = timer.elapsed_s()
        wall_s = time.perf_counter() - start
        print(f'4 x 64 MiB host->device: {gpu_s * 1e3:.3f} ms GPU, {wall_s * 1e3:.3f} ms wall, '
              f'{4 * size / gpu_s / 1e9:.1f} GB/s')
        assert 0 < gpu_s <= wall_s


def test_cuda_graph_replays_a_captured_copy():
    _needs_cuda_python('CUDA graph capture')
    n = 1 << 16
    with cuda.Stream() as stream, cuda.PinnedHostBuffer((n,), np.float32) as host, \
            cuda.PinnedHostBuffer((n,), np.float32) as back, cuda.DeviceBuffer(4 * n) as dev:
        host.array[...] = 1
        with cuda.CudaGraph(stream, lambda: stream.copy_to_device(dev, host.array)) as graph:
            for value in (2.0, 3.0):  # each replay copies what the host buffer holds at launch time
                host.array[...] = value
                graph.launch(stream)
                stream.copy_to_host(back.array, dev)
                stream.synchronize()
                assert (back.array == value).all()


def test_failed_capture_leaves_the_stream_usable():
    _needs_cuda_python('CUDA graph capture')
    with cuda.Stream() as stream, cuda.PinnedHostBuffer((4,), np.float32) as host, cuda.DeviceBuffer(16) as dev:
        def enqueue():
            stream.copy_to_device(dev, host.array)
            raise RuntimeError('enqueue failed')
        with pytest.raises(RuntimeError, match='enqueue failed'):
            cuda.CudaGraph(stream, enqueue)
        host.array[...] = 5
        stream.copy_to_device(dev, host.array)  # capture ended: ordinary work runs again
        stream.synchronize()


def test_the_cuda_layer_runs_without_tensorrt():
    code = ("import sys; sys.modules['tensorrt'] = None\n"
            "import numpy as np\nfrom scalablevit.device import cuda\n"
            "with cuda.Stream() as s, cuda.PinnedHostBuffer((4,), np.float32) as h, cuda.DeviceBuffer(16) as d:\n"
            "    h.array[...] = 3; s.copy_to_device(d, h.array); h.array[...] = 0; s.copy_to_host(h.array, d)\n"
            "    s.synchronize(); print(h.array.tolist())\n")
    env = {**os.environ, 'PYTHONPATH': str(REPO)}
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == '[3.0, 3.0, 3.0, 3.0]'
