"""Jetson facts and power: board, L4T/JetPack, TensorRT, nvpmodel, jetson_clocks, tegrastats power sampling.

Everything here parses the text NVIDIA's tools print (real samples, with sources, in tests/data/jetson/):

* ``tegrastats`` lines differ by board and release: Orin Nano/NX print ``VDD_IN`` (the module input),
  ``VDD_CPU_GPU_CV``, ``VDD_SOC``; AGX Orin ``VDD_GPU_SOC``, ``VDD_CPU_CV``, ``VIN_SYS_5V0`` and, on some
  releases, ``VDDQ_VDD2_1V8AO`` (DDR), but no module input, so its total is a rail sum; Thor likewise.
  GR3D reads ``0%``, ``0%@0``, ``0%@[305]``, ``0%@[0,0]`` or ``@[0,0,0]``, JetPack 5 adds ``GR3D2_FREQ`` for
  the second GPC; rails print ``inst/avg`` mW and, from L4T R39, ``inst/avg/max``. The instantaneous value is
  used: the average runs since tegrastats began. Boards older than Orin (JetPack 4) print rails without
  units (``POM_5V_IN 1022/1022``): recognised, reported as unsupported, never read as power.
* ``jetson_clocks --show``: clocks are called locked only when its output proves it, per domain: every
  online CPU core and every GPU clock domain (``GPU``, or Thor's ``gpu-gpc-N``/``gpu-nvd-N``) with
  MinFreq == MaxFreq (the jetson_stats rule; CurrentFreq below MaxFreq is reported as a note: throttling
  or a cap), and the EMC at CurrentFreq == MaxFreq with MinFreq == MaxFreq or ``FreqOverride=1``. Up to
  L4T R38, jetson_clocks pins the EMC through the BPMP override and leaves MinFreq at its floor (every
  locked R35/R36/R38 sample shows ``FreqOverride=1``); from R39 ``--show`` prints no FreqOverride and a
  locked board shows EMC MinFreq == MaxFreq (real R39.2.0 AGX Orin capture), while an unlocked one can
  sit at CurrentFreq == MaxFreq with MinFreq at the floor (R39.2.0 Orin Nano capture): so without
  FreqOverride only MinFreq == MaxFreq proves the lock. ``strict_emc=True`` demands MinFreq == MaxFreq on
  every release (it then rejects the override lock of R35-R38).

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

from ..core.errors import ScalableViTError

logger = logging.getLogger(__name__)

__all__ = ['parse_tegrastats_line', 'parse_tegrastats', 'rail_layout', 'power_summary', 'parse_nvpmodel',
           'parse_jetson_clocks', 'clocks_locked', 'parse_nv_tegra_release', 'parse_dpkg_versions',
           'jetpack_from_l4t', 'TegrastatsSampler', 'PowerMonitor', 'jetson_info', 'describe_jetson', 'board_model',
           'board_support', 'LEGACY_BOARD_REASON']

# Power rails per board family. total_kind: 'module_input' is one sensor on the module's input (everything the
# module draws); 'rail_sum' adds the monitored rails, without the unmonitored ones and the input regulator
# losses, so it reads lower and is NOT comparable with a module-input total. optional_rails join the sum when
# tegrastats prints them (AGX Orin's DDR rail, printed on JetPack 5 and some later images). On AGX Xavier NVIDIA
# staff describe SYS5V as everything except DDR, CPU, GPU and CV (forums.developer.nvidia.com/t/75574), so the
# DDR rail is additive; AGX Orin keeps that rail layout, and jtop likewise sums every rail when there is no
# module input (rbonghi/jetson_stats jtop/core/power.py, total_power).
RAIL_LAYOUTS: Tuple[Dict[str, Any], ...] = (
    {'family': 'Orin Nano / Orin NX (and Xavier NX)', 'gpu_rail': 'VDD_CPU_GPU_CV', 'total_rails': ('VDD_IN',),
     'optional_rails': (), 'total_kind': 'module_input',
     'note': 'total = VDD_IN, the module input; the GPU rail VDD_CPU_GPU_CV feeds CPU + GPU + CV together '
             '(these modules have no GPU-only rail)'},
    {'family': 'AGX Orin', 'gpu_rail': 'VDD_GPU_SOC', 'total_rails': ('VDD_GPU_SOC', 'VDD_CPU_CV', 'VIN_SYS_5V0'),
     'optional_rails': ('VDDQ_VDD2_1V8AO',), 'total_kind': 'rail_sum',
     'note': 'AGX Orin has no module-input sensor: total = VDD_GPU_SOC + VDD_CPU_CV + VIN_SYS_5V0 (+ '
             'VDDQ_VDD2_1V8AO, the DDR rail, where tegrastats prints it), a sum of module rails without '
             'regulator losses, NOT comparable with an Orin Nano/NX VDD_IN total; GPU rail VDD_GPU_SOC feeds '
             'GPU + SoC'},
    {'family': 'Thor', 'gpu_rail': 'VDD_GPU', 'total_rails': ('VDD_GPU', 'VDD_CPU_SOC_MSS', 'VIN_SYS_5V0'),
     'optional_rails': (), 'total_kind': 'rail_sum',
     'note': 'Thor prints no module input: total = VDD_GPU + VDD_CPU_SOC_MSS + VIN_SYS_5V0, a sum of module '
             'rails, NOT comparable with an Orin Nano/NX VDD_IN total'},
)
LEGACY_BOARD_REASON = ('tegrastats prints power rails without units (JetPack 4 / L4T R32: Jetson Nano, TX1/TX2, '
                       'Xavier): boards older than Orin are not supported for engines here and their power is not read')

# L4T release -> JetPack, used only when the nvidia-jetpack package is not installed (reported as inferred).
# Exact releases only, each from at least one source (checked 2026): NVIDIA's JetPack archive pages
# (developer.nvidia.com/embedded/jetpack-archive; archive-7.0: "JetPack 7.0 with Jetson Linux 38.2/38.2.1",
# archive-7.1: "JetPack 7.1 with Jetson Linux 38.4"), rbonghi/jetson_stats jtop/core/jetson_variables.py
# (NVIDIA_JETPACK, commit f41d5ca), dusty-nv/jetson-containers jetson_containers/l4t_version.py (dd206bf).
L4T_TO_JETPACK = {
    '35.1.0': '5.0.2',   # jetson_stats, jetson-containers ("5.0.2 GA")
    '35.2.1': '5.1',     # jetson_stats, jetson-containers
    '35.3.1': '5.1.1',   # jetson_stats, jetson-containers
    '35.4.1': '5.1.2',   # jetson_stats, jetson-containers
    '35.5.0': '5.1.3',   # jetson_stats, jetson-containers
    '35.6.0': '5.1.4',   # jetson_stats, jetson-containers
    '35.6.1': '5.1.5',   # jetson_stats, jetson-containers
    '35.6.2': '5.1.5',   # jetson-containers PR #1179 (NVIDIA jetson-linux-r3562 / jetpack-sdk-515 pages)
    '35.6.3': '5.1.5',   # jetson_stats
    '35.6.4': '5.1.6',   # jetson-containers PR #1676 (NVIDIA jetson-linux-r3564 / jetpack-sdk-516), jetson_stats
    '36.3.0': '6.0',     # jetson_stats, jetson-containers ("6.0 GA")
    '36.4.0': '6.1',     # jetson_stats, jetson-containers
    '36.4.2': '6.1 (rev. 1)',  # jetson_stats "6.1 (rev1)"; jetson-containers writes "6.1.1"
    '36.4.3': '6.2',     # jetson_stats, jetson-containers, NVIDIA docs archive (Jetson Linux 36.4.3 / JetPack 6.2)
    '36.4.4': '6.2.1',   # jetson_stats, jetson-containers, NVIDIA docs archive
    '36.4.7': '6.2.1',   # jetson_stats, jetson-containers (security/bug-fix BSP, same JetPack)
    '36.5.0': '6.2.2',   # jetson_stats PR #803 citing NVIDIA's JetPack archive; anduril/jetpack-nixos PR #541
    '36.5.2': '6.2.3',   # anduril/jetpack-nixos PR #541, jetson_stats PR #911
    '38.2.0': '7.0',     # NVIDIA archive-7.0 page, jetson_stats, jetson-containers
    '38.2.1': '7.0',     # NVIDIA archive-7.0 page ("Jetson Linux 38.2/38.2.1")
    '38.2.2': '7.0',     # jetson_stats, jetson-containers
    '38.4.0': '7.1',     # NVIDIA archive-7.1 page ("JetPack 7.1 with Jetson Linux 38.4")
    '39.2.0': '7.2',     # jetson_stats ("7.2 GA"), OE4T/meta-tegra PR #2224 ("JetPack 7.2 / L4T R39.2.0")
    '39.2.1': '7.2.1',   # a real R39.2.1 board's nvidia-jetpack 7.2.1-b49 (tests/data/jetson, dpkg_query_*_r39)
}

_TIME = re.compile(r'^(\d\d-\d\d-\d{4} \d\d:\d\d:\d\d)')
_RAM = re.compile(r'\bRAM (\d+)/(\d+)MB')
_CPU = re.compile(r'\bCPU \[([^\]]*)\]')
_CPU_CORE = re.compile(r'(\d+)%(?:@(\d+))?')
_EMC = re.compile(r'\bEMC_FREQ (?:(\d+)%)?(?:@(\d+))?')
_GR3D = re.compile(r'\bGR3D_FREQ (?:(\d+)%)?(?:@\[?([\d,]+)\]?)?')
_GR3D2 = re.compile(r'\bGR3D2_FREQ (?:\d+%)?@(\d+)')  # JetPack 5: the second GPC's clock (same load as GR3D)
_TEMP = re.compile(r'(?<![\w%])([A-Za-z][\w]*)@(-?\d+(?:\.\d+)?)C(?:/(-?\d+(?:\.\d+)?)C)?\b')
_RAIL = re.compile(r'\b([A-Z][A-Z0-9_]*) (\d+)mW/(\d+)mW(?:/(\d+)mW)?')
_RAIL_NO_UNIT = re.compile(r'\b([A-Z][A-Z0-9_]*) (\d+)/(\d+)\b(?![\w/])')  # JetPack 4: 'POM_5V_IN 1022/1022'
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
    gpu_mhz [per GPC: the GR3D_FREQ list, then GR3D2_FREQ on JetPack 5], temps_c {sensor: C},
    rails_mw {rail: instantaneous mW}, rails_avg_mw {rail: average}, unitless_rails {rail: instantaneous}
    (JetPack 4 rails printed without units: kept to recognise such boards, never used as power).
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
        if sample['gpu_mhz'] and (m := _GR3D2.search(line)):
            sample['gpu_mhz'].append(int(m.group(1)))
    sample['temps_c'] = {m.group(1): float(m.group(2)) for m in _TEMP.finditer(line)
                         if float(m.group(2)) > _ABSENT_SENSOR_C}
    sample['rails_mw'] = {name: int(m.group(2)) for name, m in rails.items()}
    sample['rails_avg_mw'] = {name: int(m.group(3)) for name, m in rails.items()}
    sample['unitless_rails'] = {m.group(1): int(m.group(2)) for m in _RAIL_NO_UNIT.finditer(line)}
    return sample


def parse_tegrastats(text: str) -> List[Dict[str, Any]]:
    """Every tegrastats line of a log, in order (other lines skipped)."""
    return [s for s in map(parse_tegrastats_line, text.splitlines()) if s is not None]


def rail_layout(rails: Iterable[str]) -> Optional[Dict[str, Any]]:
    """The board family whose GPU and total rails are all among ``rails`` (None: no known layout).

    ``total_rails`` are the rails summed for the total: the layout's own plus its optional rails present.
    """
    present = set(rails)
    for layout in RAIL_LAYOUTS:
        if layout['gpu_rail'] in present and set(layout['total_rails']) <= present:
            total = list(layout['total_rails']) + [r for r in layout['optional_rails'] if r in present]
            return {'family': layout['family'], 'gpu_rail': layout['gpu_rail'], 'total_rails': total,
                    'total_kind': layout['total_kind'], 'note': layout['note']}
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
    ``total_kind`` says what the total is: 'module_input' (Orin Nano/NX ``VDD_IN``) or 'rail_sum' (AGX Orin,
    Thor: ``total_rails`` added up), which reads lower and must not be compared with a module input.
    A JetPack 4 board (rails without units) gives ``available: False, unsupported_board: True``.
    """
    if not samples:
        return {'available': False, 'reason': 'no tegrastats sample fell inside the timed window '
                                              '(run longer: --min-seconds)'}
    layout = rail_layout(set.intersection(*(set(s['rails_mw']) for s in samples)))
    if layout is None and any(s.get('unitless_rails') for s in samples):
        return {'available': False, 'unsupported_board': True, 'reason': LEGACY_BOARD_REASON}
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
              # max over GPCs: they share one clock target and a gated or floorswept GPC reads 0 (Orin NX on
              # JetPack 5: 'GR3D_FREQ 99%@917 GR3D2_FREQ 99%@0', jetson_stats #362), so a mean would halve it
              'gpu_mhz_mean': _mean([max(s['gpu_mhz']) for s in samples if s['gpu_mhz']]),
              'emc_mhz_mean': _mean([s['emc_mhz'] for s in samples if s['emc_mhz']]),
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
# 'GPU MinFreq=...' (Orin), 'gpu-gpc-0 MinFreq=...' and 'gpu-nvd-0 MinFreq=...' (Thor, R38)
_CLOCK_GPU = re.compile(r'^(GPU|gpu-[a-z]+-\d+) MinFreq=(\d+) MaxFreq=(\d+) CurrentFreq=(\d+)', re.MULTILINE)
_CLOCK_EMC = re.compile(r'^EMC MinFreq=(\d+) MaxFreq=(\d+) CurrentFreq=(\d+)(?: FreqOverride=(\d))?', re.MULTILINE)


