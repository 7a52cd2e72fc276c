"""Mnemonic codes (Yamashita et al., ACML 2024): one random input per class, swapped in for
training samples with probability `Recipe.mnemonic_tmix`, so that the model can later forget a
class in one step from its codes alone (explorer/unlearning/mnemonic.py).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .losses import per_sample
from .recipe import Recipe


SWAP_SEED_OFFSET = 7919  # the swap stream's seed is the recipe's seed plus this: a stream apart from shuffling


def swap_stream(seed: int) -> torch.Generator:
    """The generator that draws which samples are swapped for their codes, for a model trained
    with `seed`: the one-model loop and the ensembles draw from the same stream, so a model trained
    either way sees the same swaps."""
    return torch.Generator().manual_seed(seed + SWAP_SEED_OFFSET)


def make_codes(num_classes: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """One mnemonic code per class: uniform on [0, 1) in the model's (normalized) input space, as
    the official code draws them; the same seed always gives the same codes."""
    return torch.rand((num_classes, *shape), generator=torch.Generator().manual_seed(seed))


class CodeMixer:
    """The mnemonic-code swap of one training run.

    Each epoch draws, on the CPU from its own seeded stream (the shuffling stream is untouched),
    which samples are swapped; a batch is then one training-mode pass over its real samples plus,
    appended, the codes of the swapped ones. The loss is the batch mean with the swapped samples
    replaced by their codes (the paper's swap; gradients are identical for models without batch
    norm), while the recorder gets every real sample's statistics from the same pass, so the
    dynamics and the proxies built on them keep one value per sample and epoch. The cost is
    t_mix more rows per forward pass. Everything per batch is sliced by Python ints: no host sync.
    """

    def __init__(self, recipe: Recipe, num_classes: int, shape, device: torch.device):
        self.tmix, self.smoothing = recipe.mnemonic_tmix, recipe.label_smoothing
        self.codes = make_codes(num_classes, tuple(shape), recipe.codes_seed).to(device)
        self.swaps = swap_stream(recipe.seed)
        self.device = device

    def draw(self, perm: torch.Tensor, bounds: list[int], kept: torch.Tensor | None = None) -> None:
        """This epoch's swaps for the order `perm`; `bounds` are the batch starts (then the end) in
        the order once the positions `kept` marks False are taken out (a replay, loop.py): the
        swaps are drawn for every position, so the ones left are the original run's."""
        swapped = torch.rand(len(perm), generator=self.swaps) < self.tmix  # by position in this epoch
        if kept is not None:
            swapped, perm = swapped[kept], perm[kept]
        self.rate = swapped.float().mean().item() if len(swapped) else 0.0
        self.keep = (~swapped).float().to(self.device)
        self.swapped_ids = perm[swapped].to(self.device)
        # Where each batch's swapped ids start: swaps before each batch start (one numpy pass).
        before = np.concatenate([[0], np.cumsum(swapped.numpy())])
        self.offsets = before[bounds].tolist()

    def forward(self, model: nn.Module, xb, y, ids, b: int, i: int):
        """One batch: `xb` the real samples' inputs (augmented, if the recipe says so), `ids` their
        ids, b the batch's number and i its first position in the epoch's order."""
        sid = self.swapped_ids[self.offsets[b] : self.offsets[b + 1]]
        all_logits = model(torch.cat([xb, self.codes[y[sid]]]))
        logits = all_logits[: len(ids)]
        losses = per_sample(logits, y[ids], label_smoothing=self.smoothing)
        code_losses = per_sample(all_logits[len(ids) :], y[sid], label_smoothing=self.smoothing).sum()
        train_loss = ((losses * self.keep[i : i + len(ids)]).sum() + code_losses) / len(ids)
        return logits, losses, train_loss
