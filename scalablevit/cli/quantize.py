"""Quantize an exported FP32 ScalableViT ONNX with NVIDIA modelopt: INT8 or FP8 (explicit Q/DQ) or FP16 (AutoCast).

    python deploy/quantize.py --onnx out/model.fp32.onnx --precision int8 --calib calib.npz --out model.int8.onnx
    python deploy/quantize.py --onnx out/model.fp32.onnx --precision fp8 --calib calib.npz --out model.fp8.onnx
    python deploy/quantize.py --onnx out/model.fp32.onnx --precision fp16 --out model.fp16.onnx

--calib is an image set written by calib/make_calib.py: required for INT8 and FP8; for FP16 it measures which
LayerNorms risk FP16 overflow (without it every LayerNorm stays FP32). INT8 and FP8 models come out at opset >= 19
and need TensorRT >= 10 (JetPack >= 6.1); FP8 runs on GPUs of compute capability >= 8.9 only (not on Orin). Prints
the result as JSON on stdout.
"""
import argparse
import json
from pathlib import Path
from typing import NoReturn, Optional, Sequence

from scalablevit.cli import ArgumentParser, run_cli
from scalablevit.core.errors import ScalableViTError, unknown_choice
from scalablevit.host.int8_policy import (CALIBRATION_DEVICES, CALIBRATION_METHODS, CALIB_BATCH_MEMORY,
                                          DEFAULT_CALIB_BATCH, FP16_KEEP_FP32_OP_TYPES, HIGH_PRECISION_DTYPES,
                                          DEFAULT_METHODS, INT8_HIGH_PRECISION, INT8_POLICIES)

PRECISIONS = ('int8', 'fp8', 'fp16')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__)
    p.add_argument('--onnx', type=Path, required=True, help='FP32 ONNX written by deploy/export_onnx.py')
    p.add_argument('--precision', required=True, help=f'{" | ".join(PRECISIONS)}')
    p.add_argument('--calib', type=Path, help='calibration image set (.npz from calib/make_calib.py)')
    p.add_argument('--out', type=Path, help='output ONNX (default: <onnx dir>/model.<precision>.onnx)')
    p.add_argument('--method', help=f'INT8/FP8 calibration: {" | ".join(CALIBRATION_METHODS)} '
                                    f'(default: {", ".join(f"{m} for {f}" for f, m in DEFAULT_METHODS.items())})')
    p.add_argument('--policy', default='default', help=f'INT8/FP8 exclusion policy: {" | ".join(INT8_POLICIES)} '
                                                       '(default: default)')
    p.add_argument('--exclude-op-types', nargs='*', default=[], metavar='OP',
                   help='INT8/FP8: op types kept out of the Q/DQ format, on top of the policy (e.g. Add Gemm); '
                        'FP16: op types kept in FP32 (default: %s)' % (' '.join(FP16_KEEP_FP32_OP_TYPES) or 'none'))
    p.add_argument('--exclude-nodes', nargs='*', default=[], metavar='REGEX',
                   help='node-name regexes (searched) kept out of INT8/FP8 / kept FP32, e.g. "^/head/"')
    p.add_argument('--disable-mha-qdq', choices=('on', 'off'),
                   help="INT8/FP8: no Q/DQ on the attention matmuls (default: the policy's choice)")
    p.add_argument('--high-precision', default=INT8_HIGH_PRECISION,
                   help=f'INT8/FP8: dtype of the non-quantized layers, {" | ".join(HIGH_PRECISION_DTYPES)} '
                        f'(default: {INT8_HIGH_PRECISION})')
    p.add_argument('--device', default='cpu', help=f'INT8/FP8 calibration device: {" | ".join(CALIBRATION_DEVICES)} '
                                                   '(default: cpu)')
    p.add_argument('--batch', type=int, help=f'INT8/FP8 calibration batch size (default: as many images as keep a '
                                            f'batch within {CALIB_BATCH_MEMORY >> 30} GB, at most {DEFAULT_CALIB_BATCH})')
    return p.parse_args(argv)


def load_images(path: Path):
    """The images of an image-set .npz, read from the file a batch at a time (see data.StoredImages)."""
    from scalablevit.data.store import StoredImages
    return StoredImages(path)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.precision not in PRECISIONS:
        raise unknown_choice('precision', args.precision, PRECISIONS)
    if not args.onnx.is_file():
        raise ScalableViTError(f'{args.onnx}: file not found')
    if args.calib is not None and args.calib.is_dir():
        raise ScalableViTError(f'--calib {args.calib} is a folder: --calib wants the image-set .npz made by '
                               f'calib/make_calib.py (python calib/make_calib.py --images {args.calib} --model MODEL '
                               '--out calib.npz)')
    out = args.out or args.onnx.with_name(f'model.{args.precision}.onnx')
    if out.resolve() == args.onnx.resolve():
        raise ScalableViTError(f'--out {out} would overwrite the FP32 input')
    from scalablevit.host import int8_policy, quantize
    qdq = args.precision in int8_policy.DEFAULT_METHODS
    if qdq:  # every INT8 / FP8 option is checked before the images are read
        mha = None if args.disable_mha_qdq is None else args.disable_mha_qdq == 'on'
        settings = int8_policy.QdqSettings(
            fmt=args.precision, method=args.method, policy=args.policy, exclude_op_types=args.exclude_op_types,
            exclude_nodes=args.exclude_nodes, disable_mha_qdq=mha, high_precision_dtype=args.high_precision,
            calibration_device=args.device, batch_size=args.batch)
    images = load_images(args.calib) if args.calib else None
    if qdq:
        if images is None:
            raise ScalableViTError(f'{args.precision.upper()} needs calibration images: --calib CALIB.npz '
                                   '(calib/make_calib.py writes one)')
        info = quantize.quantize_qdq(args.onnx, out, images, settings)
    else:
        keep = args.exclude_op_types or FP16_KEEP_FP32_OP_TYPES
        info = quantize.convert_fp16(args.onnx, out, keep_fp32_op_types=keep, keep_fp32_nodes=args.exclude_nodes,
                                     calibration=images)
    print(json.dumps(info, indent=2, default=str))
    return 0


def run() -> NoReturn:
    run_cli(main)


if __name__ == '__main__':
    run()
