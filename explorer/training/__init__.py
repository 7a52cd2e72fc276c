"""Training: a model fit to arrays by a recipe, with what the unlearning methods need kept along
the way (per-sample dynamics, mnemonic codes, the SD loss, the blocks of DeepObliviate), and
many small models trained at once for exact memorization (ensembles.py). Never sees a
workspace: explorer.pipeline loads the data and publishes the result.

`fit` is the entry point: a recipe with `blocks` trains block by block (blocks.py), any other in
one piece (loop.py).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .. import models
from ..runtime import devices

from .blocks import fit_blocks
from .codes import make_codes
from .loop import DYNAMICS, TrainResult, accuracy, init_model, per_class_accuracy, run, state_bytes
from .recipe import KNOBS, PAPER, REGIME, Knob, Recipe, RecipeError, default_for, knob

__all__ = ["DYNAMICS", "KNOBS", "PAPER", "REGIME", "Knob", "knob", "Recipe", "default_for", "RecipeError", "TrainResult", "accuracy", "fit", "init_model", "make_codes",
           "per_class_accuracy", "state_bytes"]


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: Recipe, device: torch.device, *,
        record_dynamics: bool = True, **kwargs) -> TrainResult:
    """Train `model` in place on (x, y) with `recipe`; returns the epoch log and dynamics. The other
    keywords are `loop.run`'s (x_test, y_test, progress, opt: a given optimizer is continued, its
    momentum carries over; drop: positions replayed out of the run, the faithful retrain;
    curvature_every: record loss curvature every k-th epoch, curvature.py). With
    `recipe.blocks` the training is by blocks, and `opt` is not used.

    A fresh training (no `opt` to continue) first fits the model's data-dependent layers
    (models.Whiten) to the samples it trains on: without the dropped ones in a replay."""
    if kwargs.get("opt") is None and models.fits_to_data(model):
        drop = kwargs.get("drop")
        kept = x if drop is None else x[torch.as_tensor(np.setdiff1d(np.arange(len(x)), np.asarray(drop, dtype=np.int64)))]
        models.init_from_data(model, kept)
    with devices.conv_layout(model.to(device), device):  # channels-last where it helps, restored after
        if recipe.blocks:  # DeepObliviate's block training: no dynamics, a checkpoint after each block
            if kwargs.pop("curvature_every", 0):
                raise RecipeError("curvature is recorded into the training dynamics, which block training does not "
                                  "record; train without --blocks")
            kwargs.pop("opt", None)
            # Without dynamics (the estimator's subset models) nobody reads the block snapshots either.
            return fit_blocks(model, x, y, recipe, device, snapshots=record_dynamics, **kwargs)
        return run(model, x, y, recipe, device, record_dynamics=record_dynamics, **kwargs)
