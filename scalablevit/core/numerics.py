"""Comparison bounds derived from the number format and the model's depth, never from one machine's run.

Two correct kernels (AVX-512, AVX2, NEON, a GPU) running the same graph round differently: they sum in other
orders, fuse other ops, and round an FP16 cast-through at other points. First-order error analysis bounds what that
can do. Every rounded op on an output's path adds a relative error of at most the unit roundoff ``u`` of the format
it rounds to; relative errors along a path add, so after ``n`` rounded ops the output is off by at most ``n * u``
relative, or ``n * u * scale`` absolute where ``scale`` is the largest |logit|. Dot products count as one op: every
kernel compared here accumulates in FP32 (onnxruntime's and PyTorch's CPU kernels, TensorRT's FP16 tensor cores),
so their sums add ``K * 2^-24`` per op, far below FP16's ``2^-11`` for any width in these models; FP32 graphs keep the
same count, which measured cross-kernel differences sit one to two orders of magnitude below.

INT8: integer matmuls are exact; what kernels can change is the high-precision arithmetic between the Q/DQ pairs
(FP16 in our bundles) and, where a value lands on a rounding midpoint, which way one quantizer rounds it: one
quantization step of the logits (``scale / 127``) on top of the FP16 bound. FP8 (E4M3) likewise, its step relative
to the value (3 mantissa bits: one step is at most 2^-3 of the value), so ``scale * 2^-3`` on top of the FP16 bound.

This module is numpy-free and torch-free: the on-device self-test uses it too.
"""
from typing import Sequence

__all__ = ['UNIT_ROUNDOFF', 'rounding_depth', 'logit_tolerance', 'min_cosine', 'describe']

# int8, fp8: their FP16 high-precision ops
UNIT_ROUNDOFF = {'fp32': 2.0 ** -24, 'fp16': 2.0 ** -11, 'int8': 2.0 ** -11, 'fp8': 2.0 ** -11}
INT8_LEVELS = 127  # symmetric per-tensor quantization: one step is max|x| / 127
# One quantizer step relative to the largest |value|: INT8 max|x| / 127; FP8 E4M3 at most 2^-3 of the value
QUANTIZER_STEP = {'int8': 1.0 / INT8_LEVELS, 'fp8': 2.0 ** -3}
# Rounded ops on a block's longest path: norm, query, key/value (SSA: reduction conv, its norm, GELU), scores,
# softmax, attention @ value, LIM, projection, residual add; norm, fc1, GELU, fc2, residual add; PEG after the first
# block of a stage (counted in every block: a bound may overcount, never undercount).
ROUNDINGS_PER_BLOCK = 16
ROUNDINGS_PER_STAGE = 2  # patch embedding conv + its norm
ROUNDINGS_HEAD = 5  # final norm, pooling, head (Linear, LayerNorm, GELU, Linear; a plain head is shorter)


def rounding_depth(depths: Sequence[int]) -> int:
    """Rounded ops on the longest input-to-logit path of a ScalableViT with these stage depths."""
    return sum(depths) * ROUNDINGS_PER_BLOCK + len(depths) * ROUNDINGS_PER_STAGE + ROUNDINGS_HEAD


def _relative_bound(precision: str, depths: Sequence[int]) -> float:
    if precision not in UNIT_ROUNDOFF:
        raise ValueError(f'unknown precision {precision!r}: one of {sorted(UNIT_ROUNDOFF)}')
    bound = rounding_depth(depths) * UNIT_ROUNDOFF[precision]
    return bound + QUANTIZER_STEP.get(precision, 0.0)


def logit_tolerance(precision: str, depths: Sequence[int], scale: float) -> float:
    """Largest |logit difference| two correct kernels may show on the same graph (see the module docstring).

    ``scale`` is the largest |logit| of the reference. FP32 ScalableViT-S (depth 26, |logit| <= 2): 5e-5; the
    Fashion-MNIST fixture (depth 8, |logit| <= 4.3): FP32 3.7e-5, FP16 0.30, INT8 0.33, FP8 0.83.
    """
    return _relative_bound(precision, depths) * scale


def min_cosine(precision: str, depths: Sequence[int]) -> float:
    """Worst cosine similarity the same bound allows: a relative error r gives 1 - cos <= r^2 / 2."""
    return 1.0 - _relative_bound(precision, depths) ** 2 / 2


def describe(precision: str, depths: Sequence[int]) -> str:
    """One line stating the derivation, for error messages."""
    n = rounding_depth(depths)
    step = {'int8': f' + 1/{INT8_LEVELS} (one INT8 step)', 'fp8': ' + 2^-3 (one FP8 step)'}.get(precision, '')
    return (f'{precision}: {n} rounded ops x u={UNIT_ROUNDOFF[precision]:.3g}{step} '
            f'= {_relative_bound(precision, depths):.3g} relative')

