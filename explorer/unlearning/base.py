"""The one loop every unlearning method shares; a method supplies its per-batch loss.

A few small hooks cover what a loss alone cannot say: `prepare` (before the loop: a teacher, a
saliency mask, relabeled data), `epoch_sets` (at the start of each epoch: labels drawn afresh),
`mask` (gradients multiplied by it before each step; with `frozen_mask` the weights it masks out
are also put back after each step and their momentum zeroed), `phases` (which set drives each
pass of an epoch), `cycle` (a second set fed alongside the driver) and `batch_size` (per set).

What a method needs beyond the model and the data it declares in `needs` (the names in NEEDS);
explorer.pipeline loads them from the model's record and hands them to `bind`. No method sees a
workspace.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..runtime import devices, optim, precision
from ..runtime.progress import Progress, no_progress


class ParamError(UserError):
    """Unknown or out-of-range method parameters; one-line message."""


# What a method may need of the model it unlearns, by the name it declares in `needs`.
NEEDS = {
    "recipe": "the recipe the model was trained with (explorer.training.Recipe)",
    "init": "θ_0, the state dict the model's training started from",
    "codes": "the model's mnemonic codes, (classes, C, H, W)",
    "blocks": "the model's stored blocks M_0 … M_B (explorer.store.block_file.BlockFile)",
    "score": "(name, oriented values, score-set id) of the memorization score its `score` parameter names",
}


@dataclass
class Batch:
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, ids) -> Batch:
        return Batch(self.x[ids], self.y[ids])


@dataclass
class Step:
    epoch: int
    epochs: int
    num_classes: int


class Method:
    """An unlearning method: defaults for the shared loop plus a loss per mini-batch.

    `drive` names the set whose batches make up an epoch ("retain" or "forget"); `cycle`, when
    set, names the other set, whose batches are fed alongside and restart when it runs out.
    `fractions` are parameters that must lie in [0, 1]; `knob` is the one hyperparameter besides
    lr and epochs that a sweep should vary, over `knob_values`; `sweepable` says whether a sweep's
    grid of lr × epochs means anything for it; `hidden` are parameters a form need not offer (the
    rarely changed ones, and those a method accepts but does not use). `from_init` methods must
    be handed the model at its *initial* weights (the caller loads them). `needs` names what
    `bind` must be given before `unlearn` (NEEDS), `optional` those of them a model may lack
    (`bind` then gets None).
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    drive: ClassVar[str] = "retain"
    cycle: ClassVar[str | None] = None
    knob: ClassVar[str | None] = None
    knob_values: ClassVar[tuple[float, ...]] = ()  # the knob's values in a sweep's grid
    sweepable: ClassVar[bool] = True
    hidden: ClassVar[tuple[str, ...]] = ("momentum", "weight_decay", "batch_size")
    from_init: ClassVar[bool] = False
    needs: ClassVar[tuple[str, ...]] = ()
    optional: ClassVar[tuple[str, ...]] = ()
    fractions: ClassVar[tuple[str, ...]] = ()
    rules: ClassVar[tuple[str, ...]] = ()  # choices of a string `rule` parameter, the first the default
    rule_label: ClassVar[str] = "rule"  # what a form calls the rule, and what it says about the choices
    rule_help: ClassVar[str] = ""
    # Further string parameters, each with its choices (the first the default), what a form calls
    # it and says about it: e.g. DeepObliviate's `requests`.
    choices: ClassVar[dict[str, tuple[str, ...]]] = {}
    choice_labels: ClassVar[dict[str, str]] = {}
    choice_help: ClassVar[dict[str, str]] = {}
    defaults: ClassVar[dict] = {"epochs": 5, "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 256}

    mask: list[torch.Tensor] | None = None  # per trainable parameter, set by `prepare`
    frozen_mask: bool = False  # the weights `mask` zeroes stay exactly where they started (SalUn)
    amp: bool = False  # mixed precision, as the model was trained (the pipeline sets it from its recipe)

    def __init__(self, **params):
        self.given = frozenset(params)  # what was asked for (`unlearning.make` narrows it to the user's)
        params = dict(params)
        rule = params.pop("rule", self.rules[0]) if self.rules else None
        picked = {key: params.pop(key, options[0]) for key, options in self.choices.items()}
        defaults = {**self.defaults, "seed": 0}
        unknown = set(params) - set(defaults)
        if unknown:
            takes = [*defaults, *(["rule"] if self.rules else []), *self.choices]
            raise ParamError(f"{self.name} has no parameter {sorted(unknown)[0]!r}; it takes {', '.join(takes)}")
        self.params = {}
        for key, default in defaults.items():  # each value takes its default's type, or is refused
            value = params.get(key, default)
            try:
                if isinstance(value, bool) or (isinstance(default, int) and float(value) != int(value)):
                    raise ValueError
                self.params[key] = type(default)(value)
            except (TypeError, ValueError, OverflowError):
                kind = "a whole number" if isinstance(default, int) else "a number"
                raise ParamError(f"{self.name}: {key} must be {kind}, got {value!r}") from None
        for key in ("epochs", "batch_size"):
            if self.params[key] < 1:
                raise ParamError(f"{self.name}: {key} must be at least 1")
        if not (self.params["lr"] > 0 and math.isfinite(self.params["lr"])):
            raise ParamError(f"{self.name}: lr must be a positive number")
        if self.params["momentum"] < 0 or self.params["weight_decay"] < 0:
            raise ParamError(f"{self.name}: momentum and weight_decay cannot be negative")
        for key in self.fractions:
            if not 0 <= self.params[key] <= 1:
                raise ParamError(f"{self.name}: {key} must be between 0 and 1, got {self.params[key]}")
        for key, value in self.params.items():  # no method has a use for negative or infinite values
            if not (value >= 0 and math.isfinite(value)):
                raise ParamError(f"{self.name}: {key} must be a finite number, at least 0; got {value}")
        if self.rules:  # the one string parameter a method may have
            if rule not in self.rules:
                raise ParamError(f"{self.name}: rule must be one of {', '.join(self.rules)}, got {rule!r}")
            self.params["rule"] = rule
        for key, value in picked.items():
            if value not in self.choices[key]:
                raise ParamError(f"{self.name}: {key} must be one of {', '.join(self.choices[key])}, got {value!r}")
            self.params[key] = value

    def bind(self, **needed) -> None:
        """Take what `needs` names, loaded from the model by the pipeline."""

    # -- what a method supplies ------------------------------------------------------------------

    def loss(self, model: nn.Module, retain: Batch | None, forget: Batch | None, step: Step) -> torch.Tensor:
        raise NotImplementedError

    def prepare(self, model: nn.Module, sets: dict[str, Batch], num_classes: int,
                generator: torch.Generator) -> dict[str, Batch]:
        """Runs once before the loop; returns the sets the loop draws batches from."""
        return sets

    def epoch_sets(self, epoch: int, sets: dict[str, Batch], num_classes: int,
                   generator: torch.Generator) -> dict[str, Batch]:
        """Runs at the start of each epoch; returns the sets this epoch draws batches from."""
        return sets

    def phases(self, epoch: int) -> tuple[str, ...]:
        """The sets driving this epoch's passes, in order; usually just `drive`."""
        return (self.drive,)

    def batch_size(self, name: str) -> int:
        """The mini-batch size of the set `name` ("retain" or "forget")."""
        return self.params["batch_size"]

    # -- the loop --------------------------------------------------------------------------------

    def unlearn(self, model: nn.Module, ds, retain_ids: np.ndarray, forget_ids: np.ndarray,
                device: torch.device, progress: Progress = no_progress) -> nn.Module:
        """Update `model` in place and return it. A loss or weights turning NaN or infinite raise
        ParamError at the end of that epoch, before anything is returned for publishing."""
        p = self.params
        model.to(device).train()
        sets = {
            "retain": Batch(ds.x_train[retain_ids].to(device), ds.y_train[retain_ids].to(device)),
            "forget": Batch(ds.x_train[forget_ids].to(device), ds.y_train[forget_ids].to(device)),
        }
        g = torch.Generator().manual_seed(p["seed"])
        sets = self.prepare(model, sets, ds.num_classes, g)
        params = [q for q in model.parameters() if q.requires_grad]
        net = precision.wrap(model, device, self.amp)  # the model itself unless amp: float32 outputs of bf16 passes
        opt = optim.SGD(params, lr=p["lr"], momentum=p["momentum"], weight_decay=p["weight_decay"])
        epochs = p["epochs"]
        cycled = {"perm": None, "at": 0}  # the cycled set's order persists across epochs
        # Weight decay and momentum would still move weights whose gradient is masked to 0: a frozen
        # mask puts them back after every step (exactly: `where`, not arithmetic) and clears their momentum.
        frozen = None
        if self.mask is not None and self.frozen_mask:
            frozen = ([m.bool() for m in self.mask], [q.detach().clone() for q in params])

        def batches(drive: str):
            for name in filter(None, (drive, self.cycle)):
                if len(sets[name]) == 0:
                    raise ParamError(f"{self.name} needs a non-empty {name} set")
            # Orders are drawn on the CPU (seeded) and sent without a host sync: a cycled set restarts mid-epoch.
            bs = self.batch_size(drive)
            perm = devices.to_device(torch.randperm(len(sets[drive]), generator=g), device)
            for i in range(0, len(perm), bs):
                out = {drive: sets[drive][perm[i : i + bs]]}
                if self.cycle and self.cycle != drive:
                    m, cs = len(sets[self.cycle]), self.batch_size(self.cycle)
                    if cycled["perm"] is None or cycled["at"] >= m:
                        cycled["perm"], cycled["at"] = devices.to_device(torch.randperm(m, generator=g), device), 0
                    out[self.cycle] = sets[self.cycle][cycled["perm"][cycled["at"] : cycled["at"] + cs]]
                    cycled["at"] += cs
                yield out

        for epoch in range(epochs):
            step = Step(epoch, epochs, ds.num_classes)
            sets = self.epoch_sets(epoch, sets, ds.num_classes, g)
            loss_sum = torch.zeros((), device=device)  # checked once per epoch: no host sync per batch
            for drive in self.phases(epoch):
                for b in batches(drive):
                    loss = self.loss(net, b.get("retain"), b.get("forget"), step)
                    opt.zero_grad()
                    loss.backward()
                    opt.step(None if self.mask is None else
                             [q.grad if q.grad is None else q.grad * m for q, m in zip(params, self.mask)])
                    if frozen is not None:
                        _restore_frozen(params, opt, *frozen)
                    loss_sum += loss.detach()
            # A non-finite loss or weight cannot turn finite again in a sum, so one check suffices.
            weights = torch.stack(torch._foreach_norm(params)).sum() if params else loss_sum
            if not torch.isfinite(loss_sum + weights):
                raise ParamError(f"{self.name} diverged in epoch {epoch + 1} (loss or weights became NaN or "
                                 f"infinite); use a lower lr than {p['lr']:g}")
            progress((epoch + 1) / epochs, f"{self.name}: epoch {epoch + 1}/{epochs}")
        return model


@torch.no_grad()
def _restore_frozen(params: list[torch.Tensor], opt: optim.SGD, keep: list[torch.Tensor],
                    start: list[torch.Tensor]) -> None:
    """Weights outside `keep` back to their `start` values, bit for bit, and their momentum to 0."""
    for i, (q, k, w0) in enumerate(zip(params, keep, start)):
        q.copy_(torch.where(k, q, w0))
        if opt.buffers[i] is not None:
            opt.buffers[i].mul_(k)
