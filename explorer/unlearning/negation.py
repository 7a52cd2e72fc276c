"""Gradient ascent on the forget set, alone or balanced against the retain set."""

from __future__ import annotations

import torch.nn.functional as F

from .base import Method, Param, with_defaults


class NegGrad(Method):
    name = "neggrad"
    summary = "Gradient ascent: raise the cross-entropy on the forget set."
    drive = "forget"
    spec = with_defaults(Method.spec, epochs=5, lr=1e-4)

    def loss(self, model, retain, forget, step):
        return -F.cross_entropy(model(forget.x), forget.y)


class NegGradPlus(Method):
    name = "neggrad_plus"
    summary = "Descend on the retain set while ascending on the forget set, weighted α : 1 − α."
    cycle = "forget"  # an epoch is a pass over R; S is much smaller, so its batches repeat
    spec = {**with_defaults(Method.spec, epochs=5, lr=0.01),
            "alpha": Param(0.99, "α", "Weight of the retain set's descent; 1 − α weighs the forget set's ascent.",
                           high=1, sweep=(0.9, 0.95, 0.99))}

    def loss(self, model, retain, forget, step):
        a = self.params["alpha"]
        return a * F.cross_entropy(model(retain.x), retain.y) - (1 - a) * F.cross_entropy(model(forget.x), forget.y)
