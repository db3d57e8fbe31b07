"""Jetson parsers against real tool output (tests/data/jetson, sources in its README), power math, the
tegrastats sampler (replaying a real log through a subprocess), and the Jetson benchmark CLI on a CPU box."""
import importlib.util
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from scalablevit.core.errors import ScalableViTError
from scalablevit.core.timing import BenchConfig, batch_sweep
from scalablevit.device import jetson
from scalablevit.host.runners import OnnxRuntimeRunner

DATA = Path(__file__).parent / 'data' / 'jetson'
ROOT = Path(__file__).resolve().parents[1]


def lines(name):
    return jetson.parse_tegrastats((DATA / name).read_text())


def text(name):
    return (DATA / name).read_text()


# --------------------------------------------------------------------------------------- tegrastats lines
def test_orin_nano_busy_line_every_field():
    idle, busy = lines('tegrastats_orin_nano_super_jp62.txt')
    assert busy['time'] == '10-08-2026 04:35:02'
    assert (busy['ram_used_mb'], busy['ram_total_mb']) == (6712, 7620)
    assert busy['cpu'][0] == {'util': 38, 'mhz': 1497} and len(busy['cpu']) == 6
    assert (busy['emc_util'], busy['emc_mhz']) == (61, 2133)
    assert (busy['gpu_util'], busy['gpu_mhz']) == (99, [612])
    assert busy['temps_c']['tj'] == 58.312 and busy['temps_c']['gpu'] == 58.625
    # instantaneous first, running average second: the parser keeps them apart
    assert busy['rails_mw'] == {'VDD_IN': 16321, 'VDD_CPU_GPU_CV': 7104, 'VDD_SOC': 3120}
    assert busy['rails_avg_mw']['VDD_IN'] == 11204
    assert idle['gpu_util'] == 0 and idle['gpu_mhz'] == [305]


def test_gr3d_without_clock_and_no_emc_field():
    first, second = lines('tegrastats_orin_nano_gr3d_no_clock.txt')
    assert (first['gpu_util'], first['gpu_mhz']) == (0, None)
    assert first['emc_util'] is None and first['emc_mhz'] is None
    assert second['cpu'][1] == {'util': 0, 'mhz': 729}
    assert first['rails_mw']['VDD_CPU_GPU_CV'] == 527


def test_r39_three_value_rails_take_the_instantaneous_one():
    samples = lines('tegrastats_orin_nano_super_r39.txt')
    assert len(samples) == 4
    second = samples[1]  # 'VDD_IN 3462mW/3522mW/3582mW': inst / avg / max
    assert second['rails_mw'] == {'VDD_IN': 3462, 'VDD_CPU_GPU_CV': 442, 'VDD_SOC': 1127}
    assert second['rails_avg_mw']['VDD_IN'] == 3522
    assert second['temps_c']['cpu'] == 45.375  # 'cpu@45.375C/45.812C': current, then max
    assert samples[3]['gpu_mhz'] == [306]


def test_agx_orin_r36_rails_and_two_gpc_clocks():
    samples = lines('tegrastats_agx_orin_r36.4.4.txt')
    assert len(samples) == 3
    s = samples[0]
    assert s['gpu_util'] == 0 and s['gpu_mhz'] == [0, 0]
    assert s['rails_mw'] == {'VDD_GPU_SOC': 2412, 'VDD_CPU_CV': 1607, 'VIN_SYS_5V0': 4707}
    assert len(s['cpu']) == 12 and s['cpu'][4] == {'util': 46, 'mhz': 1267}
    assert 'VDD_IN' not in s['rails_mw']


def test_agx_orin_jp51_absent_sensors_and_nc_rails_dropped():
    (s,) = lines('tegrastats_agx_orin_jp51.txt')
    assert s['gpu_mhz'] == [0, 0]  # 'GR3D_FREQ 0%@0 GR3D2_FREQ 0%@0': GPC0, then GPC1
    assert 'CV0' not in s['temps_c'] and 'GPU' not in s['temps_c']  # printed as -256C: no sensor
    assert s['temps_c']['CPU'] == 42.593
    assert 'NC' not in s['rails_mw'] and s['rails_mw']['VDDQ_VDD2_1V8AO'] == 301


