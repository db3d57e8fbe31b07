"""Jetson benchmark: TensorRT engines with power from tegrastats, the board's facts, and the roofline.

    sudo nvpmodel -m 2 && sudo jetson_clocks   # Orin Nano Super MAXN_SUPER (AGX Orin MAXN: -m 0); optional
    python bench/jetson_bench.py --bundle out/scalable_vit_small-int8 --batch 1 8 --min-seconds 5
    python bench/jetson_bench.py --engine s.int8.engine --input-size 224 --gmacs 4.265 --cuda-graph

Records the board model, L4T / JetPack, TensorRT, the nvpmodel mode and whether ``jetson_clocks --show``
proves locked clocks (never assumed; unknown without root). While each batch's timed runs execute,
``tegrastats --interval N`` is sampled: mean GPU-rail and total power, and energy per image
(mJ/img = mean total power W / images per second x 1000). Writes <out>/jetson.json, jetson.md and
jetson_vs_batch.png. Needs only numpy, tensorrt and a CUDA binding (``--onnx`` adds onnxruntime runs).
"""
import argparse
import logging
from pathlib import Path
from typing import Any, Dict, List, NoReturn, Optional

from scalablevit.benchmarks.harness import (RunnerSpec, add_latency_estimate, bench_entry, bundle_specs,
                                            file_precision, make_runner, write_bench_report)
from scalablevit.benchmarks.roofline import add_roofline, detect_local_device, resolve_gmacs
from scalablevit.cli import ArgumentParser, check_input_size, onnx_provider, run_cli
from scalablevit.core.bundle import Bundle
from scalablevit.core.errors import ScalableViTError
from scalablevit.core.timing import BenchConfig, batch_sweep, config_dict, input_shape_of
from scalablevit.device.jetson import PowerMonitor, describe_jetson, jetson_info
from scalablevit.host.census import bytes_per_image

logger = logging.getLogger('bench.jetson')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__)
    p.add_argument('--bundle', type=Path, help='bundle directory: benchmarks its engines/*.engine')
    p.add_argument('--engine', type=Path, nargs='*', default=[], help='TensorRT engine files')
    p.add_argument('--onnx', type=Path, nargs='*', default=[], help='ONNX files run with onnxruntime (optional)')
    p.add_argument('--providers', type=onnx_provider, nargs='+',
                   default=['CUDAExecutionProvider', 'CPUExecutionProvider'], help='onnxruntime providers for --onnx')
    p.add_argument('--input-size', type=int, help='square input side (default: the bundle\'s, else the engine\'s)')
    p.add_argument('--batch', type=int, nargs='+', default=[1, 8], help='batch sizes (default: 1 8)')
    # 5 timed seconds at least: enough tegrastats samples for the power figures
    BenchConfig.add_arguments(p, warmup=20, warmup_s=2.0, iters=100, min_s=5.0)
    p.add_argument('--interval', type=int, default=100, help='tegrastats interval in ms (default: 100)')
    p.add_argument('--idle-s', type=float, default=2.0, help='idle power baseline before the runs (default: 2 s)')
    p.add_argument('--no-power', action='store_true', help='do not run tegrastats')
    p.add_argument('--strict-clocks', action='store_true',
                   help='also require EMC MinFreq == MaxFreq to call clocks locked (see scalablevit/jetson.py)')
    p.add_argument('--cuda-graph', action='store_true', help='TensorRT: replay a captured CUDA graph')
    p.add_argument('--gmacs', type=float, help='GMACs per image (default: bundle manifest, else complexity + torch)')
    p.add_argument('--model', help='model name for the MAC count (default: the bundle\'s)')
    p.add_argument('--device-peak', help='device key in scalablevit/device_peaks.json (default: from the board)')
    p.add_argument('--out', type=Path, default=Path('results/jetson'), help='output directory')
    p.add_argument('--no-plots', action='store_true')
    return p.parse_args(argv)


