"""Where a quantized ONNX departs from its FP32 source: per block and per node, on held-out images.

    python bench/divergence.py --bundle out/scalable_vit_small-int8 [--candidate other.onnx] [--samples 32]
    python bench/divergence.py --fp32 model.fp32.onnx --candidate model.int8.onnx --inputs reference.npz

Runs the FP32 ONNX and the candidate (by default the bundle's deployed INT8 or FP16 ONNX) side by side with every
intermediate tensor exposed, matched by name, and writes divergence.json, divergence.md and divergence.png (error
against depth) to --out (default: <bundle>/divergence). Per block: cosine, relative L2 error, max abs error, the
FP32 range and the node adding the most error; the first block over --threshold; the INT8 nodes ranked by the
error they add. --inputs takes a bundle's reference.npz ('input') or an image set from calib/make_calib.py.
Installed, the same command is `scalablevit-divergence`.
"""
import argparse
from pathlib import Path
from typing import NoReturn, Optional, Sequence, Tuple

import numpy as np

from scalablevit.cli import ArgumentParser, run_cli
from scalablevit.core.errors import ScalableViTError

DEFAULT_SAMPLES = 32


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    from scalablevit.host.divergence import DEFAULT_THRESHOLD
    p = ArgumentParser(description=__doc__)
    p.add_argument('--bundle', type=Path, help='bundle directory: its FP32 ONNX, deployed ONNX and reference images')
    p.add_argument('--fp32', type=Path, help='FP32 ONNX (without --bundle)')
    p.add_argument('--candidate', type=Path, help="candidate ONNX (default with --bundle: the bundle's deployed one)")
    p.add_argument('--inputs', type=Path, help='images: a reference.npz or an image-set .npz (without --bundle)')
    p.add_argument('--samples', type=int, default=DEFAULT_SAMPLES,
                   help=f'images to run, the first N (default {DEFAULT_SAMPLES})')
    p.add_argument('--threshold', type=float, default=DEFAULT_THRESHOLD,
                   help=f'relative L2 error that marks a block as diverged (default {DEFAULT_THRESHOLD})')
    p.add_argument('--batch', type=int, help='images per run (default: sized to keep exposed tensors near 1 GB)')
    p.add_argument('--out', type=Path, help='output directory (default: <bundle>/divergence)')
    return p.parse_args(argv)


def load_inputs(path: Path) -> np.ndarray:
    """Images of a reference.npz ('input') or of an image set written by calib/make_calib.py ('images')."""
    import zipfile
    if not path.is_file():
        raise ScalableViTError(f'{path}: inputs file not found')
    try:
        with np.load(path, allow_pickle=False) as npz:
            key = next((k for k in ('input', 'images') if k in npz.files), None)
            if key is None:
                raise ScalableViTError(f"{path}: no 'input' or 'images' array (has {sorted(npz.files)})")
            return np.asarray(npz[key], dtype=np.float32)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ScalableViTError(f'{path}: not a readable .npz ({e})') from e


def resolve(args: argparse.Namespace) -> Tuple[Path, Path, np.ndarray, Path]:
    """(FP32 ONNX, candidate ONNX, images, output directory) from the flags; every bad combination is one error."""
    if args.samples < 1:
        raise ScalableViTError(f'--samples must be positive, got {args.samples}')
    if args.bundle:
        if args.fp32 or args.inputs:
            raise ScalableViTError('--bundle brings its own FP32 ONNX and images: drop --fp32 / --inputs')
        from scalablevit.core.bundle import Bundle
        bundle = Bundle.open(args.bundle)
        fp32 = bundle.onnx_files().get('fp32')
        if fp32 is None:
            raise ScalableViTError(f'bundle {args.bundle} lists no FP32 ONNX')
        candidate = args.candidate or bundle.deploy_onnx()[0]
        return fp32, candidate, bundle.reference(args.samples)['input'], args.out or args.bundle / 'divergence'
    if not (args.fp32 and args.candidate and args.inputs and args.out):
        raise ScalableViTError('give --bundle, or all of --fp32, --candidate, --inputs and --out')
    return args.fp32, args.candidate, load_inputs(args.inputs)[:args.samples], args.out


def main(argv: Optional[Sequence[str]] = None) -> int:
    from scalablevit.core.progress import progress
    from scalablevit.host.divergence import divergence_report, write_divergence
    args = parse_args(argv)
    if args.batch is not None and args.batch < 1:
        raise ScalableViTError(f'--batch must be positive, got {args.batch}')
    fp32, candidate, images, out = resolve(args)
    if not candidate.is_file():
        raise ScalableViTError(f'{candidate}: candidate ONNX not found')
    report = divergence_report(fp32, candidate, images, threshold=args.threshold, batch_size=args.batch,
                               progress=progress(len(images), 'divergence'))
    if args.bundle:  # the files were loaded from verified copies: name them as the bundle's
        report['reference'] = str(args.bundle / fp32.name)
        report['candidate'] = str(args.candidate or args.bundle / candidate.name)
    paths = write_divergence(report, out)
    first = report['first_block']
    head = report['blocks'][-1] if report['blocks'] else None
    where = (f"first block over {args.threshold:g}: {first['block']} (relative error {first['rel_l2']:.3g}; most "
             f"added by {first['worst_node']})" if first else f'no block over {args.threshold:g}')
    tail = f"; output relative error {head['rel_l2']:.3g}, cosine {head['cosine']:.5f}" if head else ''
    print(f"{report['candidate']} vs {report['reference']} on {len(images)} images: {where}{tail}. "
          f"Written: {', '.join(paths.values())}")
    return 0


def run() -> NoReturn:
    run_cli(main)


if __name__ == '__main__':
    run()