def test_jetpack5_second_gpc_clock_is_read():
    first, second = lines('tegrastats_agx_orin_32gb_jp5_vddq.txt')  # 'GR3D_FREQ 0%@114 GR3D2_FREQ 0%@114'
    assert first['gpu_mhz'] == [114, 114] and first['gpu_util'] == 0
    assert first['rails_mw']['VDDQ_VDD2_1V8AO'] == 707 and second['temps_c']['CPU'] == 43.906
    # fragment the jetson_stats maintainer quotes as Orin NX 16GB / JetPack 5 output (rbonghi/jetson_stats#362):
    # the load is shared, the second GPC reads 0 MHz; a GR3D without a clock takes no GR3D2 clock either
    assert jetson.parse_tegrastats_line('GR3D_FREQ 99%@917 GR3D2_FREQ 99%@0')['gpu_mhz'] == [917, 0]
    assert jetson.parse_tegrastats_line('GR3D_FREQ 0% GR3D2_FREQ 0%@0')['gpu_mhz'] is None


def test_agx_orin_r39_three_value_rails_and_gpc_array_with_load():
    (s,) = lines('tegrastats_agx_orin_r39.2.txt')  # JetPack 7.2: 'GR3D_FREQ 12%@[1300,1300]'
    assert (s['gpu_util'], s['gpu_mhz'], s['emc_mhz']) == (12, [1300, 1300], 3199)
    assert s['rails_mw'] == {'VDD_GPU_SOC': 5139, 'VDD_CPU_CV': 3268, 'VIN_SYS_5V0': 5500}
    assert s['temps_c']['gpu'] == 47.625 and s['unitless_rails'] == {}


def test_thor_gr3d_without_percent():
    s = lines('tegrastats_thor_r38.4.txt')[1]
    assert s['gpu_util'] is None and s['gpu_mhz'] == [0, 0, 0]
    assert s['rails_mw'] == {'VDD_GPU': 0, 'VDD_CPU_SOC_MSS': 4923, 'VIN_SYS_5V0': 4327}


def test_non_root_xavier_line_has_no_rails():
    s = lines('tegrastats_xavier_nonroot_no_rails.txt')[0]
    assert s['time'] is None and s['gpu_util'] == 39 and s['rails_mw'] == {}
    assert s['cpu'][4] is None  # 'off'


@pytest.mark.parametrize('name, unitless', [
    ('tegrastats_jetson_nano_jp4_unitless.txt', {'POM_5V_IN': 877, 'POM_5V_GPU': 0, 'POM_5V_CPU': 125}),
    ('tegrastats_xavier_nx_jp4_unitless.txt', {'VDD_IN': 4067, 'VDD_CPU_GPU_CV': 738, 'VDD_SOC': 1353}),
])
def test_jetpack4_rails_without_units_are_recognised_not_read(name, unitless):
    samples = lines(name)
    s = samples[0]
    assert s['rails_mw'] == {} and s['unitless_rails'] == unitless  # RAM/SWAP/IRAM '724/3965MB' are not rails
    assert (s['gpu_util'], s['gpu_mhz'], s['ram_total_mb']) in ((0, [153], 3965), (62, [306], 7772))
    power = jetson.power_summary(samples, images_per_s=10.0)
    assert power == {'available': False, 'unsupported_board': True, 'reason': jetson.LEGACY_BOARD_REASON}
    assert 'older than Orin' in power['reason'] and 'not read' in power['reason']


def test_non_tegrastats_lines_are_skipped():
    assert jetson.parse_tegrastats_line('NVPM ERROR: Error opening /sys/kernel/nvpmodel_emc_cap') is None
    assert jetson.parse_tegrastats('hello\n\n') == []


NANO_NX = 'Orin Nano / Orin NX (and Xavier NX)'
AGX_RAILS = ['VDD_GPU_SOC', 'VDD_CPU_CV', 'VIN_SYS_5V0']


