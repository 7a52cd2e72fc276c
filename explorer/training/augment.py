"""Data augmentation for `Recipe.augment`: a random horizontal flip and a random translation by
up to two pixels (reflect-padded), the flip-and-translate of the fast CIFAR-10 trainings
(Jordan 2024, airbench).

The draws come from a stream of their own (the recipe's seed plus an offset), drawn for every
position of an epoch's order before any batch is made, as the mnemonic swaps are: the one-model
loop and the batched engine then give a model the same views, and a replay that drops samples
(loop.py) gives the samples left the views they had.

Augmentation changes what memorization means: a model that sees a sample only in shifted and
flipped versions memorizes its neighbourhood, not its pixels, and a held-out sample's flipped
twin may be learned from others. Every score set of such a model says it was trained with it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SEED_OFFSET = 104_729  # apart from the shuffling stream (the seed) and the code swaps' (codes.py)
PAD = 2  # the largest shift, in pixels


def stream(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed + SEED_OFFSET)


def draw(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One epoch's draws for n positions: flip (n,) bool and shift (n, 2) int64 in [−PAD, PAD]."""
    flip = torch.rand(n, generator=generator) < 0.5
    shift = torch.randint(-PAD, PAD + 1, (n, 2), generator=generator)
    return flip, shift


def apply(x: torch.Tensor, flip: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """x (N, C, H, W) flipped where `flip` and shifted by `shift` (dy, dx) per sample, on x's device."""
    flip, shift = flip.to(x.device), shift.to(x.device)
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    N, _, H, W = x.shape
    padded = F.pad(x, (PAD, PAD, PAD, PAD), mode="reflect")
    rows = PAD + shift[:, :1] + torch.arange(H, device=x.device)  # (N, H)
    cols = PAD + shift[:, 1:] + torch.arange(W, device=x.device)  # (N, W)
    n = torch.arange(N, device=x.device)[:, None, None]
    return padded[n, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()
