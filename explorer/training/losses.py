"""The loss training minimizes: cross-entropy, plus, with `Recipe.sd_lambda` = λ > 0, the SD loss of
Unrolling SGD (Thudi et al., EuroS&P 2022), which keeps the single-gradient unlearning and the
unlearning error small (explorer/unlearning/unrolling.py, explorer/evaluation/unlearning_error.py).

- `sd_loss(logits)` = mean_b std(z_b)/C, the regularizer training adds as λ·sd_loss; std is the
  unbiased standard deviation over a sample's C logits, as `torch.std` in the official code
  (`sum(std(x, 1)) / len(x.view(-1))`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sd_term(logits: torch.Tensor) -> torch.Tensor:
    """Each sample's SD term, std(z)/C: the standard deviation of its C logits over the class
    count; logits (..., C) give (...). λ times it joins each sample's cross-entropy."""
    return logits.std(dim=-1) / logits.shape[-1]


def sd_loss(logits: torch.Tensor) -> torch.Tensor:
    """mean over the batch of each sample's logit standard deviation, divided by the class count:
    λ times this is added to the cross-entropy. Logits are (batch, classes)."""
    return sd_term(logits).mean()


def per_sample(logits: torch.Tensor, y: torch.Tensor, sd_lambda: float = 0.0, label_smoothing: float = 0.0
               ) -> torch.Tensor:
    """The loss training minimizes, per sample: cross-entropy (with label smoothing ε when
    `Recipe.label_smoothing` > 0), plus λ·std(z)/C when λ > 0. Logits (..., C) and labels (...)
    give (...): one model's batch, or K models' (the ensembles)."""
    C = logits.shape[-1]
    losses = F.cross_entropy(logits.reshape(-1, C), y.reshape(-1), reduction="none",
                             label_smoothing=label_smoothing).view(y.shape)
    return losses + sd_lambda * sd_term(logits) if sd_lambda else losses


def training_loss(logits: torch.Tensor, y: torch.Tensor, sd_lambda: float = 0.0, reduction: str = "mean") -> torch.Tensor:
    """`per_sample` reduced over the batch: its mean, or with reduction="sum" its sum (what a
    batch mean divides by B)."""
    losses = per_sample(logits, y, sd_lambda)
    return losses.sum() if reduction == "sum" else losses.mean()
