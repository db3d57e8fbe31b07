"""The prepared device check of a GPU machine with PyTorch + CUDA (TensorRT not needed); writes one JSON.

    python bench/device_check.py [--out out/device-check.json] [--repeats 5] [--iters 20]

Runs the CUDA-layer tests with SCALABLEVIT_REQUIRE_GPU=1, ScalableViT-S in PyTorch on CUDA in FP32 and FP16
against CPU FP32 (bounds from scalablevit.core.numerics), and PyTorch CUDA latency of S at batch 1 and 8 in FP32 and
FP16 (CUDA events, median and min-max over the repeats, checked against the device's peak). Without CUDA it
refuses in one line. `make device-check` runs it.
"""
import argparse
from pathlib import Path
from typing import NoReturn, Optional, Sequence

from scalablevit.benchmarks.gpu_check import GpuCheckOptions, run_gpu_check
from scalablevit.cli import ArgumentParser, run_cli


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__)
    p.add_argument('--out', type=Path, default=GpuCheckOptions.out, help='the JSON (default: %(default)s)')
    p.add_argument('--repeats', type=int, default=GpuCheckOptions.repeats, help='timed repeats per case (>= 3)')
    p.add_argument('--iters', type=int, default=GpuCheckOptions.iters, help='forward passes per repeat')
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    report = run_gpu_check(GpuCheckOptions(out=args.out, repeats=args.repeats, iters=args.iters))
    print(f"device check passed on {report['gpu']}: {args.out}")
    return 0


def run(argv: Optional[Sequence[str]] = None) -> NoReturn:
    run_cli(main, argv)


if __name__ == '__main__':
    run()
