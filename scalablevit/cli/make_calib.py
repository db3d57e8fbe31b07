"""Write a calibration set (.npz of preprocessed images) for INT8 quantization and print its sha256.

From --images DIR: a seeded sample of the folder's images. Without it: seeded random crops of the photos
bundled with scikit-image (no download). Either way the set is the calibration half of the split the
pipeline uses (scalablevit.data.sets.calibration_and_validation with the same --seed, --val-size and --val), so it
never shares an image (or, for the built-in photos, a source photo) with the pipeline's validation set.
Preprocessing is the model's eval transform (scalablevit.data.transforms.preprocess).
"""
import argparse
import time
from pathlib import Path
from typing import NoReturn, Optional, Sequence

from scalablevit.cli import ArgumentParser, check_input_size, run_cli
from scalablevit.core.fileio import human_size
from scalablevit.data.fmnist import fashion_mnist_sets
from scalablevit.data.sets import DEFAULT_CALIB_SIZE, DEFAULT_VAL_SIZE, calibration_set


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--images', type=Path, default=None,
                   help='folder of images (recursive); default: the bundled scikit-image photos')
    p.add_argument('--count', type=int, default=DEFAULT_CALIB_SIZE, help='calibration images (default %(default)s)')
    p.add_argument('--val-size', type=int, default=DEFAULT_VAL_SIZE,
                   help='images the split reserves for validation and keeps out of calibration '
                        '(match the pipeline; default %(default)s)')
    p.add_argument('--val', type=Path, default=None,
                   help="the pipeline's validation folder (build_engine.py --val): its images never calibrate")
    p.add_argument('--seed', type=int, default=0, help='sampling / crop seed (default %(default)s)')
    p.add_argument('--model', default='scalable_vit_small',
                   help='model whose eval preprocessing to use (default %(default)s)')
    p.add_argument('--input-size', type=int, default=None,
                   help="square input side (default: the model's, e.g. 224)")
    p.add_argument('--out', type=Path, required=True, help='output .npz')
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    check_input_size(args.input_size, args.model)  # before anything is sampled or written
    from scalablevit.models.scalablevit import data_config
    data_cfg = data_config(args.model)
    start = time.perf_counter()
    if args.images is None and args.val is None and data_cfg.get('labels') == 'fashion-mnist':
        calib = fashion_mnist_sets(data_cfg, args.count, args.val_size, args.seed)[0]  # as the pipeline does
    else:
        calib = calibration_set(data_cfg, args.images, args.count, args.val_size, args.seed, args.input_size,
                                val_dir=args.val)
    calib.save_npz(args.out)
    print(f'{args.out}: {len(calib)} images {"x".join(map(str, calib.images.shape[1:]))} '
          f'({human_size(args.out.stat().st_size)}, {calib.skipped} unreadable skipped) '
          f'from {calib.source} in {time.perf_counter() - start:.1f} s')
    print(f'sha256 {calib.sha256}')
    return 0


def run() -> NoReturn:
    run_cli(main)


if __name__ == '__main__':
    run()
