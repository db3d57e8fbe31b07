#!/usr/bin/env python3
"""Make the device self-test fixtures (``scalablevit/device/fixtures/fmnist.*``) with the real host pipeline.

For each precision the host pipeline builds a bundle of the trained ``scalable_vit_fmnist`` (the weights shipped in
``scalablevit/models/weights/``): export, Fashion-MNIST calibration (train split) and held-out images (test split),
modelopt INT8 / FP16, onnxruntime validation against PyTorch FP32; each must pass its accuracy gate. From the
held-out images the first ``--samples`` whose PyTorch top-1 margin is at least ``--min-margin`` logits are kept
(with 64 images one flipped near-tie is 1.6 % agreement, so a correct engine could fail its budget on noise), with
their PyTorch logits, labels and the onnxruntime logits of each deployed ONNX. The three ONNX files and
``reference.npz`` go into one xz archive (the FP32 weights inside the FP32 and INT8 models compress once) written
with fixed timestamps; ``fmnist.json`` describes every file with its sha256 and how it was made.

Run it again whenever the ONNX a bundle deploys changes (export, quantization defaults): ``python
tools/make_fixtures.py``. Needs the host environment (torch, onnx, onnxruntime, modelopt) and Fashion-MNIST.
The files are byte-for-byte reproducible: the script runs itself with PYTHONHASHSEED=0, because AutoCast writes
the FP16 model's value_info in string-hash order.
"""
import argparse
import io
import lzma
import os
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Dict, NoReturn, Optional, Sequence

import numpy as np

from scalablevit import __version__
from scalablevit.cli import ArgumentParser, run_cli
from scalablevit.core.bundle import Bundle
from scalablevit.core.manifest import PRECISIONS
from scalablevit.core.compare import accuracy_metrics
from scalablevit.core.errors import ScalableViTError
from scalablevit.core.fileio import human_size, sha256_bytes, write_bytes, write_json
from scalablevit.core.report import tool_versions, utc_now
from scalablevit.core.runners import run_batches
from scalablevit.device.selftest import FIXTURE, FIXTURES_DIR, FIXTURE_FORMAT
from scalablevit.host.pipeline import HostOptions, HostPipeline
from scalablevit.host.runners import OnnxRuntimeRunner

MODEL = 'scalable_vit_fmnist'
_EPOCH = (1980, 1, 1, 0, 0, 0)  # zip's earliest date: fixed timestamps make the files reproducible


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__)
    p.add_argument('--samples', type=int, default=64, help='reference images kept (default 64)')
    p.add_argument('--min-margin', type=float, default=1.0, help='PyTorch top-1 margin of a kept image (logits)')
    p.add_argument('--val-size', type=int, default=256, help='held-out images the pipeline validates on')
    p.add_argument('--calib-size', type=int, default=256, help='INT8 calibration images')
    p.add_argument('--work', type=Path, help='keep the host bundles here (default: a temporary directory)')
    p.add_argument('--out', type=Path, default=FIXTURES_DIR, help='where fmnist.json and fmnist.tar.xz go')
    return p.parse_args(argv)


def host_bundles(work: Path, args: argparse.Namespace) -> Dict[str, Bundle]:
    """One host-pipeline bundle per precision, each within its accuracy gate."""
    bundles = {}
    for precision in PRECISIONS:
        options = HostOptions(model=MODEL, precision=precision, calib_size=args.calib_size, val_size=args.val_size,
                              out=work / f'bundle-{precision}', force=True)
        report = HostPipeline(options).run()
        if report['status'] != 'passed':
            raise ScalableViTError(f'{precision} bundle failed its accuracy gate: {report["status"]}')
        bundles[precision] = Bundle.open(options.out)
    return bundles


def select(reference: Dict[str, np.ndarray], samples: int, min_margin: float) -> np.ndarray:
    """Indices of the first ``samples`` images whose PyTorch top-1 beats the runner-up by ``min_margin``."""
    top2 = np.sort(reference['logits'], axis=1)[:, -2:]
    keep = np.flatnonzero(top2[:, 1] - top2[:, 0] >= min_margin)[:samples]
    if len(keep) < samples:
        raise ScalableViTError(f'only {len(keep)} of {len(top2)} images have a margin >= {min_margin}: '
                               'raise --val-size')
    return keep


