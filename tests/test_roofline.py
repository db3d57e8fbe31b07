"""Roofline with both ceilings, the device table (peaks and DRAM bandwidth with sources), device detection from
real CUDA and device-tree names, and the CPU peak estimate (synthetic /proc/cpuinfo texts, labelled as such,
plus this machine's real one)."""
import logging
import os
import textwrap
from pathlib import Path

import pytest

from scalablevit.benchmarks import roofline
from scalablevit.core import peaks
from scalablevit.core.errors import ScalableViTError

DATA = Path(__file__).parent / 'data' / 'jetson'


# --------------------------------------------------------------------------------------- device table
def test_every_device_has_both_ceilings_with_sources():
    for key in peaks.load_peaks():
        limits = peaks.device_limits(key)
        assert limits['int8_tops'] > limits['fp16_tflops'] > 0 and limits['fp32_tflops'] > 0, key
        assert limits['mem_bw_gbs'] > 0 and limits['source'] and limits['mem_bw_source'], key
        assert limits['estimate'] is False


def test_jetson_bandwidth_is_emc_clock_times_bus_width():
    """LPDDR5: EMC MHz x 2 (double data rate) x bus bits / 8 reproduces every Jetson datasheet GB/s within 1%."""
    jetsons = {k: e for k, e in peaks.load_peaks().items() if e['kind'] == 'jetson'}
    assert {f'jetson-orin-nx-{size}{s}' for size in ('8gb', '16gb') for s in ('', '-super')} <= set(jetsons)
    for key, e in jetsons.items():
        derived = e['mem_clock_mhz'] * 2 * e['mem_bus_bits'] / 8 / 1e3
        assert derived == pytest.approx(e['mem_bw_gbs'], rel=0.01), key
    nano = peaks.device_limits('jetson-orin-nano-4gb')
    assert (nano['mem_bw_gbs'], peaks.device_limits('jetson-orin-nano-8gb')['mem_bw_gbs']) == (34, 68)
    assert peaks.device_limits('jetson-orin-nano-8gb-super')['mem_bw_gbs'] == 102
    assert peaks.device_limits('jetson-agx-orin-32gb')['mem_bw_gbs'] == 204.8
    assert peaks.device_limits('jetson-orin-nx-16gb')['mem_bw_gbs'] == 102.4


def test_unknown_device_names_the_closest():
    with pytest.raises(ScalableViTError, match="did you mean 'jetson-orin-nx-16gb'"):
        peaks.device_limits('jetson-orin-nx-16g')


# --------------------------------------------------------------------------------------- the roofline
def test_memory_bound_vit_on_orin_nano_super():
    # 4.265 GMACs (ScalableViT-S) at 50 img/s moving 80 MB/img: intensity 8.53e9 / 8e7 = 106.6 FLOP/byte
    r = roofline.roofline(4.265, 50.0, 'jetson-orin-nano-8gb-super', 'fp16', bytes_per_image=80e6)
    assert r['intensity'] == pytest.approx(106.625) and r['achieved_bw_gbs'] == pytest.approx(4.0)
    assert r['ceilings'] == pytest.approx({'compute': 16.75, 'memory': 106.625 * 102 / 1e3})
    assert (r['bound'], r['attainable']) == ('memory', pytest.approx(10.87575))
    assert r['ridge_intensity'] == pytest.approx(16.75e3 / 102)  # 164 FLOP/byte: below it, memory binds
    assert r['utilization'] == pytest.approx(0.4265 / 16.75)
    assert r['utilization_of_attainable'] == pytest.approx(0.4265 / 10.87575)
    assert r['bandwidth_utilization'] == pytest.approx(4.0 / 102)
    assert r['exceeds_peak'] is False and r['exceeds_bandwidth'] is False and r['warnings'] == []


def test_compute_bound_and_clock_scaled_ceilings():
    r = roofline.roofline(4.0, 100.0, 'jetson-orin-nano-8gb-super', 'int8', 918, bytes_per_image=2e6, emc_mhz=2133)
    # intensity 4000 ops/byte; GPU at 918 of 1020 MHz, EMC at 2133 of 3199 MHz
    assert r['peak_at_clock'] == pytest.approx(33.5 * 918 / 1020)
    assert r['mem_bw_at_clock_gbs'] == pytest.approx(102 * 2133 / 3199)
    assert r['ceilings']['memory'] == pytest.approx(4000 * 102 * 2133 / 3199 / 1e3)
    assert r['bound'] == 'compute' and r['attainable'] == pytest.approx(r['peak_at_clock'])


