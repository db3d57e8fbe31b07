"""The prepared device check for a GPU machine with PyTorch + CUDA and cuda-python, no TensorRT needed.

Three parts, one JSON: the CUDA-layer tests (``tests/test_cuda_gpu.py`` with SCALABLEVIT_REQUIRE_GPU=1, so a skip
fails); ScalableViT-S in PyTorch on CUDA in FP32 (TF32 off) and FP16 against CPU FP32, within the bounds the formats
allow (``scalablevit.core.numerics``); PyTorch CUDA latency of S at batch 1 and 8 in FP32 and FP16, timed with CUDA
events over several repeats and checked against the device's peak from ``scalablevit.benchmarks.roofline``.

Weights are seeded random (no network on a GPU box): parity and speed do not depend on training, and the bounds
scale with the logits' magnitude. Host-side tooling: imports torch (a CUDA build) lazily.
"""
import copy
import logging
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List

from ..core import numerics
from ..core.errors import ScalableViTError
from ..core.fileio import write_json
from ..core.report import environment, utc_now

logger = logging.getLogger(__name__)

__all__ = ['GpuCheckOptions', 'require_cuda_torch', 'run_gpu_check']

MODEL = 'scalable_vit_small'
FORMAT = 'scalablevit-gpu-check/1'
REPO = Path(__file__).resolve().parents[2]


@dataclass
class GpuCheckOptions:
    out: Path = Path('out/device-check.json')
    batches: tuple = (1, 8)
    repeats: int = 5  # timed repeats per case (>= 3): median and min-max across them
    iters: int = 20  # forward passes per repeat
    warmup: int = 10
    parity_batch: int = 4
    seed: int = 0


def require_cuda_torch() -> Any:
    """torch with a usable CUDA device, else one ScalableViTError line saying what is missing."""
    try:
        import torch  # noqa: PLC0415 (lazy: host-side tool)
    except ImportError as e:
        raise ScalableViTError(f'the device check needs PyTorch with CUDA ({e})') from e
    if not torch.cuda.is_available():
        built = torch.version.cuda or 'none (a CPU build)'
        raise ScalableViTError(f'no CUDA device for PyTorch {torch.__version__} (built for CUDA {built}): '
                               'run the device check on a GPU machine with a CUDA build of PyTorch')
    return torch


def _cuda_layer_tests() -> Dict[str, Any]:
    """tests/test_cuda_gpu.py in a child pytest, every skip a failure; its summary line and exit code."""
    env = {**os.environ, 'SCALABLEVIT_REQUIRE_GPU': '1', 'SCALABLEVIT_CUDA_BINDING': 'cuda-python',
           'PYTHONPATH': os.pathsep.join(p for p in (str(REPO), os.environ.get('PYTHONPATH', '')) if p)}
    start = time.perf_counter()
    child = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', 'tests/test_cuda_gpu.py'],
                           capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    lines = child.stdout.strip().splitlines()
    return {'command': 'SCALABLEVIT_REQUIRE_GPU=1 pytest -q tests/test_cuda_gpu.py', 'returncode': child.returncode,
            'summary': lines[-1] if lines else child.stderr.strip()[-500:], 'passed': child.returncode == 0,
            'seconds': round(time.perf_counter() - start, 1)}


def _model_and_input(torch: Any, options: GpuCheckOptions) -> Any:
    from ..models.scalablevit import create_model  # noqa: PLC0415
    torch.manual_seed(options.seed)
    model = create_model(MODEL).eval()
    x = torch.randn((options.parity_batch, 3, 224, 224), generator=torch.Generator().manual_seed(options.seed + 1))
    return model, x


def _parity(torch: Any, model: Any, x: Any) -> Dict[str, Any]:
    """CUDA FP32 and FP16 logits against CPU FP32, each against its format's bound."""
    from ..models.scalablevit import model_config  # noqa: PLC0415
    depths = model_config(MODEL)['depths']
    with torch.inference_mode():
        reference = model(x).double()
        results = {}
        scale = float(reference.abs().max())
        for precision, dtype in (('fp32', torch.float32), ('fp16', torch.float16)):
            gpu = copy.deepcopy(model).to('cuda', dtype)
            logits = gpu(x.to('cuda', dtype)).double().cpu()
            bound = numerics.logit_tolerance(precision, depths, scale)
            diff = float((logits - reference).abs().max())
            agreement = float((logits.argmax(1) == reference.argmax(1)).double().mean())
            results[precision] = {'max_abs_diff': diff, 'bound': bound, 'logit_scale': scale,
                                  'bound_rule': numerics.describe(precision, depths), 'top1_agreement': agreement,
                                  'finite': bool(torch.isfinite(logits).all()), 'passed': diff <= bound}
            logger.info('parity %s: max |diff| %.3g vs bound %.3g', precision, diff, bound)
            del gpu
    return results