@pytest.mark.parametrize('name, family, gpu_rail, kind, total', [
    ('tegrastats_orin_nano_super_jp62.txt', NANO_NX, 'VDD_CPU_GPU_CV', 'module_input', ['VDD_IN']),
    ('tegrastats_orin_nano_super_r39.txt', NANO_NX, 'VDD_CPU_GPU_CV', 'module_input', ['VDD_IN']),
    ('tegrastats_orin_nano_r39.2.0_15w.txt', NANO_NX, 'VDD_CPU_GPU_CV', 'module_input', ['VDD_IN']),
    ('tegrastats_agx_orin_r36.4.4.txt', 'AGX Orin', 'VDD_GPU_SOC', 'rail_sum', AGX_RAILS),
    ('tegrastats_agx_orin_r39.2.txt', 'AGX Orin', 'VDD_GPU_SOC', 'rail_sum', AGX_RAILS),
    ('tegrastats_agx_orin_jp51.txt', 'AGX Orin', 'VDD_GPU_SOC', 'rail_sum', AGX_RAILS + ['VDDQ_VDD2_1V8AO']),
    ('tegrastats_agx_orin_32gb_jp5_vddq.txt', 'AGX Orin', 'VDD_GPU_SOC', 'rail_sum', AGX_RAILS + ['VDDQ_VDD2_1V8AO']),
    ('tegrastats_agx_orin_64gb_vddq_gpc_array.txt', 'AGX Orin', 'VDD_GPU_SOC', 'rail_sum',
     AGX_RAILS + ['VDDQ_VDD2_1V8AO']),
    ('tegrastats_thor_r38.4.txt', 'Thor', 'VDD_GPU', 'rail_sum', ['VDD_GPU', 'VDD_CPU_SOC_MSS', 'VIN_SYS_5V0']),
])
def test_rail_layout_per_board(name, family, gpu_rail, kind, total):
    layout = jetson.rail_layout(lines(name)[0]['rails_mw'])
    assert (layout['family'], layout['gpu_rail'], layout['total_kind'], layout['total_rails']) == (
        family, gpu_rail, kind, total)
    assert ('NOT comparable' in layout['note']) == (kind == 'rail_sum')


# --------------------------------------------------------------------------------------- power math
def test_power_summary_orin_nano_energy_per_image():
    idle, busy = lines('tegrastats_orin_nano_super_jp62.txt')
    power = jetson.power_summary([busy, busy], images_per_s=100.0, idle=[idle])
    assert power['available'] and power['total_rails'] == ['VDD_IN']
    assert power['gpu_power_w'] == pytest.approx(7.104)
    assert power['total_power_w'] == pytest.approx(16.321)
    # mJ/img = W / (img/s) * 1000: 16.321 W at 100 img/s is 163.21 mJ per image
    assert power['energy_mj_per_img'] == pytest.approx(163.21)
    assert power['gpu_energy_mj_per_img'] == pytest.approx(71.04)
    assert power['idle_total_power_w'] == pytest.approx(5.251)
    assert power['dynamic_energy_mj_per_img'] == pytest.approx((16.321 - 5.251) * 10)
    assert power['gpu_util_mean'] == 99 and power['gpu_mhz_mean'] == 612 and power['tj_max_c'] == 58.312
    assert 'warning' in power  # two samples are too few for a stable mean


def test_power_summary_agx_orin_total_is_the_module_rail_sum():
    samples = lines('tegrastats_agx_orin_r36.4.4.txt')
    power = jetson.power_summary(samples, images_per_s=50.0)
    totals = [2412 + 1607 + 4707, 2412 + 1607 + 4607, 2412 + 1607 + 4707]
    assert power['total_power_w'] == pytest.approx(np.mean(totals) / 1000)
    assert power['gpu_power_w'] == pytest.approx(2.412)
    assert power['energy_mj_per_img'] == pytest.approx(np.mean(totals) / 1000 / 50 * 1000)
    assert power['total_kind'] == 'rail_sum' and 'NOT comparable with an Orin Nano/NX VDD_IN' in power['note']


def test_power_summary_agx_orin_adds_the_ddr_rail_when_printed():
    samples = lines('tegrastats_agx_orin_32gb_jp5_vddq.txt')  # AGX Orin 32GB, JetPack 5, idle
    power = jetson.power_summary(samples, images_per_s=100.0, idle=samples)
    assert power['total_rails'][-1] == 'VDDQ_VDD2_1V8AO'
    assert power['total_power_w'] == pytest.approx((4788 + 798 + 3842 + 707) / 1000)  # 10.135 W, DDR's 0.707 included
    assert power['idle_total_power_w'] == pytest.approx(10.135) and power['gpu_mhz_mean'] == 114
    assert power['emc_mhz_mean'] == 204


