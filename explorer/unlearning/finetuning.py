"""Methods that only keep training on the retain set."""

from __future__ import annotations

import torch.nn.functional as F

from .base import Method


class Finetune(Method):
    name = "finetune"
    summary = "Keep training on the retain set with cross-entropy; forgetting comes from interference."
    defaults = {**Method.defaults, "epochs": 10, "lr": 0.01}

    def loss(self, model, retain, forget, step):
        return F.cross_entropy(model(retain.x), retain.y)
