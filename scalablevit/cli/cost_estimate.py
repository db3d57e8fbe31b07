"""TensorRT cost ESTIMATE table: deployed ONNX files (or bundles) x devices x batch sizes, from the ONNX alone.

    python bench/cost_estimate.py out/scalable_vit_small-fp32 out/scalable_vit_small-fp16 out/scalable_vit_small-int8
    python bench/cost_estimate.py model.int8.onnx --devices jetson-orin-nano-8gb rtx-4090 --batch 1 8 --out results/cost

For each file: the precision census (share of MACs in INT8 / FP16 / FP32) and, per device of device_peaks.json
(default: the reference devices of every target in scalablevit/targets) and batch size, the estimated time of
one batch (``scalablevit.host.costmodel``: per layer, max of MACs over the peak of its dtype and bytes over the memory
bandwidth; no fusion, no launch overhead). It compares precision plans on one device; it is not a latency: benchmark
the engine for that. Writes <out>/cost_estimate.json and cost_estimate.md (default out: results/cost_estimate).
"""
import argparse
from pathlib import Path
from typing import Any, Dict, List, NoReturn, Optional, Sequence, Tuple

from scalablevit.cli import ArgumentParser, run_cli
from scalablevit.core.errors import ScalableViTError


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__)
    p.add_argument('paths', type=Path, nargs='+', help='bundle directories (their deployed ONNX) or ONNX files')
    p.add_argument('--devices', nargs='+', help="device_peaks.json keys, or 'all' (default: the targets' devices)")
    p.add_argument('--batch', type=int, nargs='+', default=[1, 8], help='batch sizes (default: 1 8)')
    p.add_argument('--out', type=Path, default=Path('results/cost_estimate'), help='output directory')
    return p.parse_args(argv)


def resolve_devices(requested: Optional[List[str]]) -> List[str]:
    from scalablevit.core.peaks import device_limits, load_peaks
    from scalablevit.device.targets import list_targets, load_target
    if requested == ['all']:
        return list(load_peaks())
    if requested:
        for device in requested:
            device_limits(device)  # an unknown key fails with the closest name
        return requested
    devices = [load_target(name).reference_device for name in list_targets()]
    return list(dict.fromkeys(d for d in devices if d))


def deployed_onnx(path: Path) -> Tuple[str, str, Path]:
    """(model, precision plan, ONNX file) of a bundle directory or an ONNX file."""
    from scalablevit.benchmarks.harness import file_precision
    if path.is_dir():
        from scalablevit.core.bundle import Bundle
        bundle = Bundle.open(path)
        onnx_path, _ = bundle.deploy_onnx()
        plan = bundle.precision.upper()
        elsewhere = (bundle.manifest.get('quantization') or {}).get('high_precision_dtype')
        if bundle.precision == 'int8' and elsewhere:
            plan += f' ({elsewhere.upper()} elsewhere)'
        return bundle.model, plan, onnx_path
    if not path.is_file():
        raise ScalableViTError(f'{path}: not a bundle directory or an ONNX file')
    return path.name, file_precision(path).upper(), path


def estimate_rows(paths: Sequence[Path], devices: Sequence[str], batches: Sequence[int]) -> List[Dict[str, Any]]:
    from scalablevit.host.census import census, layers_of
    from scalablevit.host.costmodel import estimate_table
    from scalablevit.host.export import load_onnx
    rows = []
    for path in paths:
        model, plan, onnx_path = deployed_onnx(path)
        layers = layers_of(load_onnx(onnx_path))
        summary = census(layers)
        rows.append({'model': model, 'plan': plan, 'onnx': str(onnx_path), 'gmacs': summary['macs']['total'] / 1e9,
                     'mac_share': summary['mac_share'], 'estimates': estimate_table(layers, devices, batches)})
    return rows


def render(rows: List[Dict[str, Any]], devices: Sequence[str], batches: Sequence[int]) -> str:
    """One table per model: a row per device and batch, a column per precision plan (ms per batch)."""
    from scalablevit.core.peaks import device_limits
    from scalablevit.host.costmodel import LIMITS_NOTE
    lines = ['# TensorRT cost ESTIMATE (ms per batch)', '', f'> {LIMITS_NOTE}']
    for model in dict.fromkeys(r['model'] for r in rows):
        plans = [r for r in rows if r['model'] == model]
        shares = ', '.join(f"{r['plan']} " + '/'.join(f"{100 * r['mac_share'][d]:.0f}"
                                                       for d in ('int8', 'fp16', 'fp32')) for r in plans)
        lines += ['', f"## {model} ({plans[0]['gmacs']:.3f} GMACs per image)", '',
                  f'MACs in INT8/FP16/FP32 (%): {shares}.', '',
                  '| device | batch | ' + ' | '.join(r['plan'] for r in plans) + ' |', '|---|---:|' + '---:|' * len(plans)]
        for i, (device, batch) in enumerate((d, b) for d in devices for b in batches):
            cells = [f"{r['estimates'][i]['latency_ms']:.3f}" for r in plans]
            lines.append(f"| {device_limits(device)['name']} | {batch} | " + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def main(argv: Optional[Sequence[str]] = None) -> int:
    from scalablevit.core.fileio import write_json, write_text
    args = parse_args(argv)
    if any(b < 1 for b in args.batch):
        raise ScalableViTError(f'--batch sizes must be positive (got {args.batch})')
    devices = resolve_devices(args.devices)
    rows = estimate_rows(args.paths, devices, args.batch)
    text = render(rows, devices, args.batch)
    write_json(args.out / 'cost_estimate.json', {'kind': 'cost_estimate', 'estimate': True, 'devices': devices,
                                                 'batches': args.batch, 'rows': rows})
    write_text(args.out / 'cost_estimate.md', text)
    print(text)
    return 0


def run() -> NoReturn:
    run_cli(main)


if __name__ == '__main__':
    run()
