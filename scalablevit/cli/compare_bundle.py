"""One comparison table for a bundle: every backend/precision, its accuracy and its latency, like an export table.

    python bench/compare_bundle.py out/scalable_vit_small-int8 [--batch 1] [--iters 30] [--out DIR]

Rows: PyTorch FP32 eager (when torch is installed), onnxruntime on each ONNX in manifest.json (sha256
checked), and TensorRT on each engines/*.engine when tensorrt imports (otherwise skipped with a note).
Accuracy runs the bundle's held-out reference.npz through each row and compares with the stored PyTorch
FP32 logits (top-1 against labels when the bundle has them, top-1 agreement otherwise); latency is the
p50 of the end-to-end call at --batch; speed-up is PyTorch FP32's p50 over the row's (the first FP32 row
stands in when torch is absent, and the header says so). Writes <out>/compare.json, compare.md and
compare_accuracy_vs_latency.png (default out: <bundle>/compare).
"""
import argparse
import importlib.util
import logging
import math
from pathlib import Path
from typing import Any, Dict, List, NoReturn, Optional, Tuple

import numpy as np

from scalablevit.benchmarks.harness import (REFERENCE_NAME, RunnerSpec, add_speedups, bundle_specs, make_runner,
                                            render_compare_markdown)
from scalablevit.cli import ArgumentParser, onnx_provider, run_cli, thread_count
from scalablevit.core.bundle import Bundle
from scalablevit.core.compare import accuracy_metrics
from scalablevit.core.errors import ScalableViTError
from scalablevit.core.fileio import write_json, write_text
from scalablevit.core.runners import run_batches
from scalablevit.core.timing import BenchConfig, batch_sweep, check_batch, config_dict

logger = logging.getLogger('bench.compare_bundle')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__)
    p.add_argument('bundle', type=Path, help='bundle directory (manifest.json + reference.npz)')
    p.add_argument('--batch', type=int, default=1, help='batch size for accuracy runs and latency (default: 1)')
    p.add_argument('--samples', type=int, help='use only the first N reference images')
    BenchConfig.add_arguments(p, warmup=5, iters=30)
    p.add_argument('--no-torch', action='store_true', help='skip the PyTorch row')
    p.add_argument('--torch-device', default='cpu', help='cpu | cuda (default: cpu)')
    p.add_argument('--providers', type=onnx_provider, nargs='+', default=['CPUExecutionProvider'],
                   help='onnxruntime providers')
    p.add_argument('--threads', type=thread_count, help='CPU threads for torch / onnxruntime')
    p.add_argument('--cuda-graph', action='store_true', help='TensorRT: replay a captured CUDA graph')
    p.add_argument('--device-peak', help="device for the TensorRT cost estimate (a device_peaks.json key; default: "
                                          "the reference device of the bundle's target)")
    p.add_argument('--out', type=Path, help='output directory (default: <bundle>/compare)')
    p.add_argument('--no-plots', action='store_true')
    return p.parse_args(argv)


def collect_specs(args: argparse.Namespace, bundle: Any, notes: List[str]) -> List[RunnerSpec]:
    specs: List[RunnerSpec] = []
    if args.no_torch:
        notes.append('PyTorch row skipped (--no-torch)')
    elif importlib.util.find_spec('torch') is None:
        notes.append('PyTorch row skipped: torch not installed')
    else:
        specs.append(RunnerSpec('torch', 'fp32', model=bundle.model, weights=bundle.weights_file,
                                weights_sha256=bundle.weights_sha256, name=f'torch-{args.torch_device}'))
    onnx, engines = bundle_specs(bundle)
    specs += onnx
    if engines:
        if importlib.util.find_spec('tensorrt') is None:
            notes.append(f'{len(engines)} TensorRT engine(s) skipped: tensorrt not importable here')
        else:
            specs += engines
    return specs


def torch_accuracy_ok(bundle: Any) -> Tuple[bool, Optional[int], str]:
    """Can the torch row reproduce the reference? (yes when untrained: same seed; or the weights file is here)."""
    if bundle.untrained:
        from scalablevit.host import pipeline
        return True, getattr(pipeline, 'UNTRAINED_SEED', 0), 'random weights re-created from the pipeline seed'
    if bundle.weights_file is not None:
        return True, None, f'weights {bundle.weights_file}'
    file = (bundle.manifest.get('weights') or {}).get('file')
    return False, None, f'weights file {file} not on this machine: PyTorch row reports latency only'


def torch_input(bundle: Any, images: np.ndarray) -> np.ndarray:
    """The reference images as the PyTorch model takes them: normalized when the bundle's ONNX takes RGB 0-255."""
    from scalablevit.data.transforms import normalize, normalize_in_model
    dcfg = bundle.manifest['input'].get('preprocessing') or {}
    return normalize(images, dcfg) if normalize_in_model(dcfg) else images


