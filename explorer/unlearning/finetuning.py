"""Methods that only train on the retain set: fine-tuning, its sparse variant, and retraining."""

from __future__ import annotations

from dataclasses import asdict, replace

import numpy as np
import torch
import torch.nn.functional as F

from .. import training
from ..runtime.progress import no_progress
from ..training import Recipe
from .base import Method, Param, ParamError, hide, with_defaults


class Finetune(Method):
    name = "finetune"
    summary = "Keep training on the retain set with cross-entropy; forgetting comes from interference."
    spec = with_defaults(Method.spec, epochs=10, lr=0.01)

    def loss(self, model, retain, forget, step):
        return F.cross_entropy(model(retain.x), retain.y)


class L1Sparse(Method):
    name = "l1_sparse"
    summary = "Fine-tune on the retain set with an L1 penalty on the weights that fades to zero over the epochs."
    spec = {**with_defaults(Method.spec, epochs=10, lr=0.01),
            "alpha": Param(5e-4, "α", "Weight of the L1 penalty on the weights; it fades to 0 over the epochs.",
                           sweep=(1e-4, 5e-4, 2e-3))}

    def loss(self, model, retain, forget, step):
        alpha = self.params["alpha"] * (1 - step.epoch / step.epochs)  # α_t = α(1 − e/E)
        l1 = torch.stack([q.abs().sum() for q in model.parameters()]).sum()
        return F.cross_entropy(model(retain.x), retain.y) + alpha * l1


class Retrain(Method):
    """The oracle. The caller must hand it the model at its initial weights (`from_init`). It
    trains with the model's whole recipe (schedule, SD loss, mnemonic codes, blocks, precision),
    not only its lr and epochs, as the oracle does (explorer.pipeline.oracle); the parameters the
    user sets replace the recipe's.

    `rule` is the batch order: "replay" (the default) replays the original run's batches with
    everything outside the retain set taken out (`explorer.training.loop`), the retrain Thudi et
    al.'s verification error is defined against, and the oracle's own; "fresh" shuffles the retain
    set anew, as `explorer.training.fit` would train a new model on it (the variant before
    replaying, and what most unlearning papers' retrain does)."""

    name = "retrain"
    summary = "The oracle: train from the original's initial weights, with its whole recipe, on the retain set alone."
    from_init = True
    sweepable = False  # the oracle itself: nothing to tune
    needs = optional = ("recipe",)  # an imported model has none: then the default recipe's settings
    # The training recipe's settings; a form leaves them to the model's own recipe.
    spec = {**hide(with_defaults(Method.spec, **{k: v for k, v in Recipe().as_meta().items() if k in Method.spec}),
                   "epochs", "lr", "seed"),
            "rule": Param("replay", "Batch order",
                          "replay (default): the original run's batches minus the forget set, as the oracle trains "
                          "— the retrain the verification error means; fresh: a new shuffle of the retain set.",
                          choices=("replay", "fresh"))}
    recipe: Recipe | None = None

    def bind(self, recipe: Recipe | None = None) -> None:
        """Parameters the user did not set follow the model's own recipe (checked again, as if asked for)."""
        self.recipe = recipe
        if recipe is not None:
            user = {k: self.params[k] for k in self.given}
            self.params = self.check({**{k: v for k, v in recipe.as_meta().items() if k in self.spec}, **user})

    def training_recipe(self) -> Recipe:
        """The recipe retraining follows: the model's (or the default one), with this method's
        epochs, lr, momentum, weight decay, batch size and seed."""
        base = self.recipe or Recipe()
        return replace(base, **{k: self.params[k] for k in asdict(base) if k in self.params})

    def unlearn(self, model, ds, retain_ids, forget_ids, device, progress=no_progress):
        recipe = self.training_recipe()
        retain_ids = np.asarray(retain_ids, dtype=np.int64)
        if len(retain_ids) == 0:
            raise ParamError("retrain needs a non-empty retain set")
        report = lambda f, msg: progress(f, f"retrain: {msg}")  # noqa: E731
        if self.params["rule"] == "replay":  # everything outside R is dropped, also earlier RUM groups
            drop = np.setdiff1d(np.arange(ds.n_train), retain_ids)
            training.fit(model, ds.x_train, ds.y_train, recipe, device, record_dynamics=False, drop=drop,
                         progress=report)
        else:
            index = torch.as_tensor(retain_ids)
            training.fit(model, ds.x_train[index], ds.y_train[index], recipe, device, record_dynamics=False,
                         progress=report)
        weights = [q.detach() for q in model.parameters()]
        if weights and not torch.isfinite(torch.stack(torch._foreach_norm(weights)).sum()):
            raise ParamError(f"retrain diverged (weights became NaN or infinite); use a lower lr than "
                             f"{self.params['lr']:g}")
        return model
