"""`sgd_unroll`: single-gradient unlearning (Thudi et al., "Unrolling SGD", EuroS&P 2022); no loop.

θ_u = θ_T + (epochs in which x* was seen)·η·∇L(θ_0; S): the forgotten points' gradient taken at
the initial weights θ_0 is added back, once for every epoch of training (our trainer shows every
sample once per epoch, so the count is the recipe's epochs).

Scaling: each forgotten sample x* entered training as one term of a batch-mean loss, so its
gradient reached each step divided by the batch size B. We therefore use
∇L(θ_0; S) = Σ_{x* ∈ S} ∇ℓ(θ_0; x*) / B with the recipe's B (not the mean over S, which would
make the correction independent of |S|). ℓ is the training loss: cross-entropy, plus the SD term
when the model was trained with --sd-lambda. Momentum, weight decay and a cosine schedule are
ignored, as in the paper's first-order argument; η is the recipe's base learning rate.

It needs θ_0 and the recipe of the training run (`bind`, given them by the pipeline; `set_origin`
takes a state dict and a recipe's `as_meta()` dict). The correction is defined by
the training run, so `epochs`, `lr` and `batch_size` are always the recipe's: the parameters are
accepted (every method takes the same form; their defaults are the default recipe's) and replaced,
so a run's record shows the values actually used.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from ..runtime.devices import batches
from ..runtime.progress import no_progress
from ..training import Recipe
from ..training.losses import training_loss
from .base import Method, ParamError, hide, with_defaults

RECIPE_KEYS = ("epochs", "lr", "batch_size")


def forget_gradient(model0: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, sd_lambda: float = 0.0,
                    chunk: int = 1024) -> list[torch.Tensor]:
    """Σ_{x* ∈ S} ∇ℓ(θ_0; x*) / B: the gradient, at the model's weights, of the forgotten
    samples' summed training loss divided by the training batch size B — each sample's share of
    the batch-mean gradient it contributed to at every step. One trainable-parameter-aligned
    list; the samples go through in chunks in training mode (batch norm then uses each chunk's
    statistics, as the official code feeds the forgotten batch)."""
    params = [p for p in model0.parameters() if p.requires_grad]
    device = params[0].device
    model0.train()
    total = [torch.zeros_like(p) for p in params]
    for xb, yb in zip(batches(x, device, chunk), batches(y, device, chunk)):
        loss = training_loss(model0(xb), yb, sd_lambda, reduction="sum") / batch_size
        for t, g in zip(total, torch.autograd.grad(loss, params)):
            t.add_(g)
    return total


def flat_norm(tensors: Iterable[torch.Tensor]) -> float:
    """‖·‖₂ of the tensors taken as one vector, in float64 on the CPU (Apple's MPS has no float64)."""
    return float(torch.linalg.vector_norm(torch.cat([t.detach().reshape(-1).cpu().double() for t in tensors])))


class SgdUnroll(Method):
    name = "sgd_unroll"
    summary = ("Single-gradient unlearning (Unrolling SGD): add back epochs·lr·(gradient of the forget set at the "
               "initial weights)/batch size; one gradient, no loop. Needs a model trained here (its initial weights).")
    sweepable = False
    needs = ("init", "recipe")
    # Always the recipe's (`set_origin`): accepted, and left out of forms.
    spec = hide(with_defaults(Method.spec, **{k: v for k, v in Recipe().as_meta().items() if k in Method.spec}),
                "epochs", "lr", "seed")

    def __init__(self, **params):
        super().__init__(**params)
        self.theta0: dict[str, torch.Tensor] | None = None
        self.sd_lambda = 0.0

    def set_origin(self, theta0: dict[str, torch.Tensor], recipe: dict) -> None:
        """θ_0 (the initial state dict) and the training recipe (a Recipe's `as_meta()` dict)."""
        self.theta0 = theta0
        self.sd_lambda = float(recipe.get("sd_lambda", 0.0))
        for key in RECIPE_KEYS:
            if key in recipe:
                self.params[key] = type(self.params[key])(recipe[key])

    def bind(self, init: dict[str, torch.Tensor], recipe: Recipe) -> None:
        self.set_origin(init, recipe.as_meta())

    def unlearn(self, model, ds, retain_ids, forget_ids, device, progress=no_progress):
        p = self.params
        if self.theta0 is None:
            raise ParamError("sgd_unroll needs the model's initial weights: bind it to a trained model record")
        forget_ids = np.asarray(forget_ids, dtype=np.int64)
        if len(forget_ids) == 0:
            raise ParamError("sgd_unroll needs a non-empty forget set")
        model.to(device)
        model0 = copy.deepcopy(model)
        model0.load_state_dict(self.theta0)
        progress(0.2, "sgd_unroll: gradient of the forget set at the initial weights")
        grads = forget_gradient(model0, ds.x_train[forget_ids], ds.y_train[forget_ids], p["batch_size"],
                                          self.sd_lambda)
        grad_norm = flat_norm(grads)
        if not np.isfinite(grad_norm):
            raise ParamError("sgd_unroll: the forget set's gradient at the initial weights is NaN or infinite")
        params = [q for q in model.parameters() if q.requires_grad]
        with torch.no_grad():
            torch._foreach_add_(params, grads, alpha=p["epochs"] * p["lr"])
        self.report = {"epochs_seen": p["epochs"], "lr": p["lr"], "grad_norm": grad_norm}
        progress(1.0, f"sgd_unroll: added {p['epochs']}·{p['lr']:g}·∇L(θ_0; S) (‖∇L‖ = {grad_norm:.3g})")
        return model
