"""CPU tests of the device self-test: the shipped fixtures, the command up to where it needs TensorRT, the CUDA
binding rules and extras, the stream-handle helper and the SCALABLEVIT_REQUIRE_GPU hook.

The fixture tests that rerun the host side (onnxruntime, PyTorch) prove the shipped files are what the host
pipeline made from the shipped weights; the device side of the fixtures runs in tests/test_trt_gpu.py.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement

from scalablevit.core import compat, numerics
from scalablevit.core.bundle import Bundle
from scalablevit.core.compare import accuracy_metrics, budget_violations
from scalablevit.core.errors import ScalableViTError
from scalablevit.core.fileio import sha256_file
from scalablevit.device import cuda, pipeline as device_pipeline, selftest

REPO = Path(__file__).resolve().parents[1]
NO_HOST_TOOLS = "import sys; [sys.modules.__setitem__(m, None) for m in ('torch', 'onnx', 'onnxruntime', 'modelopt')]; "


def _child_env(**extra: str) -> dict:
    """This checkout first, then the inherited PYTHONPATH (make test-numpy puts another numpy there)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get('PYTHONPATH', '')) if p)
    return {**os.environ, 'PYTHONPATH': path, **extra}


def _pyproject() -> dict:
    tomllib = pytest.importorskip('tomllib', reason='reading pyproject.toml needs Python >= 3.11')
    return tomllib.loads((REPO / 'pyproject.toml').read_text())


@pytest.fixture(scope='module')
def fixture_bundles(tmp_path_factory) -> dict:
    return selftest.extract_fixture(tmp_path_factory.mktemp('fixtures'))


# ------------------------------------------------------------------------------------------ the fixtures
def test_fixtures_are_small_verified_bundles(fixture_bundles):
    manifest = selftest.fixture_manifest()
    shipped = sum(p.stat().st_size for p in selftest.FIXTURES_DIR.iterdir())
    assert shipped < 10 << 20, f'package fixtures are {shipped} bytes'
    assert list(fixture_bundles) == ['fp32', 'fp16', 'int8', 'fp8']
    for precision, path in fixture_bundles.items():
        bundle = Bundle.open(path)
        onnx, entry = bundle.deploy_onnx()  # sha256 checked against the manifest the fixture wrote
        assert bundle.precision == precision and onnx.name == f'model.{precision}.onnx' and not bundle.untrained
        assert entry['opset'] == (19 if precision in ('int8', 'fp8') else 17) and bundle.input_shape == (3, 64, 64)
        ref = bundle.reference()
        assert ref['input'].shape == (64, 3, 64, 64) and ref['logits'].shape == ref[f'onnxruntime_{precision}'].shape
        assert manifest['onnx'][precision]['sha256'] == entry['sha256']
    margins = np.diff(np.sort(ref['logits'], axis=1)[:, -2:], axis=1)
    assert margins.min() >= 1.0  # the selection rule recorded in the fixture's JSON


def test_fixture_references_pass_their_budgets_and_stay_close_to_the_same_onnx(fixture_bundles):
    ref = Bundle.open(fixture_bundles['fp32']).reference()
    for precision in ('fp32', 'fp16', 'int8', 'fp8'):
        ort = ref[f'onnxruntime_{precision}']
        metrics = accuracy_metrics(ref['logits'], ort, ref['labels'])
        assert budget_violations(metrics, precision) == []
        assert selftest.same_graph_violations(accuracy_metrics(ort, ort), precision, weakly_typed=False) == []
    # an engine as far from onnxruntime INT8 as PyTorch FP32 is fails the FP32 same-graph rule, not the INT8 budget
    int8_vs_torch = accuracy_metrics(ref['onnxruntime_int8'], ref['logits'])
    assert selftest.same_graph_violations(int8_vs_torch, 'fp32', weakly_typed=False) == [
        f"worst cosine with onnxruntime {int8_vs_torch['cosine_min']:.6f} < 0.99999"]
    assert selftest.same_graph_violations(int8_vs_torch, 'int8', weakly_typed=True) == []
    broken = ref['onnxruntime_fp16'].copy()
    broken[3] = np.nan
    assert selftest.same_graph_violations(accuracy_metrics(ref['onnxruntime_fp16'], broken), 'fp16', False)[0] == \
        '1 samples with NaN/inf logits'


def test_the_self_test_bounds_use_the_fixture_model_depth():
    from scalablevit.models.scalablevit import model_config
    assert tuple(model_config(selftest.fixture_manifest()['model'])['depths']) == selftest.FIXTURE_DEPTHS
    assert selftest.SAME_GRAPH_MIN_COSINE['fp16'] == numerics.min_cosine('fp16', selftest.FIXTURE_DEPTHS) < 0.9999


