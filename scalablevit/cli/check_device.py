"""First run on a board: check this machine end to end and write one JSON to attach to a bug report.

    python deploy/check_device.py [--out out/check-device] [--precision fp16 int8] [--no-dla]

Prints Python, the board and JetPack/L4T, the CUDA binding with the driver's and its runtime's CUDA versions,
the GPU identity, TensorRT and its DLA cores, and which precisions and targets work here (and why not); then
builds TensorRT engines from the fixtures shipped in the package (FP32, FP16 and INT8 ONNX of the trained
Fashion-MNIST model), on the GPU and on DLA where present, runs them against the PyTorch reference (accuracy
budgets) and onnxruntime (same ONNX), and times them. Exit code 0 only when every check that applies passed.
Needs only numpy, tensorrt and a CUDA binding. Installed, the same command is `scalablevit-check-device`.
"""
import argparse
from pathlib import Path
from typing import NoReturn, Optional, Sequence

from scalablevit.cli import ArgumentParser, run_cli
from scalablevit.core.manifest import PRECISIONS
from scalablevit.device.selftest import SelfTestOptions, run_self_test


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__)
    p.add_argument('--out', type=Path, default=SelfTestOptions.out,
                   help=f'engines, timing cache and check_device.json (default: {SelfTestOptions.out})')
    p.add_argument('--precision', nargs='+', default=list(PRECISIONS), help='precisions to check (default: all)')
    p.add_argument('--no-dla', action='store_true', help='skip the DLA builds even where DLA is present')
    p.add_argument('--warmup', type=int, default=SelfTestOptions.warmup, help='timing warm-up runs per batch')
    p.add_argument('--iters', type=int, default=SelfTestOptions.iters, help='timed runs per batch')
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    options = SelfTestOptions(out=args.out, precisions=args.precision, dla=not args.no_dla, warmup=args.warmup,
                              iters=args.iters)
    run_self_test(options, emit=lambda line: print(line, flush=True))
    return 0


def run() -> NoReturn:
    run_cli(main)


if __name__ == '__main__':
    run()
