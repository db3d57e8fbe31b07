#!/usr/bin/env python3
"""The --int8-policy auto table of docs/auto-int8.md: fixed policies against the search, on two trained Fashion-MNIST models.

    python bench/int8_auto_cases.py --out results/auto [--val-size 5000] [--calib-size 512]

Cases: the shipped model ('trained') and the same model with three outlier LayerNorm channels
(tools/massive_activations.py, 'outliers'). Each is built through the host pipeline (as deploy/build_engine.py
builds it) with the fixed policies 'none' and 'default' and the searching 'auto-none' and 'auto', INT8 with FP16
elsewhere. The search and the gate use the bundle's --val-size TEST images; the 'unseen' columns hold every bundle
against PyTorch FP32 on the remaining TEST images, which neither the search nor the gate saw. Prints a markdown
table and writes it, with each bundle, under --out.
"""
import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'tools'))
from scalablevit.cli import ArgumentParser, run_cli  # noqa: E402

logger = logging.getLogger('int8_auto_cases')
MODEL = 'scalable_vit_fmnist'
POLICIES = ('none', 'default', 'auto-none', 'auto')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__)
    p.add_argument('--out', type=Path, required=True, help='directory for the bundles and table.md')
    p.add_argument('--val-size', type=int, default=5000, help='TEST images the search and the gate use (5000)')
    p.add_argument('--calib-size', type=int, default=512, help='TRAIN images to calibrate on (512)')
    p.add_argument('--cases', nargs='+', default=['trained', 'outliers'], help='trained | outliers')
    p.add_argument('--policies', nargs='+', default=list(POLICIES), help=f'from {" ".join(POLICIES)}')
    p.add_argument('--int8-target', help="a tighter target for the searching policies, e.g. 'agreement=99.9'")
    return p.parse_args(argv)


def unseen_images(val_size: int, data_cfg: Dict[str, Any], seed: int = 0):
    """The TEST images the pipeline's validation set leaves out (its own seeded pick, complemented), with labels."""
    from scalablevit.data.fmnist import load_fashion_mnist, to_model_input
    from scalablevit.data.sets import STREAM_VAL, stream_rng
    images, labels = load_fashion_mnist('test')
    picked = stream_rng(seed, STREAM_VAL).choice(len(images), size=min(val_size, len(images)), replace=False)
    rest = np.setdiff1d(np.arange(len(images)), picked)
    return to_model_input(images[rest], data_cfg), labels[rest]


def logits(runner: Any, images: np.ndarray) -> np.ndarray:
    from scalablevit.core.runners import run_batches
    with runner:
        return run_batches(runner, images, batch_size=100)


def build(case: str, policy: str, weights: Path, args: argparse.Namespace) -> Dict[str, Any]:
    from scalablevit.host.int8_policy import resolve_policy
    from scalablevit.host.pipeline import HostOptions, HostPipeline
    target = args.int8_target if resolve_policy(policy).search else None
    label = f'{policy} ({target})' if target else policy
    out = args.out / f"{case}-{policy}{'-' + target.replace('=', '').replace(',', '-') if target else ''}"
    report = HostPipeline(HostOptions(model=MODEL, precision='int8', weights=weights, out=out, int8_policy=policy,
                                      int8_target=target, calib_size=args.calib_size, val_size=args.val_size)).run()
    return {'case': case, 'policy': label, 'bundle': out, 'report': report}