def _time_case(torch: Any, model: Any, batch: int, options: GpuCheckOptions) -> List[float]:
    """Per-forward milliseconds of each repeat, from CUDA events around ``iters`` forwards."""
    x = torch.randn((batch, 3, 224, 224), device='cuda', dtype=next(model.parameters()).dtype)
    per_repeat = []
    with torch.inference_mode():
        for _ in range(options.warmup):
            model(x)
        for _ in range(options.repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(options.iters):
                model(x)
            end.record()
            end.synchronize()
            per_repeat.append(start.elapsed_time(end) / options.iters)
    return per_repeat


def _latency(torch: Any, model: Any, options: GpuCheckOptions) -> List[Dict[str, Any]]:
    from .roofline import detect_device, model_gmacs, roofline  # noqa: PLC0415
    gmacs = model_gmacs(MODEL, 224)
    device_key = detect_device(gpu_name=torch.cuda.get_device_name(0))
    rows = []
    for precision, dtype in (('fp32', torch.float32), ('fp16', torch.float16)):
        gpu = copy.deepcopy(model).to('cuda', dtype)
        for batch in options.batches:
            ms = _time_case(torch, gpu, batch, options)
            median = statistics.median(ms)
            peak = roofline(gmacs, batch * 1000.0 / median, device_key, precision)
            rows.append({'precision': precision, 'batch': batch, 'repeats': len(ms), 'iters': options.iters,
                         'ms_median': median, 'ms_min': min(ms), 'ms_max': max(ms), 'ms_all': ms,
                         'images_per_s': batch * 1000.0 / median, 'achieved': peak['achieved'],
                         'peak': peak['peak'], 'utilization': peak['utilization'],
                         'exceeds_peak': bool(peak.get('exceeds_peak')), 'warnings': peak['warnings']})
            logger.info('%s batch %d: %.3f ms median (%.3f-%.3f) over %d repeats', precision, batch, median,
                        min(ms), max(ms), len(ms))
        del gpu
    return rows


def _failures(report: Dict[str, Any]) -> List[str]:
    failed = [] if report['cuda_layer_tests']['passed'] else ['the CUDA-layer tests']
    failed += [f'parity {p} (max |diff| {r["max_abs_diff"]:.3g} > {r["bound"]:.3g})'
               for p, r in report['parity'].items() if not r['passed']]
    failed += [f"latency {r['precision']} batch {r['batch']} faster than the device's peak (timing broken)"
               for r in report['latency'] if r['exceeds_peak']]
    return failed


def run_gpu_check(options: GpuCheckOptions) -> Dict[str, Any]:
    """Run the three parts, write the JSON, return it; raise (after writing) when a part failed."""
    if options.repeats < 3:
        raise ScalableViTError(f'--repeats {options.repeats}: at least 3 are needed for a median and a spread')
    torch = require_cuda_torch()
    torch.backends.cuda.matmul.allow_tf32 = False  # FP32 means FP32: the bound assumes 2^-24 rounding
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False  # FP32 accumulation, as assumed
    report: Dict[str, Any] = {'format': FORMAT, 'created_at': utc_now(), 'model': MODEL,
                              'gpu': torch.cuda.get_device_name(0), 'torch': torch.__version__,
                              'torch_cuda': torch.version.cuda, 'environment': environment()}
    report['cuda_layer_tests'] = _cuda_layer_tests()
    model, x = _model_and_input(torch, options)
    report['parity'] = _parity(torch, model, x)
    report['latency'] = _latency(torch, model, options)
    failed = _failures(report)
    report['status'] = 'failed' if failed else 'passed'
    report['failed'] = failed
    write_json(options.out, report)
    if failed:
        raise ScalableViTError(f"device check failed: {', '.join(failed)} (details: {options.out})")
    return report
