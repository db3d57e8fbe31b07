"""The format bounds of scalablevit.core.numerics: their arithmetic and what they allow; the numpy under test."""
import os

import numpy as np
import pytest

from scalablevit.core import numerics
from scalablevit.models.scalablevit import model_config


def test_depth_counts_every_block_stage_and_the_head():
    assert numerics.rounding_depth((2, 2, 2, 2)) == 8 * 16 + 4 * 2 + 5
    assert numerics.rounding_depth(model_config('s')['depths']) == 26 * 16 + 4 * 2 + 5


def test_bounds_scale_with_format_depth_and_magnitude():
    depths = model_config('scalable_vit_fmnist')['depths']
    fp32, fp16 = (numerics.logit_tolerance(p, depths, 4.0) for p in ('fp32', 'fp16'))
    assert fp16 / fp32 == 2.0 ** 13  # unit roundoffs 2^-11 vs 2^-24
    assert numerics.logit_tolerance('fp16', depths, 8.0) == 2 * fp16
    assert numerics.logit_tolerance('int8', depths, 4.0) == pytest.approx(fp16 + 4.0 / 127)
    # The AVX2-only onnxruntime FP16 logits sit 9.4e-4 from the AVX-512 ones (|logit| <= 4.3): well inside
    assert 100 * 9.4e-4 < numerics.logit_tolerance('fp16', depths, 4.28) < 1.0  # the fixture's top-1 margin
    assert numerics.min_cosine('fp16', depths) == pytest.approx(1 - (141 * 2.0 ** -11) ** 2 / 2)


def test_an_unknown_precision_is_named():
    with pytest.raises(ValueError, match="unknown precision 'bf16'"):
        numerics.logit_tolerance('bf16', (2,), 1.0)


def test_numpy_is_the_one_make_test_numpy_asked_for():
    """make test-numpy reruns the device-side tests under other numpy versions; prove each really ran under it."""
    expected = os.environ.get('SCALABLEVIT_EXPECT_NUMPY')
    if not expected:
        pytest.skip('SCALABLEVIT_EXPECT_NUMPY unset: the numpy of this environment is under test')
    assert np.__version__ == expected
