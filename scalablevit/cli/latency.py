"""Latency benchmark: PyTorch eager, onnxruntime (FP32/FP16/INT8 ONNX) and TensorRT engines, over a batch sweep.

    python bench/latency.py --bundle out/scalable_vit_small-int8 --torch --batch 1 8 --out results/latency
    python bench/latency.py --model scalable_vit_small --onnx model.fp32.onnx model.int8.onnx --engine s.engine
    python bench/latency.py --engine s.int8.engine --input-size 224 --batch 1 8 --cuda-graph --gmacs 4.265

Writes <out>/latency.json (one entry per runner: latency_ms = first batch, sweep = every batch), latency.md
and latency_vs_batch.png. Latency is the end-to-end backend call (host<->device copies included); runners
that time the GPU (TensorRT) add gpu_p50 etc. With --gmacs (or a model torch can count) each block gets the
achieved T(FL)OPS, and with a known device (--device-peak, auto-detected on CUDA and Jetson) the % of peak.
"""
import argparse
import logging
from pathlib import Path
from typing import Any, Callable, Dict, List, NoReturn, Optional, Tuple

from scalablevit.benchmarks.harness import (RunnerSpec, add_latency_estimate, bench_entry, bundle_specs,
                                            file_precision, make_runner, write_bench_report)
from scalablevit.benchmarks.roofline import add_roofline, cpu_limits, detect_local_device, resolve_gmacs
from scalablevit.cli import ArgumentParser, check_input_size, onnx_provider, run_cli, thread_count
from scalablevit.core.bundle import Bundle
from scalablevit.core.errors import ScalableViTError
from scalablevit.core.timing import BenchConfig, batch_sweep, config_dict, input_shape_of

logger = logging.getLogger('bench.latency')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__)
    p.add_argument('--bundle', type=Path, help='host bundle: adds its ONNX files and engines/*.engine')
    p.add_argument('--model', help='registered model name (torch eager; default: the bundle\'s)')
    p.add_argument('--weights', type=Path, help='weights for the torch model (latency does not depend on them)')
    p.add_argument('--torch', action='store_true', help='include PyTorch eager FP32 (implied by --model)')
    p.add_argument('--torch-device', default='cpu', help='cpu | cuda (default: cpu)')
    p.add_argument('--onnx', type=Path, nargs='*', default=[], help='ONNX files (precision from their metadata)')
    p.add_argument('--engine', type=Path, nargs='*', default=[], help='TensorRT engine files')
    p.add_argument('--no-onnx', action='store_true', help='with --bundle: skip the bundle\'s ONNX files')
    p.add_argument('--input-size', type=int,
                   help='square input side (default: the bundle\'s or model\'s, else each file\'s own)')
    p.add_argument('--batch', type=int, nargs='+', default=[1, 8], help='batch sizes (default: 1 8)')
    BenchConfig.add_arguments(p)
    p.add_argument('--threads', type=thread_count, help='CPU threads for torch / onnxruntime')
    p.add_argument('--providers', type=onnx_provider, nargs='+', default=['CPUExecutionProvider'],
                   help='onnxruntime providers')
    p.add_argument('--cuda-graph', action='store_true', help='TensorRT: replay a captured CUDA graph')
    p.add_argument('--gmacs', type=float, help='GMACs per image for the roofline (default: bundle or complexity)')
    p.add_argument('--device-peak', help='device key in scalablevit/device_peaks.json (default: auto-detect)')
    p.add_argument('--out', type=Path, default=Path('results/latency'), help='output directory')
    p.add_argument('--no-plots', action='store_true')
    return p.parse_args(argv)


