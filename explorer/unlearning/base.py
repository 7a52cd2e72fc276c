"""The one loop every unlearning method shares; a method supplies its per-batch loss."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from .. import optim
from ..errors import UserError
from ..training import Progress, _no_progress


class ParamError(UserError):
    """Unknown or out-of-range method parameters; one-line message."""


@dataclass
class Batch:
    x: torch.Tensor
    y: torch.Tensor


@dataclass
class Step:
    epoch: int
    epochs: int
    num_classes: int


class Method:
    """An unlearning method: defaults for the shared loop plus a loss per mini-batch.

    `drive` names the set whose batches make up an epoch ("retain" or "forget"); the other set,
    when the method uses it, is cycled alongside.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    drive: ClassVar[str] = "retain"
    uses: ClassVar[tuple[str, ...]] = ("retain",)
    defaults: ClassVar[dict] = {"epochs": 5, "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 64}

    def __init__(self, **params):
        defaults = {**self.defaults, "seed": 0}
        unknown = set(params) - set(defaults)
        if unknown:
            raise ParamError(f"{self.name} has no parameter {sorted(unknown)[0]!r}; it takes {', '.join(defaults)}")
        self.params = {}
        for key, default in defaults.items():  # each value takes its default's type, or is refused
            value = params.get(key, default)
            try:
                if isinstance(value, bool) or (isinstance(default, int) and float(value) != int(value)):
                    raise ValueError
                self.params[key] = type(default)(value)
            except (TypeError, ValueError):
                kind = "a whole number" if isinstance(default, int) else "a number"
                raise ParamError(f"{self.name}: {key} must be {kind}, got {value!r}") from None
        for key in ("epochs", "batch_size"):
            if self.params[key] < 1:
                raise ParamError(f"{self.name}: {key} must be at least 1")
        if not (self.params["lr"] > 0 and math.isfinite(self.params["lr"])):
            raise ParamError(f"{self.name}: lr must be a positive number")
        if self.params["momentum"] < 0 or self.params["weight_decay"] < 0:
            raise ParamError(f"{self.name}: momentum and weight_decay cannot be negative")

    def loss(self, model: nn.Module, retain: Batch | None, forget: Batch | None, step: Step) -> torch.Tensor:
        raise NotImplementedError

    def unlearn(self, model: nn.Module, ds, retain_ids: np.ndarray, forget_ids: np.ndarray,
                device: torch.device, progress: Progress = _no_progress) -> nn.Module:
        """Update `model` in place and return it."""
        p = self.params
        model.to(device).train()
        sets = {
            "retain": (ds.x_train[retain_ids].to(device), ds.y_train[retain_ids].to(device)),
            "forget": (ds.x_train[forget_ids].to(device), ds.y_train[forget_ids].to(device)),
        }
        driver = sets[self.drive]
        other = next((s for s in self.uses if s != self.drive), None)
        opt = optim.SGD(model.parameters(), lr=p["lr"], momentum=p["momentum"], weight_decay=p["weight_decay"])
        g = torch.Generator().manual_seed(p["seed"])
        bs, epochs = p["batch_size"], p["epochs"]
        n = len(driver[1])
        cursor, other_perm = 0, None
        for epoch in range(epochs):
            step = Step(epoch, epochs, ds.num_classes)
            perm = torch.randperm(n, generator=g).to(device)
            for i in range(0, n, bs):
                ids = perm[i : i + bs]
                batches = {self.drive: Batch(driver[0][ids], driver[1][ids])}
                if other is not None:
                    m = len(sets[other][1])
                    if other_perm is None or cursor >= m:  # cycle the smaller set
                        other_perm, cursor = torch.randperm(m, generator=g).to(device), 0
                    oids = other_perm[cursor : cursor + bs]
                    cursor += bs
                    batches[other] = Batch(sets[other][0][oids], sets[other][1][oids])
                loss = self.loss(model, batches.get("retain"), batches.get("forget"), step)
                opt.zero_grad()
                loss.backward()
                opt.step()
            progress((epoch + 1) / epochs, f"{self.name}: epoch {epoch + 1}/{epochs}")
            if not math.isfinite(loss.item()):
                raise ParamError(f"{self.name} diverged (loss {loss.item()}); lower lr")
        return model
