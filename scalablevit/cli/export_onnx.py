"""Export a ScalableViT to one self-contained FP32 ONNX file (dynamic batch, static H/W), checked for TensorRT.

  python deploy/export_onnx.py --model scalable_vit_small --weights scalablevit_s.pth --out out/s.fp32.onnx

Without --weights the model keeps its random initialisation (metadata weights_sha256 = 'untrained').
The default opset 17 parses on TensorRT 8.6 (JetPack 6.0) through 11; 18-20 need TensorRT >= 10.
"""
import argparse
import re
from pathlib import Path
from typing import NoReturn, Optional, Sequence, Tuple

from scalablevit.cli import ArgumentParser, check_input_size, run_cli
from scalablevit.core.errors import ScalableViTError
from scalablevit.core.fileio import human_size, sha256_file
from scalablevit.core.steps import timed_step


def parse_size(text: str) -> Tuple[int, int]:
    """'224' -> (224, 224); '224x448' -> (224, 448)."""
    match = re.fullmatch(r'\s*(\d+)\s*(?:[x,]\s*(\d+))?\s*', text)
    if not match:
        raise ScalableViTError(f"--input-size '{text}' is not SIZE or HxW (e.g. 224 or 224x448)")
    h = int(match.group(1))
    return h, int(match.group(2) or h)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--model', default='scalable_vit_small', help='registered name or alias (default: %(default)s)')
    p.add_argument('--weights', help='official .pth or .safetensors checkpoint (default: random init)')
    p.add_argument('--out', help='output .onnx (default: out/<model>.fp32.onnx)')
    p.add_argument('--opset', type=int, default=17, help='ONNX opset, 17..20 (default: %(default)s)')
    p.add_argument('--input-size', help="SIZE or HxW (default: the model's data config, e.g. 224)")
    p.add_argument('--no-simplify', action='store_true', help='skip the onnxslim simplification')
    p.add_argument('--fold-normalization', action='store_true',
                   help='fold mean/std into the stem conv: the ONNX takes RGB 0-255 (for DeepStream, see docs/deploy.md)')
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    input_size = parse_size(args.input_size) if args.input_size else None
    from scalablevit.host.export import ExportOnnx
    from scalablevit.models.scalablevit import create_model
    model = create_model(args.model, weights=args.weights)
    # Build the stage first: a bad opset or input size fails before anything is written.
    stage = ExportOnnx(model, opset=args.opset, input_size=input_size, simplify=not args.no_simplify,
                       fold_normalization=args.fold_normalization,
                       weights_sha256=sha256_file(args.weights) if args.weights else None)
    for side in input_size or ():  # the stage's check names H x W; this one is every tool's (with the size cap)
        check_input_size(side, args.model)
    out = Path(args.out or f'out/{model.name}.fp32.onnx')
    with timed_step('export', [out]):
        info = stage(out)
    h, w = info['input_size']
    print(f"{info['path']}: {info['model']} {h}x{w}, opset {info['opset']}, {human_size(info['size_bytes'])}, "
          f"{sum(info['ops'].values())} nodes, sha256 {sha256_file(out)}, exported in {info['export_s']:.1f} s")
    print('ops: ' + ', '.join(f'{op} {n}' for op, n in info['ops'].items()))
    return 0


def run() -> NoReturn:
    run_cli(main)


if __name__ == '__main__':
    run()
