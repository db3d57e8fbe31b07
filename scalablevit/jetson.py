"""Jetson facts and power: board, L4T/JetPack, TensorRT, nvpmodel, jetson_clocks, tegrastats power sampling.

Everything here parses the text NVIDIA's tools print (real samples, with sources, in tests/data/jetson/):

* ``tegrastats`` lines differ by board and release: Orin Nano/NX print ``VDD_IN``, ``VDD_CPU_GPU_CV``,
  ``VDD_SOC``; AGX Orin ``VDD_GPU_SOC``, ``VDD_CPU_CV``, ``VIN_SYS_5V0`` (no VDD_IN); Thor ``VDD_GPU``.
  GR3D reads ``0%``, ``0%@0``, ``0%@[305]``, ``0%@[0,0]`` or ``@[0,0,0]``; rails print ``inst/avg`` mW and,
  from L4T R39, ``inst/avg/max``. The instantaneous value is used: the average runs since tegrastats began.
* ``jetson_clocks --show``: clocks are called locked only when its output proves it, per domain: every
  online CPU core and the GPU at MinFreq == MaxFreq == CurrentFreq; the EMC at CurrentFreq == MaxFreq
  with MinFreq == MaxFreq or ``FreqOverride=1``. jetson_clocks pins the EMC through the BPMP override and
  leaves MinFreq at its floor (every locked Orin sample shows ``MinFreq=204000000 ... FreqOverride=1``),
  so demanding MinFreq == MaxFreq there would call every locked Orin unlocked; ``strict_emc=True`` does.

Only the standard library: this runs on the device beside TensorRT.
"""
import logging
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from .errors import ScalableViTError

logger = logging.getLogger(__name__)

__all__ = ['parse_tegrastats_line', 'parse_tegrastats', 'rail_layout', 'power_summary', 'parse_nvpmodel',
           'parse_jetson_clocks', 'clocks_locked', 'parse_nv_tegra_release', 'parse_dpkg_versions',
           'jetpack_from_l4t', 'TegrastatsSampler', 'PowerMonitor', 'jetson_info', 'describe_jetson', 'board_model']

# Power rails per board family: (family, GPU rail, rails summed for the total, what the numbers mean).
RAIL_LAYOUTS: Tuple[Tuple[str, str, Tuple[str, ...], str], ...] = (
    ('Orin Nano / Orin NX (and Xavier NX)', 'VDD_CPU_GPU_CV', ('VDD_IN',),
     'GPU rail VDD_CPU_GPU_CV feeds CPU + GPU + CV together (these modules have no GPU-only rail); '
     'total = VDD_IN, the module input'),
    ('AGX Orin', 'VDD_GPU_SOC', ('VDD_GPU_SOC', 'VDD_CPU_CV', 'VIN_SYS_5V0'),
     'GPU rail VDD_GPU_SOC feeds GPU + SoC; AGX Orin reports no VDD_IN, so total = '
     'VDD_GPU_SOC + VDD_CPU_CV + VIN_SYS_5V0 (module rails, carrier board excluded)'),
    ('Thor', 'VDD_GPU', ('VDD_GPU', 'VDD_CPU_SOC_MSS', 'VIN_SYS_5V0'),
     'GPU rail VDD_GPU; total = VDD_GPU + VDD_CPU_SOC_MSS + VIN_SYS_5V0'),
)

# L4T release -> JetPack, used only when the nvidia-jetpack package is not installed (reported as inferred).
L4T_TO_JETPACK = {
    '35.3.1': '5.1.1', '35.4.1': '5.1.2', '35.5.0': '5.1.3', '35.6.0': '5.1.4',
    '36.3.0': '6.0', '36.4.0': '6.1', '36.4.3': '6.2', '36.4.4': '6.2.1', '38.2.0': '7.0',
}

_TIME = re.compile(r'^(\d\d-\d\d-\d{4} \d\d:\d\d:\d\d)')
_RAM = re.compile(r'\bRAM (\d+)/(\d+)MB')
_CPU = re.compile(r'\bCPU \[([^\]]*)\]')
_CPU_CORE = re.compile(r'(\d+)%(?:@(\d+))?')
_EMC = re.compile(r'\bEMC_FREQ (?:(\d+)%)?(?:@(\d+))?')
_GR3D = re.compile(r'\bGR3D_FREQ (?:(\d+)%)?(?:@\[?([\d,]+)\]?)?')
_TEMP = re.compile(r'(?<![\w%])([A-Za-z][\w]*)@(-?\d+(?:\.\d+)?)C(?:/(-?\d+(?:\.\d+)?)C)?\b')
_RAIL = re.compile(r'\b([A-Z][A-Z0-9_]*) (\d+)mW/(\d+)mW(?:/(\d+)mW)?')
_ABSENT_SENSOR_C = -200.0  # tegrastats prints -256C for sensors that are not there


