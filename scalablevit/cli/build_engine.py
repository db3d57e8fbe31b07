"""The main job: build a deployable ScalableViT bundle and, where TensorRT and a GPU are present, its engine.

Host (any machine, CPU is fine):
    python deploy/build_engine.py --precision int8 [--model scalable_vit_small] [--weights W.pth] [--calib DIR]
exports the FP32 ONNX, builds the calibration and held-out sets, quantizes (INT8 or FP8 Q/DQ, or FP16 AutoCast),
validates the deployed ONNX with onnxruntime against PyTorch FP32 and writes the bundle (see docs/pipeline.md).
Then, when TensorRT and a CUDA device are available, it builds and validates the engine for --target.

Device (Jetson / GPU box, needs only tensorrt, numpy and a CUDA binding):
    python deploy/build_engine.py --bundle out/scalable_vit_small-int8 --target jetson-orin-nano

Installed, the same command is `scalablevit-build`.
"""
import argparse
import logging
import shlex
from pathlib import Path
from typing import Any, NoReturn, Optional, Sequence

from scalablevit.cli import ArgumentParser, check_input_size, int_in, run_cli
from scalablevit.core.errors import ScalableViTError
from scalablevit.device.targets import MAX_ENGINE_BATCH

logger = logging.getLogger(__name__)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__)
    p.add_argument('--precision', default='int8', help='fp32 | fp16 | int8 | fp8 (default: int8; fp8 needs a GPU of '
                   'compute capability >= 8.9: Ada, Hopper, Blackwell, Thor)')
    p.add_argument('--model', default='scalable_vit_small', help='registered model name or alias (s, b, l, fmnist)')
    p.add_argument('--weights', type=Path, help='official .pth or safetensors; omitted: random weights (a warning)')
    p.add_argument('--calib', type=Path, help='calibration image folder (default: the bundled sample photos)')
    p.add_argument('--calib-size', type=int, default=512, help='calibration images to sample (default: 512)')
    p.add_argument('--calib-batch', type=int, help='INT8/FP8 calibration batch (default: from the model size, at most '
                   '8: 2 for S, 1 for L at 224 px); memory and speed only, the scales do not depend on it')
    p.add_argument('--val', type=Path, help='held-out folder for validation; class subfolders give top-1 vs labels')
    p.add_argument('--val-size', type=int, default=100, help='validation images (default: 100)')
    p.add_argument('--out', type=Path, help='bundle directory (default: out/<model>-<precision>)')
    p.add_argument('--input-size', type=int, help='square input side (default: the model\'s, 224 for S/B/L)')
    p.add_argument('--opset', type=int, default=17, help='ONNX opset 17-20 (default 17: TensorRT 8.6 through 11)')
    p.add_argument('--int8-method', help='INT8 and FP8 calibration: entropy | max | percentile '
                   '(default: entropy for int8, max for fp8; see docs/calibration.md)')
    p.add_argument('--int8-policy', default='default',
                   help='INT8 and FP8 exclusion policy: default | none | auto | auto-none (auto: the fewest layers '
                        'moved out of INT8 / FP8 that meet the accuracy budget; see docs/auto-int8.md)')
    p.add_argument('--int8-target', help="auto policies: a tighter budget, e.g. 'agreement=99.5,drop=0.2' "
                                         "(top-1 agreement in %%, top-1 drop in points, cosine=worst cosine)")
    p.add_argument('--int8-high-precision', default='fp16',
                   help='dtype of what is not INT8 / FP8: fp16 (default; FP32 only where a measured rule says so) '
                        'or fp32')
    p.add_argument('--exclude-op-types', nargs='*', default=[], help='op types kept out of INT8 / FP8, e.g. Add')
    p.add_argument('--exclude-nodes', nargs='*', default=[], help='node-name regexes kept out of INT8 / FP8')
    p.add_argument('--fold-normalization', action='store_true',
                   help='fold mean/std into the stem conv: the ONNX takes RGB 0-255 (DeepStream; see docs/deploy.md)')
    p.add_argument('--target', default='desktop', help='TensorRT target preset or JSON file (default: desktop)')
    p.add_argument('--batch', type=int_in(1, MAX_ENGINE_BATCH, ' (an engine profile batch)'), nargs=3,
                   metavar=('MIN', 'OPT', 'MAX'),
                   help="engine batch profile, overriding the target's (e.g. --batch 1 4 16)")
    p.add_argument('--bundle', type=Path, help='device mode: build the engine from this existing bundle only')
    p.add_argument('--require-engine', action='store_true', help='fail when TensorRT or a GPU is missing')
    p.add_argument('--force', action='store_true', help='start the bundle clean and rebuild every stage (device '
                   'mode: rebuild the engine)')
    return p.parse_args(argv)