def test_power_summary_r39_orin_nano_module_input_and_clocks():
    samples = lines('tegrastats_orin_nano_r39.2.0_15w.txt')
    power = jetson.power_summary(samples, images_per_s=20.0)
    assert power['total_kind'] == 'module_input' and power['total_rails'] == ['VDD_IN']
    assert power['total_power_w'] == pytest.approx((4832 + 4093 + 3703 + 3663) / 4000)  # instantaneous, not avg/max
    assert power['gpu_mhz_mean'] == pytest.approx((305 + 306 + 305 + 305) / 4)
    assert power['emc_mhz_mean'] == pytest.approx((2133 + 665 * 3) / 4) and power['gpu_util_mean'] == 5


def test_power_summary_without_samples_or_rails_says_why():
    assert jetson.power_summary([], 10.0) == {
        'available': False, 'reason': 'no tegrastats sample fell inside the timed window (run longer: --min-seconds)'}
    no_rails = jetson.power_summary(lines('tegrastats_xavier_nonroot_no_rails.txt'), 10.0)
    assert not no_rails['available'] and 'root' in no_rails['reason']


# --------------------------------------------------------------------------------------- nvpmodel, clocks
def test_nvpmodel_outputs():
    assert jetson.parse_nvpmodel(text('nvpmodel_q_orin_nano_super_r39.txt')) == {
        'mode_name': '25W', 'mode_id': 1, 'fan_mode': None, 'errors': []}
    assert jetson.parse_nvpmodel(text('nvpmodel_q_xavier_maxn.txt'))['mode_id'] == 0
    nonroot = jetson.parse_nvpmodel(text('nvpmodel_q_xavier_nonroot.txt'))
    assert (nonroot['mode_name'], nonroot['mode_id'], nonroot['fan_mode']) == ('MODE_15W_DESKTOP', 7, 'quiet')
    assert len(nonroot['errors']) == 14


def test_jetson_clocks_before_and_after_locking():
    before = jetson.parse_jetson_clocks(text('jetson_clocks_show_agx_orin_30w_dynamic.txt'))
    assert before['machine'] == 'NVIDIA Jetson AGX Orin Developer Kit' and before['power_mode'] == 'MODE_30W'
    assert len(before['cpus']) == 12 and sum(c['online'] for c in before['cpus']) == 8
    verdict = jetson.clocks_locked(before)
    assert verdict['locked'] is False and verdict['domains'] == {'cpu': False, 'gpu': False, 'emc': False}

    after = jetson.parse_jetson_clocks(text('jetson_clocks_show_agx_orin_30w_locked.txt'))
    assert after['gpu'] == {'min': 612000000, 'max': 612000000, 'cur': 612000000}
    assert after['emc'] == {'min': 204000000, 'max': 3199000000, 'cur': 3199000000, 'override': 1}
    locked = jetson.clocks_locked(after)  # offline cpu8-11 keep other clocks and do not count
    assert locked['locked'] is True and '8 online cores' in locked['evidence']['cpu']
    strict = jetson.clocks_locked(after, strict_emc=True)  # EMC MinFreq stays 204 MHz under jetson_clocks
    assert strict['locked'] is False and strict['domains']['emc'] is False


def test_jetson_clocks_other_boards_and_formats():
    maxn = jetson.parse_jetson_clocks(text('jetson_clocks_show_agx_orin_64gb_jp51_maxn.txt'))
    assert [c['cpu'] for c in maxn['cpus']] == list(range(12))
    assert maxn['gpu']['max'] == 1300500000 and not jetson.clocks_locked(maxn)['locked']
    r39 = jetson.parse_jetson_clocks(text('jetson_clocks_show_orin_nano_super_r39_25w.txt'))
    assert len(r39['cpus']) == 6 and all(c['online'] for c in r39['cpus'])  # from 'Online CPUs: 0-5'
    assert r39['emc']['override'] is None and r39['power_mode'] == '25W'
    assert not jetson.clocks_locked(r39)['locked']
    nx = jetson.parse_jetson_clocks(text('jetson_clocks_show_orin_nx_locked_overclock.txt'))
    assert jetson.clocks_locked(nx)['locked'] is True


