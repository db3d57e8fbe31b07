"""The TensorRT latency estimate against published engines: fit on the committed fitting half, error on the rest.

    python bench/cost_model_check.py                 # refit, print the error table, write results/cost_model_check
    python bench/cost_model_check.py --write-fit     # ... and store the fit as scalablevit/host/cost_fit.json
    python bench/cost_model_check.py --no-refit      # the committed fit's error, nothing searched

Data: bench/published (figures with their sources and conditions, the fit / check split made before any fit,
structure-only ONNX graphs of each model). Fitted per device class (Jetson, other GPUs): launch overhead per kernel
and the fraction of the datasheet math peak; everything else in ``scalablevit.host.costmodel`` is fixed.
"""
import argparse
from pathlib import Path
from typing import NoReturn, Optional, Sequence

from scalablevit.cli import ArgumentParser, run_cli


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    from scalablevit.benchmarks.cost_check import DATA_DIR
    p = ArgumentParser(description=__doc__)
    p.add_argument('--data', type=Path, default=DATA_DIR, help=f'published figures and graphs (default {DATA_DIR})')
    p.add_argument('--no-refit', action='store_true', help='check the committed fit instead of fitting again')
    p.add_argument('--write-fit', action='store_true', help='store the fit and its error as the estimate uses them')
    p.add_argument('--out', type=Path, default=Path('results/cost_model_check'), help='output directory')
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from scalablevit.benchmarks.cost_check import render, run_check
    from scalablevit.core.fileio import write_json, write_text
    from scalablevit.host.costmodel import FIT_FILE
    args = parse_args(argv)
    result = run_check(args.data, refit=not args.no_refit)
    text = render(result['classes'], result['fitting'], result['checking'])
    write_json(args.out / 'cost_model_check.json', result)
    write_text(args.out / 'cost_model_check.md', text)
    if args.write_fit:
        write_json(FIT_FILE, {'about': 'Fitted by `python bench/cost_model_check.py --write-fit` on the fitting half '
                                       'of bench/published (split.json); check = the error on the other half.',
                              'split_rule': result['split_rule'], 'classes': result['classes'],
                              'check': result['check'], 'fit_side': result['fit_side']})
    print(text)
    return 0


def run() -> NoReturn:
    run_cli(main)


if __name__ == '__main__':
    run()