def row(built: Dict[str, Any], unseen: Optional[Dict[str, np.ndarray]], target: Optional[str]) -> Dict[str, Any]:
    from scalablevit.core.compare import accuracy_metrics, budget_violations, load_budgets
    from scalablevit.host.autoquant import target_budget
    from scalablevit.host.runners import OnnxRuntimeRunner
    report = built['report']
    acc, auto = report['accuracy'], report.get('int8_auto')
    quantize = report['stages']['quantize']['seconds']
    r = {'case': built['case'], 'policy': built['policy'], 'gate': 'passed' if report['status'] == 'passed' else
         'FAILED', 'agreement': acc['top1_agreement'] * 100, 'top1': acc['top1_candidate'],
         'drop': acc['top1_reference'] - acc['top1_candidate'], 'cosine': acc['cosine_min'],
         'int8_macs': report['census']['mac_share']['int8'] * 100, 'quantize_s': quantize,
         'evaluations': auto['evaluations'] if auto else None, 'search_s': auto['seconds'] if auto else None,
         'moved': auto['moved'] if auto else []}
    if target:
        missed = budget_violations(acc, 'int8', budget=target_budget(load_budgets()['int8'], target))
        r['target'] = 'met' if not missed else 'missed'

    if unseen is not None:
        got = logits(OnnxRuntimeRunner(str(built['bundle'] / 'model.int8.onnx')), unseen['input'])
        m = accuracy_metrics(unseen['logits'], got, unseen['labels'])
        r.update(unseen_agreement=m['top1_agreement'] * 100, unseen_top1=m['top1_candidate'])
    return r


def table(rows: List[Dict[str, Any]], args: argparse.Namespace, unseen: int) -> str:
    lines = [f'INT8 with FP16 elsewhere, {args.calib_size} TRAIN images to calibrate, budget: top-1 agreement >= 99 %, '
             f'drop <= 0.5 pt, worst cosine >= 0.95 on {args.val_size} TEST images (the search\'s and the gate\'s); '
             f'"unseen": the other {unseen} TEST images.', '',
             f"| model | policy | gate |{' target ' + args.int8_target + ' |' if args.int8_target else ''} evaluations "
             '| layers moved out of INT8 | top-1 % | agreement % | worst cosine | INT8 MACs % | unseen top-1 % '
             '| unseen agreement % | quantize s (search s) |',
             '|---|---|---|' + ('---|' if args.int8_target else '') + '---:|---|---:|---:|---:|---:|---:|---:|---:|']
    for r in rows:
        moved = ', '.join(f'`{n}`' for n in r['moved']) or ('none' if r['evaluations'] else '')
        search = f" ({r['search_s']:.0f})" if r['search_s'] is not None else ''
        target = f" {r['target']} |" if args.int8_target else ''
        lines.append(f"| {r['case']} | {r['policy']} | {r['gate']} |{target} {r['evaluations'] or ''} | {moved} "
                     f"| {r['top1']:.2f} | {r['agreement']:.2f} | {r['cosine']:.4f} | {r['int8_macs']:.1f} "
                     f"| {r.get('unseen_top1', float('nan')):.2f} | {r.get('unseen_agreement', float('nan')):.2f} "
                     f"| {r['quantize_s']:.0f}{search} |")
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    from massive_activations import WEIGHTS, build as build_outliers
    from scalablevit.host.runners import TorchRunner
    from scalablevit.models.checkpoint import save_weights
    from scalablevit.models.scalablevit import create_model
    args.out.mkdir(parents=True, exist_ok=True)
    weights = {'trained': WEIGHTS}
    if 'outliers' in args.cases:
        model, channels = build_outliers()
        weights['outliers'] = args.out / 'fmnist_outliers.safetensors'
        save_weights(model, weights['outliers'])
        logger.info('outlier channels: %s', channels)
    rows = []
    for case in args.cases:
        model = create_model(MODEL, weights=str(weights[case])).eval()
        unseen = None
        if args.val_size < 10000:
            images, labels = unseen_images(args.val_size, model.data_cfg)
            unseen = {'input': images, 'labels': labels, 'logits': logits(TorchRunner(model), images)}
        for policy in args.policies:
            rows.append(row(build(case, policy, weights[case], args), unseen, args.int8_target))
            logger.info('%s / %s: %s', case, policy, rows[-1])
    text = table(rows, args, 10000 - args.val_size)
    print(text)
    from scalablevit.core.fileio import write_text
    write_text(args.out / f"table{'-' + args.int8_target if args.int8_target else ''}.md", text + '\n')
    return 0


if __name__ == '__main__':
    run_cli(main)
