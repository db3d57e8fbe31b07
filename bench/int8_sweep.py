#!/usr/bin/env python3
"""INT8 sensitivity sweep: Fashion-MNIST accuracy of the INT8 ONNX for each exclusion setting.

    python bench/int8_sweep.py --weights fmnist.safetensors [--calib-size 512] [--eval-size 2000] [--out sweep.md]

Exports the trained scalable_vit_fmnist model, calibrates on TRAIN images (a seeded sample), and evaluates
every setting on a seeded sample of --eval-size TEST images (the pipeline's sets) with onnxruntime CPU against the FP32 ONNX: top-1, its
drop, top-1 agreement, worst cosine, and how many MatMul/Gemm/Conv nodes stay INT8. Settings start from
modelopt's plain heuristics ('none') and exclude one thing at a time: an op type, a known ViT hazard, one
stage-block; then the shipped policies with both calibration methods. Prints a markdown table.
"""
import argparse
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from scalablevit.cli import ArgumentParser, run_cli

logger = logging.getLogger('int8_sweep')
MODEL = 'scalable_vit_fmnist'


def settings(depths: Sequence[int], methods: Sequence[str], high_precision: str) -> List[Dict[str, Any]]:
    """The sweep: (label, quantize_qdq keyword arguments), one change at a time from 'none'."""
    from scalablevit.host.int8_policy import HAZARDS, INT8_POLICIES
    base = dict(policy='none', disable_mha_qdq=False, method='entropy', high_precision_dtype=high_precision)
    rows = [dict(label='none (modelopt heuristics)', **base),
            dict(label='none + disable_mha_qdq', **{**base, 'disable_mha_qdq': True})]
    rows += [dict(label=f'exclude op {op}', exclude_op_types=[op], **base) for op in ('Add', 'Conv', 'Gemm')]
    rows += [dict(label=f'exclude {name}', exclude_nodes=[rx], **base) for name, rx in HAZARDS.items()]
    rows += [dict(label=f'exclude block stages.{k}.{i}', exclude_nodes=[rf'^/stages\.{k}\.{i}/'], **base)
             for k, depth in enumerate(depths) for i in range(depth)]
    # candidate policies: combinations of the single changes that helped, with both non-INT8 dtypes
    for hp in ('fp16', 'fp32'):
        mha_off = {**base, 'disable_mha_qdq': True, 'high_precision_dtype': hp}
        rows += [dict(label='disable_mha_qdq + residual_add', exclude_nodes=[HAZARDS['residual_add']], **mha_off),
                 dict(label='disable_mha_qdq + stem_conv', exclude_nodes=[HAZARDS['stem_conv']], **mha_off),
                 dict(label='policy default + depthwise_conv', policy='default', method='entropy',
                      exclude_nodes=[HAZARDS['depthwise_conv']], high_precision_dtype=hp)]
    for name in INT8_POLICIES:
        for method in methods:
            for hp in ('fp16', 'fp32'):
                rows.append(dict(label=f'policy {name}', policy=name, method=method, high_precision_dtype=hp))
    return rows


# FP16 rows (--fp16): what stays FP32 beyond the islands of scalablevit.host.fp16_rules.
ESTIMATE_DEVICE = 'jetson-orin-nano-8gb-super'  # the cost-estimate column
FP16_SETTINGS = [('all FP16 (measured FP32 islands only)', ()), ('keep LayerNormalization', ('LayerNormalization',)),
                 ('keep Softmax', ('Softmax',)),
                 ('keep LayerNormalization + Softmax + ReduceMean', ('LayerNormalization', 'Softmax', 'ReduceMean'))]
FP16_SQUARE_LIMIT = 255.9  # sqrt(65504): a LayerNorm input beyond it squares to inf in an FP16 variance


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__)
    p.add_argument('--weights', type=Path, required=True, help=f'trained {MODEL} weights (safetensors or .pth)')
    p.add_argument('--calib-size', type=int, default=512, help='TRAIN images to calibrate on (default 512)')
    p.add_argument('--eval-size', type=int, default=2000, help='TEST images to evaluate on (default 2000)')
    p.add_argument('--methods', nargs='+', default=['entropy', 'max'], help='methods for the policy rows')
    p.add_argument('--only', nargs='*', help='run only settings whose label contains one of these words')
    p.add_argument('--high-precision', default='fp32', help='non-INT8 dtype of the exclusion rows (default fp32: '
                                                           'no FP16 rounding noise hiding the INT8 effects)')
    p.add_argument('--seed', type=int, default=0, help='calibration sample seed')
    p.add_argument('--fp16', action='store_true', help='also measure FP16 AutoCast settings and activation ranges')
    p.add_argument('--out', type=Path, help='also write the markdown table here')
    return p.parse_args(argv)


