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


def sd_loss(logits: torch.Tensor) -> torch.Tensor:
    """mean over the batch of each sample's logit standard deviation, divided by the class count:
    λ times this is added to the cross-entropy. Logits are (batch, classes)."""
    return logits.std(dim=1).mean() / logits.shape[1]


def training_loss(logits: torch.Tensor, y: torch.Tensor, sd_lambda: float = 0.0, reduction: str = "mean") -> torch.Tensor:
    """The loss training minimizes: cross-entropy, plus λ·std(z_b)/C per sample when λ > 0.
    reduction="sum" gives the sum of the per-sample losses (what a batch mean divides by B)."""
    losses = F.cross_entropy(logits, y, reduction="none")
    if sd_lambda:
        losses = losses + sd_lambda * logits.std(dim=1) / logits.shape[1]
    return losses.sum() if reduction == "sum" else losses.mean()