# --------------------------------------------------------------------------------------- tegrastats
def _cpu_cores(text: str) -> List[Optional[Dict[str, Optional[int]]]]:
    cores: List[Optional[Dict[str, Optional[int]]]] = []
    for item in text.split(','):
        m = _CPU_CORE.match(item.strip())
        cores.append({'util': int(m.group(1)), 'mhz': int(m.group(2)) if m.group(2) else None} if m else None)
    return cores


def parse_tegrastats_line(line: str) -> Optional[Dict[str, Any]]:
    """One tegrastats line as a dict (None for a line that is not tegrastats output).

    Keys: time, ram_used_mb, ram_total_mb, cpu [{util, mhz} | None when off], emc_util, emc_mhz, gpu_util,
    gpu_mhz [per GPC], temps_c {sensor: C}, rails_mw {rail: instantaneous mW}, rails_avg_mw {rail: average}.
    """
    ram, gr3d = _RAM.search(line), _GR3D.search(line)
    rails = {m.group(1): m for m in _RAIL.finditer(line) if m.group(1) != 'NC'}
    if not (ram or gr3d or rails):
        return None
    sample: Dict[str, Any] = {'time': None, 'ram_used_mb': None, 'ram_total_mb': None, 'cpu': None,
                              'emc_util': None, 'emc_mhz': None, 'gpu_util': None, 'gpu_mhz': None}
    if (m := _TIME.match(line.strip())):
        sample['time'] = m.group(1)
    if ram:
        sample['ram_used_mb'], sample['ram_total_mb'] = int(ram.group(1)), int(ram.group(2))
    if (m := _CPU.search(line)):
        sample['cpu'] = _cpu_cores(m.group(1))
    if (m := _EMC.search(line)) and (m.group(1) or m.group(2)):
        sample['emc_util'] = int(m.group(1)) if m.group(1) else None
        sample['emc_mhz'] = int(m.group(2)) if m.group(2) else None
    if gr3d:
        sample['gpu_util'] = int(gr3d.group(1)) if gr3d.group(1) else None
        sample['gpu_mhz'] = [int(v) for v in gr3d.group(2).split(',') if v] if gr3d.group(2) else None
    sample['temps_c'] = {m.group(1): float(m.group(2)) for m in _TEMP.finditer(line)
                         if float(m.group(2)) > _ABSENT_SENSOR_C}
    sample['rails_mw'] = {name: int(m.group(2)) for name, m in rails.items()}
    sample['rails_avg_mw'] = {name: int(m.group(3)) for name, m in rails.items()}
    return sample


def parse_tegrastats(text: str) -> List[Dict[str, Any]]:
    """Every tegrastats line of a log, in order (other lines skipped)."""
    return [s for s in map(parse_tegrastats_line, text.splitlines()) if s is not None]


def rail_layout(rails: Iterable[str]) -> Optional[Dict[str, Any]]:
    """The board family whose GPU and total rails are all among ``rails`` (None: no known layout)."""
    present = set(rails)
    for family, gpu, total, note in RAIL_LAYOUTS:
        if gpu in present and set(total) <= present:
            return {'family': family, 'gpu_rail': gpu, 'total_rails': list(total), 'note': note}
    return None


def _mean(values: Sequence[float]) -> Optional[float]:
    return sum(values) / len(values) if values else None


def _total_w(sample: Dict[str, Any], rails: Sequence[str]) -> float:
    return sum(sample['rails_mw'][r] for r in rails) / 1000.0


