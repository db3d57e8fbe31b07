"""ScalableViT: Rethinking the Context-oriented Generalization of Vision Transformer.

Rui Yang et al., ECCV 2022, https://arxiv.org/abs/2203.10790

A faithful re-implementation of the official model (Yangr116/ScalableViT,
``image_classification/models/scalablevit.py``; reference outputs were generated from the file at commit 90afa8e,
the last commit touching it before the repository head 8011147) for PyTorch 2.x:

* module names, state_dict keys and constructor keywords are the official ones, so the released
  checkpoints load with ``strict=True``;
* eval-mode outputs equal the official code's within 1e-5 (max |diff| 1.5e-6, see ``tests/test_model.py``);
* the forward is written for export: static shape arithmetic only, queries scaled before ``q @ k^T``
  (the pattern TensorRT's attention fusion matches), batch left dynamic (``-1``) in every reshape.

Differences from the official file, none of which changes the numbers: no prints and no timm dependency;
input sizes are checked up front with a clear error (the official code dies in a reshape); timm's model API
(``forward_features`` returns the normed tokens, pooling happens in ``forward_head``); ``get_classifier`` and
``reset_classifier`` address only the final Linear of the MLP head (the official ``reset_classifier`` replaced the
whole head); passing ``qk_scale`` is an error (the official model accepts it and silently ignores it); and a few
small configs for tests and the Fashion-MNIST reference model are added.
"""
import functools
import logging
import math
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from ..core.errors import CheckpointError, InputSizeError, ScalableViTError
from .checkpoint import StateDict, checkpoint_filter_fn, classifier_keys, read_state_dict

logger = logging.getLogger(__name__)

