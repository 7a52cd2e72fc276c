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
from dataclasses import dataclass, replace
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


@dataclass(frozen=True)
class Param:
    """One parameter of a method: its default (which gives its type: int, float or str), what a
    form calls it and says about it, the values it may take, and the values a sweep tries.
    Validation (`Method.__init__`), the Unlearn page's form, sweeps and presets all read these."""

    default: int | float | str
    label: str = ""  # what a form calls it; the parameter's name when empty
    help: str = ""
    low: float = 0.0  # the least value (no method has a use for negative ones)
    high: float | None = None  # the most value (1 for a share or a 0/1 switch)
    positive: bool = False  # strictly above 0
    choices: tuple[str, ...] = ()  # a string parameter's values
    sweep: tuple = ()  # the values a sweep's grid tries: a method's one knob besides lr and epochs
    hidden: bool = False  # a form leaves it out: rarely changed, or accepted but unused by this method
    switch: bool = False  # 0 or 1: a form shows a checkbox

    def check(self, method: str, key: str, value):
        """The value, of the default's type, or ParamError in one line."""
        if self.choices:
            if value not in self.choices:
                raise ParamError(f"{method}: {key} must be one of {', '.join(self.choices)}, got {value!r}")
            return value
        whole = isinstance(self.default, int)
        try:
            if isinstance(value, (bool, str)) or (whole and float(value) != int(value)):
                raise ValueError
            value = type(self.default)(value)
        except (TypeError, ValueError, OverflowError):
            raise ParamError(f"{method}: {key} must be {'a whole number' if whole else 'a number'}, got {value!r}") from None
        if self.high is not None and not self.low <= value <= self.high:  # NaN fails too
            bounds = f"between {self.low:g} and {self.high:g}"
            raise ParamError(f"{method}: {key} must be {bounds}, got {value}")
        if self.positive and not (value > 0 and math.isfinite(value)):
            raise ParamError(f"{method}: {key} must be above 0, got {value}")
        if not (value >= self.low and math.isfinite(value)):
            raise ParamError(f"{method}: {key} must be at least {self.low:g}" if self.low > 0 else
                             f"{method}: {key} must be a finite number, at least 0; got {value}")
        return value


def with_defaults(spec: dict[str, Param], **defaults) -> dict[str, Param]:
    """`spec` with other defaults for some of its parameters (a method's published settings)."""
    return {k: replace(p, default=defaults.pop(k)) if k in defaults else p for k, p in spec.items()} | {
        k: Param(v) for k, v in defaults.items()}


def hide(spec: dict[str, Param], *names: str) -> dict[str, Param]:
    """`spec` with these parameters left out of forms (accepted, unused by the method)."""
    return {k: replace(p, hidden=True) if k in names else p for k, p in spec.items()}


class Method:
    """An unlearning method: its parameters (`spec`) plus a loss per mini-batch on the shared loop,
    or its own `unlearn`.

    `drive` names the set whose batches make up an epoch ("retain" or "forget"); `cycle`, when
    set, names the other set, whose batches are fed alongside and restart when it runs out.
    `spec` declares every parameter (`Param`): its default, label, help, range or choices, and the
    values a sweep tries for the one knob besides lr and epochs; `sweepable` says whether a sweep's
    grid of lr × epochs means anything for it. `from_init` methods must be handed the model at its
    *initial* weights (the caller loads them). `needs` names what `bind` must be given before
    `unlearn` (NEEDS), `optional` those of them a model may lack (`bind` then gets None).
    `whole_classes` methods forget whole classes only. What a run reports beyond the shared
    metrics a method puts in `report` (the run's details) and `run_metrics` (joined to its
    metrics); `preview` says before a run what it will do.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    drive: ClassVar[str] = "retain"
    cycle: ClassVar[str | None] = None
    sweepable: ClassVar[bool] = True
    from_init: ClassVar[bool] = False
    needs: ClassVar[tuple[str, ...]] = ()
    optional: ClassVar[tuple[str, ...]] = ()
    whole_classes: ClassVar[bool] = False
    spec: ClassVar[dict[str, Param]] = {
        "epochs": Param(5, "epochs", "Passes over the set that drives an epoch.", low=1),
        "lr": Param(0.01, "lr", "SGD step size.", positive=True),
        "momentum": Param(0.9, "momentum", "SGD momentum.", hidden=True),
        "weight_decay": Param(5e-4, "weight decay", "L2 penalty of SGD.", hidden=True),
        "batch_size": Param(256, "batch size", "Samples per step.", low=1, hidden=True),
        "seed": Param(0, "seed", "Seeds the batch order and any random draw.", hidden=True),
    }
    # Derived from `spec` for each class (`__init_subclass__`): the numeric defaults, the knob a
    # sweep varies and its values.
    defaults: ClassVar[dict] = {}
    knob: ClassVar[str | None] = None
    knob_values: ClassVar[tuple] = ()

    mask: list[torch.Tensor] | None = None  # per trainable parameter, set by `prepare`
    frozen_mask: bool = False  # the weights `mask` zeroes stay exactly where they started (SalUn)
    amp: bool = False  # mixed precision, as the model was trained (the pipeline sets it from its recipe)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._derive()

    @classmethod
    def _derive(cls) -> None:
        cls.defaults = {k: p.default for k, p in cls.spec.items() if not p.choices and k != "seed"}
        swept = [k for k, p in cls.spec.items() if p.sweep]
        if len(swept) > 1:
            raise TypeError(f"{cls.__name__}: a sweep varies one knob besides lr and epochs; {swept} declare sweep values")
        cls.knob = swept[0] if swept else None
        cls.knob_values = cls.spec[swept[0]].sweep if swept else ()

    def __init__(self, **params):
        self.given = frozenset(params)  # what was asked for (`unlearning.make` narrows it to the user's)
        self.params = self.check(params)
        self.report: dict = {}  # the run's details (its record's `details`)
        self.run_metrics: dict = {}  # figures joined to the run's metrics

    @classmethod
    def check(cls, params: dict) -> dict:
        """Every parameter's value (the given ones checked against `spec`, the rest at their
        defaults), or ParamError in one line."""
        unknown = set(params) - set(cls.spec)
        if unknown:
            raise ParamError(f"{cls.name} has no parameter {sorted(unknown)[0]!r}; it takes {', '.join(cls.spec)}")
        return {k: p.check(cls.name, k, params.get(k, p.default)) for k, p in cls.spec.items()}

    @classmethod
    def preview(cls, needed: dict, forget_ids, params: dict) -> dict | None:
        """What a run on this forget set will do, known before it runs: {"text", "warnings"} for
        the Unlearn page, or None. `needed` holds what `needs` names, loaded from the model."""
        return None

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


Method._derive()
