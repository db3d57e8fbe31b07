"""Progress that people can read in a log: a line per tenth of the work or half minute, never a blank line."""
import logging
import os
import subprocess
import sys
from pathlib import Path

from scalablevit.core.progress import MIN_ITEMS, LogProgress, progress

ROOT = Path(__file__).resolve().parents[1]


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_log_progress_reports_each_tenth_with_rate_and_eta(caplog):
    clock = FakeClock()
    advance = LogProgress(200, 'calibration', clock=clock)
    with caplog.at_level(logging.INFO, logger='scalablevit.core.progress'):
        for _ in range(100):      # 100 batches of 2 images, one second each
            clock.now += 1.0
            advance(2)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 10      # 20, 40, ..., 180 and the final line
    assert lines[0] == 'calibration: 20/200 img (10 %), 2.0 img/s, ETA 1:30'
    assert lines[-1] == 'calibration: 200/200 img in 1:40 (2.0 img/s)'


def test_log_progress_reports_every_half_minute_when_slow(caplog):
    clock = FakeClock()
    advance = LogProgress(1000, 'validation', clock=clock)
    with caplog.at_level(logging.INFO, logger='scalablevit.core.progress'):
        for _ in range(4):        # 4 images in 2 minutes: far from a tenth, four half minutes
            clock.now += 30.0
            advance(1)
    assert len(caplog.records) == 4
    assert caplog.records[-1].getMessage().startswith('validation: 4/1000 img (0 %)')


def test_a_fast_job_logs_nothing(caplog):
    clock = FakeClock()
    advance = LogProgress(1000, 'validation', clock=clock)
    with caplog.at_level(logging.INFO, logger='scalablevit.core.progress'):
        for _ in range(100):      # done in 4 s: its step's own "done in" line is enough
            clock.now += 0.04
            advance(10)
    assert not caplog.records


def test_small_jobs_report_nothing(caplog):
    with caplog.at_level(logging.INFO, logger='scalablevit.core.progress'):
        advance = progress(MIN_ITEMS - 1, 'validation')
        for _ in range(MIN_ITEMS - 1):
            advance(1)
    assert not caplog.records


def test_a_redirected_int8_build_log_has_progress_and_no_blank_lines(tmp_path):
    """The INT8 build with its output in a file (CI, nohup): at most a line per tenth of each stage (how many depends
    on the machine's speed), and modelopt's per-batch output leaves no blank lines."""
    log = tmp_path / 'build.log'
    env = {**os.environ, 'PYTHONPATH': str(ROOT)}
    with log.open('w') as f:
        res = subprocess.run([sys.executable, str(ROOT / 'deploy' / 'build_engine.py'), '--model', 'test',
                              '--precision', 'int8', '--calib-size', '64', '--calib-batch', '4', '--val-size', '64',
                              '--out', str(tmp_path / 'b')], stdout=f, stderr=subprocess.STDOUT, env=env,
                             timeout=600)
    text = log.read_text()
    assert res.returncode == 0, text
    lines = text.splitlines()
    assert '' not in [line.strip() for line in lines]
    for stage in ('INT8 calibration', 'validation (int8 ONNX)', 'reference (PyTorch FP32)'):
        reports = [line for line in lines if f'{stage}: ' in line and '/64 img' in line]
        assert len(reports) <= 11, (stage, reports)
        assert not reports or '64/64 img in ' in reports[-1]