def power_summary(samples: Sequence[Dict[str, Any]], images_per_s: float,
                  idle: Sequence[Dict[str, Any]] = ()) -> Dict[str, Any]:
    """Mean GPU and total power (W) over ``samples`` and the energy per image (mJ/img).

    energy (mJ/img) = mean power (W) / throughput (img/s) x 1000, i.e. mean power x latency / batch.
    With ``idle`` samples (taken before the run) the dynamic part (power above idle) is reported too.
    """
    if not samples:
        return {'available': False, 'reason': 'no tegrastats sample fell inside the timed window '
                                              '(run longer: --min-seconds)'}
    layout = rail_layout(set.intersection(*(set(s['rails_mw']) for s in samples)))
    if layout is None:
        rails = sorted(samples[0]['rails_mw'])
        return {'available': False, 'reason': f'tegrastats printed no known power rail layout (rails: '
                                              f'{rails or "none"}; some releases print rails only to root)'}
    gpu_w = _mean([s['rails_mw'][layout['gpu_rail']] / 1000.0 for s in samples])
    total = [_total_w(s, layout['total_rails']) for s in samples]
    total_w = _mean(total)
    result = {'available': True, 'samples': len(samples), **layout, 'gpu_power_w': gpu_w, 'total_power_w': total_w,
              'total_power_max_w': max(total), 'images_per_s': images_per_s,
              'energy_mj_per_img': total_w / images_per_s * 1000.0,
              'gpu_energy_mj_per_img': gpu_w / images_per_s * 1000.0,
              'gpu_util_mean': _mean([s['gpu_util'] for s in samples if s['gpu_util'] is not None]),
              'gpu_mhz_mean': _mean([max(s['gpu_mhz']) for s in samples if s['gpu_mhz']]),
              'tj_max_c': max((s['temps_c']['tj'] for s in samples if 'tj' in s['temps_c']), default=None)}
    idle_total = [_total_w(s, layout['total_rails']) for s in idle if set(layout['total_rails']) <= set(s['rails_mw'])]
    if idle_total:
        idle_w = _mean(idle_total)
        result.update(idle_total_power_w=idle_w,
                      dynamic_energy_mj_per_img=(total_w - idle_w) / images_per_s * 1000.0)
    if len(samples) < 5:
        result['warning'] = f'only {len(samples)} power samples: run longer (--min-seconds) for a stable mean'
    return result


class TegrastatsSampler:
    """Runs ``tegrastats --interval N`` in a subprocess and keeps every parsed line with its arrival time.

    A line read at time t describes the interval before t, so ``samples(start, end)`` returns the lines
    whose whole interval lies inside the window. ``command`` replaces tegrastats (tests replay real logs).
    """

    def __init__(self, interval_ms: int = 100, command: Optional[Sequence[str]] = None):
        if interval_ms < 10:
            raise ScalableViTError(f'tegrastats interval must be at least 10 ms (got {interval_ms})')
        self.interval_ms = interval_ms
        self.command = list(command) if command else None
        self._samples: List[Dict[str, Any]] = []
        self._lock = threading.Lock()
        self._proc: Optional[subprocess.Popen] = None
        self._thread: Optional[threading.Thread] = None

    def _argv(self) -> List[str]:
        if self.command:
            return self.command
        exe = shutil.which('tegrastats')
        if exe is None:
            raise ScalableViTError('tegrastats not found on PATH: power cannot be measured on this machine')
        # stdbuf keeps tegrastats' stdout line-buffered into the pipe, so arrival times mean something.
        prefix = ['stdbuf', '-oL'] if shutil.which('stdbuf') else []
        return prefix + [exe, '--interval', str(self.interval_ms)]

    def start(self) -> 'TegrastatsSampler':
        argv = self._argv()
        try:
            self._proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        except OSError as e:
            raise ScalableViTError(f'cannot start {argv[0]}: {e.strerror}') from e
        self._thread = threading.Thread(target=self._read, args=(self._proc.stdout,), name='tegrastats-reader',
                                        daemon=True)
        self._thread.start()
        logger.info('tegrastats sampling every %d ms (%s)', self.interval_ms, ' '.join(argv))
        return self

    def _read(self, stream: Any) -> None:
        for line in stream:
            sample = parse_tegrastats_line(line)
            if sample is not None:
                sample['t'] = time.monotonic()
                with self._lock:
                    self._samples.append(sample)

    def wait_for_samples(self, count: int = 1, timeout_s: float = 5.0) -> bool:
        """True once ``count`` samples arrived (False after ``timeout_s``, e.g. tegrastats printing nothing)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if len(self._samples) >= count:
                    return True
            if self._proc is not None and self._proc.poll() is not None:
                break
            time.sleep(0.01)
        with self._lock:
            return len(self._samples) >= count

    def samples(self, start: Optional[float] = None, end: Optional[float] = None) -> List[Dict[str, Any]]:
        """Samples whose interval lies inside [start, end] (monotonic seconds); all samples without bounds."""
        lo = -float('inf') if start is None else start + self.interval_ms / 1000.0
        hi = float('inf') if end is None else end
        with self._lock:
            return [s for s in self._samples if lo <= s['t'] <= hi]

    def stop(self) -> None:
        """Terminate tegrastats (kill after 3 s) and join the reader; safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=3)
        if self._thread is not None:
            self._thread.join(timeout=3)
            self._thread = None

    def __enter__(self) -> 'TegrastatsSampler':
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# --------------------------------------------------------------------------------------- nvpmodel, clocks
def parse_nvpmodel(text: str) -> Dict[str, Any]:
    """``nvpmodel -q``: {'mode_name', 'mode_id', 'fan_mode', 'errors'} (NVPM ERROR lines, e.g. when not root)."""
    name = re.search(r'NV Power Mode:\s*(\S+)', text)
    mode_id = re.search(r'NV Power Mode:\s*\S+\s*\n\s*(\d+)\s*$', text, re.MULTILINE)
    fan = re.search(r'NV Fan Mode:\s*(\S+)', text)
    return {'mode_name': name.group(1) if name else None, 'mode_id': int(mode_id.group(1)) if mode_id else None,
            'fan_mode': fan.group(1) if fan else None,
            'errors': [line.strip() for line in text.splitlines() if line.startswith('NVPM ERROR')]}