def parse_jetson_clocks(text: str) -> Dict[str, Any]:
    """``jetson_clocks --show``: CPU cores (kHz), GPU clock domains and EMC (Hz) min/max/current, EMC override.

    ``gpu`` is the GPU compute clock (the ``GPU`` line, or Thor's first ``gpu-gpc-N``); ``gpu_domains`` lists
    every GPU clock line. ``emc['override']`` is None where the release prints no FreqOverride (L4T R39).
    """
    online = _cpu_ranges(text)
    cpus = []
    for m in _CLOCK_CPU.finditer(text):
        idx = int(m.group(1))
        is_online = bool(int(m.group(2))) if m.group(2) else (idx in online if online is not None else None)
        cpus.append({'cpu': idx, 'online': is_online, 'governor': m.group(3), 'min': int(m.group(4)),
                     'max': int(m.group(5)), 'cur': int(m.group(6))})
    gpus = [{'name': m.group(1), 'min': int(m.group(2)), 'max': int(m.group(3)), 'cur': int(m.group(4))}
            for m in _CLOCK_GPU.finditer(text)]
    compute = [g for g in gpus if g['name'] == 'GPU' or g['name'].startswith('gpu-gpc-')]
    emc = _CLOCK_EMC.search(text)
    machine = re.search(r'Machine:\s*(.+?)\s*$', text, re.MULTILINE)
    mode = re.search(r'NV Power Mode:\s*(\S+)', text)
    return {
        'machine': machine.group(1) if machine else None,
        'cpus': sorted(cpus, key=lambda c: c['cpu']),
        'gpu': {k: compute[0][k] for k in ('min', 'max', 'cur')} if compute else None,
        'gpu_domains': gpus,
        'emc': {'min': int(emc.group(1)), 'max': int(emc.group(2)), 'cur': int(emc.group(3)),
                'override': int(emc.group(4)) if emc.group(4) else None} if emc else None,
        'power_mode': mode.group(1) if mode else None,
    }