def test_without_bytes_only_the_compute_ceiling_and_without_device_no_percent():
    r = roofline.roofline(4.0, 250.0, 'jetson-orin-nx-16gb', 'fp16')
    assert r['peak'] == 15.04 and r['ceilings'] == {'compute': 15.04, 'memory': None}
    assert r['attainable'] is None and r['bound'] is None and r['utilization'] == pytest.approx(2.0 / 15.04)
    none = roofline.roofline(4.0, 250.0, None, 'int8', bytes_per_image=1e7)
    assert none['peak'] is None and none['utilization'] is None and none['bound'] is None
    assert none['intensity'] == pytest.approx(800) and none['achieved_bw_gbs'] == pytest.approx(2.5)
    with pytest.raises(ScalableViTError, match='positive bytes'):
        roofline.roofline(4.0, 250.0, 'l4', 'int8', bytes_per_image=0)


def test_impossible_figures_are_flagged_and_logged(caplog):
    caplog.set_level(logging.WARNING)
    # 4.265 GMACs at 3000 img/s = 25.6 TFLOPS FP16 on an Orin Nano 8GB (10 TFLOPS dense): impossible
    r = roofline.roofline(4.265, 3000.0, 'jetson-orin-nano-8gb', 'fp16', bytes_per_image=80e6)
    assert r['exceeds_peak'] is True and r['utilization'] > 1
    assert r['exceeds_bandwidth'] is True  # 240 GB/s by the estimate on a 68 GB/s board
    assert len(r['warnings']) == 2 and 'impossible: achieved 25.59 TFLOPS exceeds the peak 10' in r['warnings'][0]
    assert [rec.message for rec in caplog.records] == r['warnings']


def test_add_roofline_keeps_the_bench_call_and_takes_per_block_bytes():
    entries = [{'precision': 'int8', 'sweep': [{'batch': 1, 'throughput_ips': 100.0},
                                                {'batch': 8, 'throughput_ips': 400.0}]}]
    roofline.add_roofline(entries, 4.0, 'jetson-orin-nano-8gb')  # the signature bench/*.py call today
    assert [b['roofline']['achieved'] for b in entries[0]['sweep']] == pytest.approx([0.8, 3.2])
    roofline.add_roofline(entries, 4.0, 'jetson-orin-nano-8gb',
                          bytes_per_image=lambda block: 30e6 + 40e6 / block['batch'])  # weights shared by the batch
    first, second = (b['roofline'] for b in entries[0]['sweep'])
    assert (first['bytes_per_image'], second['bytes_per_image']) == (70e6, 35e6)
    assert first['bound'] == second['bound'] == 'memory'


# --------------------------------------------------------------------------------------- detection
@pytest.mark.parametrize('name, key', [
    ('NVIDIA GeForce RTX 4090', 'rtx-4090'),
    ('NVIDIA GeForce RTX 4090 Laptop GPU', None),  # another chip and clocks
    ('NVIDIA GeForce RTX 4090 D', None),           # 114 SMs, not 128
    ('NVIDIA L4', 'l4'), ('NVIDIA L40', 'l40'), ('NVIDIA L40S', 'l40s'),
    ('NVIDIA H100 80GB HBM3', 'h100-sxm'), ('NVIDIA H100 PCIe', 'h100-pcie'), ('NVIDIA H100 NVL', None),
    ('NVIDIA H200', 'h200'), ('NVIDIA H200 NVL', None),  # NVL: lower clocks and power
    ('NVIDIA A100-SXM4-80GB', 'a100'), ('NVIDIA A100 80GB PCIe', 'a100-80gb-pcie'),
    ('NVIDIA A100-SXM4-40GB', 'a100-40gb'), ('NVIDIA A100-PCIE-40GB', 'a100-40gb'),
    ('Tesla T4', 't4'), ('Tesla T4G', None), ('Orin', None),
])
def test_gpu_names_match_exactly(name, key):
    assert roofline.detect_device(gpu_name=name) == key


def test_jetson_boards_by_model_memory_and_super():
    detect = roofline.detect_device
    super_nano = (DATA / 'device_tree_model_orin_nano_super.bin').read_bytes().decode().rstrip('\x00')
    # the real R39.2.1 board: 7.3 GiB, Super device tree, 25W mode (no SUPER in the mode name)
    assert detect(board_model=super_nano, mem_total_gb=7.3, power_mode='25W') == 'jetson-orin-nano-8gb-super'
    assert detect(board_model=super_nano, mem_total_gb=3.4) == 'jetson-orin-nano-4gb-super'
    # R39.2.0 Orin Nano board whose device tree is not the Super one, 15W mode (its environment report)
    assert detect(board_model='NVIDIA Jetson Orin Nano Developer Kit', mem_total_gb=7.3, power_mode='15W') == \
        'jetson-orin-nano-8gb'
    assert detect(board_model='NVIDIA Jetson Orin Nano Developer Kit', mem_total_gb=7.3, power_mode='MAXN_SUPER') == \
        'jetson-orin-nano-8gb-super'
    # model string of a real Orin NX 16GB devkit on JetPack 6.2 (silenzio777/silenzio_robot_library README)
    nx_super = 'NVIDIA Jetson Orin NX Engineering Reference Developer Kit Super'
    assert detect(board_model=nx_super, mem_total_gb=15.3) == 'jetson-orin-nx-16gb-super'
    assert detect(board_model='NVIDIA Orin NX Developer Kit', mem_total_gb=7.3) == 'jetson-orin-nx-8gb'
    assert detect(board_model='NVIDIA Jetson AGX Orin Developer Kit', mem_total_gb=30.0) == 'jetson-agx-orin-32gb'
    assert detect(board_model='NVIDIA Jetson AGX Orin Industrial', mem_total_gb=61.0) is None  # other clocks
    assert detect(board_model=nx_super) is None  # memory unknown: not guessed


