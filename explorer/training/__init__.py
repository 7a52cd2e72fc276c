"""Training: a model fit to arrays by a recipe, with what the unlearning methods need kept along
the way (per-sample dynamics, mnemonic codes, the SD loss, the blocks of DeepObliviate), and
many small models trained at once for exact memorization (ensembles.py). Never sees a
workspace: explorer.pipeline loads the data and publishes the result.

`fit` is the entry point: a recipe with `blocks` trains block by block (blocks.py), any other in
one piece (loop.py).
"""

from __future__ import annotations

import torch
from torch import nn

from ..runtime import optim
from ..runtime.progress import Progress, no_progress
from .blocks import fit_blocks
from .codes import make_codes
from .loop import DYNAMICS, TrainResult, accuracy, init_model, per_class_accuracy, run, state_bytes
from .recipe import Recipe, RecipeError

__all__ = ["DYNAMICS", "Recipe", "RecipeError", "TrainResult", "accuracy", "fit", "init_model", "make_codes",
           "per_class_accuracy", "state_bytes"]


def fit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    recipe: Recipe,
    device: torch.device,
    *,
    x_test: torch.Tensor | None = None,
    y_test: torch.Tensor | None = None,
    record_dynamics: bool = True,
    progress: Progress = no_progress,
    opt: optim.SGD | None = None,
) -> TrainResult:
    """Train `model` in place on (x, y) with `recipe`; returns the epoch log and dynamics. A given
    `opt` is continued (its momentum carries over); with `recipe.blocks` the training is by blocks."""
    if recipe.blocks:  # DeepObliviate's block training: no dynamics, a checkpoint after each block
        # Without dynamics (the estimator's subset models) nobody reads the block snapshots either.
        return fit_blocks(model, x, y, recipe, device, x_test=x_test, y_test=y_test, progress=progress,
                          snapshots=record_dynamics)
    return run(model, x, y, recipe, device, x_test=x_test, y_test=y_test, record_dynamics=record_dynamics,
               progress=progress, opt=opt)