def _emc_locked(emc: Optional[Dict[str, Any]], strict: bool) -> bool:
    if emc is None or emc['cur'] != emc['max']:
        return False
    return emc['min'] == emc['max'] or (not strict and emc['override'] == 1)


def _range(domain: Dict[str, int]) -> str:
    return f"{domain['min']}/{domain['max']}/{domain['cur']}"


def clocks_locked(parsed: Dict[str, Any], strict_emc: bool = False) -> Dict[str, Any]:
    """Whether ``jetson_clocks --show`` output proves locked clocks, with the evidence per domain.

    CPU and GPU: MinFreq == MaxFreq on every online core / GPU clock domain (as jetson_stats checks); a
    CurrentFreq below that pinned clock is listed in ``notes`` (thermal or power capping), not a failure.
    EMC: CurrentFreq == MaxFreq and (MinFreq == MaxFreq or FreqOverride=1); ``strict_emc`` drops the override.
    """
    cpus = [c for c in parsed['cpus'] if c['online'] is not False]
    gpus, emc = parsed.get('gpu_domains') or [], parsed['emc']
    verdict = {'cpu': bool(cpus) and all(c['min'] == c['max'] for c in cpus),
               'gpu': bool(gpus) and all(g['min'] == g['max'] for g in gpus),
               'emc': _emc_locked(emc, strict_emc)}
    evidence = {
        'cpu': (f"{len(cpus)} online cores, min/max/current kHz: " + ', '.join(sorted({_range(c) for c in cpus})))
        if cpus else 'no CPU lines',
        'gpu': '; '.join(f"{g['name']} min/max/current Hz {_range(g)}" for g in gpus) if gpus else 'no GPU line',
        'emc': (f"min/max/current Hz {_range(emc)}, FreqOverride="
                + ('not printed' if emc['override'] is None else str(emc['override']))) if emc else 'no EMC line',
    }
    notes = [f"{name} pinned at {d['max']} but running at {d['cur']} (thermal or power cap?)"
             for name, d in [(f"cpu{c['cpu']}", c) for c in cpus] + [(g['name'], g) for g in gpus]
             if d['min'] == d['max'] and d['cur'] < d['max']]
    emc_rule = 'min == max' if strict_emc else '(min == max or FreqOverride=1)'
    return {'locked': all(verdict.values()), 'domains': verdict, 'evidence': evidence, 'notes': notes,
            'rule': f'CPU and GPU: min == max; EMC: current == max and {emc_rule}'}


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


