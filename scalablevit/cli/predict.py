"""Classify images with a bundle, an engine, an ONNX file or PyTorch weights: top-k classes and probabilities.

    python deploy/predict.py photo.jpg --bundle out/scalable_vit_small-int8
    python deploy/predict.py images/ --engine out/scalable_vit_small-int8/engines/model.int8.desktop.abc.engine
    python deploy/predict.py photo.jpg --onnx model.fp32.onnx [--json]
    python deploy/predict.py photo.jpg --model scalable_vit_small --weights checkpoint_best.pth

Each model gets the preprocessing it was built for: a bundle's or engine's from the bundle manifest, an ONNX
file's from its metadata (a --fold-normalization export takes RGB 0-255), PyTorch weights the model's eval
transform. Folders are searched recursively. Probabilities are the softmax of the logits. Any unreadable
image fails the run with one line naming it. Installed, the same command is `scalablevit-predict`.
"""
import argparse
import json
from pathlib import Path
from typing import Any, NoReturn, Optional, Sequence

from scalablevit.cli import ArgumentParser, run_cli
from scalablevit.core.errors import ScalableViTError


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__)
    p.add_argument('images', nargs='+', type=Path, help='image files or folders')
    src = p.add_mutually_exclusive_group()
    src.add_argument('--bundle', type=Path, help='bundle directory: its deployed ONNX on onnxruntime')
    src.add_argument('--engine', type=Path, help='TensorRT engine of a bundle (inside <bundle>/engines/)')
    src.add_argument('--onnx', type=Path, help='exported ONNX file on onnxruntime')
    src.add_argument('--weights', type=Path, help='PyTorch weights of --model')
    p.add_argument('--model', help='registered model for PyTorch (with --weights, else the weights it ships with); '
                                   'with --onnx: checked against the file')
    p.add_argument('--engine-bundle', type=Path, help='the bundle of an --engine kept outside it')
    p.add_argument('--top', type=int, default=5, help='classes per image (default: 5)')
    p.add_argument('--json', action='store_true', help='one JSON document on stdout instead of text')
    return p.parse_args(argv)


def source(args: argparse.Namespace) -> Any:
    """The ModelSource the flags name."""
    from scalablevit.serve import predict
    if args.bundle:
        return predict.from_bundle(args.bundle)
    if args.engine:
        return predict.from_engine(args.engine, args.engine_bundle)
    if args.onnx:
        return predict.from_onnx(args.onnx, args.model)
    if not args.model:
        raise ScalableViTError('no model given: pass --bundle, --engine, --onnx, or --model [--weights]')
    return predict.from_weights(args.model, args.weights)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.engine_bundle and not args.engine:
        raise ScalableViTError('--engine-bundle goes with --engine')
    if args.model and (args.bundle or args.engine):
        raise ScalableViTError('--model goes with --weights or --onnx; a bundle or engine names its own model')
    from scalablevit.serve.predict import image_files, predict
    files = image_files(args.images)
    model = source(args)
    results = predict(model, files, top=args.top)
    if args.json:
        print(json.dumps({'model': model.describe(), 'predictions': results}, indent=2))
        return 0
    for r in results:
        best = r['top'][0]
        print(f"{r['image']}: {best['label']} ({best['probability'] * 100:.2f} %)")
        for rank, t in enumerate(r['top'], 1):
            print(f"  {rank}. {t['label']:<30} {t['probability'] * 100:6.2f} %  (class {t['index']})")
    return 0


def run() -> NoReturn:
    run_cli(main)


if __name__ == '__main__':
    run()