def collect_specs(args: argparse.Namespace, bundle: Any) -> List[RunnerSpec]:
    specs = bundle_specs(bundle)[1] if bundle else []
    specs += [RunnerSpec('tensorrt', file_precision(p), p, name=f'tensorrt-{p.stem}')
              for p in args.engine]
    specs += [RunnerSpec('onnxruntime', file_precision(p), p, name=f'onnxruntime-{p.stem}')
              for p in args.onnx]
    if not specs:
        where = f' ({bundle.path}/engines has none: build one with deploy/build_engine.py --bundle)' if bundle else ''
        raise ScalableViTError(f'nothing to benchmark: give --bundle with engines, --engine or --onnx{where}')
    return specs


def _gpu_clock(info: Dict[str, Any]) -> Any:
    """Clock for the roofline: the GR3D clock tegrastats saw in the window, else jetson_clocks' GPU max."""
    fallback = (info.get('clocks') or {}).get('gpu_max_mhz')
    return lambda block: (block.get('power') or {}).get('gpu_mhz_mean') or fallback


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    config = BenchConfig.from_args(args)
    bundle = Bundle.open(args.bundle) if args.bundle else None  # verified before anything else
    model = args.model or (bundle.model if bundle else None)
    check_input_size(args.input_size, model)
    info = jetson_info(strict_emc=args.strict_clocks)
    notes = describe_jetson(info)
    for line in notes:
        logger.info('%s', line)
    specs = collect_specs(args, bundle)
    size = args.input_size
    default_shape = (3, size, size) if size is not None else (bundle.input_shape if bundle else None)
    device = detect_local_device(args.device_peak, info)
    power = PowerMonitor(None if args.no_power else args.interval, args.idle_s, notes)
    entries, shape = [], default_shape
    try:
        for spec in specs:
            with make_runner(spec, providers=args.providers, cuda_graph=args.cuda_graph) as runner:
                shape = input_shape_of(runner, default_shape)
                sweep = batch_sweep(runner, shape, args.batch, config, observer=power.observe)
            entries.append(bench_entry(spec.name, spec.backend, spec.precision, sweep, source=str(spec.path),
                                       input_shape=list(shape)))
    finally:
        power.stop()
    gmacs, gmacs_source = resolve_gmacs(args.gmacs, bundle.manifest if bundle else None, model, shape[-1])
    census = (bundle.manifest.get('census') if bundle else None) or None  # bytes for the memory ceiling, no onnx
    add_roofline(entries, gmacs, device, _gpu_clock(info),
                 bytes_per_image=(lambda b: bytes_per_image(census, b['batch'])) if census else None,
                 emc_mhz=lambda b: (b.get('power') or {}).get('emc_mhz_mean'))
    if gmacs is None:
        notes.append('roofline omitted: no MAC count (pass --gmacs, or add gmacs to the bundle manifest)')
    add_latency_estimate(entries, bundle.manifest if bundle else None, device, notes)
    notes += sorted({f"power: {b['power']['reason']}" for e in entries for b in e['sweep']
                     if b.get('power') and not b['power']['available']})
    notes += sorted({f"power: {b['power']['note']}" for e in entries for b in e['sweep']
                     if (b.get('power') or {}).get('available')})
    from scalablevit.core.report import environment
    report = {'kind': 'jetson', 'model': model, 'input_shape': list(shape), 'config': config_dict(config),
              'jetson': info, 'tegrastats_interval_ms': None if args.no_power else args.interval,
              'idle_samples': len(power.idle), 'gmacs': gmacs, 'gmacs_source': gmacs_source, 'device_peak': device,
              'environment': environment(), 'results': entries, 'notes': notes}
    paths = write_bench_report(args.out, report, stem='jetson', plots=not args.no_plots,
                               title='Jetson latency and power')
    print(Path(paths['md']).read_text())
    print(f"written: {', '.join(str(p) for p in paths.values() if p)}")
    return 0


def run() -> NoReturn:
    run_cli(main)


if __name__ == '__main__':
    run()
