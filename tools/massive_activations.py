#!/usr/bin/env python3
"""Give the trained Fashion-MNIST ScalableViT a few outlier channels of ~1000x, as trained large ViTs have.

    python tools/massive_activations.py --out fmnist_massive.safetensors [--factor 200]

Trained transformers carry a few activation channels far larger than the rest, and INT8 with one scale per tensor
breaks on them: the step set by the outlier channel rounds every other channel to a handful of levels. In pre-LN
transformers these outliers sit in a few fixed channels of the LayerNorm outputs that feed the Linear layers,
driven by the LayerNorm's scale gamma (Wei et al. 2022, "Outlier Suppression", and Bondarenko et al. 2021 for BERT;
Lin et al. 2023, RepQ-ViT, for the post-LayerNorm activations of DeiT / Swin), and as "massive activations" in
the residual stream (Sun et al. 2024) that then dominate what the LayerNorms see.

The construction moves scale INTO a LayerNorm channel, the inverse of Outlier Suppression's "gamma migration":
for LayerNorm ``ln`` feeding Linear ``fc`` and channel ``c``, ``ln.weight[c]`` and ``ln.bias[c]`` are multiplied by
``factor`` and ``fc.weight[:, c]`` divided by it. ``fc(ln(x))`` is unchanged in exact arithmetic (FP32: rounding
only), so the model keeps its accuracy while ``ln``'s output channel ``c`` grows ``factor`` times. The channels are
those the trained model already makes largest at each site (max |x| over the train images), so the outlier sits
where the model has one. The residual stream itself is left alone: every block normalizes it, so no reparameter-
ization can give it outlier channels without changing the function. With the default factor 200 the three sites
reach |x| of about 800 to 1500 (FP16 holds them exactly enough; they stay below the FP16 range rules).

``SITES``: the IWSA attention input of stage 2 (norm1 -> qkv), and the MLP inputs of the last block of
stages 2 and 3 (norm2 -> fc1).
"""
import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from scalablevit.models.checkpoint import save_weights
from scalablevit.models.scalablevit import create_model

MODEL = 'scalable_vit_fmnist'
WEIGHTS = Path(__file__).resolve().parents[1] / 'scalablevit' / 'models' / 'weights' / f'{MODEL}.safetensors'
# (LayerNorm, the Linear that reads it alone)
SITES: Tuple[Tuple[str, str], ...] = (('stages.2.0.norm1', 'stages.2.0.attn.qkv'),
                                      ('stages.2.1.norm2', 'stages.2.1.mlp.fc1'),
                                      ('stages.3.1.norm2', 'stages.3.1.mlp.fc1'))
DEFAULT_FACTOR = 200.0
PROBE_IMAGES = 256


def largest_channels(model: torch.nn.Module, images: np.ndarray, norms: Sequence[str]) -> Dict[str, int]:
    """For each LayerNorm in ``norms``: the output channel with the largest max |x| over ``images``."""
    peaks: Dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    hooks = [modules[name].register_forward_hook(
        lambda _m, _i, out, name=name: peaks.__setitem__(name, torch.maximum(
            peaks.get(name, torch.zeros(out.shape[-1])), out.detach().abs().reshape(-1, out.shape[-1]).amax(0))))
        for name in norms]
    try:
        with torch.inference_mode():
            for start in range(0, len(images), 64):
                model(torch.from_numpy(images[start:start + 64]))
    finally:
        for hook in hooks:
            hook.remove()
    return {name: int(peaks[name].argmax()) for name in norms}


def amplify(state_dict: Dict[str, torch.Tensor], channels: Dict[str, int], factor: float,
            sites: Sequence[Tuple[str, str]] = SITES) -> Dict[str, torch.Tensor]:
    """A new state_dict with LayerNorm channel ``channels[ln]`` ``factor`` times larger and the Linear reading it
    scaled back, for every (ln, fc) site: the same function, outlier channels at the LayerNorm outputs."""
    out = {k: v.clone() for k, v in state_dict.items()}
    for ln, fc in sites:
        c = channels[ln]
        out[f'{ln}.weight'][c] *= factor
        out[f'{ln}.bias'][c] *= factor
        out[f'{fc}.weight'][:, c] /= factor
    return out


def build(factor: float = DEFAULT_FACTOR, weights: Path = WEIGHTS, probe_images: int = PROBE_IMAGES
          ) -> Tuple[torch.nn.Module, Dict[str, int]]:
    """The amplified model and the channel chosen at each site (largest on the first TRAIN images)."""
    from scalablevit.data.fmnist import fashion_mnist_sets
    model = create_model(MODEL, weights=str(weights)).eval()
    calib, _ = fashion_mnist_sets(model.data_cfg, probe_images, 1, seed=0)
    channels = largest_channels(model, calib.images, [ln for ln, _ in SITES])
    model.load_state_dict(amplify(model.state_dict(), channels, factor))
    return model, channels


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--out', type=Path, required=True, help='safetensors file to write')
    p.add_argument('--factor', type=float, default=DEFAULT_FACTOR, help=f'channel scale (default {DEFAULT_FACTOR:g})')
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if not args.factor > 0:
        print(f'error: --factor must be positive, got {args.factor}', file=sys.stderr)
        return 1
    model, channels = build(args.factor)
    sites = ', '.join(f'{ln}[{c}]' for ln, c in channels.items())
    save_weights(model, args.out, metadata={'derived_from': WEIGHTS.name, 'outlier_channels': sites,
                                            'factor': f'{args.factor:g}'})
    print(f'{args.out}: {MODEL} with LayerNorm output channels {sites} x{args.factor:g} (next Linear scaled back)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