def _fixture_tolerance(precision: str, stored: np.ndarray) -> float:
    from scalablevit.models.scalablevit import model_config
    return numerics.logit_tolerance(precision, model_config(selftest.fixture_manifest()['model'])['depths'],
                                    float(np.abs(stored).max()))


def _assert_within_format(logits: np.ndarray, stored: np.ndarray, precision: str) -> None:
    """Stored logits came from one CPU's kernels: another correct kernel may differ by the format's bound."""
    np.testing.assert_allclose(logits, stored, rtol=0, atol=_fixture_tolerance(precision, stored))


@pytest.mark.numerics
def test_onnxruntime_reproduces_the_fixture_logits(fixture_bundles):
    pytest.importorskip('onnxruntime')
    from scalablevit.core.runners import run_batches
    from scalablevit.host.runners import OnnxRuntimeRunner
    for precision, path in fixture_bundles.items():
        bundle = Bundle.open(path)
        ref = bundle.reference()
        with OnnxRuntimeRunner(str(bundle.deploy_onnx()[0])) as runner:
            logits = run_batches(runner, ref['input'], 8)
        _assert_within_format(logits, ref[f'onnxruntime_{precision}'], precision)


def _fixture_model():
    from scalablevit.models.scalablevit import create_model
    weights = REPO / 'scalablevit' / 'models' / 'weights' / 'scalable_vit_fmnist.safetensors'
    assert sha256_file(weights) == selftest.fixture_manifest()['made_with']['weights_sha256']
    return create_model(selftest.fixture_manifest()['model'], weights=str(weights)).eval()


def _fixture_logits(torch, model, ref) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(ref['input'])).numpy()


@pytest.mark.numerics
def test_pytorch_with_the_shipped_weights_reproduces_the_reference_logits(fixture_bundles):
    torch = pytest.importorskip('torch')
    ref = Bundle.open(fixture_bundles['fp32']).reference()
    _assert_within_format(_fixture_logits(torch, _fixture_model(), ref), ref['logits'], 'fp32')


def test_the_format_bounds_catch_a_wrong_graph(fixture_bundles):
    """The bounds are wide for kernels, not for graphs: one changed op or a 1 % weight exceeds them."""
    torch = pytest.importorskip('torch')
    ref = Bundle.open(fixture_bundles['fp32']).reference()
    fp32, fp16 = (_fixture_tolerance(p, ref['logits']) for p in ('fp32', 'fp16'))
    model = _fixture_model()
    model.stages[3][1].mlp.act = torch.nn.GELU(approximate='tanh')  # the tanh GELU in one block
    assert np.abs(_fixture_logits(torch, model, ref) - ref['logits']).max() > 10 * fp32
    model = _fixture_model()
    with torch.no_grad():
        model.stages[1][0].mlp.fc2.weight.mul_(1.01)
    assert np.abs(_fixture_logits(torch, model, ref) - ref['logits']).max() > 100 * fp32
    model = _fixture_model()
    model.stages[2][0].mlp.act = torch.nn.ReLU()  # GELU -> ReLU in one block: beyond even the FP16 bound
    assert np.abs(_fixture_logits(torch, model, ref) - ref['logits']).max() > fp16


@pytest.mark.parametrize('fmt', ['int8', 'fp8'])
def test_the_qdq_fixtures_were_made_with_todays_defaults(fmt):
    from scalablevit.host.calibrate import CALIBRATOR
    from scalablevit.host.int8_policy import QdqSettings
    made = selftest.fixture_manifest()['onnx'][fmt]['quantization']
    today = {**QdqSettings(fmt=fmt).record(), 'calibrator': CALIBRATOR[0]}
    assert {k: made.get(k) for k in today} == today, \
        f'the {fmt.upper()} default changed: regenerate the fixtures with `python tools/make_fixtures.py`'


def test_a_modified_fixture_archive_is_refused(tmp_path, monkeypatch):
    copy = tmp_path / 'fixtures'
    shutil.copytree(selftest.FIXTURES_DIR, copy)
    archive = copy / 'fmnist.tar.xz'
    archive.write_bytes(archive.read_bytes()[:-100])
    monkeypatch.setattr(selftest, 'FIXTURES_DIR', copy)
    with pytest.raises(ScalableViTError, match='not the file its JSON describes; reinstall the package'):
        selftest.extract_fixture(tmp_path / 'out')
    assert not (tmp_path / 'out').exists()


def test_a_fixture_bundle_stops_where_tensorrt_is_needed(fixture_bundles):
    from scalablevit.device.trt_env import trt_status
    if trt_status()[0]:
        pytest.skip('TensorRT and a GPU are present: the build would start')
    with pytest.raises(ScalableViTError, match='TensorRT is not usable here: '):
        device_pipeline.build_bundle_engine(fixture_bundles['int8'], 'jetson-orin-nano')