def test_r39_lock_shows_as_emc_min_equal_max_without_freq_override():
    """R39 prints no FreqOverride: a locked AGX Orin pins EMC MinFreq == MaxFreq, an unlocked Orin Nano can sit
    at CurrentFreq == MaxFreq with MinFreq at the floor (both real R39.2.0 captures)."""
    agx = jetson.parse_jetson_clocks(text('jetson_clocks_show_agx_orin_r39.2.0_maxn_locked.txt'))
    assert agx['emc'] == {'min': 3199000000, 'max': 3199000000, 'cur': 3199000000, 'override': None}
    assert len(agx['cpus']) == 12 and agx['gpu']['max'] == 1300500000
    for strict in (False, True):  # nothing else to prove on R39: strict and default agree
        verdict = jetson.clocks_locked(agx, strict_emc=strict)
        assert verdict['locked'] is True and verdict['notes'] == []
    assert 'FreqOverride=not printed' in jetson.clocks_locked(agx)['evidence']['emc']

    nano = jetson.parse_jetson_clocks(text('jetson_clocks_show_orin_nano_r39.2.0_15w.txt'))
    assert nano['emc'] == {'min': 204000000, 'max': 2133000000, 'cur': 2133000000, 'override': None}
    assert jetson.clocks_locked(nano)['domains'] == {'cpu': False, 'gpu': False, 'emc': False}


def test_thor_gpu_clock_domains_and_emc_override():
    thor = jetson.parse_jetson_clocks(text('jetson_clocks_show_thor_r38_maxn_locked.txt'))
    assert [g['name'] for g in thor['gpu_domains']] == ['gpu-gpc-0', 'gpu-nvd-0']
    assert thor['gpu'] == {'min': 1575000000, 'max': 1575000000, 'cur': 1575000000} and len(thor['cpus']) == 14
    assert jetson.clocks_locked(thor)['locked'] is True  # EMC MinFreq=665.6 MHz, FreqOverride=1
    assert jetson.clocks_locked(thor, strict_emc=True)['domains']['emc'] is False


def test_cpu_and_gpu_lock_is_min_equal_max_current_below_is_a_note():
    # synthetic: the real locked R39.2.0 AGX Orin capture with cpu3 and the GPU edited to run below their pinned
    # clock (what thermal capping looks like); not a capture
    edited = text('jetson_clocks_show_agx_orin_r39.2.0_maxn_locked.txt').replace(
        'cpu3:  Governor=schedutil MinFreq=2201600 MaxFreq=2201600 CurrentFreq=2201600',
        'cpu3:  Governor=schedutil MinFreq=2201600 MaxFreq=2201600 CurrentFreq=1984000').replace(
        'CurrentFreq=1300500000', 'CurrentFreq=1134750000')
    verdict = jetson.clocks_locked(jetson.parse_jetson_clocks(edited))
    assert verdict['locked'] is True
    assert verdict['notes'] == ['cpu3 pinned at 2201600 but running at 1984000 (thermal or power cap?)',
                                'GPU pinned at 1300500000 but running at 1134750000 (thermal or power cap?)']


def test_empty_clock_output_is_never_locked():
    verdict = jetson.clocks_locked(jetson.parse_jetson_clocks(''))
    assert verdict['locked'] is False and verdict['evidence']['gpu'] == 'no GPU line'


# --------------------------------------------------------------------------------------- versions, board
def test_l4t_and_jetpack():
    r36 = jetson.parse_nv_tegra_release(text('nv_tegra_release_r36.4.4.txt'))
    assert r36['l4t'] == '36.4.4' and r36['board'] == 'generic'
    assert jetson.jetpack_from_l4t(r36['l4t']) == '6.2.1'
    r39 = jetson.parse_nv_tegra_release(text('nv_tegra_release_r39.2.1.txt'))
    # the same R39.2.1 board's nvidia-jetpack package is 7.2.1 (dpkg_query_l4t_jetpack_r39.txt)
    assert r39['l4t'] == '39.2.1' and jetson.jetpack_from_l4t('39.2.1') == '7.2.1'
    core = jetson.parse_dpkg_versions(text('dpkg_query_l4t_core_r39.2.0.txt'))['nvidia-l4t-core']
    assert jetson.jetpack_from_l4t(core.split('-')[0]) == '7.2'
    assert [jetson.jetpack_from_l4t(v) for v in ('35.1.0', '35.2.1', '35.6.2', '36.4.7', '36.5.0', '38.2.1',
                                                 '38.4.0')] == ['5.0.2', '5.1', '5.1.5', '6.2.1', '6.2.2', '7.0', '7.1']
    assert jetson.jetpack_from_l4t('39.9.0') is None and jetson.jetpack_from_l4t(None) is None  # never guessed
    assert jetson.parse_dpkg_versions(text('dpkg_query_l4t_core_r36.4.4.txt')) == {
        'nvidia-l4t-core': '36.4.4-20250616085344'}
    assert jetson.parse_dpkg_versions(text('dpkg_query_l4t_jetpack_r39.txt'))['nvidia-jetpack'] == '7.2.1-b49'
    assert jetson.parse_nv_tegra_release('garbage')['l4t'] is None