def npz_bytes(arrays: Dict[str, np.ndarray]) -> bytes:
    """An .npz (what np.load reads) with fixed timestamps."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, 'w', zipfile.ZIP_DEFLATED) as zf:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f'{name}.npy', date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, 'w') as f:
                np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def tar_xz_bytes(files: Dict[str, bytes]) -> bytes:
    """A solid xz-compressed tar of ``files`` with fixed owner, mode and time."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode='w', format=tarfile.USTAR_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return lzma.compress(raw.getvalue(), preset=9 | lzma.PRESET_EXTREME)


def make(work: Path, args: argparse.Namespace) -> Dict[str, Any]:
    bundles = host_bundles(work, args)
    reference = bundles['fp32'].reference()
    for precision, bundle in bundles.items():  # one data stage: the same images and logits in every bundle
        other = bundle.reference()
        if not all(np.array_equal(reference[k], other[k]) for k in ('input', 'logits')):
            raise ScalableViTError(f'the {precision} bundle has other reference images than the fp32 bundle')
    keep = select(reference, args.samples, args.min_margin)
    arrays = {k: reference[k][keep] for k in ('input', 'logits', 'labels')}
    files, onnx = {}, {}
    for precision, bundle in bundles.items():
        path, entry = bundle.deploy_onnx()
        with OnnxRuntimeRunner(str(path), name=f'onnxruntime-{precision}') as runner:
            arrays[f'onnxruntime_{precision}'] = run_batches(runner, arrays['input'], 8)
        files[path.name] = path.read_bytes()
        quantization = {k: v for k, v in (bundle.manifest.get('quantization') or {}).items()
                        if k not in ('path', 'time_s')}
        onnx[precision] = {'file': path.name, 'sha256': entry['sha256'], 'opset': entry['opset'],
                           'bytes': len(files[path.name]), 'quantization': quantization or None,
                           'onnxruntime_vs_pytorch': accuracy_metrics(arrays['logits'],
                                                                      arrays[f'onnxruntime_{precision}'],
                                                                      arrays['labels'], 'pytorch-fp32')}
    files['reference.npz'] = npz_bytes(arrays)
    archive = tar_xz_bytes(files)
    manifest = bundles['fp32'].manifest
    return {'archive': archive, 'json': {
        'format': FIXTURE_FORMAT, 'name': FIXTURE, 'model': MODEL,
        'archive': {'file': f'{FIXTURE}.tar.xz', 'sha256': sha256_bytes(archive), 'bytes': len(archive)},
        'input': {k: manifest['input'][k] for k in ('name', 'shape', 'preprocessing')}, 'output': manifest['output'],
        'reference': {'file': 'reference.npz', 'sha256': sha256_bytes(files['reference.npz']),
                      'samples': len(keep), 'arrays': sorted(arrays),
                      'selection': f'the first {len(keep)} of {len(reference["input"])} held-out Fashion-MNIST test '
                                   f'images whose PyTorch FP32 top-1 margin is >= {args.min_margin} logits'},
        'onnx': onnx,
        'made_with': {'command': ' '.join(['python tools/make_fixtures.py', *sys.argv[1:]]),
                      'host_pipeline': f'python deploy/build_engine.py --model fmnist --precision {{{",".join(PRECISIONS)}}} '
                                       f'--calib-size {args.calib_size} --val-size {args.val_size}',
                      'package_version': __version__, 'weights_sha256': manifest['weights']['sha256'],
                      'tools': {k: v for k, v in tool_versions().items() if v}, 'created_at': utc_now()}}}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.work:
        made = make(args.work, args)
    else:
        with tempfile.TemporaryDirectory(prefix='scalablevit-fixtures-') as tmp:
            made = make(Path(tmp), args)
    write_bytes(args.out / made['json']['archive']['file'], made['archive'])
    write_json(args.out / f'{FIXTURE}.json', made['json'])
    print(f"fixtures: {args.out / made['json']['archive']['file']} ({human_size(len(made['archive']))}), "
          f"{args.out / f'{FIXTURE}.json'}")
    return 0


def run() -> NoReturn:
    run_cli(main)


if __name__ == '__main__':
    if os.environ.get('PYTHONHASHSEED') != '0':
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, 'PYTHONHASHSEED': '0'})
    run()
