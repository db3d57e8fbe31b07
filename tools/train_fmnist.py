#!/usr/bin/env python3
"""Train the reference ScalableViT ('scalable_vit_fmnist') on Fashion-MNIST, deterministically, on a CPU.

Train inputs go once through the eval resize (``scalablevit.data.fmnist.resize_images``, the same pixels as
``preprocess``) and are kept as uint8; each batch is then augmented on tensors (random crop with zero
padding, horizontal flip) and normalized. The test set goes through ``to_model_input``, the eval transform.
Recipe: AdamW, linear warmup then per-step cosine decay, label smoothing. Run it as the weights README says
(glibc malloc thresholds set, ``nice``, 2 threads): results are bitwise reproducible for a fixed thread count.
"""
import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Dict, NoReturn, Optional, Sequence, Tuple

# Before torch starts OpenMP: on shared cores, spinning worker threads made a 2-thread step 3x slower.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from scalablevit.cli import ArgumentParser, run_cli  # noqa: E402
from scalablevit.core.fileio import human_size  # noqa: E402
from scalablevit.data.fmnist import load_fashion_mnist, resize_images, to_model_input  # noqa: E402
from scalablevit.models.checkpoint import save_weights  # noqa: E402
from scalablevit.models.scalablevit import ScalableViT, create_model  # noqa: E402

MODEL = 'scalable_vit_fmnist'
DEFAULT_OUT = Path(__file__).resolve().parents[1] / 'scalablevit' / 'models' / 'weights' / f'{MODEL}.safetensors'


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--epochs', type=int, default=10)
    p.add_argument('--batch-size', type=int, default=128)
    p.add_argument('--lr', type=float, default=1.5e-3)
    p.add_argument('--min-lr', type=float, default=1e-5)
    p.add_argument('--weight-decay', type=float, default=0.05)
    p.add_argument('--warmup-epochs', type=float, default=0.5)
    p.add_argument('--label-smoothing', type=float, default=0.1)
    p.add_argument('--drop-path', type=float, default=0.0)
    p.add_argument('--pad', type=int, default=4, help='random-crop zero padding, pixels at model resolution')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--log-every', type=int, default=100, help='print progress every N steps (0: per epoch only)')
    p.add_argument('--out', type=Path, default=DEFAULT_OUT)
    p.add_argument('--ckpt-dir', type=Path, default=Path('out/fmnist-checkpoints'),
                   help='per-epoch checkpoints fmnist_epoch{N}.safetensors go here')
    return p.parse_args(argv)