def collect_specs(args: argparse.Namespace) -> Tuple[List[RunnerSpec], Optional[str], Any, Any]:
    """Runner specs, model name, default input shape (C, H, W) or None, and the bundle (or None)."""
    bundle = Bundle.open(args.bundle) if args.bundle else None
    model = args.model or (bundle.model if bundle else None)
    check_input_size(args.input_size, model)  # before any runner is made
    specs: List[RunnerSpec] = []
    if args.torch or args.model:
        if not model:
            raise ScalableViTError('--torch needs a model: pass --model or --bundle')
        recorded = not args.weights and bundle  # the bundle's own weights: they must carry its recorded hash
        specs.append(RunnerSpec('torch', 'fp32', model=model, weights=args.weights or (bundle and bundle.weights_file),
                                weights_sha256=bundle.weights_sha256 if recorded else None,
                                name=f'torch-{args.torch_device}-fp32'))
    if bundle:
        onnx, engines = bundle_specs(bundle)
        specs += ([] if args.no_onnx else onnx) + engines
    for path in args.onnx:
        prec = file_precision(path)
        specs.append(RunnerSpec('onnxruntime', prec, path, name=f'onnxruntime-{prec}-{path.stem}'))
    for path in args.engine:
        specs.append(RunnerSpec('tensorrt', file_precision(path), path, name=f'tensorrt-{path.stem}'))
    if not specs:
        raise ScalableViTError('nothing to benchmark: give --bundle, --model/--torch, --onnx or --engine')
    return specs, model, default_shape(args, model, bundle), bundle


def onnx_traffic(path: Optional[Path]) -> Optional[Callable[[Dict[str, Any]], float]]:
    """DRAM bytes per image of an ONNX file at a block's batch (census: weights once per batch + activations),
    for the roofline's memory ceiling; None without a file."""
    if path is None:
        return None
    from scalablevit.host.census import bytes_per_image, census, layers_of
    from scalablevit.host.export import load_onnx
    summary = census(layers_of(load_onnx(path)))
    return lambda block: bytes_per_image(summary, block['batch'])


def default_shape(args: argparse.Namespace, model: Optional[str], bundle: Any) -> Optional[Tuple[int, int, int]]:
    """(C, H, W) from --input-size, the bundle or the model's data config; None: each runner's own input dims."""
    if args.input_size is not None:
        return 3, args.input_size, args.input_size
    if bundle:
        return bundle.input_shape
    if model:
        from scalablevit.models.scalablevit import data_config
        size = int(data_config(model)['input_size'][-1])
        return 3, size, size
    return None


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    config = BenchConfig.from_args(args)
    specs, model, shape, bundle = collect_specs(args)
    device = detect_local_device(args.device_peak)
    entries = []
    for spec in specs:
        runner = make_runner(spec, torch_device=args.torch_device, providers=args.providers, threads=args.threads,
                             cuda_graph=args.cuda_graph)
        with runner:
            run_shape = input_shape_of(runner, shape)
            sweep = batch_sweep(runner, run_shape, args.batch, config)
        entries.append(bench_entry(spec.name, spec.backend, spec.precision, sweep, input_shape=list(run_shape),
                                   source=str(spec.path) if spec.path else spec.model))
    shape = shape or run_shape
    gmacs, gmacs_source = resolve_gmacs(args.gmacs, bundle.manifest if bundle else None, model, shape[-1])
    for spec, entry in zip(specs, entries):
        on_cpu = (spec.backend == 'torch' and args.torch_device == 'cpu') or \
            (spec.backend == 'onnxruntime' and args.providers == ['CPUExecutionProvider'])
        add_roofline([entry], gmacs, cpu_limits() if on_cpu else device,
                     bytes_per_image=onnx_traffic(spec.path if spec.backend == 'onnxruntime' else None))
    notes = [f'threads: {args.threads or "library default"}; onnxruntime providers: {args.providers}']
    if gmacs is None:
        notes.append('roofline omitted: no MAC count (pass --gmacs; torch counts a registered --model)')
    add_latency_estimate(entries, bundle.manifest if bundle else None, device, notes)
    from scalablevit.core.report import environment
    report = {'kind': 'latency', 'model': model, 'input_shape': list(shape), 'config': config_dict(config),
              'gmacs': gmacs, 'gmacs_source': gmacs_source, 'device_peak': device, 'environment': environment(),
              'results': entries, 'notes': notes}
    paths = write_bench_report(args.out, report, plots=not args.no_plots)
    print(Path(paths['md']).read_text())
    print(f"written: {', '.join(str(p) for p in paths.values() if p)}")
    return 0


def run() -> NoReturn:
    run_cli(main)


if __name__ == '__main__':
    run()
