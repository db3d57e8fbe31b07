"""Top-1 of a reference runner and candidate runners on a labelled image folder (ImageNet-style).

    python bench/accuracy.py --val /data/imagenet/val --model scalable_vit_small --weights checkpoint_best.pth \\
        --candidate out/scalable_vit_small-int8/model.int8.onnx [--candidate s.int8.engine] [--limit 5000]

The folder has one subfolder per class (sorted names = class indices, torchvision's ImageFolder rule), or is
flat with --labels-file ("filename label" lines). Every image gets the model's eval preprocessing. The
reference is PyTorch FP32 (--model/--weights; without --weights the weights shipped in the package for that
model, else random weights with seed 0, like the pipeline's, a warning and every report marked "untrained
weights") unless --reference names an ONNX file or engine. Candidates are
ONNX files or TensorRT engines (precision from their metadata or engine manifest). Images stream through in chunks, so a 50k-image
ImageNet val never sits in memory. Writes <out>/accuracy.json (one report-contract entry per candidate) and
accuracy.md. ScalableViT-S with the official weights should give about 83.1 % (the paper's number).
"""
import argparse
import logging
from pathlib import Path
from typing import Dict, List, NoReturn, Optional, Sequence, Tuple

import numpy as np

from scalablevit.benchmarks.harness import RunnerSpec, file_precision, make_runner
from scalablevit.cli import ArgumentParser, run_cli
from scalablevit.core.compare import accuracy_metrics
from scalablevit.core.errors import ScalableViTError
from scalablevit.core.fileio import write_json, write_text
from scalablevit.core.progress import progress
from scalablevit.core.report import make_report
from scalablevit.core.runners import run_batches
from scalablevit.data.sets import labelled_files, load_files
from scalablevit.host.pipeline import UNTRAINED_SEED
from scalablevit.models.checkpoint import shipped_weights
from scalablevit.models.scalablevit import data_config, resolve_model_name

CHUNK = 256  # images decoded at a time
logger = logging.getLogger('bench.accuracy')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__)
    p.add_argument('--val', type=Path, required=True, help='labelled image folder')
    p.add_argument('--labels-file', type=Path, help='"filename label" lines for a flat folder')
    p.add_argument('--model', default='scalable_vit_small', help='model name (preprocessing, PyTorch reference)')
    p.add_argument('--weights', type=Path, help='weights of the PyTorch reference (default: the shipped ones, '
                                                'else random: reports marked untrained)')
    p.add_argument('--reference', type=Path, help='ONNX file or engine as the reference instead of PyTorch FP32')
    p.add_argument('--candidate', type=Path, action='append', default=[], help='ONNX file or engine (repeatable)')
    p.add_argument('--limit', type=int, help='seeded random subset of N images')
    p.add_argument('--batch', type=int, default=32, help='batch size (default: 32)')
    p.add_argument('--out', type=Path, default=Path('out/accuracy'), help='output directory')
    return p.parse_args(argv)


def spec_for(path: Path) -> RunnerSpec:
    backend = 'tensorrt' if path.suffix in ('.engine', '.plan') else 'onnxruntime'
    if backend == 'onnxruntime' and path.is_file():
        from scalablevit.host.export import load_onnx, read_metadata
        if read_metadata(load_onnx(path)).get('normalize_in_model') == 'True':
            raise ScalableViTError(f'{path} takes RGB 0-255 (--fold-normalization) but every runner here gets '
                                   'normalized images: compare its unfolded export, or use deploy/predict.py')
    return RunnerSpec(backend, file_precision(path), path=path, name=f'{backend}:{path}')


def reference_spec(args: argparse.Namespace, model: str) -> Tuple[RunnerSpec, bool]:
    """The reference runner and whether it has random weights: --reference, else PyTorch with --weights, the
    package's shipped weights, or (warned, reports marked) random weights seeded like the pipeline's."""
    if args.reference:
        return spec_for(args.reference), False
    weights = args.weights or shipped_weights(model)
    if weights is None:
        logger.warning('no --weights given and none shipped for %s: the PyTorch reference uses RANDOM weights '
                       '(seed %d, as the pipeline\'s untrained bundles); every report is marked "untrained weights"',
                       model, UNTRAINED_SEED)
    return RunnerSpec('torch', 'fp32', model=model, weights=weights, name='pytorch-fp32'), weights is None


