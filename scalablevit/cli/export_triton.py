"""Write a Triton Inference Server model repository entry from a bundle (ONNX Runtime) or an engine (TensorRT).

    python deploy/export_triton.py out/scalable_vit_small-int8 --repo models/            # model.onnx, CPU or GPU
    python deploy/export_triton.py out/b/engines/model.int8.desktop.abc.engine --repo models/   # model.plan

Writes <repo>/<name>/config.pbtxt, <repo>/<name>/labels.txt and <repo>/<name>/1/model.onnx|model.plan. The
batch limit is the engine profile's maximum (or the --target's for ONNX), with dynamic batching on; input and
output names, dims and types come from the bundle. Serve with `tritonserver --model-repository=<repo>`. Installed,
the same command is `scalablevit-export-triton`.
"""
import argparse
from pathlib import Path
from typing import NoReturn, Optional, Sequence

from scalablevit.cli import ArgumentParser, run_cli


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__)
    p.add_argument('source', type=Path, help='bundle directory (ONNX Runtime) or one of its engines (TensorRT)')
    p.add_argument('--repo', type=Path, required=True, help='model repository directory (created when missing)')
    p.add_argument('--name', help='model name (default: <model>_<precision>_onnx or _trt)')
    p.add_argument('--bundle', type=Path, help='the bundle of an engine kept outside <bundle>/engines/')
    p.add_argument('--target', default='desktop', help='target whose batch range applies to a bundle\'s ONNX '
                                                       '(default: desktop)')
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    from scalablevit.serve.triton import export_triton
    record = export_triton(args.source, args.repo, name=args.name, bundle=args.bundle, target=args.target)
    where = args.repo / record['name']
    print(f"{where}: {record['backend']} backend, {record['precision']}, max_batch_size {record['max_batch_size']} "
          f"(config.pbtxt, labels.txt, 1/{Path(record['model_file']).name} as "
          f"{'model.plan' if record['backend'] == 'tensorrt' else 'model.onnx'})")
    return 0


def run() -> NoReturn:
    run_cli(main)


if __name__ == '__main__':
    run()
