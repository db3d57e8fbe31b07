#!/usr/bin/env python3
"""Host pipeline wall time and peak memory, whole and per stage, over repeated clean runs.

    python bench/host_memory.py --model s l --precision int8 fp16 --repeat 3 --out results/host [-- --calib-size 2048]

Each run is ``deploy/build_engine.py --model M --precision P --force --out OUT/<model>-<precision>-<k>`` plus the
flags after ``--``, in a fresh process (untrained weights unless ``--weights`` is passed through). Its wall time is
measured around the process; its peak RSS is the kernel's high-water mark of that process (``wait4``, what
``/usr/bin/time -v`` reports as "Maximum resident set size"); the split per stage and per part of a stage
(``quantize > int8 calibration``...) comes from the stage records of its manifest (``scalablevit.core.steps``: RSS
sampled every 20 ms). Prints, per model and precision, the median with the min-max of every figure as markdown and
writes every run to ``host_memory.json``. Bundles are removed after each run unless ``--keep``.

Run it alone on the machine (e.g. under ``flock``): the figures are only as quiet as the machine.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from scalablevit.cli import ArgumentParser, run_cli
from scalablevit.core.errors import ScalableViTError
from scalablevit.core.fileio import write_json

ROOT = Path(__file__).resolve().parents[1]
STAGES = ('export', 'data', 'quantize', 'validate')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__)
    p.add_argument('--model', nargs='+', default=['scalable_vit_small'], help='models (names or aliases: s, b, l)')
    p.add_argument('--precision', nargs='+', default=['int8'], help='int8 and/or fp16 (fp32 works too)')
    p.add_argument('--repeat', type=int, default=3, help='clean runs per model and precision (default: 3)')
    p.add_argument('--out', type=Path, default=Path('results/host_memory'), help='bundles and host_memory.json')
    p.add_argument('--keep', action='store_true', help='keep the bundles')
    p.add_argument('extra', nargs=argparse.REMAINDER, help='after --: more build_engine.py flags')
    args = p.parse_args(argv)
    args.extra = [a for a in args.extra if a != '--']
    if args.repeat < 1:
        raise ScalableViTError(f'--repeat must be at least 1, got {args.repeat}')
    return args


def run_once(model: str, precision: str, bundle: Path, extra: Sequence[str]) -> Dict[str, Any]:
    """One clean pipeline run in a child process: wall, the child's peak RSS, the stage records."""
    import scalablevit
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(scalablevit.__file__).resolve().parents[1]), os.environ.get('PYTHONPATH', '')]))
    command = [sys.executable, str(ROOT / 'deploy' / 'build_engine.py'), '--model', model, '--precision', precision,
               '--force', '--out', str(bundle), *extra]
    log = bundle.with_name(bundle.name + '.log')
    start = time.perf_counter()
    with open(log, 'wb') as out:
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = code = os.waitstatus_to_exitcode(status)  # reaped by wait4: tell Popen
    if code != 0:
        raise ScalableViTError(f"{' '.join(command)} failed with exit code {code} (log: {log})")
    manifest = json.loads((bundle / 'manifest.json').read_text())
    report = json.loads((bundle / 'report.json').read_text())
    stages = {name: report['stages'][name] for name in STAGES if name in report['stages']}
    return {'model': manifest['model'], 'precision': precision, 'extra': list(extra), 'wall_s': round(wall, 1),
            'peak_rss_mb': round(usage.ru_maxrss / 1024, 1), 'stages': stages, 'log': str(log),
            'calibration_images': (manifest.get('calibration') or {}).get('count'),
            'calibration_batch': (manifest.get('quantization') or {}).get('calibration_batch_size')}


def spread(values: List[float], unit: str = '', scale: float = 1.0, digits: int = 0) -> str:
    """'median (min-max)' of ``values`` (each times ``scale``), or the one value."""
    v = np.asarray(values, dtype=float) * scale
    fmt = f'{{:.{digits}f}}'
    if len(v) == 1:
        return fmt.format(v[0]) + unit
    return f'{fmt.format(np.median(v))}{unit} ({fmt.format(v.min())}-{fmt.format(v.max())})'


def table(runs: List[Dict[str, Any]]) -> str:
    """The markdown of one model and precision: the whole run, then every stage and part of a stage."""
    first = runs[0]
    gb = dict(unit=' GiB', scale=1 / 1024, digits=2)
    batch = f", calibration batch {first['calibration_batch']}" if first['calibration_batch'] else ''
    lines = [f"### {first['model']} {first['precision'].upper()}: {len(runs)} runs, "
             f"{first['calibration_images']} calibration images{batch}",
             '', '| step | wall (s) | peak RSS |', '|---|---:|---:|',
             f"| whole run | {spread([r['wall_s'] for r in runs])} | {spread([r['peak_rss_mb'] for r in runs], **gb)} |"]
    for name, stage in first['stages'].items():
        rows = [(name, [r['stages'][name] for r in runs])]
        rows += [(f'{name} > {part}', [r['stages'][name]['parts'][part] for r in runs])
                 for part in stage.get('parts') or {}]
        for label, records in rows:
            lines.append(f"| {label} | {spread([s['seconds'] for s in records])} | "
                         f"{spread([s['peak_rss_mb'] for s in records], **gb)} |")
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results: List[Dict[str, Any]] = []
    path = args.out / 'host_memory.json'
    for model in args.model:
        for precision in args.precision:
            runs = []
            for k in range(args.repeat):
                bundle = args.out / f'{model}-{precision}-{k + 1}'
                runs.append(run_once(model, precision, bundle, args.extra))
                if not args.keep:
                    shutil.rmtree(bundle)
                results.append(runs[-1])  # written after every run: a long series that fails keeps what it had
                write_json(path, {'command': sys.argv, 'cpu_count': os.cpu_count(), 'runs': results})
            print(table(runs) + '\n', flush=True)
    print(f'runs written to {path}')
    return 0


if __name__ == '__main__':
    run_cli(main)