def reference_weights(reference: RunnerSpec, untrained: bool) -> Optional[str]:
    if reference.backend != 'torch':
        return None
    return f'untrained-seed{UNTRAINED_SEED}' if untrained else str(reference.weights)


def evaluate(specs: List[RunnerSpec], files: List[Path], labels: List[int], dcfg: Dict, batch: int,
             seed: Optional[int] = None) -> Dict:
    """Logits of every runner over the images, decoded chunk by chunk; unreadable images are skipped for all.
    ``seed`` seeds the random weights of a PyTorch runner without weights."""
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise ScalableViTError(f'two runners would share a name ({", ".join(names)}): rename the files')
    runners = [make_runner(spec, seed=seed).activate() for spec in specs]
    logits: Dict[str, List[np.ndarray]] = {spec.name: [] for spec in specs}
    kept: List[np.ndarray] = []
    advance = progress(len(files), 'accuracy')
    try:
        for start in range(0, len(files), CHUNK):
            chunk = load_files(files[start:start + CHUNK], dcfg, labels=labels[start:start + CHUNK],
                               source=f'images {start}..')
            kept.append(chunk.labels)
            for spec, runner in zip(specs, runners):
                logits[spec.name].append(run_batches(runner, chunk.images, batch))
            advance(len(files[start:start + CHUNK]))
    finally:
        for runner in runners:
            runner.deactivate()
    return {'labels': np.concatenate(kept), **{k: np.concatenate(v) for k, v in logits.items()}}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if not args.candidate:
        raise ScalableViTError('nothing to evaluate: pass at least one --candidate ONNX file or engine')
    if args.batch < 1:
        raise ScalableViTError(f'--batch must be positive, got {args.batch}')
    model = resolve_model_name(args.model)
    dcfg = data_config(model)
    reference, untrained = reference_spec(args, model)
    candidates = [spec_for(path) for path in args.candidate]
    files, labels, _ = labelled_files(args.val, dcfg, limit=args.limit, labels_file=args.labels_file)
    results = evaluate([reference] + candidates, files, labels, dcfg, args.batch, seed=UNTRAINED_SEED)
    reports = []
    rows = ['| runner | precision | top-1 % | drop (pt) | agreement % | cosine mean | cosine min |', '|---|---|---|---|---|---|---|']
    for spec in candidates:
        metrics = accuracy_metrics(results[reference.name], results[spec.name], results['labels'], reference.name)
        reports.append(make_report(model, spec.precision, spec.backend, metrics, None, untrained=untrained,
                                   candidate=str(spec.path), images=str(args.val),
                                   reference_weights=reference_weights(reference, untrained)))
        rows.append(f"| {spec.name} | {spec.precision} | {metrics['top1_candidate']:.2f} | "
                    f"{metrics['top1_reference'] - metrics['top1_candidate']:+.2f} | {metrics['top1_agreement'] * 100:.2f} | "
                    f"{metrics['cosine_mean']:.5f} | {metrics['cosine_min']:.5f} |")
    top1_ref = reports[0]['accuracy']['top1_reference']
    marked = ' (UNTRAINED: random weights, seed 0)' if untrained else ''
    markdown = '\n'.join([f'# Accuracy of {model} on {args.val} ({len(results["labels"])} images)', '',
                          f'Reference {reference.name}{marked}: top-1 {top1_ref:.2f} %', ''] + rows) + '\n'
    write_json(args.out / 'accuracy.json', reports)
    write_text(args.out / 'accuracy.md', markdown)
    print(markdown)
    return 0


def run() -> NoReturn:
    run_cli(main)


if __name__ == '__main__':
    run()