def augment(batch: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """uint8 (B, S, S): random S x S crop of the zero-padded image, then a horizontal flip with p=0.5."""
    b, s, _ = batch.shape
    padded = F.pad(batch, (pad, pad, pad, pad))
    offsets = torch.randint(0, 2 * pad + 1, (2, b, 1), generator=gen)
    rows = offsets[0] + torch.arange(s)
    cols = offsets[1] + torch.arange(s)
    flip = torch.rand(b, 1, generator=gen) < 0.5
    cols = torch.where(flip, cols.flip(1), cols)
    return padded[torch.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]


def normalize(batch: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """uint8 (B, S, S) gray -> float32 (B, 3, S, S), the arithmetic of the eval transform."""
    x = (batch.float() / 255.0 - mean) / std
    return x[:, None].expand(-1, 3, -1, -1).contiguous()


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warmup to 1, then cosine decay to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model: ScalableViT, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW; no decay on norms, biases and the PEG convs (the official no_weight_decay set)."""
    skip = model.no_weight_decay()
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim <= 1 or name in skip else decay).append(param)
    return torch.optim.AdamW([{'params': decay, 'weight_decay': weight_decay},
                              {'params': no_decay, 'weight_decay': 0.0}], lr=lr)


@torch.inference_mode()
def evaluate(model: ScalableViT, inputs: torch.Tensor, labels: torch.Tensor, batch: int = 500) -> float:
    model.eval()
    correct = sum(int((model(inputs[i:i + batch]).argmax(1) == labels[i:i + batch]).sum())
                  for i in range(0, len(inputs), batch))
    return correct / len(inputs)


def save(model: ScalableViT, path: Path, metadata: Dict[str, str]) -> None:
    """fp32 state_dict as safetensors, atomically (``checkpoint.save_weights`` adds model name and classes)."""
    save_weights(model, path, {'dataset': 'fashion-mnist', **metadata})


def prepare(data_cfg: Dict) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train images resized once (uint8) + labels; test inputs through the eval transform + labels."""
    t0 = time.time()
    train_x, train_y = load_fashion_mnist('train')
    test_x, test_y = load_fashion_mnist('test')
    train_u8 = torch.from_numpy(resize_images(train_x, data_cfg))
    test_in = torch.from_numpy(to_model_input(test_x, data_cfg))
    print(f'data ready in {time.time() - t0:.1f} s: train {tuple(train_u8.shape)}, test {tuple(test_in.shape)}',
          flush=True)
    return train_u8, torch.from_numpy(train_y), test_in, torch.from_numpy(test_y)


def train(args: argparse.Namespace) -> float:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    gen = torch.Generator().manual_seed(args.seed)
    model = create_model(MODEL, drop_path_rate=args.drop_path)
    cfg = model.data_cfg
    mean, std = cfg['mean'][0], cfg['std'][0]
    train_u8, train_y, test_in, test_y = prepare(cfg)

    steps_per_epoch = len(train_u8) // args.batch_size  # drop the ragged last batch
    total, warmup = args.epochs * steps_per_epoch, int(args.warmup_epochs * steps_per_epoch)
    opt = make_optimizer(model, args.lr, args.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, total, warmup, args.min_lr / args.lr))
    recipe = json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()})
    t_start, top1 = time.time(), 0.0
    for epoch in range(1, args.epochs + 1):
        model.train()
        t0, loss_sum, correct = time.time(), 0.0, 0
        order = torch.randperm(len(train_u8), generator=gen)
        for step in range(steps_per_epoch):
            idx = order[step * args.batch_size:(step + 1) * args.batch_size]
            x = normalize(augment(train_u8[idx], args.pad, gen), mean, std)
            logits = model(x)
            loss = F.cross_entropy(logits, train_y[idx], label_smoothing=args.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item()
            correct += int((logits.argmax(1) == train_y[idx]).sum())
            if args.log_every and (step + 1) % args.log_every == 0:
                print(f'  epoch {epoch} step {step + 1}/{steps_per_epoch}  loss {loss_sum / (step + 1):.4f}  '
                      f'{time.time() - t0:.0f} s', flush=True)
        top1 = evaluate(model, test_in, test_y)
        seen = steps_per_epoch * args.batch_size
        print(f'epoch {epoch}/{args.epochs}  loss {loss_sum / steps_per_epoch:.4f}  train_top1 {correct / seen:.4f}  '
              f'test_top1 {top1:.4f}  lr {sched.get_last_lr()[0]:.2e}  {time.time() - t0:.0f} s', flush=True)
        save(model, args.ckpt_dir / f'fmnist_epoch{epoch}.safetensors',
             {'epoch': str(epoch), 'test_top1': f'{top1:.4f}', 'recipe': recipe})
    minutes = (time.time() - t_start) / 60
    save(model, args.out, {'epoch': str(args.epochs), 'test_top1': f'{top1:.4f}', 'recipe': recipe,
                           'train_minutes': f'{minutes:.1f}'})
    print(f'done in {minutes:.1f} min: test top-1 {top1:.4f}, saved {args.out} '
          f'({human_size(args.out.stat().st_size)})', flush=True)
    return top1


def main(argv: Optional[Sequence[str]] = None) -> int:
    train(parse_args(argv))
    return 0


def run() -> NoReturn:
    run_cli(main)


if __name__ == '__main__':
    run()