def measure(spec: RunnerSpec, args: argparse.Namespace, bundle: Any, ref: Dict[str, np.ndarray],
            config: BenchConfig, notes: List[str]) -> Dict[str, Any]:
    """Accuracy on the reference images and latency at --batch for one row."""
    with_accuracy, seed = True, None
    if spec.backend == 'torch':
        with_accuracy, seed, how = torch_accuracy_ok(bundle)
        notes.append(f'PyTorch row: {how}')
    runner = make_runner(spec, torch_device=args.torch_device, providers=args.providers, threads=args.threads,
                         cuda_graph=args.cuda_graph, seed=seed)
    with runner:
        accuracy = None
        if with_accuracy:
            logits = run_batches(runner, torch_input(bundle, ref['input']) if spec.backend == 'torch' else ref['input'],
                                 args.batch)
            accuracy = accuracy_metrics(ref['logits'], logits, ref.get('labels'), reference_name=REFERENCE_NAME)
        block = batch_sweep(runner, bundle.input_shape, [args.batch], config)[0]
    return {'name': spec.name, 'backend': spec.backend, 'precision': spec.precision,
            'file': spec.path.name if spec.path else None, 'accuracy': accuracy, 'latency_ms': block}


def precision_plan(path: Path, device: str, batch: int) -> Dict[str, Any]:
    """The ONNX file's precision census (MAC shares) and its TensorRT cost estimate on ``device``."""
    from scalablevit.host.census import census, layers_of
    from scalablevit.host.costmodel import estimate
    from scalablevit.host.export import load_onnx
    from scalablevit.host.fusion import groups_of
    model = load_onnx(path)
    return {'mac_share': census(layers_of(model))['mac_share'], 'estimate': estimate(groups_of(model), device, batch)}


def estimate_device(args: argparse.Namespace, bundle: Any) -> str:
    from scalablevit.core.peaks import device_limits
    from scalablevit.device.targets import list_targets, load_target
    recorded = bundle.manifest.get('target', 'desktop')  # a name; a custom target's file is not on this machine
    target = load_target(recorded if recorded in list_targets() else 'desktop')
    device = args.device_peak or target.reference_device or 'rtx-4090'
    device_limits(device)  # an unknown key fails here, with the closest name
    return device


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.batch < 1 or (args.samples is not None and args.samples < 1):
        raise ScalableViTError('--batch and --samples must be positive')
    config = BenchConfig.from_args(args)
    bundle = Bundle.open(args.bundle)
    check_batch(args.batch, bundle.input_shape)
    device = estimate_device(args, bundle)
    ref = bundle.reference(args.samples)
    notes: List[str] = []
    specs = collect_specs(args, bundle, notes)
    if not specs:
        raise ScalableViTError(f'{bundle.path}: nothing to compare (no ONNX in manifest.json, no torch)')
    rows = [measure(spec, args, bundle, ref, config, notes) for spec in specs]
    baseline = add_speedups(rows)
    for row, spec in zip(rows, specs):
        if spec.backend == 'onnxruntime':
            row['precision_plan'] = precision_plan(spec.path, device, args.batch)
    report = {'kind': 'compare', 'model': bundle.model, 'bundle': str(bundle.path), 'batch': args.batch,
              'samples': int(len(ref['input'])), 'labelled': 'labels' in ref,
              'untrained': bundle.untrained,
              'baseline': baseline, 'config': config_dict(config), 'rows': rows, 'notes': notes}
    from scalablevit.core.report import environment
    report['environment'] = environment()
    out = args.out or bundle.path / 'compare'
    if not args.no_plots:
        from scalablevit.core.plots import plot_accuracy_vs_latency
        metric = ('top1_candidate', 'top-1 vs labels (%)') if report['labelled'] else \
            ('top1_agreement', 'top-1 agreement with PyTorch FP32 (%)')
        plot_accuracy_vs_latency(rows, out / 'compare_accuracy_vs_latency.png', metric=metric[0],
                                 metric_label=metric[1], title=f'{bundle.model}: accuracy vs latency')
    write_json(out / 'compare.json', report)
    text = render_compare_markdown(report)
    write_text(out / 'compare.md', text)
    print(text)
    print(f'written: {out}/compare.json, compare.md')
    if any(not math.isfinite(r['speedup']) for r in rows):
        logger.warning('a speed-up is not finite (zero latency measured?)')
    return 0


def run() -> NoReturn:
    run_cli(main)


if __name__ == '__main__':
    run()