__all__ = [
    'ScalableViT', 'create_model', 'list_models', 'resolve_model_name', 'model_config', 'data_config',
    'valid_input_sizes', 'load_weights', 'matching_variants',
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HEAD_HIDDEN = 4096  # width of the official MLP head


class DropPath(nn.Module):
    """Stochastic depth per sample (identity in eval mode)."""

    def __init__(self, drop_prob: float = 0.):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0. or not self.training:
            return x
        keep = 1. - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class Mlp(nn.Module):
    def __init__(self, in_features: int, hidden_features: int, act_layer: Callable = nn.GELU, drop: float = 0.):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class IWSA(nn.Module):
    """Interactive window self-attention: non-overlapping window attention plus LIM.

    LIM (local interactive module) is a depthwise 3x3 conv over the whole value map, added to the
    attention output before ``proj``; it is what links neighbouring windows. No shift, no mask and
    no relative position bias.
    """

    def __init__(
            self,
            dim: int,
            num_heads: int = 8,
            qkv_bias: bool = False,
            qk_scale: Optional[float] = None,
            attn_drop: float = 0.,
            proj_drop: float = 0.,
            ws: int = 7,
    ):
        super().__init__()
        if ws < 2:
            raise ScalableViTError(f'IWSA window size must be >= 2, got ws={ws}')
        if dim % num_heads:
            raise ScalableViTError(f'dim {dim} is not divisible by num_heads {num_heads}')
        self.dim = dim
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.ws = ws
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.lim_func = nn.Conv2d(dim, dim, kernel_size=3, stride=1, padding=1, groups=dim)

    def img2win(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """(B, H*W, C) -> (B, windows, heads, ws*ws, head_dim)."""
        ws, C = self.ws, self.dim
        x = x.reshape(-1, H // ws, ws, W // ws, ws, C).transpose(2, 3)
        x = x.reshape(-1, (H // ws) * (W // ws), ws * ws, self.num_heads, C // self.num_heads)
        return x.permute(0, 1, 3, 2, 4)

    def win2img(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """(B, windows, heads, ws*ws, head_dim) -> (B, H*W, C), tokens in raster order."""
        ws, C = self.ws, self.dim
        x = x.permute(0, 1, 3, 2, 4).reshape(-1, H // ws, W // ws, ws, ws, C)
        return x.transpose(2, 3).reshape(-1, H * W, C)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        C = self.dim
        q, k, v = self.qkv(x).reshape(-1, H * W, 3, C).unbind(2)
        # LIM works on the value map in image layout (B, C, H, W).
        v_map = v.transpose(1, 2).reshape(-1, C, H, W)
        lim = self.lim_func(v_map).reshape(-1, C, H * W).transpose(1, 2)

        q = self.img2win(q * self.scale, H, W)
        k = self.img2win(k, H, W)
        v = self.img2win(v, H, W)
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        x = self.win2img(self.attn_drop(attn) @ v, H, W)
        return self.proj_drop(self.proj(x + lim))


class SSA(nn.Module):
    """Scalable self-attention.

    The spatial factor ``sr_ratio`` (r_n) shrinks keys/values with a depthwise strided conv; the
    channel factor ``c_ratio`` (r_c) sets the q/k width to ``int(dim * c_ratio)``. Where
    ``sr_ratio == 1`` the official code uses plain q/kv projections but keeps the c_ratio scale.
    """

    def __init__(
            self,
            dim: int,
            num_heads: int = 8,
            qkv_bias: bool = False,
            qk_scale: Optional[float] = None,
            attn_drop: float = 0.,
            proj_drop: float = 0.,
            sr_ratio: int = 1,
            c_ratio: float = 1.25,
    ):
        super().__init__()
        if dim % num_heads:
            raise ScalableViTError(f'dim {dim} is not divisible by num_heads {num_heads}')
        self.dim = dim
        self.num_heads = num_heads
        self.sr_ratio = sr_ratio
        self.c_new = int(dim * c_ratio)
        self.scale = qk_scale or (dim // num_heads * c_ratio) ** -0.5
        if sr_ratio > 1:
            if self.c_new % num_heads:
                raise ScalableViTError(
                    f'SSA: scaled width int({dim} * {c_ratio}) = {self.c_new} is not divisible by {num_heads} heads')
            self.q = nn.Linear(dim, self.c_new, bias=qkv_bias)
            self.reduction = nn.Sequential(
                nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio, groups=dim),
                nn.Conv2d(dim, self.c_new, kernel_size=1, stride=1))
            self.norm_act = nn.Sequential(nn.LayerNorm(self.c_new), nn.GELU())  # eps 1e-5, as official
            self.k = nn.Linear(self.c_new, self.c_new, bias=qkv_bias)
            self.v = nn.Linear(self.c_new, dim, bias=qkv_bias)
        else:
            self.q = nn.Linear(dim, dim, bias=qkv_bias)
            self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj_drop = nn.Dropout(proj_drop)

    def _split_heads(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """(B, n, heads * d) -> (B, heads, n, d)."""
        return x.reshape(-1, n, self.num_heads, x.shape[-1] // self.num_heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        C, N = self.dim, H * W
        q = self._split_heads(self.q(x) * self.scale, N)
        if self.sr_ratio > 1:
            n_kv = (H // self.sr_ratio) * (W // self.sr_ratio)
            kv_in = self.reduction(x.transpose(1, 2).reshape(-1, C, H, W))
            kv_in = self.norm_act(kv_in.reshape(-1, self.c_new, n_kv).transpose(1, 2))  # (B, N', c_new)
            k, v = self._split_heads(self.k(kv_in), n_kv), self._split_heads(self.v(kv_in), n_kv)
        else:
            # Official layout of the fused projection: (B, N, 2, heads, head_dim).
            k, v = self.kv(x).reshape(-1, N, 2, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        x = (self.attn_drop(attn) @ v).transpose(1, 2).reshape(-1, N, C)
        return self.proj_drop(self.proj(x))


class ScalableViTBlock(nn.Module):
    """Pre-norm transformer block; ``ws == 1`` selects SSA, anything else IWSA."""

    def __init__(
            self,
            dim: int,
            num_heads: int,
            mlp_ratio: float = 4.,
            qkv_bias: bool = False,
            drop: float = 0.,
            attn_drop: float = 0.,
            drop_path: float = 0.,
            act_layer: Callable = nn.GELU,
            norm_layer: Callable = nn.LayerNorm,
            c_ratio: float = 1.25,
            sr_ratio: int = 1,
            ws: int = 1,
    ):
        super().__init__()
        self.norm1 = norm_layer(dim)
        if ws == 1:
            self.attn = SSA(dim, num_heads=num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop,
                            sr_ratio=sr_ratio, c_ratio=c_ratio)
        else:
            self.attn = IWSA(dim, num_heads=num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop, ws=ws)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), H, W))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ConvPatchEmbed(nn.Module):
    """Overlapping conv patch embedding: kernel ``patch + overlapping``, stride ``patch``, then LayerNorm."""

    def __init__(
            self,
            img_size: int = 224,
            patch_size: int = 4,
            in_chans: int = 3,
            embed_dim: int = 64,
            overlapping: int = 3,
            norm_layer: Callable = nn.LayerNorm,
    ):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size + overlapping, patch_size, overlapping)
        self.norm = norm_layer(embed_dim)

    def out_size(self, size: int) -> int:
        """Spatial size the conv produces for an input of ``size`` pixels."""
        conv = self.proj
        return (size + 2 * conv.padding[0] - conv.kernel_size[0]) // conv.stride[0] + 1

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, int, int]:
        H, W = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        # reshape with static sizes, not flatten(2): keeps Shape/Slice/Concat chains out of the dynamic-batch graph
        x = self.proj(x).reshape(-1, self.proj.out_channels, H * W).transpose(1, 2)
        return self.norm(x), H, W


class PosCNN(nn.Module):
    """PEG, the conditional position encoding of CPVT (arXiv 2102.10882): depthwise 3x3 conv plus residual."""

    def __init__(self, in_chans: int, embed_dim: int = 768, s: int = 1):
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(in_chans, embed_dim, 3, s, 1, bias=True, groups=embed_dim))
        self.s = s

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        C = self.proj[0].out_channels
        cnn_feat = x.transpose(1, 2).reshape(-1, C, H, W)
        x = self.proj(cnn_feat)
        if self.s == 1:
            x = x + cnn_feat
        return x.reshape(-1, C, H * W).transpose(1, 2)


class ScalableViT(nn.Module):
    """ScalableViT: four stages of alternating IWSA (even blocks) and SSA (odd blocks) with a PEG after the
    first block of each stage, GAP, and an MLP head (Linear-LN-GELU-Linear, 4096 wide) or a plain Linear."""

    def __init__(
            self,
            img_size: int = 224,
            patch_size: int = 4,
            in_chans: int = 3,
            num_classes: int = 1000,
            embed_dims: Sequence[int] = (64, 128, 256),
            num_heads: Sequence[int] = (1, 2, 4),
            mlp_ratios: Sequence[float] = (4, 4, 4),
            qkv_bias: bool = False,
            qk_scale: Optional[float] = None,
            drop_rate: float = 0.,
            attn_drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            norm_layer: Callable = partial(nn.LayerNorm, eps=1e-6),
            depths: Sequence[int] = (4, 4, 4),
            sr_ratios: Sequence[int] = (4, 2, 1),
            block_cls: Callable = ScalableViTBlock,
            wss: Sequence[int] = (7, 7, 7),
            c_ratios: Sequence[float] = (1.25, 1.25, 1.25, 1.25),
            plain_head: bool = False,
    ):
        super().__init__()
        num_stages = len(depths)
        for name, seq in (('embed_dims', embed_dims), ('num_heads', num_heads), ('mlp_ratios', mlp_ratios),
                          ('sr_ratios', sr_ratios), ('wss', wss), ('c_ratios', c_ratios)):
            if len(seq) < num_stages:
                raise ScalableViTError(f'{name} has {len(seq)} entries, depths needs {num_stages}')
        if qk_scale is not None:
            raise ScalableViTError('qk_scale is accepted for signature compatibility only; the official '
                                   'model never passes it to its blocks')
        self.img_size = img_size
        self.in_chans = in_chans
        self.wss = list(wss)
        self.num_classes = num_classes
        self.embed_dims = list(embed_dims)
        self.depths = list(depths)
        self.plain_head = plain_head

        dpr = torch.linspace(0, drop_path_rate, sum(depths), device='cpu').tolist()  # stochastic depth decay rule
        self.patch_embeds = nn.ModuleList()
        self.pos_block = nn.ModuleList()
        self.pos_drops = nn.ModuleList()
        self.stages = nn.ModuleList()
        cur = 0
        for k in range(num_stages):
            if k == 0:
                embed = ConvPatchEmbed(img_size, patch_size, in_chans, embed_dims[0], 3, norm_layer)
            else:
                embed = ConvPatchEmbed(img_size // patch_size // 2 ** (k - 1), 2, embed_dims[k - 1], embed_dims[k],
                                       1, norm_layer)
            self.patch_embeds.append(embed)
            self.pos_block.append(PosCNN(embed_dims[k], embed_dims[k]))
            self.pos_drops.append(nn.Dropout(p=drop_rate))
            self.stages.append(nn.ModuleList([
                block_cls(
                    dim=embed_dims[k],
                    num_heads=num_heads[k],
                    mlp_ratio=mlp_ratios[k],
                    qkv_bias=qkv_bias,
                    drop=drop_rate,
                    attn_drop=attn_drop_rate,
                    drop_path=dpr[cur + i],
                    norm_layer=norm_layer,
                    sr_ratio=sr_ratios[k],
                    ws=1 if i % 2 == 1 else wss[k],
                    c_ratio=c_ratios[k],
                ) for i in range(depths[k])]))
            cur += depths[k]
        self.norm = norm_layer(embed_dims[-1])
        if plain_head:
            self.head = nn.Linear(embed_dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        else:
            self.head = nn.Sequential(
                nn.Linear(embed_dims[-1], HEAD_HIDDEN, bias=True),
                norm_layer(HEAD_HIDDEN),
                nn.GELU(),
                nn.Linear(HEAD_HIDDEN, num_classes) if num_classes > 0 else nn.Identity(),
            )
        self.size_multiple = self._size_multiple()
        self.apply(self._init_weights)

    # ----------------------------------------------------------------------------------- input sizes
    def _stage_sizes(self, size: int) -> Optional[List[int]]:
        """Token-grid size of each stage for an input side of ``size`` pixels, or None if it cannot tile."""
        sizes = []
        for embed, blocks in zip(self.patch_embeds, self.stages):
            stride = embed.patch_size
            # The official code assumes the conv output is exactly size / stride (no padding anywhere).
            if size % stride or embed.out_size(size) != size // stride:
                return None
            size //= stride
            if size % getattr(blocks[0].attn, 'ws', 1):
                return None
            sizes.append(size)
        return sizes

    def _size_multiple(self) -> int:
        """Smallest input side that tiles; every valid side is a multiple of it."""
        total_stride = math.prod(e.patch_size for e in self.patch_embeds)
        step = total_stride
        for k, blocks in enumerate(self.stages):
            stride = math.prod(e.patch_size for e in self.patch_embeds[:k + 1])
            step = math.lcm(step, stride * getattr(blocks[0].attn, 'ws', 1))
        if self._stage_sizes(step) is None:
            raise ScalableViTError('this configuration cannot tile any input size (patch embedding arithmetic)')
        return step

    def check_input_size(self, height: int, width: int) -> None:
        """Raise InputSizeError unless (height, width) tiles every stage's windows exactly."""
        if height <= 0 or width <= 0 or height % self.size_multiple or width % self.size_multiple:
            m = self.size_multiple
            raise InputSizeError(
                f'input size {height}x{width} does not fit this model: height and width must be positive '
                f'multiples of {m} (e.g. {m}, {2 * m}, {3 * m}); the model has no padding')

    # ----------------------------------------------------------------------------------- timm-style API
    def _init_weights(self, m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        return {'pos_block.' + n for n, _ in self.pos_block.named_parameters()}

    def get_classifier(self) -> nn.Module:
        return self.head if self.plain_head else self.head[3]

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the final Linear (freshly initialised); the MLP head's hidden layers are kept."""
        self.num_classes = num_classes
        in_features = self.embed_dims[-1] if self.plain_head else HEAD_HIDDEN
        fc = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights(fc)
        if self.plain_head:
            self.head = fc
        else:
            self.head[3] = fc

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> normed last-stage tokens (B, N, C)."""
        self.check_input_size(x.shape[-2], x.shape[-1])
        for k, (embed, pos_drop, blocks) in enumerate(zip(self.patch_embeds, self.pos_drops, self.stages)):
            x, H, W = embed(x)
            x = pos_drop(x)
            for i, blk in enumerate(blocks):
                x = blk(x, H, W)
                if i == 0:
                    x = self.pos_block[k](x, H, W)  # PEG after the first block only
            if k < len(self.stages) - 1:
                x = x.transpose(1, 2).reshape(-1, self.embed_dims[k], H, W)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=1)  # global average pooling over tokens
        if pre_logits:
            return x if self.plain_head else self.head[:3](x)
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# --------------------------------------------------------------------------------------- configurations
def _cfg(**kwargs: Any) -> Dict[str, Any]:
    base = dict(patch_size=4, mlp_ratios=(4, 4, 4, 4), qkv_bias=True, wss=(7, 7, 7, 7), sr_ratios=(8, 4, 2, 1))
    return {**base, **kwargs}


def _imagenet_data(**kwargs: Any) -> Dict[str, Any]:
    base = dict(input_size=(3, 224, 224), resize=256, interpolation='bicubic', mean=IMAGENET_MEAN, std=IMAGENET_STD,
                num_classes=1000, labels='imagenet-1k')
    return {**base, **kwargs}


# name -> (constructor kwargs, data config). The first three are the official registered names.
_MODELS: Dict[str, Tuple[Dict[str, Any], Dict[str, Any]]] = {
    'scalable_vit_small': (_cfg(
        embed_dims=(64, 128, 256, 512), num_heads=(2, 4, 8, 16), depths=(2, 2, 20, 2),
        c_ratios=(1.25, 1.25, 1.25, 1)), _imagenet_data(paper_top1=83.1)),
    'scalable_vit_base': (_cfg(
        embed_dims=(96, 192, 384, 768), num_heads=(3, 6, 12, 24), depths=(2, 2, 14, 6),
        c_ratios=(2, 1.25, 1.25, 1)), _imagenet_data(paper_top1=84.1)),
    'scalable_vit_large': (_cfg(
        embed_dims=(128, 256, 512, 1024), num_heads=(4, 8, 16, 32), depths=(2, 6, 12, 4),
        c_ratios=(0.25, 0.5, 1, 1)), _imagenet_data(paper_top1=84.4)),
    # Official ablation variant: plain Linear head, c_ratio 1.25 in every stage.
    'scalable_vit_small_0': (_cfg(
        embed_dims=(64, 128, 256, 512), num_heads=(2, 4, 8, 16), depths=(2, 2, 20, 2),
        c_ratios=(1.25, 1.25, 1.25, 1.25), plain_head=True), _imagenet_data()),
    # Small test config at 224: every block type, c_ratio != 1 in the last stage, per-stage mlp_ratios.
    'scalable_vit_test': (_cfg(
        embed_dims=(16, 32, 48, 64), num_heads=(1, 2, 3, 4), depths=(2, 2, 2, 2), mlp_ratios=(4, 3, 2, 2),
        c_ratios=(1.25, 0.5, 2, 1.5), num_classes=10), _imagenet_data(num_classes=10, labels=None)),
    # Fashion-MNIST reference model (64x64 input, gray replicated to RGB): same block structure as S.
    'scalable_vit_fmnist': (_cfg(
        embed_dims=(32, 64, 96, 128), num_heads=(1, 2, 3, 4), depths=(2, 2, 2, 2), wss=(4, 4, 2, 2),
        sr_ratios=(4, 2, 2, 1), c_ratios=(1.25, 1.25, 1.25, 1), num_classes=10, plain_head=True, img_size=64),
        dict(input_size=(3, 64, 64), resize=64, interpolation='bilinear', mean=(0.2860,) * 3, std=(0.3530,) * 3,
             num_classes=10, labels='fashion-mnist')),
}

_ALIASES = {
    's': 'scalable_vit_small', 'small': 'scalable_vit_small', 'scalablevit_s': 'scalable_vit_small',
    'scalablevit-s': 'scalable_vit_small', 'scalable_vit_s': 'scalable_vit_small',
    'b': 'scalable_vit_base', 'base': 'scalable_vit_base', 'scalablevit_b': 'scalable_vit_base',
    'scalablevit-b': 'scalable_vit_base', 'scalable_vit_b': 'scalable_vit_base',
    'l': 'scalable_vit_large', 'large': 'scalable_vit_large', 'scalablevit_l': 'scalable_vit_large',
    'scalablevit-l': 'scalable_vit_large', 'scalable_vit_l': 'scalable_vit_large',
    'test': 'scalable_vit_test', 'fmnist': 'scalable_vit_fmnist',
}


# ------------------------------------------------------------------------------------------ weights
def _problems(state_dict: StateDict, own: StateDict) -> Tuple[List[str], List[str], List[str]]:
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f'{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}'
              for k in own if k in state_dict and state_dict[k].shape != own[k].shape]
    return missing, unexpected, shapes


def _examples(items: List[str], limit: int = 3) -> str:
    return ', '.join(items[:limit]) + (f', ... (+{len(items) - limit})' if len(items) > limit else '')


@functools.lru_cache(maxsize=None)
def _variant_signature(name: str) -> Dict[str, Tuple[int, ...]]:
    with torch.device('meta'):
        model = create_model(name)
    classifier = set(classifier_keys(model))
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if k not in classifier}


def matching_variants(state_dict: StateDict) -> List[str]:
    """Registered model names whose backbone keys and shapes equal the checkpoint's (classifier ignored)."""
    sig = {k[len('module.'):] if k.startswith('module.') else k: tuple(v.shape) for k, v in state_dict.items()}
    matches = []
    for name in list_models():
        own = _variant_signature(name)
        if all(sig.get(k) == s for k, s in own.items()) and set(sig) - set(own) <= {
                'head.weight', 'head.bias', 'head.3.weight', 'head.3.bias'}:
            matches.append(name)
    return matches


def _check_finite(state_dict: StateDict, path: Path) -> None:
    """Refuse a checkpoint with NaN/Inf values, naming the first such tensor: such weights pass export and
    calibration only to fail deep inside modelopt ("Too many bins") or to give NaN logits."""
    for key, tensor in state_dict.items():
        if torch.is_tensor(tensor) and tensor.is_floating_point():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                raise CheckpointError(f'{path}: tensor {key!r} holds {bad} NaN/Inf value(s) of {tensor.numel()}; '
                                      'refusing weights that cannot give finite outputs')


def load_weights(model: torch.nn.Module, path: Union[str, Path], raw: Optional[StateDict] = None) -> None:
    """Load a checkpoint strictly into ``model`` (``raw``: its tensors, already read). A classifier of another
    class count is refused, never re-initialised: a random head would be deployed as if trained."""
    path = Path(path)
    raw = read_state_dict(path) if raw is None else raw
    _check_finite(raw, path)
    _check_dtypes(raw, model.state_dict(), path)
    try:
        state_dict = checkpoint_filter_fn(raw, model)
    except CheckpointError as e:
        raise CheckpointError(f'{path}: {e}') from e
    own = model.state_dict()
    missing, unexpected, shapes = _problems(state_dict, own)
    carried = head_classes(raw, model, path)
    if carried is not None and model.num_classes and carried != model.num_classes:
        raise CheckpointError(f'{path}: its classifier has {carried} classes, the model {model.num_classes}: build '
                              f'the model with {carried} classes (the checkpoint defines its head)')
    if carried is None and model.num_classes and missing and all(k.startswith('head.') for k in missing) \
            and not unexpected and not shapes:
        raise CheckpointError(f'{path} carries no classifier (a backbone-only checkpoint): the model needs its '
                              f'{model.num_classes}-class head trained, never a random one')
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f'{len(missing)} missing keys ({_examples(missing)})')
        if unexpected:
            parts.append(f'{len(unexpected)} unexpected keys ({_examples(unexpected)})')
        if shapes:
            parts.append(f'{len(shapes)} shape mismatches ({_examples(shapes)})')
        variants = matching_variants(raw)
        hint = f'; the file matches {", ".join(variants)}' if variants else '; it matches no registered variant'
        name = getattr(model, 'name', type(model).__name__)
        raise CheckpointError(f'{path} does not fit {name}: ' + '; '.join(parts) + hint)
    model.load_state_dict(state_dict, strict=True)
    logger.info('loaded %d tensors from %s', len(state_dict), path)


def head_classes(state_dict: StateDict, model: Any, path: Union[str, Path] = 'the checkpoint') -> Optional[int]:
    """The class count of the classifier a checkpoint carries (None: it has none). ``model`` is a model or a
    registered name (for its head layout); a classifier of no class is refused."""
    plain = model_config(model).get('plain_head') if isinstance(model, str) else model.plain_head
    key = ('head.' if plain else 'head.3.') + 'weight'
    for name in (key, 'module.' + key):
        tensor = state_dict.get(name)
        if torch.is_tensor(tensor) and tensor.ndim == 2:
            if tensor.shape[0] < 1:
                raise CheckpointError(f'{path}: its classifier {name!r} has {tensor.shape[0]} classes '
                                      f'{tuple(tensor.shape)}: not a classifier')
            return int(tensor.shape[0])
    return None


def _check_dtypes(state_dict: StateDict, own: StateDict, path: Path) -> None:
    """Refuse integer tensors (an int8-quantized checkpoint) where the model holds floats: casting them would
    load the quantized codes as if they were weights."""
    for key, tensor in state_dict.items():
        target = own.get(key[len('module.'):] if key.startswith('module.') else key)
        if torch.is_tensor(tensor) and target is not None and target.is_floating_point() \
                and not tensor.is_floating_point():
            raise CheckpointError(f'{path}: tensor {key!r} is {str(tensor.dtype).replace("torch.", "")}, the model '
                                  'needs floating point: a quantized checkpoint cannot be loaded (dequantize it first)')


def list_models() -> List[str]:
    return list(_MODELS)


def resolve_model_name(name: str) -> str:
    """Canonical model name for a registered name or alias; unknown names get the closest suggestion."""
    key = name.strip().lower()
    if key in _MODELS:
        return key
    if key in _ALIASES:
        return _ALIASES[key]
    from ..core.errors import unknown_choice
    raise unknown_choice('model', name, list(_MODELS) + list(_ALIASES))


def model_config(name: str) -> Dict[str, Any]:
    """Constructor kwargs of a registered model (a copy)."""
    return dict(_MODELS[resolve_model_name(name)][0])


def data_config(name: str) -> Dict[str, Any]:
    """Eval preprocessing and dataset facts of a registered model (a copy)."""
    return dict(_MODELS[resolve_model_name(name)][1])


@functools.lru_cache(maxsize=None)
def size_multiple(name: str) -> int:
    """The input side every valid side of model ``name`` is a multiple of (built on the meta device: no memory)."""
    with torch.device('meta'):
        return ScalableViT(**model_config(name)).size_multiple


def check_model_input_size(name: str, size: int) -> None:
    """Refuse an input side model ``name`` cannot tile, or one beyond MAX_INPUT_SIDE, in one line."""
    from ..core.manifest import MAX_INPUT_SIDE
    m = size_multiple(resolve_model_name(name))
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_INPUT_SIDE or size % m:
        raise InputSizeError(f'--input-size {size} does not fit {resolve_model_name(name)}: it takes positive '
                             f'multiples of {m} up to {MAX_INPUT_SIDE} (e.g. {m}, {2 * m}, {3 * m}); '
                             'the model has no padding')


def valid_input_sizes(model: ScalableViT, count: int = 3) -> List[int]:
    return [model.size_multiple * (i + 1) for i in range(count)]


def create_model(name: str, weights: Optional[str] = None, num_classes: Optional[int] = None,
                 weights_sha256: Optional[str] = None, **kwargs: Any) -> ScalableViT:
    """Build a registered ScalableViT; ``weights`` is an official .pth or a safetensors file.

    ``kwargs`` override the config (e.g. ``drop_path_rate=0.2``). A checkpoint defines the head it carries:
    the model takes its class count (``num_classes``, when given, must match it; 0 drops the head).
    ``weights_sha256`` (what a bundle recorded): the bytes loaded must carry it.
    """
    canonical = resolve_model_name(name)
    cfg = model_config(canonical)
    cfg.update(kwargs)
    raw = read_state_dict(weights, weights_sha256) if weights is not None else None
    carried = head_classes(raw, canonical, weights) if raw is not None else None
    if carried is not None and num_classes not in (None, 0, carried):
        raise CheckpointError(f'{weights}: its classifier has {carried} classes, not the {num_classes} asked for: '
                              'the checkpoint defines its head')
    num_classes = carried if num_classes is None and carried is not None else num_classes
    if num_classes is not None:
        cfg['num_classes'] = num_classes
    model = ScalableViT(**cfg)
    model.name = canonical
    model.data_cfg = class_config(data_config(canonical), model.num_classes)
    if raw is not None:
        load_weights(model, weights, raw)
    return model


def class_config(data_cfg: Dict[str, Any], num_classes: int) -> Dict[str, Any]:
    """``data_cfg`` for a head of ``num_classes``: another count than the config's has no known label names."""
    if num_classes != data_cfg['num_classes']:
        data_cfg = {**data_cfg, 'labels': None}
    return {**data_cfg, 'num_classes': num_classes}