def test_board_model_strips_the_nul():
    model = jetson.board_model(str(DATA / 'device_tree_model_orin_nano_super.bin'))
    assert model == 'NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super'
    assert jetson.board_model(str(DATA / 'absent')) is None


def test_boards_older_than_orin_are_named_unsupported():
    nano = jetson.board_support('NVIDIA Jetson Nano Developer Kit', '32.7.1')
    assert 'older than Orin' in nano and 'not supported for engines' in nano and 'power' in nano
    assert 'older than Orin' in jetson.board_support(None, '32.6.1')  # model unknown: L4T R32 is JetPack 4
    xavier_jp5 = jetson.board_support('NVIDIA Jetson Xavier NX Developer Kit', '35.4.1')
    assert 'older than Orin' in xavier_jp5 and 'power' not in xavier_jp5  # JetPack 5 prints mW: power is read
    assert 'TensorRT 8.5' in jetson.board_support('Jetson AGX Orin', '35.2.1')  # JetPack 5 on Orin
    super_nano = jetson.board_model(str(DATA / 'device_tree_model_orin_nano_super.bin'))
    assert jetson.board_support(super_nano, '39.2.1') is None
    assert jetson.board_support('NVIDIA Jetson AGX Thor Developer Kit', '38.4.0') is None
    info = {'is_jetson': True, 'board_model': 'NVIDIA Jetson Nano Developer Kit', 'mem_total_gb': 3.9, 'l4t': '32.7.1',
            'jetpack': '4.6.1', 'jetpack_source': 'inferred', 'tensorrt': None, 'nvpmodel': {'mode_name': 'MAXN'},
            'clocks': {'locked': None, 'reason': 'unknown'}, 'support_note': nano}
    assert jetson.describe_jetson(info)[0] == f'NOT SUPPORTED: {nano}'


@pytest.mark.skipif(Path('/etc/nv_tegra_release').exists(), reason='this machine is a Jetson')
def test_jetson_info_off_jetson_claims_nothing():
    info = jetson.jetson_info()
    assert info['is_jetson'] is False and 'clocks' not in info and info['mem_total_gb'] > 0


# --------------------------------------------------------------------------------------- sampler
REPLAY = textwrap.dedent('''
    import sys, time
    lines = open(sys.argv[1]).read().splitlines()
    for i in range(int(sys.argv[2])):
        print(lines[i % len(lines)], flush=True)
        time.sleep(float(sys.argv[3]))
    time.sleep(30)
''')


def replay(name, count=400, period=0.02):
    return [sys.executable, '-c', REPLAY, str(DATA / name), str(count), str(period)]


def test_sampler_replays_a_real_log_and_windows_it():
    sampler = jetson.TegrastatsSampler(interval_ms=20, command=replay('tegrastats_orin_nano_super_jp62.txt', 30))
    with sampler:
        assert sampler.wait_for_samples(10, timeout_s=10)
        proc = sampler._proc
    everything = sampler.samples()
    assert proc.poll() is not None  # stopped (terminated while the replay still slept)
    assert len(everything) >= 10 and everything[1]['gpu_util'] == 99
    t0, t1 = everything[0]['t'], everything[-1]['t']
    window = sampler.samples(t0, t1)
    assert window == [s for s in everything if t0 + 0.02 <= s['t'] <= t1] and len(window) < len(everything)


@pytest.mark.skipif(shutil.which('tegrastats') is not None, reason='tegrastats present on this machine')
def test_sampler_without_tegrastats_says_so():
    with pytest.raises(ScalableViTError, match='tegrastats not found'):
        jetson.TegrastatsSampler().start()


