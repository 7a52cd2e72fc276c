"""Train on the forget set with wrong labels: everywhere (random_label) or only in the weights
that matter most to it (salun)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Batch, Method, ParamError


def other_labels(y: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """Each label replaced by a uniformly random *different* one, for any class count."""
    if num_classes < 2:
        raise ParamError("relabeling needs at least two classes")
    offsets = torch.randint(1, num_classes, y.shape, generator=generator).to(y.device)  # never 0
    return (y + offsets) % num_classes


def saliency_mask(grads: list[torch.Tensor], gamma: float) -> list[torch.Tensor]:
    """1 for the fraction γ of entries with the largest |gradient| across all tensors, else 0.

    One threshold for the whole model (as SalUn does), not one per tensor: the layers that matter
    most to the forget set get most of the budget, instead of every layer changing a fraction γ."""
    flat = torch.cat([g.abs().flatten() for g in grads])
    keep = torch.zeros_like(flat)
    keep[flat.argsort(descending=True)[: round(gamma * len(flat))]] = 1  # sort, not topk: MPS caps k
    return [m.view_as(g) for m, g in zip(keep.split([g.numel() for g in grads]), grads)]


class RandomLabel(Method):
    name = "random_label"
    summary = "Train on the forget set relabeled with random wrong classes, mixed with the retain set."
    defaults = {**Method.defaults, "epochs": 10, "lr": 0.1}

    def prepare(self, model, sets, num_classes, generator):
        r, f = sets["retain"], sets["forget"]
        wrong = other_labels(f.y, num_classes, generator)  # drawn once, as the papers do
        # The loop then trains on S̃ ∪ R as one shuffled set, with plain cross-entropy.
        return {"retain": Batch(torch.cat([r.x, f.x]), torch.cat([r.y, wrong])), "forget": f}

    def loss(self, model, retain, forget, step):
        return F.cross_entropy(model(retain.x), retain.y)


class SalUn(RandomLabel):
    name = "salun"
    summary = "Random-label unlearning that updates only the weights most salient to the forget set."
    knob = "gamma"
    knob_values = (0.3, 0.5, 0.7)
    fractions = ("gamma",)
    defaults = {**RandomLabel.defaults, "gamma": 0.5}

    def prepare(self, model, sets, num_classes, generator):
        params = [q for q in model.parameters() if q.requires_grad]
        forget, bs = sets["forget"], self.params["batch_size"]
        model.eval()  # one measuring pass: no batch-norm statistics should move
        for q in params:
            q.grad = None
        for i in range(0, len(forget), bs):  # gradient of the summed CE over S, batch by batch
            F.cross_entropy(model(forget.x[i : i + bs]), forget.y[i : i + bs], reduction="sum").backward()
        grads = [torch.zeros_like(q) if q.grad is None else q.grad for q in params]
        self.mask = saliency_mask(grads, self.params["gamma"])
        for q in params:
            q.grad = None
        model.train()
        return super().prepare(model, sets, num_classes, generator)
