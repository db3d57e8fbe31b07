"""Accuracy regression gates on real labelled data: the committed Fashion-MNIST ScalableViT through the host pipeline.

Every precision is built exactly as `deploy/build_engine.py` builds it (FP32 ONNX, FP16 AutoCast, INT8 and FP8 Q/DQ
calibrated on 512 TRAIN images) and evaluated with onnxruntime on a fixed seeded subset of 5,000 TEST images
against PyTorch FP32. The thresholds are those of scalablevit/core/accuracy_budgets.json, the file the engine build's
gate reads too. The data set must be installed (`make test` does it); without it these tests fail with the hint.
"""
import json

import pytest

from scalablevit.core.compare import budget_violations, load_budgets
from scalablevit.host.pipeline import HostOptions, HostPipeline

EVAL_IMAGES = 5000
# Measured on this setup (2-core CPU, onnxruntime 1.24.4, modelopt 0.47.0, seed 0), top-1 on the 5,000 images:
# PyTorch FP32 91.96 %; see docs/accuracy.md for the full-test-set numbers.


pytestmark = pytest.mark.usefixtures('fashion_mnist_installed')


@pytest.fixture(scope='module')
def reports(tmp_path_factory):
    out = tmp_path_factory.mktemp('gates')
    built = {}
    for precision in ('fp32', 'fp16', 'int8', 'fp8'):
        options = HostOptions(model='scalable_vit_fmnist', precision=precision, out=out / precision,
                              calib_size=512, val_size=EVAL_IMAGES)
        built[precision] = HostPipeline(options).run()
    return built


@pytest.mark.parametrize('precision', ['fp32', 'fp16', 'int8', 'fp8'])
def test_precision_within_its_budget(reports, precision):
    report = reports[precision]
    acc = report['accuracy']
    assert acc['samples'] == EVAL_IMAGES and acc['reference'] == 'pytorch-fp32'
    assert 'warning' not in report  # the committed weights were used, not random ones
    assert acc['top1_reference'] >= 90.0  # the reference model itself (91.96 % on this subset)
    assert budget_violations(acc, precision) == []
    assert report['status'] == 'passed'
    # the evidence behind the verdict: flip counts that add up to the sample, a bound around the measured drop
    flips, (lo, hi) = acc['paired'], acc['top1_drop_bound']
    assert sum(flips.values()) == EVAL_IMAGES and lo <= acc['top1_drop'] <= hi
    assert acc['top1_drop'] == pytest.approx(acc['top1_reference'] - acc['top1_candidate'])
    assert acc['top1_agreement_bound'][0] <= acc['top1_agreement'] <= acc['top1_agreement_bound'][1]
    markdown = (report_path(report) / 'report.md').read_text()
    assert '| top-1 drop |' in markdown and '95 % bound' in markdown


def test_budgets_are_the_issue_thresholds():
    budgets = load_budgets()
    assert budgets['fp32']['min_top1_agreement'] >= 0.999
    assert budgets['fp16']['max_top1_drop'] <= 0.1
    assert budgets['int8']['max_top1_drop'] <= 0.5 and budgets['int8']['min_top1_agreement'] >= 0.99
    assert budgets['fp8'] == budgets['int8']  # both 8-bit Q/DQ formats on the same layers: one contract


def test_int8_bundle_is_calibrated_on_train_images_only(reports, tmp_path_factory):
    report = reports['int8']
    manifest = json.loads((report_path(report) / 'manifest.json').read_text())
    assert manifest['calibration']['source'].startswith('fashion-mnist train')
    assert manifest['reference']['source'].startswith('fashion-mnist test')
    assert manifest['quantization']['policy'] == 'default'


def report_path(report):
    from pathlib import Path
    return Path(report['bundle'])
