#!/usr/bin/env python3
"""What a resize that differs from the model's eval transform costs: top-1 on Fashion-MNIST TEST images.

    python bench/resize_vs_crop.py [--weights W.safetensors] [--limit N] [--crop-ratio 0.875]

DeepStream's nvinfer stretches every frame or object to the network size (no crop); ImageNet models are
evaluated with shorter side 256 + center crop 224 (a crop ratio of 0.875). Nothing ImageNet-sized runs here,
so this measures the same kind of mismatch on the trained Fashion-MNIST model through our own preprocessing
(``scalablevit.data.transforms.resize_crop``, PyTorch FP32): its eval transform is a plain resize 28 -> 64 (on these square
images exactly nvinfer's stretch), against resize to round(64 / crop-ratio) then center crop 64, the
ImageNet-style crop that shows the model its objects 1/crop-ratio larger. Prints a markdown table.
"""
import argparse
from pathlib import Path
from typing import Any, Dict, NoReturn, Optional, Sequence

import numpy as np

from scalablevit.cli import ArgumentParser, run_cli

MODEL = 'scalable_vit_fmnist'


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__)
    p.add_argument('--weights', type=Path, help='fmnist weights (default: the ones the package ships)')
    p.add_argument('--limit', type=int, help='first N test images (default: all 10,000)')
    p.add_argument('--crop-ratio', type=float, default=224 / 256, help='crop / resize side (default: 0.875)')
    return p.parse_args(argv)


def top1(model: Any, images: np.ndarray, labels: np.ndarray, dcfg: Dict[str, Any]) -> float:
    """Top-1 (%) of ``model`` on uint8 gray ``images`` through ``fmnist.to_model_input`` with ``dcfg``."""
    from scalablevit.core.runners import run_batches
    from scalablevit.data.fmnist import to_model_input
    from scalablevit.host.runners import TorchRunner
    with TorchRunner(model, name='torch-fp32') as runner:
        logits = run_batches(runner, to_model_input(images, dcfg), batch_size=256)
    return float((logits.argmax(1) == labels).mean() * 100)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    from scalablevit.core.errors import ScalableViTError
    from scalablevit.data.fmnist import load_fashion_mnist
    from scalablevit.models.scalablevit import create_model, data_config
    if not 0 < args.crop_ratio <= 1:
        raise ScalableViTError(f'--crop-ratio must be in (0, 1], got {args.crop_ratio}')
    weights = args.weights or Path(__file__).resolve().parents[1] / 'scalablevit' / 'models' / 'weights' / f'{MODEL}.safetensors'
    model = create_model(MODEL, weights=str(weights)).eval()
    images, labels = load_fashion_mnist('test')
    images, labels = images[:args.limit], labels[:args.limit]
    own = data_config(MODEL)
    side = own['input_size'][-1]
    cropped = {**own, 'resize': int(round(side / args.crop_ratio))}
    rows = [('plain resize 28 -> 64 (the eval transform; = nvinfer stretch on square images)', top1(model, images,
                                                                                                 labels, own)),
            (f"resize 28 -> {cropped['resize']}, center crop {side} (crop ratio {args.crop_ratio:.3f})",
             top1(model, images, labels, cropped))]
    print(f'| {MODEL} on {len(labels)} Fashion-MNIST test images, PyTorch FP32 | top-1 % |\n|---|---:|')
    for name, acc in rows:
        print(f'| {name} | {acc:.2f} |')
    print(f'\ndifference: {rows[1][1] - rows[0][1]:+.2f} pt')
    return 0


def run() -> NoReturn:
    run_cli(main)


if __name__ == '__main__':
    run()
