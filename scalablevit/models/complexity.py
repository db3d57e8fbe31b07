"""Parameter and multiply-accumulate counts of ScalableViT models (for the models table and reports).

MACs come from ``torch.utils.flop_counter.FlopCounterMode``: it counts the multiply-accumulates of
convolutions, Linear layers (``addmm``/``mm``) and the attention matmuls (``q @ k^T`` and ``attn @ v``
run as ``bmm``); FLOPs / 2 = MACs. Registered names are counted on the meta device, so even
ScalableViT-L at 448 costs no memory and about a second.

Why ScalableViT-S at 224 gives 4.265 GMACs here and "about 4.29" elsewhere: hook-based counters
(ptflops, mmcv's ``get_model_complexity_info``) also charge one op per output element for Linear and
conv bias adds (0.0157 G for S at 224), LayerNorm (0.0039 G elements, twice that with the affine
counted) and GELU (0.0068 G); with those added the total is 4.29-4.30 G. FlopCounterMode counts
none of them, nor softmax (0.0025 G elements) or residual adds. The attention matmuls (0.172 G) are
counted by both. The paper's 4.2 G is the same quantity rounded down.
"""
import logging
from typing import TYPE_CHECKING, Any, Dict, Iterable, Optional, Union

if TYPE_CHECKING:  # the model module imports torch; load it only when counting
    from .scalablevit import ScalableViT

logger = logging.getLogger(__name__)

__all__ = ['model_complexity', 'complexity_table']

# aten op (as FlopCounterMode names it) -> the layer kind it stands for in ScalableViT.
_OP_KINDS = {'convolution': 'conv', 'addmm': 'linear', 'mm': 'linear', 'bmm': 'attention', 'matmul': 'attention'}


def _default_size(model: 'ScalableViT') -> int:
    """The model's evaluation input side: data config first, constructor img_size otherwise."""
    cfg = getattr(model, 'data_cfg', None) or {}
    return int(cfg['input_size'][-1]) if 'input_size' in cfg else int(model.img_size)


def _count_macs(model: 'ScalableViT', input_size: int) -> Dict[str, int]:
    """MACs per layer kind for one image of ``input_size`` x ``input_size``, on the model's device."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model.check_input_size(input_size, input_size)
    first = next(model.parameters())
    x = torch.zeros(1, model.in_chans, input_size, input_size, dtype=first.dtype, device=first.device)
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
    by_kind: Dict[str, int] = {}
    for op, flops in counter.get_flop_counts()['Global'].items():
        name = str(op).split('.')[-1]
        kind = _OP_KINDS.get(name, name)
        by_kind[kind] = by_kind.get(kind, 0) + int(flops) // 2
    return by_kind


def model_complexity(model_or_name: Union[str, 'ScalableViT'], input_size: Optional[int] = None) -> Dict[str, Any]:
    """Params and GMACs (batch 1, square input) of a model or a registered name.

    Returns ``{'model', 'input_size', 'params', 'macs', 'gmacs', 'macs_by_kind'}`` where
    ``macs_by_kind`` splits the MACs into conv / linear / attention. A name is built on the meta
    device (no weights, no memory); a model is counted where it lives. Sizes the model cannot tile
    raise InputSizeError.
    """
    if isinstance(model_or_name, str):
        import torch

        from .scalablevit import create_model, resolve_model_name
        name = resolve_model_name(model_or_name)
        with torch.device('meta'):
            model = create_model(name)
    else:
        model = model_or_name
        name = getattr(model, 'name', type(model).__name__)
    size = _default_size(model) if input_size is None else int(input_size)
    by_kind = _count_macs(model, size)
    macs = sum(by_kind.values())
    params = sum(p.numel() for p in model.parameters())
    logger.debug('%s at %d: %.3f GMACs, %.2f M params', name, size, macs / 1e9, params / 1e6)
    return {'model': name, 'input_size': size, 'params': params, 'macs': macs, 'gmacs': macs / 1e9,
            'macs_by_kind': by_kind}


def complexity_table(names: Iterable[str], input_size: Optional[int] = None) -> str:
    """Markdown table (header + one row per model): params (M), GMACs and the paper's top-1."""
    from .scalablevit import data_config

    rows = ['| model | input | params (M) | GMACs | paper top-1 (%) |', '|---|---:|---:|---:|---:|']
    for name in names:
        info = model_complexity(name, input_size)
        top1 = data_config(info['model']).get('paper_top1')
        rows.append(f"| {info['model']} | {info['input_size']} | {info['params'] / 1e6:.2f} | "
                    f"{info['gmacs']:.2f} | {'-' if top1 is None else f'{top1:.1f}'} |")
    return '\n'.join(rows)
