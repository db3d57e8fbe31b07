"""bench/device_check.py on a machine without CUDA: one line, exit 1, no JSON. On a GPU it is run by hand
(`make device-check`), not by the suite: it times things, and the suite has no timed tests."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _device_check(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(p for p in (str(REPO), os.environ.get('PYTHONPATH')) if p)}
    return subprocess.run([sys.executable, str(REPO / 'bench' / 'device_check.py'), '--out', str(tmp_path / 'd.json'),
                           *args], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)


def test_without_cuda_it_refuses_in_one_line(tmp_path):
    torch = pytest.importorskip('torch')
    if torch.cuda.is_available():
        pytest.skip('a CUDA device is present: the check would run (make device-check)')
    result = _device_check(tmp_path)
    assert result.returncode == 1 and result.stdout == ''
    assert result.stderr.splitlines() == [
        f'error: no CUDA device for PyTorch {torch.__version__} (built for CUDA {torch.version.cuda or "none (a CPU build)"}'
        '): run the device check on a GPU machine with a CUDA build of PyTorch']
    assert list(tmp_path.iterdir()) == []


def test_fewer_than_three_repeats_are_refused(tmp_path):
    result = _device_check(tmp_path, '--repeats', '2')
    assert result.returncode == 1
    assert result.stderr.splitlines() == ['error: --repeats 2: at least 3 are needed for a median and a spread']
