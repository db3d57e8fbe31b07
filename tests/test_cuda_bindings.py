"""The CUDA layer without a driver under every cuda-python the extras allow (tests/data/cuda_bindings.txt).

cuda-python 12.6.x without libcuda.so.1 raises RuntimeError from every call; 12.9+ and 13.x return
cudaErrorInsufficientDriver. Both must end in one line naming the missing driver: cuda_status, a stream, an
allocation, and `python deploy/check_device.py` (exit 1, no traceback). Each binding runs in a child process with
its --target directory first on PYTHONPATH (`make cuda-bindings` installs them; CI sets SCALABLEVIT_REQUIRE_BINDINGS=1
so a missing one fails instead of skipping).
"""
import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from scalablevit.core import compat

REPO = Path(__file__).resolve().parents[1]
LIST = REPO / 'tests' / 'data' / 'cuda_bindings.txt'
BINDINGS_DIR = Path(os.environ.get('SCALABLEVIT_BINDINGS_DIR', REPO / '.venv' / 'cuda-bindings'))
VERSIONS = [line.strip() for line in LIST.read_text().splitlines() if line.strip() and not line.startswith('#')]

CHILD = """
import importlib.metadata, json
import numpy
from scalablevit.device import cuda
facts = {'binding_version': importlib.metadata.version('cuda-python'), 'status': list(cuda.cuda_status()),
         'numpy': numpy.__version__}
for name, make in (('stream', cuda.Stream), ('allocation', lambda: cuda.DeviceBuffer(16))):
    try:
        make().free()
        facts[name] = None
    except cuda.CudaError as e:
        facts[name] = str(e)
print(json.dumps(facts))
"""


def _driver_present() -> bool:
    try:
        ctypes.CDLL('libcuda.so.1')
    except OSError:
        return False
    return True


def _binding_env(version: str) -> dict:
    target = BINDINGS_DIR / version
    if not target.is_dir():
        if os.environ.get('SCALABLEVIT_REQUIRE_BINDINGS') == '1':
            pytest.fail(f'cuda-python {version} is not installed in {target}: run `make cuda-bindings`')
        pytest.skip(f'cuda-python {version} not installed in {target} (make cuda-bindings)')
    if _driver_present():
        pytest.skip('libcuda.so.1 loads here: the no-driver case cannot be shown (tests/test_cuda_gpu.py runs instead)')
    # make test-numpy's numpy first: cuda-python 13.4's cuda-core brings a numpy 2 into its target dir
    inherited = [os.environ['PYTHONPATH']] if os.environ.get('PYTHONPATH') else []
    return {**os.environ, 'PYTHONPATH': os.pathsep.join([*inherited, str(target), str(REPO)]),
            'SCALABLEVIT_CUDA_BINDING': 'cuda-python'}


def test_the_list_covers_every_binding_extra():
    versions = [Version(v) for v in VERSIONS]
    for extra, (_, _, requirement) in compat.BINDING_EXTRAS.items():
        allowed = Requirement(requirement).specifier
        hit = [v for v in versions if allowed.contains(v)]
        assert hit, f'no listed cuda-python satisfies {extra} ({requirement})'
    assert '12.6.2.post1' in VERSIONS and any(v.major == 12 and v > Version('12.6.2.post1') for v in versions)
    assert any(v.release[:2] == (13, 0) for v in versions) and max(versions).major == 13


@pytest.mark.parametrize('version', VERSIONS)
def test_no_driver_is_one_line_under_each_binding(version):
    env = _binding_env(version)
    child = subprocess.run([sys.executable, '-c', CHILD], capture_output=True, text=True, env=env, timeout=120)
    assert child.returncode == 0, child.stderr
    facts = json.loads(child.stdout)
    assert facts['binding_version'] == version  # the --target copy, not the venv's
    assert facts['numpy'] == os.environ.get('SCALABLEVIT_EXPECT_NUMPY', facts['numpy'])  # make test-numpy's
    ok, reason = facts['status']
    assert not ok and reason.startswith('no CUDA device (cudaGetDeviceCount failed: cudaErrorInsufficientDriver (')
    assert facts['stream'].startswith('cudaStreamCreate failed: cudaErrorInsufficientDriver (')
    assert facts['allocation'].startswith('cudaMalloc failed: cudaErrorInsufficientDriver (')
    if Version(version) < Version('12.9'):  # the RuntimeError binding: the reason keeps what it said
        assert 'no usable CUDA driver; the binding says: Failed to dlopen libcuda.so.1' in reason


@pytest.mark.parametrize('version', VERSIONS)
def test_check_device_without_a_driver_ends_in_one_line(version, tmp_path):
    env = _binding_env(version)
    out = tmp_path / 'check'
    result = subprocess.run([sys.executable, str(REPO / 'deploy' / 'check_device.py'), '--out', str(out)],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 1 and 'Traceback' not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines() == [
        f'error: TensorRT is not usable here: tensorrt not importable (No module named \'tensorrt\') '
        f'(facts so far: {out / "check_device.json"})']
    cuda_line = next(line for line in result.stdout.splitlines() if line.startswith('CUDA: '))
    assert 'cudaErrorInsufficientDriver' in cuda_line
    facts = json.loads((out / 'check_device.json').read_text())['cuda']
    assert facts['binding'] == 'cuda-python'  # 12.6.x: 'error' (no versions readable); newer: driver 0 + 'device'
    assert 'cudaErrorInsufficientDriver' in facts.get('error', facts.get('device'))
