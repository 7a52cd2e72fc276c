"""Methods that only train on the retain set: fine-tuning, its sparse variant, and retraining."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..training import Recipe
from .base import Method


class Finetune(Method):
    name = "finetune"
    summary = "Keep training on the retain set with cross-entropy; forgetting comes from interference."
    defaults = {**Method.defaults, "epochs": 10, "lr": 0.01}

    def loss(self, model, retain, forget, step):
        return F.cross_entropy(model(retain.x), retain.y)


class L1Sparse(Method):
    name = "l1_sparse"
    summary = "Fine-tune on the retain set with an L1 penalty on the weights that fades to zero over the epochs."
    knob = "alpha"
    knob_values = (1e-4, 5e-4, 2e-3)
    defaults = {**Method.defaults, "epochs": 10, "lr": 0.01, "alpha": 5e-4}

    def loss(self, model, retain, forget, step):
        alpha = self.params["alpha"] * (1 - step.epoch / step.epochs)  # α_t = α(1 − e/E)
        l1 = torch.stack([q.abs().sum() for q in model.parameters()]).sum()
        return F.cross_entropy(model(retain.x), retain.y) + alpha * l1


class Retrain(Method):
    """The oracle. The caller must hand it the model at its initial weights (`from_init`); with
    the model's own recipe and seed it reproduces `explorer.training.fit` on the retain set."""

    name = "retrain"
    summary = "The oracle: train from the original's initial weights on the retain set alone."
    from_init = True
    sweepable = False  # the oracle itself: nothing to tune
    needs = optional = ("recipe",)  # an imported model has none: then the default recipe's settings
    defaults = {k: v for k, v in Recipe().as_meta().items() if k in Method.defaults}  # the training recipe's

    def bind(self, recipe: Recipe | None = None) -> None:
        """Parameters the user did not set follow the model's own recipe (checked again, as if asked for)."""
        if recipe is not None:
            user = {k: self.params[k] for k in self.given}
            Method.__init__(self, **{**{k: v for k, v in recipe.as_meta().items() if k in self.params}, **user})
            self.given = frozenset(user)

    def loss(self, model, retain, forget, step):
        return F.cross_entropy(model(retain.x), retain.y)