def host(args: argparse.Namespace) -> Path:
    from scalablevit.core.compare import UNDECIDED
    from scalablevit.host.pipeline import HostOptions, HostPipeline
    options = HostOptions(
        model=args.model, precision=args.precision, weights=args.weights, out=args.out, calib_dir=args.calib,
        fold_normalization=args.fold_normalization, calib_batch=args.calib_batch,
        calib_size=args.calib_size, val_dir=args.val, val_size=args.val_size, input_size=args.input_size,
        opset=args.opset, int8_method=args.int8_method, int8_policy=args.int8_policy,
        int8_high_precision=args.int8_high_precision, int8_target=args.int8_target, target=args.target,
        exclude_op_types=tuple(args.exclude_op_types), exclude_nodes=tuple(args.exclude_nodes), force=args.force)
    report = HostPipeline(options).run()
    acc = report['accuracy']
    print(f"bundle: {options.out}  ({report['precision']} ONNX on onnxruntime vs PyTorch FP32: "
          f"top-1 agreement {acc['top1_agreement'] * 100:.2f} %, worst cosine {acc['cosine_min']:.5f}; "
          f"gate {report['status']})")
    auto = report.get('int8_auto')
    if auto and not auto['met'] and report['status'].startswith('FAILED'):  # random weights are never gated
        raise ScalableViTError(f"--int8-policy {args.int8_policy}: {auto['message']} ({options.out}/report.md "
                               f"lists every step)")
    if report['status'].startswith('FAILED'):
        raise ScalableViTError(f"accuracy gate failed for {options.out}: {report['status'][len('FAILED: '):]}")
    if report['status'].startswith(UNDECIDED):
        logger.warning('the accuracy gate could not decide on %d images: %s; rerun with more (--val-size or a '
                       'larger --val folder)', acc['samples'], report['status'][len(UNDECIDED) + 2:])
    return options.out


def resolve_target(args: argparse.Namespace) -> Any:
    """The target preset or file, with --batch applied; checked before any work starts."""
    from scalablevit.device.targets import check_engine_batch, load_target, target_from_dict
    target = load_target(args.target)
    if args.batch:
        lo, opt, hi = args.batch
        fields = {**target.settings(), 'reference_device': target.reference_device, 'notes': target.notes}
        target = target_from_dict({**fields, 'batch': {'min': lo, 'opt': opt, 'max': hi}},
                                  source=f'{args.target} with --batch {lo} {opt} {hi}')
    return check_engine_batch(target)


def device_command(bundle: Path, args: argparse.Namespace) -> str:
    """The command that runs the TensorRT stage for ``bundle`` on the target (shell-quoted)."""
    words = ['python', 'deploy/build_engine.py', '--bundle', str(bundle), '--target', args.target]
    if args.batch:
        words += ['--batch', *map(str, args.batch)]
    return ' '.join(shlex.quote(w) for w in words)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from scalablevit.core.bundle import Bundle
    from scalablevit.device.trt_env import probe_tensorrt
    args = parse_args(argv)
    # Device mode verifies the bundle (manifest schema, every sha256) before anything else: a modified or
    # foreign bundle is refused here, not reported complete because TensorRT happens to be missing.
    given = Bundle.open(args.bundle) if args.bundle else None
    check_input_size(args.input_size, given.model if given else args.model)
    target = resolve_target(args)
    from scalablevit.device.targets import check_target_precision
    check_target_precision(target, given.precision if given else args.precision)  # FP8 for an Orin: before any work
    env, reason = probe_tensorrt()  # once per run; the device stage gets the result
    if env is None and args.require_engine:  # say so before minutes of host work, not after
        raise ScalableViTError(f'TensorRT stage needed (--require-engine) but unavailable: {reason}')
    bundle = given or Bundle.open(host(args))
    if env is None:
        print(f'TensorRT stage skipped: {reason}. The host bundle is complete and verified; on the target run: '
              f'{device_command(bundle.path, args)}')
        return 0
    from scalablevit.device.pipeline import build_bundle_engine
    with bundle.lock():  # one writer of engines/ at a time
        engine = build_bundle_engine(bundle, target, force=args.force, env=env)
    print(f'engine: {engine}')
    return 0


def run() -> NoReturn:
    run_cli(main)


if __name__ == '__main__':
    run()
