"""TensorRT cost ESTIMATE table: deployed ONNX files (or bundles) x devices x batch sizes, from the ONNX alone.

    python bench/cost_estimate.py out/scalable_vit_small-fp32 out/scalable_vit_small-fp16 out/scalable_vit_small-int8
    python bench/cost_estimate.py model.int8.onnx --devices jetson-orin-nano-8gb rtx-4090 --batch 1 8 --out results/cost
    python bench/cost_estimate.py resnet50.onnx --build fp16 int8 --devices l4    # any FP32 ONNX, as trtexec builds it

For each file: the precision census (share of MACs in INT8 / FP16 / FP32) and, per device of device_peaks.json
(default: the reference devices of every target in scalablevit/targets) and batch size, the estimated time of
one batch (``scalablevit.host.costmodel``: the engine's kernels after TensorRT's documented fusions, each costed as
launch + max(math, DRAM traffic), with the error measured on published engines, stated under the table). Benchmark
the engine for a latency. Writes <out>/cost_estimate.json and cost_estimate.md (default out: results/cost_estimate).
"""
import argparse
from pathlib import Path
from typing import Any, Dict, List, NoReturn, Optional, Sequence, Tuple

from scalablevit.cli import ArgumentParser, run_cli
from scalablevit.core.errors import ScalableViTError
from scalablevit.host.census import DTYPES


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__)
    p.add_argument('paths', type=Path, nargs='+', help='bundle directories (their deployed ONNX) or ONNX files')
    p.add_argument('--devices', nargs='+', help="device_peaks.json keys, or 'all' (default: the targets' devices)")
    p.add_argument('--batch', type=int, nargs='+', default=[1, 8], help='batch sizes (default: 1 8)')
    p.add_argument('--build', nargs='+', choices=('fp32', 'fp16', 'int8'),
                   help='estimate an FP32 ONNX file (any model) as TensorRT builds it with that flag, not strongly '
                        'typed: fp16 = every op FP16; int8 = convolutions and GEMMs INT8, the rest FP16')
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
        if bundle.precision in ('int8', 'fp8') and elsewhere:
            plan += f' ({elsewhere.upper()} elsewhere)'
        return bundle.model, plan, onnx_path
    if not path.is_file():
        raise ScalableViTError(f'{path}: not a bundle directory or an ONNX file')
    return path.name, file_precision(path).upper(), path


def estimate_rows(paths: Sequence[Path], devices: Sequence[str], batches: Sequence[int],
                  builds: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
    from scalablevit.host.census import census, layers_of
    from scalablevit.host.export import load_onnx
    from scalablevit.host.fusion import group_summary, groups_of
    rows = []
    for path in paths:
        model, plan, onnx_path = deployed_onnx(path)
        if builds and plan != 'FP32':
            raise ScalableViTError(f'{path}: --build estimates an FP32 ONNX as TensorRT builds it; this one is {plan} '
                                   '(strongly typed: its own dtypes are the plan, leave --build out)')
        graph = load_onnx(onnx_path)
        summary = census(layers_of(graph))
        for build in builds or [None]:
            groups = groups_of(graph, assume=None if build in (None, 'fp32') else build)
            rows.append({'model': model, 'plan': f'FP32 ONNX, --{build}' if build else plan, 'onnx': str(onnx_path),
                         'gmacs': summary['macs']['total'] / 1e9,
                         'mac_share': summary['mac_share'] if build in (None, 'fp32') else _assumed_share(groups),
                         'fusion': group_summary(groups), 'estimates': _estimates(groups, devices, batches)})
    return rows


def _estimates(groups: Sequence[Any], devices: Sequence[str], batches: Sequence[int]) -> List[Dict[str, Any]]:
    """The estimate per device and batch; a device that cannot run the plan (FP8 without FP8 tensor cores) gets
    ``latency_ms`` None and why."""
    from scalablevit.host.costmodel import estimate, unsupported
    rows = []
    for device in devices:
        why = unsupported(groups, device)
        rows += [{'device': device, 'batch': b, 'latency_ms': None, 'unsupported': why} if why else
                 estimate(groups, device, b) for b in batches]
    return rows


def _assumed_share(groups: Sequence[Any]) -> Dict[str, float]:
    """MAC share per dtype of kernels under an assumed build."""
    total = sum(g.macs for g in groups) or 1
    return {d: sum(g.macs for g in groups if g.dtype == d) / total for d in DTYPES}


def render(rows: List[Dict[str, Any]], devices: Sequence[str], batches: Sequence[int]) -> str:
    """One table per model: a row per device and batch, a column per precision plan (ms per batch)."""
    from scalablevit.core.peaks import device_limits
    from scalablevit.host.costmodel import limits_note
    lines = ['# TensorRT latency ESTIMATE (ms per batch)', '', f'> {limits_note()}']
    for model in dict.fromkeys(r['model'] for r in rows):
        plans = [r for r in rows if r['model'] == model]
        shares = ', '.join(f"{r['plan']} " + '/'.join(f"{100 * r['mac_share'][d]:.0f}" for d in DTYPES)
                           for r in plans)
        kernels = ', '.join(f"{r['plan']} {r['fusion']['kernels']} kernels from {r['fusion']['onnx_nodes']} nodes "
                            f"(attention fused {r['fusion']['attention_fused']}/{r['fusion']['attention_blocks']})"
                            for r in plans)
        lines += ['', f"## {model} ({plans[0]['gmacs']:.3f} GMACs per image)", '',
                  f'MACs in FP8/INT8/FP16/FP32 (%): {shares}.', '', f'After fusion: {kernels}.', '',
                  '| device | batch | ' + ' | '.join(r['plan'] for r in plans) + ' |', '|---|---:|' + '---:|' * len(plans)]
        for i, (device, batch) in enumerate((d, b) for d in devices for b in batches):
            cells = [f"{e['latency_ms']:.3f}" if e['latency_ms'] is not None else 'no FP8'
                     for e in (r['estimates'][i] for r in plans)]
            lines.append(f"| {device_limits(device)['name']} | {batch} | " + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def main(argv: Optional[Sequence[str]] = None) -> int:
    from scalablevit.core.fileio import write_json, write_text
    args = parse_args(argv)
    if any(b < 1 for b in args.batch):
        raise ScalableViTError(f'--batch sizes must be positive (got {args.batch})')
    devices = resolve_devices(args.devices)
    rows = estimate_rows(args.paths, devices, args.batch, args.build)
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
