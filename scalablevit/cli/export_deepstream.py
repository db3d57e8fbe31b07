"""Write a DeepStream (Gst-nvinfer) classifier config, its labels file and a softmax ONNX from a bundle or engine.

    python deploy/export_deepstream.py out/scalable_vit_small-int8-folded --target jetson-orin-nano --out ds/
    python deploy/export_deepstream.py out/b/engines/model.int8.desktop.abc.engine --process-mode secondary

Writes <out>/config_infer_<model>.txt, labels.txt (all classes on one ';'-separated line), <stem>.probs.onnx
(the bundle's ONNX plus a Softmax: nvinfer's default classifier parser reads probabilities) and deepstream.json.
net-scale-factor/offsets reproduce the bundle's normalization exactly; a model with a per-channel std (ImageNet)
is refused unless it was built with --fold-normalization. The batch size is the engine profile's maximum, or
the --target's. See docs/deploy.md. Installed, the same command is `scalablevit-export-deepstream`.
"""
import argparse
from pathlib import Path
from typing import NoReturn, Optional, Sequence

from scalablevit.cli import ArgumentParser, run_cli


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__)
    p.add_argument('source', type=Path, help='bundle directory or one of its TensorRT engines')
    p.add_argument('--bundle', type=Path, help='the bundle of an engine kept outside <bundle>/engines/')
    p.add_argument('--out', type=Path, help='output directory (default: <bundle>/deepstream)')
    p.add_argument('--target', default='desktop', help='target whose max batch is the batch size when the source '
                                                       'is a bundle (default: desktop)')
    p.add_argument('--process-mode', default='primary', help='primary (whole frames) | secondary (objects)')
    p.add_argument('--gie-id', type=int, help='gie-unique-id, > 0 (default: 1 primary, 2 secondary)')
    p.add_argument('--operate-on-gie-id', type=int, help='secondary only: the gie-unique-id of the detector it '
                                                          'classifies for, > 0 and not its own (default: 1)')
    p.add_argument('--classifier-threshold', type=float, default=0.0,
                   help='a label needs a probability above this, 0 <= t < 1 (default 0: always the top-1 class)')
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    from scalablevit.serve.deepstream import export_deepstream
    from scalablevit.serve.deployable import Deployable
    out = args.out or Deployable.open(args.source, args.bundle).bundle.path / 'deepstream'
    record = export_deepstream(args.source, out, bundle=args.bundle, target=args.target,
                               process_mode=args.process_mode, gie_id=args.gie_id,
                               operate_on_gie_id=args.operate_on_gie_id, classifier_threshold=args.classifier_threshold)
    props = record['properties']
    print(f"{out / record['config']}: {record['precision']}, batch-size {props['batch-size']}, "
          f"net-scale-factor {props['net-scale-factor']}, offsets {props['offsets']}")
    print(f"labels: {out / record['labels']}; model: {out / record['probs_onnx']['file']} (softmax checked on "
          f"{record['probs_onnx']['checked_images']} reference images, max |diff| {record['probs_onnx']['max_abs_diff']:.2g})")
    if record['engine_build']:
        print(f"{record['precision'].upper()}: build the engine strongly typed before starting DeepStream "
              f"(in {out}):\n  "
              f"{record['engine_build']}")
    return 0


def run() -> NoReturn:
    run_cli(main)


if __name__ == '__main__':
    run()
