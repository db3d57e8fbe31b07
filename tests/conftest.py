"""SCALABLEVIT_REQUIRE_GPU=1: a skipped GPU test (marker ``gpu`` or ``cuda``) fails instead, with its skip reason.

On a board, ``SCALABLEVIT_REQUIRE_GPU=1 pytest -m 'gpu or cuda'`` is green only when every device test ran:
a missing TensorRT, CUDA binding or device, or a test that cannot run with this binding (CUDA graphs need
cuda-python), shows up as a failure instead of a quiet skip.
"""
import os

import pytest

REQUIRE_GPU = 'SCALABLEVIT_REQUIRE_GPU'
DEVICE_MARKERS = ('gpu', 'cuda')


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if (report.skipped and not hasattr(report, 'wasxfail') and os.environ.get(REQUIRE_GPU) == '1'
            and any(item.get_closest_marker(m) for m in DEVICE_MARKERS)):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason[len('Skipped: '):] if reason.startswith('Skipped: ') else reason
        report.outcome = 'failed'
        report.longrepr = f'{REQUIRE_GPU}=1 but this device test was skipped: {reason}'


@pytest.fixture(scope='module')
def fashion_mnist_installed():
    """Modules that need the Fashion-MNIST files fail (not skip) without them: CI installs them."""
    from scalablevit.data.fmnist import DEFAULT_ROOT, INSTALL_HINT
    if not (DEFAULT_ROOT / 't10k-images-idx3-ubyte.gz').is_file():
        pytest.fail(f'Fashion-MNIST not found in {DEFAULT_ROOT}: {INSTALL_HINT} (or run `make test` as root)')