def _cpu_ranges(text: str) -> Optional[set]:
    m = re.search(r'Online CPUs:\s*([\d,\-\s]*)', text)
    if not m:
        return None
    online = set()
    for part in filter(None, (p.strip() for p in m.group(1).split(','))):
        lo, _, hi = part.partition('-')
        online.update(range(int(lo), int(hi or lo) + 1))
    return online


_CLOCK_CPU = re.compile(r'^cpu(\d+):\s+(?:Online=(\d)\s+)?Governor=(\S+)\s+MinFreq=(\d+)\s+MaxFreq=(\d+)\s+'
                        r'CurrentFreq=(\d+)', re.MULTILINE)
_CLOCK_GPU = re.compile(r'^GPU MinFreq=(\d+) MaxFreq=(\d+) CurrentFreq=(\d+)', re.MULTILINE)
_CLOCK_EMC = re.compile(r'^EMC MinFreq=(\d+) MaxFreq=(\d+) CurrentFreq=(\d+)(?: FreqOverride=(\d))?', re.MULTILINE)


def parse_jetson_clocks(text: str) -> Dict[str, Any]:
    """``jetson_clocks --show``: CPU cores (kHz), GPU and EMC (Hz) min/max/current, EMC override, power mode."""
    online = _cpu_ranges(text)
    cpus = []
    for m in _CLOCK_CPU.finditer(text):
        idx = int(m.group(1))
        is_online = bool(int(m.group(2))) if m.group(2) else (idx in online if online is not None else None)
        cpus.append({'cpu': idx, 'online': is_online, 'governor': m.group(3), 'min': int(m.group(4)),
                     'max': int(m.group(5)), 'cur': int(m.group(6))})
    gpu, emc = _CLOCK_GPU.search(text), _CLOCK_EMC.search(text)
    machine = re.search(r'Machine:\s*(.+?)\s*$', text, re.MULTILINE)
    mode = re.search(r'NV Power Mode:\s*(\S+)', text)
    return {
        'machine': machine.group(1) if machine else None,
        'cpus': sorted(cpus, key=lambda c: c['cpu']),
        'gpu': {'min': int(gpu.group(1)), 'max': int(gpu.group(2)), 'cur': int(gpu.group(3))} if gpu else None,
        'emc': {'min': int(emc.group(1)), 'max': int(emc.group(2)), 'cur': int(emc.group(3)),
                'override': int(emc.group(4)) if emc.group(4) else None} if emc else None,
        'power_mode': mode.group(1) if mode else None,
    }


def _pinned(d: Dict[str, int]) -> bool:
    return d['min'] == d['max'] == d['cur']


