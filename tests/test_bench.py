"""Latency harness: percentile math, the report contract on real CPU runners (scalable_vit_test), report files,
roofline arithmetic, and bench/compare_bundle.py + bench/latency.py on a small real bundle. No latency asserts."""
import importlib.util
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from scalablevit.benchmarks import harness, roofline
from scalablevit.benchmarks.harness import RunnerSpec
from scalablevit.core import peaks, timing
from scalablevit.core import stats
from scalablevit.core.bundle import Bundle
from scalablevit.core.errors import ScalableViTError
from scalablevit.core.fileio import sha256_file, write_json
from scalablevit.core.runners import INPUT_NAME, OUTPUT_NAME, Runner
from scalablevit.core.timing import BenchConfig
from scalablevit.host.runners import OnnxRuntimeRunner, TorchRunner

ROOT = Path(__file__).resolve().parents[1]
MODEL = 'scalable_vit_test'
SHAPE = (3, 224, 224)
FAST = BenchConfig(warmup=1, iters=3)
CONTRACT = {'batch': int, 'p50': float, 'p90': float, 'p99': float, 'mean': float}


def _load_cli(name):
    spec = importlib.util.spec_from_file_location(f'bench_{name}', ROOT / 'bench' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _torch_model():
    import torch
    from scalablevit import create_model
    torch.manual_seed(0)  # what the host pipeline does for an untrained bundle
    return create_model(MODEL).eval()


def _export(model, path: Path) -> Path:
    import warnings

    import torch
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # TorchScript tracer and deprecation warnings of the exporter
        _trace(torch, model, path)
    return path


def _trace(torch, model, path: Path) -> None:
    torch.onnx.export(model, torch.zeros(1, *SHAPE), str(path), dynamo=False, opset_version=17,
                      input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                      dynamic_axes={INPUT_NAME: {0: 'batch'}, OUTPUT_NAME: {0: 'batch'}})


@pytest.fixture(scope='module')
def bundle(tmp_path_factory) -> Path:
    """A small bundle after the contract: FP32 + FP16 ONNX, reference.npz (with labels), manifest.json."""
    import torch
    from onnxconverter_common import float16
    import onnx
    path = tmp_path_factory.mktemp('bundle')
    model = _torch_model()
    from scalablevit.host.export import stamp_metadata
    fp32 = _export(model, path / 'model.fp32.onnx')
    plain = onnx.load(str(fp32))
    stamp_metadata(plain, {'model': MODEL, 'normalize_in_model': False})  # what readers hold the manifest against
    onnx.save(plain, str(fp32))
    fp16 = float16.convert_float_to_float16(plain, keep_io_types=True)
    stamp_metadata(fp16, {'model': MODEL, 'normalize_in_model': False})
    onnx.save(fp16, str(path / 'model.fp16.onnx'))
    x = np.random.default_rng(1).standard_normal((6, *SHAPE)).astype(np.float32)
    with torch.inference_mode():
        logits = model(torch.from_numpy(x)).numpy()
    np.savez(path / 'reference.npz', input=x, logits=logits, labels=np.array([0, 1, 2, 3, 4, 5]))
    onnx_entries = {p: {'file': f'model.{p}.onnx', 'sha256': sha256_file(path / f'model.{p}.onnx'), 'opset': 17}
                    for p in ('fp32', 'fp16')}
    write_json(path / 'manifest.json', {
        'model': MODEL, 'precision': 'fp16', 'deploy_onnx': 'model.fp16.onnx', 'onnx': onnx_entries,
        'input': {'name': 'input', 'shape': [None, *SHAPE]}, 'output': {'name': 'logits', 'num_classes': 10},
        'reference': {'file': 'reference.npz', 'sha256': sha256_file(path / 'reference.npz')},
        'weights': None, 'untrained': True})
    return path


# --------------------------------------------------------------------------------------- statistics
def test_percentiles_on_known_sequences():
    block = stats.latency_stats(range(1, 101), batch=4)
    assert (block['p50'], block['p90'], block['p99']) == pytest.approx((50.5, 90.1, 99.01))
    assert (block['mean'], block['min'], block['max'], block['runs']) == (50.5, 1.0, 100.0, 100)
    assert block['std'] == pytest.approx(np.std(np.arange(1, 101)))
    assert block['throughput_ips'] == pytest.approx(4 * 1000 / 50.5)  # images per second from ms per batch
    skewed = stats.latency_stats([10, 10, 10, 40], batch=1)
    assert (skewed['p50'], skewed['p90'], skewed['p99'], skewed['mean']) == pytest.approx((10, 31, 39.1, 17.5))
    assert stats.latency_stats([7.0], batch=1)['p99'] == 7.0


def test_latency_stats_rejects_bad_input():
    for bad in ([], [1.0, float('nan')]):
        with pytest.raises(ScalableViTError, match='finite timings'):
            stats.latency_stats(bad, batch=1)
    with pytest.raises(ScalableViTError, match='batch'):
        stats.latency_stats([1.0], batch=0)
    with pytest.raises(ScalableViTError, match='--iters'):
        BenchConfig(iters=0).validate()


def _check_block(block, batch):
    for key, kind in CONTRACT.items():
        assert isinstance(block[key], kind), key
    assert block['batch'] == batch and block['runs'] == FAST.iters and block['warmup_runs'] == FAST.warmup
    assert block['min'] <= block['p50'] <= block['p90'] <= block['p99'] <= block['max']
    assert block['throughput_ips'] == pytest.approx(batch * 1000 / block['mean'])


@pytest.mark.parametrize('backend', ['torch', 'onnxruntime'])
def test_sweep_on_real_cpu_runners(backend, bundle):
    runner = TorchRunner(_torch_model()) if backend == 'torch' else \
        OnnxRuntimeRunner(str(bundle / 'model.fp32.onnx'), threads=1)
    with runner:
        sweep = timing.batch_sweep(runner, SHAPE, [1, 2], FAST)
    assert [b['batch'] for b in sweep] == [1, 2]
    for block in sweep:
        _check_block(block, block['batch'])
        assert block['gpu_p50'] is None and block['gpu_throughput_ips'] is None  # CPU runners: no GPU clock
    entry = harness.bench_entry(runner.name, backend, 'fp32', sweep)
    assert entry['latency_ms'] is sweep[0]
    json.dumps(entry)  # plain data


class GpuClockRunner(Runner):
    """A runner whose GPU clock reads a known cycle (1, 2, 3, 4 ms): checks the GPU-time plumbing exactly."""
    backend = 'gpu-clock'

    def _activate_impl(self):
        self.calls = 0

    def _input_metadata_impl(self):
        return {INPUT_NAME: (np.dtype(np.float32), (None, 3, 4, 4))}

    def _infer_impl(self, feed):
        self.calls += 1
        self.last_gpu_time_s = (1 + (self.calls - 1) % 4) / 1000
        time.sleep(0.002)
        return {OUTPUT_NAME: np.zeros((len(feed[INPUT_NAME]), 10), np.float32)}


def test_gpu_time_reported_apart_from_end_to_end():
    with GpuClockRunner() as runner:
        block = timing.benchmark(runner, (3, 4, 4), 2, BenchConfig(warmup=0, iters=8))
    assert (block['gpu_p50'], block['gpu_min'], block['gpu_max'], block['gpu_mean']) == pytest.approx((2.5, 1, 4, 2.5))
    assert block['gpu_throughput_ips'] == pytest.approx(2 * 1000 / 2.5)
    assert block['p50'] >= 2.0  # end-to-end includes the 2 ms sleep the GPU clock does not see


def test_min_seconds_and_warmup_seconds_extend_the_runs():
    with GpuClockRunner() as runner:
        timed = timing.time_runs(runner, (3, 4, 4), 1, BenchConfig(warmup=1, warmup_s=0.05, iters=2, min_s=0.1))
    assert len(timed.e2e_s) > 2 and timed.end - timed.start >= 0.1 and timed.warmup_runs > 1
    assert timed.images_per_s == pytest.approx(len(timed.e2e_s) / (timed.end - timed.start))


def test_observer_fields_join_the_block():
    with GpuClockRunner() as runner:
        (block,) = timing.batch_sweep(runner, (3, 4, 4), [3], BenchConfig(warmup=0, iters=2),
                                     observer=lambda batch, timed: {'seen': (batch, len(timed.e2e_s))})
    assert block['seen'] == (3, 2)


# --------------------------------------------------------------------------------------- report files
def _report():
    with GpuClockRunner() as runner:
        sweep = timing.batch_sweep(runner, (3, 4, 4), [1, 4], BenchConfig(warmup=0, iters=4))
    entries = [harness.bench_entry('gpu-clock-fp16', 'gpu-clock', 'fp16', sweep)]
    roofline.add_roofline(entries, 4.265, 'jetson-orin-nano-8gb')
    return {'kind': 'latency', 'model': MODEL, 'input_shape': [3, 4, 4], 'config': timing.config_dict(FAST),
            'results': entries, 'notes': ['a note']}


def test_report_json_markdown_and_png(tmp_path):
    from PIL import Image
    report = _report()
    paths = harness.write_bench_report(tmp_path, report)
    assert json.loads(paths['json'].read_text()) == json.loads(json.dumps(report))
    md = paths['md'].read_text().splitlines()
    rows = [line for line in md if line.startswith('| gpu-clock-fp16 |')]
    assert len(rows) == 2 and rows[1].split('|')[3].strip() == '4'
    assert 'GPU p50 ms' in md[2] and '% of peak' in md[2] and '- a note' in md
    with Image.open(paths['png']) as png:
        assert png.format == 'PNG' and png.size[0] > 600 and png.size[1] > 300


def test_plots_skipped_without_matplotlib(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    monkeypatch.setitem(sys.modules, 'matplotlib', None)  # import fails as on a bare Jetson image
    paths = harness.write_bench_report(tmp_path, _report())
    assert paths['png'] is None and paths['json'].is_file() and 'plots skipped' in caplog.text
    assert not list(tmp_path.glob('*.png'))


# --------------------------------------------------------------------------------------- roofline
def test_roofline_arithmetic():
    assert roofline.achieved_tera_ops(4.265, 100) == pytest.approx(0.853)  # 4.265 GMACs x 2 x 100 img/s
    int8 = roofline.roofline(4.0, 250.0, 'jetson-orin-nano-8gb', 'int8')
    assert (int8['achieved'], int8['peak'], int8['utilization'], int8['unit']) == pytest.approx((2.0, 20, 0.1, 'TOPS'))
    assert int8['peak_sparse'] == 40
    fp16 = roofline.roofline(4.0, 250.0, 'jetson-orin-nano-8gb', 'fp16', gpu_clock_mhz=312.5)
    assert (fp16['peak'], fp16['utilization'], fp16['unit']) == pytest.approx((10, 0.2, 'TFLOPS'))
    assert (fp16['peak_at_clock'], fp16['utilization_at_clock']) == pytest.approx((5.0, 0.4))  # half the clock
    none = roofline.roofline(4.0, 250.0, None, 'int8')
    assert none['peak'] is None and none['utilization'] is None and none['achieved'] == pytest.approx(2.0)
    with pytest.raises(ScalableViTError, match='positive'):
        roofline.achieved_tera_ops(0, 10)


def test_device_table():
    table = peaks.load_peaks()
    for key in ('jetson-orin-nano-4gb', 'jetson-orin-nano-8gb', 'jetson-agx-orin-32gb', 'jetson-agx-orin-64gb',
                'rtx-4090', 'a100', 'h100-sxm', 'l4'):
        entry = table[key]
        assert entry['int8_dense'] > entry['fp16_dense'] > 0 and entry['source']
        assert entry['int8_sparse'] == pytest.approx(2 * entry['int8_dense'])
    # Jetson figures: clock x tensor cores x 512 INT8 MACs x 2 reproduces the dense INT8 peak within 3 %
    for entry in (e for e in table.values() if e['kind'] == 'jetson'):
        derived = entry['gpu_clock_mhz'] * 1e6 * entry['tensor_cores'] * 1024 / 1e12
        assert derived == pytest.approx(entry['int8_dense'], rel=0.03)
    with pytest.raises(ScalableViTError, match="did you mean 'jetson-orin-nano-8gb'"):
        peaks.device_peak('jetson-orin-nano-8g', 'int8')


def test_device_detection():
    detect = roofline.detect_device
    assert detect(gpu_name='NVIDIA GeForce RTX 4090') == 'rtx-4090'
    assert detect(gpu_name='NVIDIA H100 80GB HBM3') == 'h100-sxm'
    assert detect(gpu_name='NVIDIA H100 PCIe') == 'h100-pcie'
    assert detect(gpu_name='NVIDIA A100-SXM4-80GB') == 'a100'
    assert detect(gpu_name='NVIDIA L4') == 'l4' and detect(gpu_name='Tesla T4') == 't4'
    assert detect(gpu_name='Tesla V100-SXM2-16GB') is None  # not in the table: never a similar-looking entry
    assert detect(board_model='NVIDIA Jetson AGX Orin Developer Kit', mem_total_gb=61.3) == 'jetson-agx-orin-64gb'
    nano = 'NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super'
    assert detect(board_model=nano, mem_total_gb=7.3, power_mode='MAXN_SUPER') == 'jetson-orin-nano-8gb-super'
    assert detect(board_model='NVIDIA Jetson Orin Nano Developer Kit', mem_total_gb=3.4, power_mode='15W') == \
        'jetson-orin-nano-4gb'
    assert detect(board_model=nano) is None  # memory unknown: not guessed


# --------------------------------------------------------------------------------------- bundles and CLIs
def test_file_precision_comes_from_the_file_not_its_name(bundle, tmp_path):
    """Precision is what the file declares (ONNX metadata, engine manifest), whatever it is called."""
    import onnx
    from scalablevit.host.export import stamp_metadata
    assert harness.file_precision(bundle / 'model.fp32.onnx') == 'fp32'  # from the graph: no float16, no Q/DQ
    assert harness.file_precision(bundle / 'model.fp16.onnx') == 'fp16'
    for precision in ('fp32', 'fp16'):
        model = onnx.load(str(bundle / f'model.{precision}.onnx'))
        stamp_metadata(model, {'model': MODEL, **({'precision': 'fp16'} if precision == 'fp16' else {})})
        onnx.save(model, str(tmp_path / f'model.{precision}.int8.onnx'))  # a misleading name
    assert harness.file_precision(tmp_path / 'model.fp16.int8.onnx') == 'fp16'
    assert harness.file_precision(tmp_path / 'model.fp32.int8.onnx') == 'fp32'
    engine = tmp_path / 'scalable_vit_small-fp16.engine'
    engine.write_bytes(b'plan')
    assert harness.file_precision(engine) == 'unknown'  # no engine manifest beside it
    write_json(tmp_path / 'scalable_vit_small-fp16.engine.json', {'precision': 'int8'})
    assert harness.file_precision(engine) == 'int8'


def test_bundle_specs_verify_hashes(bundle, tmp_path):
    onnx, engines = harness.bundle_specs(Bundle.open(bundle))
    assert [s.precision for s in onnx] == ['fp32', 'fp16'] and engines == []
    assert Bundle.open(bundle).input_shape == SHAPE and Bundle.open(bundle).model == MODEL
    tampered = _copy_bundle(bundle, tmp_path / 'b')
    (tampered / 'model.fp16.onnx').write_bytes(b'not the exported model')
    with pytest.raises(ScalableViTError, match='model.fp16.onnx does not match the bundle manifest'):
        harness.bundle_specs(Bundle.open(tampered))


def test_compare_bundle(bundle, tmp_path):
    from PIL import Image
    out = tmp_path / 'cmp'
    assert _load_cli('compare_bundle').main([str(bundle), '--iters', '2', '--warmup', '1', '--out', str(out)]) == 0
    report = json.loads((out / 'compare.json').read_text())
    rows = {(r['backend'], r['precision']): r for r in report['rows']}
    assert set(rows) == {('torch', 'fp32'), ('onnxruntime', 'fp32'), ('onnxruntime', 'fp16')}
    assert report['baseline'] == 'torch-cpu' and report['labelled'] and report['samples'] == 6
    for row in rows.values():
        assert np.isfinite(row['speedup']) and row['speedup'] > 0 and row['latency_ms']['batch'] == 1
        assert row['accuracy']['samples'] == 6 and row['accuracy']['top1_candidate'] is not None
    assert rows[('torch', 'fp32')]['speedup'] == 1.0
    # the seeded torch model re-creates the stored reference; FP32 ONNX matches it to float precision
    assert rows[('torch', 'fp32')]['accuracy']['max_abs_diff'] < 1e-4
    assert rows[('onnxruntime', 'fp32')]['accuracy']['cosine_min'] > 0.9999
    assert rows[('onnxruntime', 'fp16')]['accuracy']['cosine_min'] > 0.99
    md = (out / 'compare.md').read_text()
    assert 'speed-up vs torch-cpu' in md and 'top-1 (%)' in md and md.count('| onnxruntime |') == 2
    with Image.open(out / 'compare_accuracy_vs_latency.png') as png:
        assert png.format == 'PNG'


def _copy_bundle(bundle, dest):
    dest.mkdir()
    for f in bundle.iterdir():
        if f.is_file():
            (dest / f.name).write_bytes(f.read_bytes())
    return dest


@pytest.mark.skipif(importlib.util.find_spec('tensorrt') is not None, reason='tensorrt importable: engines would run')
def test_compare_bundle_skips_engines_without_tensorrt(bundle, tmp_path):
    """Engines are found (precision from their engine.py manifest) and skipped with one note off-GPU."""
    copy = _copy_bundle(bundle, tmp_path / 'b')
    (copy / 'engines').mkdir()
    (copy / 'engines' / 'model.fp16.desktop.0123456789ab.engine').write_bytes(b'plan')
    write_json(copy / 'engines' / 'model.fp16.desktop.0123456789ab.engine.json', {'precision': 'fp16'})
    (copy / 'engines' / 'other.plan').write_bytes(b'plan')
    _, engines = harness.bundle_specs(Bundle.open(copy))
    assert [(s.backend, s.precision) for s in engines] == [('tensorrt', 'fp16'), ('tensorrt', 'fp16')]
    out = tmp_path / 'cmp'
    assert _load_cli('compare_bundle').main([str(copy), '--no-torch', '--iters', '1', '--warmup', '0',
                                             '--samples', '2', '--no-plots', '--out', str(out)]) == 0
    report = json.loads((out / 'compare.json').read_text())
    assert [r['backend'] for r in report['rows']] == ['onnxruntime', 'onnxruntime']
    assert report['baseline'] == 'onnxruntime-fp32' and report['samples'] == 2
    assert '2 TensorRT engine(s) skipped: tensorrt not importable here' in report['notes']
    assert 'PyTorch row skipped (--no-torch)' in report['notes']


def test_compare_bundle_without_reference_fails_cleanly(bundle, tmp_path):
    broken = tmp_path / 'broken'
    broken.mkdir()
    for name in ('manifest.json', 'model.fp32.onnx', 'model.fp16.onnx'):
        (broken / name).write_bytes((bundle / name).read_bytes())
    done = subprocess.run([sys.executable, str(ROOT / 'bench' / 'compare_bundle.py'), str(broken)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == f'error: {broken}/reference.npz: reference file not found ' \
                                                   '(listed in manifest.json)'
    assert not (broken / 'compare').exists()


def test_latency_cli_on_a_bundle(bundle, tmp_path):
    out = tmp_path / 'lat'
    rc = _load_cli('latency').main(['--bundle', str(bundle), '--no-onnx', '--torch', '--onnx',
                                    str(bundle / 'model.fp32.onnx'), '--batch', '1', '2', '--iters', '2',
                                    '--warmup', '1', '--gmacs', '0.1', '--no-plots', '--out', str(out)])
    assert rc == 0
    report = json.loads((out / 'latency.json').read_text())
    assert [e['name'] for e in report['results']] == ['torch-cpu-fp32', 'onnxruntime-fp32-model.fp32']
    assert report['input_shape'] == list(SHAPE) and report['gmacs_source'] == '--gmacs'
    for entry in report['results']:
        assert [b['batch'] for b in entry['sweep']] == [1, 2]
        for key, kind in CONTRACT.items():
            assert isinstance(entry['latency_ms'][key], kind)
        assert entry['latency_ms']['roofline']['achieved'] == pytest.approx(
            0.1 * 2 * entry['latency_ms']['throughput_ips'] / 1e3)


def test_latency_cli_rejects_nothing_and_bad_files(tmp_path):
    cli = _load_cli('latency')
    with pytest.raises(ScalableViTError, match='nothing to benchmark'):
        cli.main(['--out', str(tmp_path)])
    with pytest.raises(ScalableViTError, match='missing.onnx: file not found'):
        cli.main(['--onnx', str(tmp_path / 'missing.onnx'), '--out', str(tmp_path)])
    assert not (tmp_path / 'latency.json').exists()


def test_unknown_backend_suggests():
    with pytest.raises(ScalableViTError, match="did you mean 'onnxruntime'"):
        RunnerSpec('onnxruntim', 'fp32')


# --------------------------------------------------------------------------------------- GPU (skips here)
def _gpu_reason():
    if importlib.util.find_spec('tensorrt') is None:
        return 'tensorrt not importable'
    from scalablevit.device.cuda import cuda_status
    ok, reason = cuda_status()
    return None if ok else reason


@pytest.mark.gpu
@pytest.mark.parametrize('cuda_graph', [False, True])
def test_tensorrt_engine_reports_gpu_time(bundle, tmp_path, cuda_graph):
    """On a GPU: an engine of the bundle's FP32 ONNX, benchmarked with GPU time (and with a CUDA graph)."""
    reason = _gpu_reason()
    if reason:
        pytest.skip(reason)
    from scalablevit.device.engine import build_engine
    engine = tmp_path / 'model.fp32.desktop.engine'
    build_engine(bundle / 'model.fp32.onnx', engine, 'desktop', 'fp32', chw=SHAPE, onnx_opset=17)
    with harness.make_runner(RunnerSpec('tensorrt', 'fp32', engine), cuda_graph=cuda_graph) as runner:
        assert timing.input_shape_of(runner) == SHAPE
        sweep = timing.batch_sweep(runner, SHAPE, [1, 2], FAST)
    for block in sweep:
        _check_block(block, block['batch'])
        assert block['gpu_p50'] is not None and 0 < block['gpu_p50'] <= block['p50']


def test_latency_repeats_and_cpu_roofline_on_a_bundle_onnx(bundle, tmp_path):
    """--repeat gives each window's p50 and their median/min/max; CPU rows get the CPU peak and both ceilings."""
    out = tmp_path / 'rep'
    assert _load_cli('latency').main(['--bundle', str(bundle), '--batch', '1', '--iters', '4', '--warmup', '1',
                                      '--repeat', '3', '--gmacs', '0.1', '--no-plots', '--out', str(out)]) == 0
    report = json.loads((out / 'latency.json').read_text())
    assert report['config']['repeats'] == 3
    for entry in report['results']:
        block = entry['latency_ms']
        assert block['repeats'] == 3 and len(block['repeat_p50']) == 3 and block['runs'] == 12
        assert block['p50_min'] <= block['p50_median'] <= block['p50_max']
        roof = block['roofline']
        assert roof['device'] == 'cpu' and roof['intensity'] > 0 and roof['bytes_per_image'] > 0
        # the CPU estimate is an FP32 SIMD peak: FP16 rows get no '% of peak'
        assert (roof['peak'] is None) == (entry['precision'] != 'fp32')
        assert roof.get('estimate', True) and 0 < (roof['utilization'] or 0.5) < 1
    assert 'median (min-max) of repeats' in (out / 'latency.md').read_text()
