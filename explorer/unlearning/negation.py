"""Gradient ascent on the forget set, alone or balanced against the retain set."""

from __future__ import annotations

import torch.nn.functional as F

from .base import Method


class NegGrad(Method):
    name = "neggrad"
    summary = "Gradient ascent: raise the cross-entropy on the forget set."
    drive = "forget"
    defaults = {**Method.defaults, "epochs": 5, "lr": 1e-4}

    def loss(self, model, retain, forget, step):
        return -F.cross_entropy(model(forget.x), forget.y)


class NegGradPlus(Method):
    name = "neggrad_plus"
    summary = "Descend on the retain set while ascending on the forget set, weighted α : 1 − α."
    cycle = "forget"  # an epoch is a pass over R; S is much smaller, so its batches repeat
    knob = "alpha"
    knob_values = (0.9, 0.95, 0.99)
    fractions = ("alpha",)
    defaults = {**Method.defaults, "epochs": 5, "lr": 0.01, "alpha": 0.99}

    def loss(self, model, retain, forget, step):
        a = self.params["alpha"]
        return a * F.cross_entropy(model(retain.x), retain.y) - (1 - a) * F.cross_entropy(model(forget.x), forget.y)