def clocks_locked(parsed: Dict[str, Any], strict_emc: bool = False) -> Dict[str, Any]:
    """Whether ``jetson_clocks --show`` output proves locked clocks, with the evidence per domain."""
    cpus = [c for c in parsed['cpus'] if c['online'] is not False]
    gpu, emc = parsed['gpu'], parsed['emc']
    verdict = {
        'cpu': bool(cpus) and all(_pinned(c) for c in cpus),
        'gpu': gpu is not None and _pinned(gpu),
        'emc': emc is not None and emc['cur'] == emc['max'] and (
            emc['min'] == emc['max'] or (not strict_emc and emc['override'] == 1)),
    }
    evidence = {
        'cpu': (f"{len(cpus)} online cores, min/max/current kHz: "
                + ', '.join(sorted({f"{c['min']}/{c['max']}/{c['cur']}" for c in cpus}))) if cpus else 'no CPU lines',
        'gpu': f"min/max/current Hz {gpu['min']}/{gpu['max']}/{gpu['cur']}" if gpu else 'no GPU line',
        'emc': (f"min/max/current Hz {emc['min']}/{emc['max']}/{emc['cur']}, FreqOverride={emc['override']}"
                if emc else 'no EMC line'),
    }
    return {'locked': all(verdict.values()), 'domains': verdict, 'evidence': evidence,
            'rule': 'CPU and GPU: min == max == current; EMC: current == max and '
                    + ('min == max' if strict_emc else '(min == max or FreqOverride=1)')}


# --------------------------------------------------------------------------------------- versions
def parse_nv_tegra_release(text: str) -> Dict[str, Any]:
    """``/etc/nv_tegra_release`` first line ``# R36 (release), REVISION: 4.4, ...`` -> {'l4t': '36.4.4', ...}."""
    m = re.search(r'#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)', text)
    if not m:
        return {'l4t': None, 'raw': text.strip().splitlines()[0] if text.strip() else ''}
    revision = m.group(2).split('.')
    revision += ['0'] * (2 - len(revision))
    board = re.search(r'BOARD:\s*([^,]+)', text)
    return {'l4t': '.'.join([m.group(1)] + revision[:2]), 'board': board.group(1).strip() if board else None,
            'raw': m.group(0)}


def parse_dpkg_versions(text: str) -> Dict[str, str]:
    """``dpkg-query`` lines ``package<TAB or space>version`` -> {package: version}."""
    versions = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and not line.startswith('dpkg-query'):
            versions[parts[0]] = parts[1]
    return versions


def jetpack_from_l4t(l4t: Optional[str]) -> Optional[str]:
    return L4T_TO_JETPACK.get(l4t or '')