# ------------------------------------------------------------------------------------------ the command
def test_check_device_runs_to_tensorrt_and_stops_with_one_line(tmp_path):
    from scalablevit.device.trt_env import trt_status
    if trt_status()[0]:
        pytest.skip('TensorRT and a GPU are present: the checks would run')
    out = tmp_path / 'check'
    code = NO_HOST_TOOLS + "sys.argv = sys.argv[1:]; import runpy; runpy.run_path(sys.argv[0], run_name='__main__')"
    result = subprocess.run([sys.executable, '-c', code, str(REPO / 'deploy' / 'check_device.py'), '--out', str(out)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300,
                            env=_child_env())
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith('error:')]
    assert errors == [result.stderr.strip().splitlines()[-1]]
    assert errors[0].startswith('error: TensorRT is not usable here: tensorrt not importable (')
    assert errors[0].endswith(f'(facts so far: {out / "check_device.json"})')
    lines = result.stdout.splitlines()
    assert lines[0].startswith('host: Python ') and any(line.startswith('CUDA: ') for line in lines)
    assert lines[-1] == (f'fixtures: scalable_vit_fmnist fp32/fp16/int8/fp8 ONNX, 64 reference images, sha256 verified '
                         f'({out / "fixtures"})')
    report = json.loads((out / 'check_device.json').read_text())
    assert report['status'] == 'error' and report['error'].startswith('TensorRT is not usable here')
    assert report['format'] == 'scalablevit-check-device/1' and report['checks'] == []
    assert report['host']['machine'] and report['jetson']['is_jetson'] is not None
    assert report['cuda']['binding'] in ('cuda-python', 'pycuda', None) and 'tensorrt' not in report
    assert report['fixture']['archive']['sha256'] == selftest.fixture_manifest()['archive']['sha256']


def test_check_device_refuses_a_bad_option_in_one_line(tmp_path):
    from scalablevit.cli import run_cli
    from scalablevit.cli.check_device import main
    with pytest.raises(SystemExit) as exit_:
        run_cli(main, ['--precision', 'int4', '--out', str(tmp_path / 'x')])
    assert exit_.value.code == 1 and not (tmp_path / 'x').exists()


def test_check_device_is_an_installed_command():
    scripts = _pyproject()['project']['scripts']
    assert scripts['scalablevit-check-device'] == 'scalablevit.cli.check_device:run'


# ------------------------------------------------------------------------------------------ CUDA bindings and extras
def test_pyproject_extras_pin_the_binding_of_each_platform():
    extras = _pyproject()['project']['optional-dependencies']
    assert 'device' not in extras  # unpinned cuda-python took 13.x onto JetPack 6
    for name, (platform, major, requirement) in compat.BINDING_EXTRAS.items():
        assert extras[name][0] == requirement, name
        spec = Requirement(requirement).specifier
        inside = {'jetpack6': '12.6.2.post1', 'jetpack7': '13.0.3', 'cuda12': '12.9.10', 'cuda13': '13.4.4'}[name]
        assert spec.contains(inside) and not spec.contains(f'{25 - major}.0.0'), (name, platform)
    assert not Requirement(compat.BINDING_EXTRAS['jetpack6'][2]).specifier.contains('12.9.0')  # static 12.9 runtime


def test_the_device_install_keeps_jetpacks_numpy():
    """JetPack 6 ships numpy 1.21.5 (Ubuntu 22.04), many images 1.26.4; TensorRT 8.6/10.3 bindings need numpy < 2."""
    project = _pyproject()['project']
    base = [Requirement(r) for r in project['dependencies'] if r.startswith('numpy')][0].specifier
    jetpack6 = [Requirement(r) for r in project['optional-dependencies']['jetpack6'] if r.startswith('numpy')][0]
    assert all(base.contains(v) and jetpack6.specifier.contains(v) for v in ('1.21.5', '1.26.4'))
    assert not jetpack6.specifier.contains('2.0.0') and base.contains('2.4.6')
    for extra in ('jetpack7', 'cuda12', 'cuda13'):  # no numpy of their own: the base floor keeps the system's
        assert not any(r.startswith('numpy') for r in project['optional-dependencies'][extra]), extra


def test_the_dev_extra_is_what_this_machine_has():
    from importlib.metadata import PackageNotFoundError, version
    extras = _pyproject()['project']['optional-dependencies']
    for line in extras['dev']:
        req = Requirement(line)
        try:
            installed = version(req.name)
        except PackageNotFoundError:
            pytest.fail(f'{req.name} of the dev extra is not installed')
        assert req.specifier.contains(installed, prereleases=True), (line, installed)