def load_data(model: Any, calib_size: int, eval_size: int, seed: int):
    """(calibration images from TRAIN, eval images and labels from TEST): the pipeline's own sets and seeds."""
    from scalablevit.data.fmnist import fashion_mnist_sets
    calib, evaluation = fashion_mnist_sets(model.data_cfg, calib_size, eval_size, seed)
    return calib.images, evaluation.images, evaluation.labels


def logits(onnx_path: Path, images: np.ndarray) -> np.ndarray:
    from scalablevit.core.runners import run_batches
    from scalablevit.host.runners import OnnxRuntimeRunner
    with OnnxRuntimeRunner(str(onnx_path)) as runner:
        return run_batches(runner, images, batch_size=100)


def run_setting(row: Dict[str, Any], fp32: Path, work: Path, calib: np.ndarray, images: np.ndarray,
                labels: np.ndarray, ref: np.ndarray) -> Dict[str, Any]:
    from scalablevit.core.compare import accuracy_metrics
    from scalablevit.host.quantize import quantize_qdq
    kwargs = {k: v for k, v in row.items() if k != 'label'}
    out = work / 'model.int8.onnx'
    info = quantize_qdq(fp32, out, calib, batch_size=32, **kwargs)
    metrics = accuracy_metrics(ref, logits(out, images), labels, reference_name='onnxruntime-fp32')
    q = info['qdq']['quantized']
    plan = precision_plan(out, info['fp32_islands'])
    return {'label': row['label'], 'method': info['method'], 'mha': 'off' if info['disable_mha_qdq'] else 'on',
            'hp': info['high_precision_dtype'],
            'kept': ' / '.join(f"{q[op]['quantized']}/{q[op]['total']}" for op in ('MatMul', 'Gemm', 'Conv')),
            'top1': metrics['top1_candidate'], 'drop': metrics['top1_reference'] - metrics['top1_candidate'],
            'agree': metrics['top1_agreement'] * 100, 'cos': metrics['cosine_min'], 'time': info['time_s'], **plan}


def precision_plan(path: Path, islands: Dict[str, Any]) -> Dict[str, Any]:
    """INT8 share of the MACs and the TensorRT cost estimate on ESTIMATE_DEVICE at batch 1 (census, costmodel)."""
    import onnx
    from scalablevit.host.census import census, layers_of
    from scalablevit.host.costmodel import estimate
    from scalablevit.host.fusion import groups_of
    model = onnx.load(str(path))
    return {'int8_macs': census(layers_of(model), islands)['mac_share']['int8'] * 100,
            'estimate_ms': estimate(groups_of(model), ESTIMATE_DEVICE, 1)['latency_ms']}


def activation_ranges(fp32: Path, images: np.ndarray) -> Dict[str, float]:
    """Max |value| of every float tensor by producing op type, plus LayerNorm inputs (fp16_rules' measurement)."""
    import onnx
    from scalablevit.host.fp16_rules import activation_ranges as measure
    model = onnx.load(str(fp32))
    ranges, _ = measure(model, images)
    producer = {out: n.op_type for n in model.graph.node for out in n.output}
    ln_inputs = {n.input[0] for n in model.graph.node if n.op_type == 'LayerNormalization'}
    peak: Dict[str, float] = {}
    for name, value in ranges.items():
        key = 'LayerNormalization input' if name in ln_inputs else producer.get(name, 'input')
        peak[key] = max(peak.get(key, 0.0), value)
    return dict(sorted(peak.items(), key=lambda kv: -kv[1]))