_PRE_ORIN_MODELS = ('xavier', 'tx1', 'tx2', 'jetson nano', 'jetson-nano')


def board_support(model: Optional[str], l4t: Optional[str]) -> Optional[str]:
    """Why this Jetson cannot run this toolchain's engines (None: supported, or nothing says otherwise).

    Engines need TensorRT >= 8.6, i.e. JetPack >= 6 on Orin or Thor. Boards older than Orin (Nano, TX1/TX2,
    Xavier) run JetPack 4/5 at most; Orin on JetPack 5 ships TensorRT 8.5.
    """
    name, major = (model or '').lower(), (l4t or '').split('.')[0]
    major_n = int(major) if major.isdigit() else None
    jetpack4 = major_n is not None and major_n < 34
    if 'orin' not in name and 'thor' not in name and (jetpack4 or any(b in name for b in _PRE_ORIN_MODELS)):
        return (f"{model or 'this board'} (L4T {l4t or 'unknown'}) is older than Orin: not supported for engines "
                f"(they need TensorRT >= 8.6 on an Orin or Thor with JetPack >= 6)"
                + ('; its power (tegrastats without units) is not read' if jetpack4 else ''))
    if 'orin' in name and major_n in (34, 35):
        return (f'L4T {l4t} is JetPack 5 (TensorRT 8.5): engine builds need TensorRT >= 8.6 (JetPack >= 6); '
                f'power and clocks are still recorded')
    return None


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
    info['support_note'] = board_support(model, l4t)
    info['supported_for_engines'] = info['support_note'] is None
    if info['support_note']:
        logger.warning('%s', info['support_note'])
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
    if clocks.get('notes'):
        lock += ' (' + '; '.join(clocks['notes']) + ')'
    facts = [f"board: {info['board_model']} ({memory})",
             f"L4T {info['l4t']}, JetPack {info['jetpack'] or 'unknown'} ({info['jetpack_source']}), "
             f"TensorRT {info['tensorrt'] or 'not importable'}",
             f"nvpmodel: {info['nvpmodel'].get('mode_name') or info['nvpmodel'].get('error')}",
             f'clocks: {lock}']
    return ([f"NOT SUPPORTED: {info['support_note']}"] if info.get('support_note') else []) + facts


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
        first = self.sampler.samples()[0]
        if first['unitless_rails'] and not first['rails_mw']:
            logger.warning('%s', LEGACY_BOARD_REASON)
            notes.append(f'power not measured: {LEGACY_BOARD_REASON}')
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