@pytest.mark.parametrize('runtime, driver, jetson, problem, extra', [
    (13040, 12060, True, "pip install -e '.[jetpack6]' (cuda-python==12.6.2.post1)", 'jetpack6'),  # 13.x on JP 6.2
    (12060, 12060, True, None, 'jetpack6'),
    (12090, 12060, True, None, 'jetpack6'),         # same major: not refused here (may need cuda-compat on Jetson)
    (13000, 12020, True, 'JetPack 6.0: cuda-python==12.2.1, or pycuda', None),
    (13000, 13020, True, None, 'jetpack7'),         # JetPack 7.2
    (13040, 12080, False, "pip install -e '.[cuda12]' (cuda-python>=12.6.1,<13)", 'cuda12'),
    (12090, 13000, False, None, 'cuda13'),          # an older major runs on a newer driver
    (13040, 0, False, None, None),                  # no driver: nothing to compare
])
def test_binding_problem_and_extra(runtime, driver, jetson, problem, extra):
    found = compat.binding_problem(runtime, driver, jetson)
    assert (found is None) == (problem is None) and (problem is None or problem in found)
    if found:
        assert found.startswith(f'the CUDA binding is built for CUDA {compat.cuda_version(runtime)} but the driver '
                                f'supports CUDA {compat.cuda_version(driver)}: ')
    assert compat.binding_extra(driver, jetson) == extra
    assert compat.cuda_version(12060) == '12.6' and compat.cuda_version(13020) == '13.2'


def test_stream_handles_go_through_the_bindings_helper(monkeypatch):
    rt = pytest.importorskip('cuda.bindings.runtime', reason='cuda-python is not installed')
    pytest.importorskip('cuda.bindings.utils', reason='cuda-bindings < 12.9.1 has no get_cuda_native_handle')
    assert cuda.native_handle(rt.cudaStream_t(1234)) == 1234
    with pytest.raises(TypeError, match='Unknown type'):  # the helper takes binding objects only
        cuda.native_handle(1234)
    monkeypatch.setitem(sys.modules, 'cuda.bindings.utils', None)  # cuda-python before 12.9.1
    assert cuda.native_handle(rt.cudaStream_t(99)) == 99


def test_cuda_versions_without_a_driver():
    pytest.importorskip('cuda.bindings.runtime', reason='cuda-python is not installed')
    if cuda.cuda_status()[0]:
        pytest.skip('a CUDA device answers here')
    versions = cuda.cuda_versions()
    assert versions['driver'] == 0 and versions['driver_text'] is None and versions['runtime'] >= 12000
    assert versions['binding'] == cuda.api().name


# ------------------------------------------------------------------------------------------ SCALABLEVIT_REQUIRE_GPU
def test_require_gpu_turns_device_test_skips_into_failures(tmp_path):
    shutil.copy(REPO / 'tests' / 'conftest.py', tmp_path / 'conftest.py')
    (tmp_path / 'pytest.ini').write_text('[pytest]\nmarkers =\n    gpu: x\n    cuda: x\n')
    (tmp_path / 'test_x.py').write_text(
        'import pytest\n'
        "absent = pytest.mark.skipif(True, reason='no CUDA device (here)')\n"
        '@pytest.mark.gpu\n@absent\ndef test_engine(): pass\n'
        '@pytest.mark.cuda\n@absent\ndef test_stream(): pass\n'
        '@absent\ndef test_plain(): pass\n'
        "@pytest.mark.gpu\ndef test_runs(): pytest.skip('needs cuda-python')\n")

    def run(value):
        env = {**os.environ, 'SCALABLEVIT_REQUIRE_GPU': value}
        done = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-rfs', '-p', 'no:cacheprovider', str(tmp_path)],
                              capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
        return done.returncode, done.stdout
    code, out = run('0')
    assert code == 0 and '4 skipped' in out
    code, out = run('1')  # a skip at setup (a skipif mark) fails as an error, one in the test body as a failure
    assert code == 1 and '1 failed, 1 skipped, 2 errors' in out
    assert 'SCALABLEVIT_REQUIRE_GPU=1 but this device test was skipped: no CUDA device (here)' in out
    assert 'SCALABLEVIT_REQUIRE_GPU=1 but this device test was skipped: needs cuda-python' in out


def test_the_device_tests_collect_without_the_host_stack(tmp_path):
    """On a board without torch, onnx, onnxruntime or modelopt the device test modules still load and run."""
    code = NO_HOST_TOOLS + ("import pytest; sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '-rs', "
                            "'tests/test_trt_gpu.py', 'tests/test_cuda_gpu.py']))")
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO, timeout=300,
                            env=_child_env(SCALABLEVIT_REQUIRE_GPU='0'))
    assert result.returncode == 0, result.stdout[-3000:]
    summary = result.stdout.strip().splitlines()[-1]  # e.g. '19 skipped in 0.4s' here, 'N passed' on a board
    assert 'error' not in summary and ('passed' in summary or 'skipped' in summary), summary
