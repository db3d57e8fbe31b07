"""Fold the input normalization into the stem convolution, exactly, so a model takes RGB pixels 0-255.

Why: DeepStream's nvinfer (and many camera pipelines) can only scale pixels and subtract a per-channel offset
with ONE scale for all channels (``y = net-scale-factor * (x - offset[c])``); ImageNet's per-channel std cannot
be expressed there. A model that normalizes by itself can be fed the raw frame exactly.

The arithmetic: the stem is ``y = W * pad(n(x)) + b`` with ``n(x) = a[c] * x + d[c]``, ``a = 1 / (255 std)``,
``d = -mean / std``. With zero padding, ``pad0(n(x)) = a * pad0(x) + d * M`` where M is 1 inside the image and
0 in the padding, so::

    y = (W a) * pad0(x) + (b + sum(W d)) - (W d) * P

P = 1 - M marks the padding. The last term is a constant map, zero wherever the kernel does not reach the
padding: the naive fold (weights and bias only) is wrong on the border outputs (on the Fashion-MNIST model
by up to 2.7 at the stem and 0.22 in the logits); with the border term it is exact up to float rounding.
Non-zero padding modes (reflect, replicate, circular) copy pixels, which commutes with ``n``: no border
term. Anything else (a stem that is not a plain 3-channel Conv2d, a model already folded) is refused.

torch is imported at module level: only the export stage imports this module.
"""
import copy
import logging
from typing import Any, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ScalableViTError
from ..data.transforms import folded_config, normalize_in_model

logger = logging.getLogger(__name__)

__all__ = ['FoldedConv2d', 'fold_normalization']


class FoldedConv2d(nn.Conv2d):
    """The stem conv with the normalization folded in: conv on 0-255 pixels plus the constant border term.

    ``border`` is (1, C_out, H_out, W_out) for the one input size it was made for (the export is static in
    H and W); any other size is refused rather than broadcast wrongly.
    """

    def __init__(self, conv: nn.Conv2d, border: torch.Tensor):
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                         conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode)
        self.register_buffer('border', border)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        if not torch.jit.is_tracing() and tuple(y.shape[-2:]) != tuple(self.border.shape[-2:]):
            raise ScalableViTError(f'the folded model was exported for a stem output of '
                                   f'{tuple(self.border.shape[-2:])}, got {tuple(y.shape[-2:])}')
        return y + self.border


def _stem(model: Any) -> nn.Conv2d:
    """The first convolution, which sees the pixels; refused unless a plain 3-channel Conv2d with a bias."""
    try:
        stem = model.patch_embeds[0].proj
    except (AttributeError, IndexError, TypeError):
        stem = None
    if not isinstance(stem, nn.Conv2d) or isinstance(stem, FoldedConv2d):
        raise ScalableViTError(f'{getattr(model, "name", "model")}: the normalization can only be folded into a '
                               f'plain stem Conv2d (patch_embeds[0].proj), found {type(stem).__name__}')
    if stem.in_channels != 3 or stem.groups != 1 or stem.bias is None or isinstance(stem.padding, str):
        raise ScalableViTError(f'stem conv {stem}: the fold is exact only for a 3-channel, ungrouped conv with a '
                               'bias and numeric padding')
    return stem


def _scale_offset(data_cfg: dict) -> Tuple[torch.Tensor, torch.Tensor]:
    """(a, d) in float64 with ``n(x) = a x + d`` for pixels 0-255."""
    mean = torch.tensor(data_cfg['mean'], dtype=torch.float64)
    std = torch.tensor(data_cfg['std'], dtype=torch.float64)
    if mean.shape != (3,) or std.shape != (3,) or bool((std <= 0).any()):
        raise ScalableViTError(f"mean {data_cfg['mean']} / std {data_cfg['std']}: need 3 values each, std > 0")
    return 1.0 / (255.0 * std), -mean / std


def fold_normalization(model: Any, input_size: Tuple[int, int]) -> Any:
    """A copy of ``model`` whose input is RGB 0-255: mean, std and 1/255 folded into the stem conv (exact).

    ``input_size`` (H, W) fixes the border term; the copy's ``data_cfg`` says ``normalize_in_model``.
    """
    data_cfg = getattr(model, 'data_cfg', None)
    if not data_cfg:
        raise ScalableViTError(f'{getattr(model, "name", "model")}: no data_cfg (mean/std) to fold')
    if normalize_in_model(data_cfg):
        raise ScalableViTError(f'{getattr(model, "name", "model")}: the normalization is already folded')
    stem = _stem(model)
    a, d = _scale_offset(data_cfg)
    w = stem.weight.detach().to(torch.float64)
    b = stem.bias.detach().to(torch.float64)
    wd = w * d.view(1, 3, 1, 1)
    folded = FoldedConv2d(stem, _border(stem, wd, input_size)).to(stem.weight.device)
    with torch.no_grad():
        folded.weight.copy_(w * a.view(1, 3, 1, 1))
        folded.bias.copy_(b + wd.sum(dim=(1, 2, 3)))
    out = copy.deepcopy(model)
    out.patch_embeds[0].proj = folded
    out.data_cfg = folded_config(data_cfg)
    logger.info('normalization folded into the stem conv (mean %s, std %s): the model takes RGB 0-255',
                data_cfg['mean'], data_cfg['std'])
    return out


def _border(stem: nn.Conv2d, wd: torch.Tensor, input_size: Tuple[int, int]) -> torch.Tensor:
    """``-(W d) * P`` for zero padding (P: 1 in the padding ring), else zeros; float32 (1, C_out, H_out, W_out)."""
    ph, pw = stem.padding
    h, w = input_size
    ring = 1.0 - F.pad(torch.ones(1, 3, h, w, dtype=torch.float64), (pw, pw, ph, ph))
    border = -F.conv2d(ring, wd, None, stem.stride, 0, stem.dilation)
    if stem.padding_mode != 'zeros':
        border = torch.zeros_like(border)  # copied pixels: pad(n(x)) = n(pad(x)), nothing to correct
    return border.to(torch.float32)