# --------------------------------------------------------------------------------------- CPU peak
# Synthetic /proc/cpuinfo texts (field names and formats as the kernel prints them, values chosen for the test).
XEON_AVX512_HT = '\n\n'.join(textwrap.dedent(f'''\
    processor\t: {i}
    vendor_id\t: GenuineIntel
    cpu family\t: 6
    model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
    cpu MHz\t\t: 2900.000
    physical id\t: 0
    core id\t\t: {i % 2}
    flags\t\t: fpu sse sse2 avx fma avx2 avx512f avx512bw''') for i in range(4))
ZEN2_AVX2 = '\n\n'.join(textwrap.dedent(f'''\
    processor\t: {i}
    vendor_id\t: AuthenticAMD
    cpu family\t: 23
    model name\t: AMD EPYC 7R32
    cpu MHz\t\t: 2800.000
    physical id\t: 0
    core id\t\t: {i}
    flags\t\t: fpu sse sse2 avx fma avx2''') for i in range(2))
ZEN4_AVX512 = ZEN2_AVX2.replace(': 23', ': 25').replace('avx2', 'avx2 avx512f')
ARM_A78AE = '\n\n'.join(textwrap.dedent(f'''\
    processor\t: {i}
    BogoMIPS\t: 62.50
    Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
    CPU implementer\t: 0x41
    CPU part\t: 0xd42''') for i in range(6))


def test_cpu_peak_x86_avx512_counts_physical_cores():
    est = roofline.estimate_cpu_peak(XEON_AVX512_HT, range(4))
    assert (est['logical_cpus'], est['cores'], est['flops_per_cycle'], est['mhz']) == (4, 2, 64, 2900.0)
    assert est['fp32_gflops'] == pytest.approx(2 * 64 * 2.9)
    # two hyperthreads of one core get one core's FMA units
    assert roofline.estimate_cpu_peak(XEON_AVX512_HT, [0, 2])['fp32_gflops'] == pytest.approx(64 * 2.9)


def test_cpu_peak_avx2_and_zen4():
    assert roofline.estimate_cpu_peak(ZEN2_AVX2, [0, 1])['fp32_gflops'] == pytest.approx(2 * 32 * 2.8)
    zen4 = roofline.estimate_cpu_peak(ZEN4_AVX512, [0, 1])
    assert zen4['flops_per_cycle'] == 32 and 'Zen 4' in zen4['isa']  # 512-bit ops, 256-bit datapath


def test_cpu_peak_arm_neon_needs_a_clock():
    est = roofline.estimate_cpu_peak(ARM_A78AE, range(6))
    assert (est['cores'], est['flops_per_cycle'], est['fp32_gflops']) == (6, 16, None)  # no 'cpu MHz' on Arm
    est = roofline.estimate_cpu_peak(ARM_A78AE, range(6), max_mhz=1728.0)
    assert est['fp32_gflops'] == pytest.approx(6 * 16 * 1.728) and est['clock_source'] == 'given maximum'
    neoverse_v2 = ARM_A78AE.replace('0xd42', '0xd4f')
    assert roofline.estimate_cpu_peak(neoverse_v2, [0], max_mhz=3000.0)['flops_per_cycle'] == 32
    with pytest.raises(ScalableViTError, match='none of the allowed CPUs'):
        roofline.estimate_cpu_peak(ARM_A78AE, [9])


def test_cpu_limits_of_this_machine_are_plausible():
    limits = roofline.cpu_limits()
    est = limits['cpu']
    assert limits['kind'] == 'cpu' and limits['estimate'] is True and limits['int8_tops'] is None
    assert 1 <= est['cores'] <= est['logical_cpus'] <= (os.cpu_count() or 1)
    assert est['flops_per_cycle'] in (8, 16, 32, 64) and 500 < est['mhz'] < 6000
    assert 0.001 < limits['fp32_tflops'] < 50
    r = roofline.roofline(4.265, 1.0, limits, 'fp32')
    assert r['utilization'] == pytest.approx(0.00853 / limits['fp32_tflops']) and r['exceeds_peak'] is False
    assert roofline.roofline(4.265, 1.0, limits, 'int8')['peak'] is None  # no INT8 estimate for a CPU
