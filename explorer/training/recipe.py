"""The training recipe: everything that decides how a model is trained from its initial weights.

`as_meta()` is what a model record keeps and what run keys are hashed from; a field at its "off"
value is left out, so a model trained without codes, the SD loss, blocks or mixed precision
keeps the record (and the cache keys) it had before the field existed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ..errors import RecipeError

__all__ = ["REGIME", "Recipe", "RecipeError", "default_for"]


@dataclass
class Recipe:
    epochs: int = 30
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64
    seed: int = 0
    cosine: bool = False
    mnemonic_tmix: float = 0.0  # probability a training sample is swapped for its class's code
    codes_seed: int = 0
    sd_lambda: float = 0.0  # weight of the SD loss (losses.py): CE + λ·mean_b std(z_b)/C
    blocks: int = 0  # B ≥ 2: train block by block, keeping M_0 … M_B for DeepObliviate (blocks.py)
    amp: bool = False  # mixed precision: bf16 forward passes, float32 losses and weights (runtime/precision.py)

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1:
            raise RecipeError("epochs and batch size must be at least 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise RecipeError(f"learning rate must be a positive number, got {self.lr}")
        if not 0 <= self.mnemonic_tmix < 1:  # also refuses NaN
            raise RecipeError(f"mnemonic t_mix must be in [0, 1), got {self.mnemonic_tmix}")
        if not (self.sd_lambda >= 0 and math.isfinite(self.sd_lambda)):  # also refuses NaN
            raise RecipeError(f"the SD-loss weight must be a finite number, at least 0; got {self.sd_lambda}")
        if self.blocks == 1 or self.blocks < 0:
            raise RecipeError(f"blocks must be 0 (no blocks) or at least 2, got {self.blocks}")
        if self.amp not in (True, False):
            raise RecipeError(f"amp must be true or false, got {self.amp!r}")

    @classmethod
    def from_meta(cls, meta: dict) -> Recipe:
        """The recipe an `as_meta()` dict (a model record's `recipe`) describes."""
        return cls(**meta)

    def as_meta(self) -> dict:
        meta = asdict(self)
        if not self.mnemonic_tmix:  # a model without codes keeps the exact record (and cache keys) it had
            del meta["mnemonic_tmix"], meta["codes_seed"]
        if not self.sd_lambda:  # likewise for a model trained without the SD loss
            del meta["sd_lambda"]
        if not self.blocks:  # likewise for a model trained in one piece
            del meta["blocks"]
        if not self.amp:  # likewise for a model trained in float32
            del meta["amp"]
        return meta


# Recipes that reach the memorization regime (docs/memorization.md) on the embedded data with 5–10%
# flipped labels: ≥ 99% training accuracy with ≥ 90% of the flipped labels fitted, in as few
# epochs as we found do it (`python -m bench memorization` measures them). Weight decay off: it
# is what keeps a small model from fitting its mislabeled samples.
REGIME: dict[tuple[str, str], dict] = {
    ("mlp", "digits"): {"epochs": 60, "lr": 0.1, "weight_decay": 0.0},
    ("cnn", "digits"): {"epochs": 70, "lr": 0.1, "weight_decay": 0.0},
    ("mlp", "mnist5k"): {"epochs": 30, "lr": 0.05, "weight_decay": 0.0},
}


def default_for(arch: str, dataset: str) -> Recipe:
    """The recipe a model of `arch` on `dataset` trains with when none is given: the regime's
    where we measured one, else the class defaults."""
    return Recipe(**REGIME.get((arch, dataset), {}))
