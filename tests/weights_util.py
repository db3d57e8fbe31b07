"""Deterministic, order-independent weights and inputs for parity tests.

Every tensor is drawn from its own generator seeded by ``(seed, key name)``, so two models with the
same state_dict keys get identical weights however (and in whichever order) they built their modules.
The reference generator that ran the official ScalableViT code used this very file, which is why the
stored official logits can be reproduced by our model.

Scales keep activations O(1) through 24 blocks: LayerNorm weights ``1 + 0.1 * randn``, biases
``0.02 * randn``, matrices and conv kernels ``randn / sqrt(fan_in)``.
"""
import zlib
from typing import Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn

Shapes = Mapping[str, Sequence[int]]


def key_generator(seed: int, key: str) -> torch.Generator:
    """A CPU generator seeded from a stable hash of ``seed`` and ``key`` (crc32, not Python's salted hash)."""
    return torch.Generator().manual_seed(zlib.crc32(f'{seed}/{key}'.encode()))


def fill_tensor(key: str, shape: Sequence[int], seed: int) -> torch.Tensor:
    """The float32 tensor that ``key`` gets for ``seed``; the scale follows the tensor's role."""
    shape = tuple(int(s) for s in shape)
    noise = torch.randn(shape, generator=key_generator(seed, key), dtype=torch.float32)
    if len(shape) >= 2:  # Linear (out, in) or Conv2d (out, in/groups, kh, kw)
        fan_in = int(np.prod(shape[1:]))
        return noise / fan_in ** 0.5
    if key.endswith('.bias'):
        return 0.02 * noise
    return 1.0 + 0.1 * noise  # 1-D weights are LayerNorm scales in ScalableViT


def _factor(key: str, scales: Optional[Mapping[str, float]]) -> float:
    """Product of the ``scales`` factors whose substring occurs in ``key`` (1 without scales)."""
    return float(np.prod([f for part, f in (scales or {}).items() if part in key]))


def make_state_dict(shapes: Shapes, seed: int, scales: Optional[Mapping[str, float]] = None
                    ) -> Dict[str, torch.Tensor]:
    """A full state_dict for a ``{key: shape}`` map; ``scales`` multiplies keys containing a substring.

    Shrinking what feeds a LayerNorm (e.g. ``{'reduction.1.': 1e-3}``) makes its eps visible in the output.
    """
    return {key: fill_tensor(key, shape, seed) * _factor(key, scales) for key, shape in shapes.items()}


def state_dict_shapes(module: nn.Module) -> Dict[str, Tuple[int, ...]]:
    """``{key: shape}`` of a module's state_dict (works for modules on the meta device)."""
    return {key: tuple(t.shape) for key, t in module.state_dict().items()}


def fill_weights(target: Union[nn.Module, Shapes], seed: int, scales: Optional[Mapping[str, float]] = None
                 ) -> Union[nn.Module, Dict[str, torch.Tensor]]:
    """Fill a module in place (strict load, returns it) or build a state_dict from a shape map."""
    if isinstance(target, nn.Module):
        target.load_state_dict(make_state_dict(state_dict_shapes(target), seed, scales), strict=True)
        return target
    return make_state_dict(target, seed, scales)


def make_input(shape: Sequence[int], seed: int) -> torch.Tensor:
    """A float32 standard-normal image batch from a seeded generator."""
    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float32)


def checksum(tensors: Union[torch.Tensor, Iterable[torch.Tensor]]) -> np.ndarray:
    """[sum, sum of squares, first element, last element] in float64: detects generator drift cheaply."""
    if isinstance(tensors, torch.Tensor):
        tensors = [tensors]
    tensors = [t.detach().reshape(-1) for t in tensors]
    total = sum(t.sum(dtype=torch.float64).item() for t in tensors)
    squares = sum(t.double().square().sum().item() for t in tensors)
    return np.array([total, squares, tensors[0][0].item(), tensors[-1][-1].item()])