def fp16_rows(fp32: Path, work: Path, calib: np.ndarray, images: np.ndarray, labels: np.ndarray,
              ref: np.ndarray) -> List[Dict[str, Any]]:
    from scalablevit.core.compare import accuracy_metrics
    from scalablevit.host.quantize import convert_fp16
    rows = []
    for label, keep in FP16_SETTINGS:
        out = work / 'model.fp16.onnx'
        info = convert_fp16(fp32, out, keep_fp32_op_types=keep, calibration=calib[:64])
        got = logits(out, images)
        m = accuracy_metrics(ref, got, labels)
        rows.append({'label': label, 'fp32_nodes': f"{info['fp32_nodes']}/{info['nodes']}",
                     'top1': m['top1_candidate'], 'drop': m['top1_reference'] - m['top1_candidate'],
                     'agree': m['top1_agreement'] * 100, 'rel': float(np.abs(got - ref).max() / np.abs(ref).max())})
    return rows


def fp16_table(rows: List[Dict[str, Any]], ranges: Dict[str, float]) -> str:
    lines = ['| FP16 setting | FP32 nodes | top-1 % | drop pt | agreement % | max abs diff / max abs logit |',
             '|---|---|---|---|---|---|']
    lines += [f"| {r['label']} | {r['fp32_nodes']} | {r['top1']:.2f} | {r['drop']:+.2f} | {r['agree']:.2f} "
              f"| {r['rel']:.2e} |" for r in rows]
    lines += ['', f'Max |activation| on the evaluated images (FP16 max 65504; LayerNorm inputs above '
                  f'{FP16_SQUARE_LIMIT:.0f} overflow an FP16 variance):', '',
              '| tensor (by producing op) | max abs |', '|---|---|']
    lines += [f'| {k} | {v:.1f} |' for k, v in ranges.items()]
    return '\n'.join(lines)


def table(rows: List[Dict[str, Any]], fp32_top1: float, samples: int) -> str:
    lines = [f'FP32 ONNX top-1 {fp32_top1:.2f} % on {samples} Fashion-MNIST test images.', '',
             '| setting | calib | MHA Q/DQ | non-INT8 dtype | INT8 MatMul / Gemm / Conv | INT8 MACs % | top-1 % '
             '| drop pt | agreement % | worst cosine | TensorRT estimate ms | quantize s |',
             '|---|---|---|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        lines.append(f"| {r['label']} | {r['method']} | {r['mha']} | {r['hp']} | {r['kept']} | {r['int8_macs']:.1f} "
                     f"| {r['top1']:.2f} | {r['drop']:+.2f} | {r['agree']:.2f} | {r['cos']:.4f} "
                     f"| {r['estimate_ms']:.4f} | {r['time']:.0f} |")
    lines += ['', f'TensorRT estimate: {ESTIMATE_DEVICE}, batch 1, from the ONNX alone (scalablevit.host.costmodel; '
                  'measured error in docs/cost_estimate.md; compare rows with it, do not read it as a latency).']
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    from scalablevit.core.compare import accuracy_metrics
    from scalablevit.host.export import export_onnx
    from scalablevit.models.scalablevit import create_model
    model = create_model(MODEL, weights=str(args.weights)).eval()
    calib, images, labels = load_data(model, args.calib_size, args.eval_size, args.seed)
    rows = settings(model.depths, args.methods, args.high_precision)
    if args.only:
        rows = [r for r in rows if any(w in r['label'] for w in args.only)]
    results = []
    with tempfile.TemporaryDirectory(prefix='int8-sweep-') as tmp:
        work = Path(tmp)
        fp32 = work / 'model.fp32.onnx'
        export_onnx(model, fp32)
        ref = logits(fp32, images)
        fp32_top1 = accuracy_metrics(ref, ref, labels)['top1_reference']
        for i, row in enumerate(rows, 1):
            start = time.perf_counter()
            results.append(run_setting(row, fp32, work, calib, images, labels, ref))
            logger.info('[%d/%d] %s: top-1 %.2f %% (drop %+.2f pt), agreement %.2f %% in %.0f s', i, len(rows),
                        row['label'], results[-1]['top1'], results[-1]['drop'], results[-1]['agree'],
                        time.perf_counter() - start)
        text = table(results, fp32_top1, len(images))
        if args.fp16:
            text += '\n\n' + fp16_table(fp16_rows(fp32, work, calib, images, labels, ref),
                                         activation_ranges(fp32, images))
    print(text)
    if args.out:
        from scalablevit.core.fileio import write_text
        write_text(args.out, text + '\n')
    return 0


if __name__ == '__main__':
    run_cli(main)