def _run(argv: Sequence[str], timeout_s: float = 10.0) -> Tuple[str, Optional[str]]:
    """(stdout, None) on success; (stdout so far, one-line reason) when the command fails or is missing."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s)
    except FileNotFoundError:
        return '', f'{argv[0]} not found'
    except (OSError, subprocess.TimeoutExpired) as e:
        return '', f'{argv[0]} failed: {e}'
    if done.returncode != 0:
        err = (done.stderr.strip().splitlines() or [f'exit code {done.returncode}'])[-1]
        return done.stdout, f"{' '.join(argv)}: {err}"
    return done.stdout, None


def _read(path: str) -> Optional[str]:
    try:
        return Path(path).read_bytes().decode(errors='replace').replace('\x00', '').strip()
    except OSError:
        return None


def board_model(path: str = '/proc/device-tree/model') -> Optional[str]:
    """The device-tree board model (e.g. 'NVIDIA Jetson AGX Orin Developer Kit'), None off-Jetson."""
    return _read(path)


def _mem_total_gb() -> Optional[float]:
    m = re.search(r'MemTotal:\s*(\d+) kB', _read('/proc/meminfo') or '')
    return int(m.group(1)) / 1024 ** 2 if m else None


def _tensorrt_version() -> Optional[str]:
    import importlib.metadata
    for dist in ('tensorrt', 'tensorrt-cu12', 'tensorrt-cu13'):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    try:
        import tensorrt
        return tensorrt.__version__
    except ImportError:
        return None


def _privileged(argv: List[str]) -> List[str]:
    """jetson_clocks --show needs root: try ``sudo -n`` (never prompts) when we are not root."""
    return (['sudo', '-n'] + argv) if os.geteuid() != 0 and shutil.which('sudo') else argv


def jetson_info(strict_emc: bool = False) -> Dict[str, Any]:
    """Board, L4T, JetPack, TensorRT, nvpmodel mode and clock state of this machine (None where unknown)."""
    model = board_model()
    release_text = _read('/etc/nv_tegra_release')
    info: Dict[str, Any] = {'is_jetson': bool(release_text) or bool(model and 'jetson' in model.lower()),
                            'board_model': model, 'tensorrt': _tensorrt_version(), 'mem_total_gb': _mem_total_gb()}
    if not info['is_jetson']:
        return {**info, 'note': 'not a Jetson (no /etc/nv_tegra_release)'}
    release = parse_nv_tegra_release(release_text or '')
    out, _ = _run(['dpkg-query', '-W', '-f=${Package}\t${Version}\n', 'nvidia-l4t-core', 'nvidia-jetpack'])
    packages = parse_dpkg_versions(out)
    l4t = release['l4t'] or (packages.get('nvidia-l4t-core') or '').split('-')[0] or None
    jetpack = packages.get('nvidia-jetpack')
    info.update(l4t=l4t, l4t_release_line=release.get('raw'), l4t_core_package=packages.get('nvidia-l4t-core'),
                jetpack=jetpack.split('-')[0].split('+')[0] if jetpack else jetpack_from_l4t(l4t),
                jetpack_source='nvidia-jetpack package' if jetpack else
                (f'inferred from L4T {l4t}' if jetpack_from_l4t(l4t) else 'unknown'))
    out, err = _run(['nvpmodel', '-q'])
    info['nvpmodel'] = {**parse_nvpmodel(out), 'error': err} if out else {'mode_name': None, 'error': err}
    out, err = _run(_privileged(['jetson_clocks', '--show']))
    if out and not err:
        parsed = parse_jetson_clocks(out)
        gpu_max = (parsed['gpu'] or {}).get('max')
        info['clocks'] = {**clocks_locked(parsed, strict_emc), 'gpu_max_mhz': gpu_max / 1e6 if gpu_max else None}
    else:
        info['clocks'] = {'locked': None, 'reason': f'jetson_clocks --show unavailable ({err}); run as root to record '
                                                    'clocks. Clock state unknown: not claimed locked.'}
    return info


def describe_jetson(info: Dict[str, Any]) -> List[str]:
    """One line per fact of ``jetson_info`` for logs and report notes; clocks only as proven."""
    if not info['is_jetson']:
        return [f"{info.get('note')}: board facts, clocks and power not recorded; "
                f"TensorRT {info['tensorrt'] or 'not importable'}"]
    clocks = info['clocks']
    if clocks.get('locked') is None:
        lock = clocks['reason']
    elif clocks['locked']:
        lock = f"locked (jetson_clocks --show: {clocks['rule']})"
    else:
        lock = 'NOT locked: ' + '; '.join(f"{d} {clocks['evidence'][d]}"
                                          for d, ok in clocks['domains'].items() if not ok)
    memory = f"{info['mem_total_gb']:.1f} GB" if info.get('mem_total_gb') else 'memory unknown'
    return [f"board: {info['board_model']} ({memory})",
            f"L4T {info['l4t']}, JetPack {info['jetpack'] or 'unknown'} ({info['jetpack_source']}), "
            f"TensorRT {info['tensorrt'] or 'not importable'}",
            f"nvpmodel: {info['nvpmodel'].get('mode_name') or info['nvpmodel'].get('error')}",
            f'clocks: {lock}']


class PowerMonitor:
    """tegrastats for a whole benchmark: an idle baseline first, then each batch's own timed window.

    ``interval_ms=None`` (or no tegrastats) measures nothing; the reason is appended to ``notes``.
    ``observe`` is a ``bench.batch_sweep`` observer adding ``power`` to each block.
    """

    def __init__(self, interval_ms: Optional[int], idle_s: float, notes: List[str],
                 command: Optional[Sequence[str]] = None):
        self.sampler: Optional[TegrastatsSampler] = None
        self.idle: List[Dict[str, Any]] = []
        if interval_ms is None:
            notes.append('power not measured (--no-power)')
            return
        try:
            self.sampler = TegrastatsSampler(interval_ms, command).start()
        except ScalableViTError as e:
            notes.append(f'power not measured: {e}')
            return
        if not self.sampler.wait_for_samples(2, timeout_s=3 + 2 * interval_ms / 1000):
            notes.append('power not measured: tegrastats printed nothing')
            self.stop()
            return
        start = time.monotonic()
        time.sleep(idle_s)
        self.idle = self.sampler.samples(start, time.monotonic())

    def observe(self, batch: int, timed: Any) -> Dict[str, Any]:
        if self.sampler is None:
            return {}
        return {'power': power_summary(self.sampler.samples(timed.start, timed.end), timed.images_per_s, self.idle)}

    def stop(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()
            self.sampler = None