def tiny_onnx(path: Path) -> Path:
    """A real ONNX with the project IO contract: input (N, 3, 4, 4) -> Flatten -> MatMul -> logits (N, 10)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((48, 10)).astype(np.float32), 'w')
    graph = helper.make_graph(
        [helper.make_node('Flatten', ['input'], ['flat']), helper.make_node('MatMul', ['flat', 'w'], ['logits'])],
        'tiny', [helper.make_tensor_value_info('input', TensorProto.FLOAT, ['batch', 3, 4, 4])],
        [helper.make_tensor_value_info('logits', TensorProto.FLOAT, ['batch', 10])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)]), str(path))
    return path


def test_benchmark_with_power_from_a_replayed_log(tmp_path):
    """The timed window of each batch picks its own tegrastats samples; energy x throughput = power."""
    notes = []
    monitor = jetson.PowerMonitor(10, 0.1, notes, command=replay('tegrastats_agx_orin_r36.4.4.txt', 2000, 0.01))
    try:
        assert notes == [] and len(monitor.idle) >= 3  # idle baseline taken before the runs
        with OnnxRuntimeRunner(str(tiny_onnx(tmp_path / 'tiny.onnx')), threads=1) as runner:
            sweep = batch_sweep(runner, (3, 4, 4), [1, 4], BenchConfig(warmup=2, iters=5, min_s=0.3),
                                observer=monitor.observe)
    finally:
        monitor.stop()
    assert monitor.sampler is None
    for block in sweep:
        power = block['power']
        assert power['available'] and power['family'] == 'AGX Orin' and power['samples'] >= 5
        assert power['gpu_power_w'] == pytest.approx(2.412)
        assert 8.626 <= power['total_power_w'] <= 8.726
        assert power['energy_mj_per_img'] * power['images_per_s'] / 1000 == pytest.approx(power['total_power_w'])
        assert 8.626 <= power['idle_total_power_w'] <= 8.726  # same replayed log before the runs


def test_power_monitor_on_a_jetpack4_board_warns_once_and_reads_nothing(caplog):
    notes = []
    monitor = jetson.PowerMonitor(10, 0.0, notes, command=replay('tegrastats_jetson_nano_jp4_unitless.txt', 200, 0.01))
    assert monitor.sampler is None and monitor.observe(1, None) == {}
    assert notes == [f'power not measured: {jetson.LEGACY_BOARD_REASON}']
    assert [r.levelname for r in caplog.records if 'older than Orin' in r.message] == ['WARNING']


def test_power_monitor_off_says_why():
    notes = []
    monitor = jetson.PowerMonitor(None, 0, notes)
    assert monitor.observe(1, None) == {} and notes == ['power not measured (--no-power)']


def _load_cli(name):
    spec = importlib.util.spec_from_file_location(f'bench_{name}', ROOT / 'bench' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(Path('/etc/nv_tegra_release').exists(), reason='this machine is a Jetson')
def test_jetson_bench_cli_off_jetson(tmp_path):
    """On a CPU box the CLI still runs (onnxruntime), says power and clocks are unknown, and adds the roofline."""
    cli = _load_cli('jetson_bench')
    out = tmp_path / 'out'
    rc = cli.main(['--onnx', str(tiny_onnx(tmp_path / 'tiny.fp32.onnx')), '--providers', 'CPUExecutionProvider',
                   '--batch', '1', '2', '--warmup', '1', '--warmup-s', '0', '--iters', '3', '--min-seconds', '0',
                   '--idle-s', '0', '--gmacs', '0.00048', '--device-peak', 'jetson-orin-nano-8gb',
                   '--no-plots', '--out', str(out)])
    assert rc == 0
    report = json.loads((out / 'jetson.json').read_text())
    assert report['jetson']['is_jetson'] is False and report['device_peak'] == 'jetson-orin-nano-8gb'
    assert any('power not measured' in n for n in report['notes'])
    (entry,) = report['results']
    assert entry['precision'] == 'fp32' and [b['batch'] for b in entry['sweep']] == [1, 2]
    roof = entry['latency_ms']['roofline']
    assert roof['peak'] == 1.28
    assert roof['achieved'] == pytest.approx(0.00048 * 2 * entry['latency_ms']['throughput_ips'] / 1e3)
    assert '| onnxruntime-tiny.fp32 | fp32 | 1 |' in (out / 'jetson.md').read_text()


def test_jetson_bench_cli_nothing_to_run(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / 'bench' / 'jetson_bench.py'), '--out', str(tmp_path / 'o'),
                           '--no-power'], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and 'nothing to benchmark' in done.stderr
    assert not (tmp_path / 'o').exists()
