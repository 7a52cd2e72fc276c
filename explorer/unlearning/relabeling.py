"""Train on the forget set with random labels: everywhere (random_label) or only in the weights
that matter most to it (salun).

How the labels are drawn is the `rule` (the relabeling):
- "epoch" (default): each forget sample gets a label drawn uniformly from all C classes, its true
  one included, afresh every epoch; S̃ ∪ R is shuffled together and trained with cross-entropy.
  This is what the RUM code does (its RL step redraws the forget labels each time it is called,
  once per epoch).
- "batch": an epoch is a pass over the forget set, each batch's labels drawn afresh from all C
  classes, then a pass over the retain set: the SalUn code's loop for CIFAR-10 and SVHN.
- "other_once": every forget label replaced by a uniformly random *other* class, drawn once
  before the first epoch, S̃ ∪ R shuffled together: what this tool did before following the code
  (it reads the papers' "random label" as "a wrong label"; the code does not).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Batch, Method, Param, ParamError, with_defaults

RELABELING = ("epoch", "batch", "other_once")
RELABEL_HELP = ("epoch (default, the RUM code): labels from all classes, the true one allowed, redrawn every epoch, "
                "forget and retain samples shuffled together; batch (the SalUn code): a pass over the forget set with "
                "labels redrawn for every batch, then a pass over the retain set; other_once: always another class, "
                "drawn once (this tool's earlier reading).")


def other_labels(y: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """Each label replaced by a uniformly random *different* one, for any class count."""
    if num_classes < 2:
        raise ParamError("relabeling needs at least two classes")
    offsets = torch.randint(1, num_classes, y.shape, generator=generator).to(y.device)  # never 0
    return (y + offsets) % num_classes


def any_labels(y: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """Labels drawn uniformly from all classes, the true one included (hit 1/C of the time)."""
    if num_classes < 2:
        raise ParamError("relabeling needs at least two classes")
    return torch.randint(0, num_classes, y.shape, generator=generator).to(y.device)


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
    summary = "Train on the forget set relabeled with random classes, mixed with the retain set."
    spec = {**with_defaults(Method.spec, epochs=10, lr=0.1),
            "rule": Param(RELABELING[0], "Random labels", RELABEL_HELP, choices=RELABELING)}

    def prepare(self, model, sets, num_classes, generator):
        self.generator, self.num_classes = generator, num_classes
        if num_classes < 2:
            raise ParamError("relabeling needs at least two classes")
        retain, forget = sets["retain"], sets["forget"]
        self.n_retain = len(retain)
        if self.params["rule"] == "batch":
            return sets
        # S̃ ∪ R as one set the loop shuffles; "epoch" replaces the forget part's labels each epoch.
        wrong = other_labels(forget.y, num_classes, generator) if self.params["rule"] == "other_once" else forget.y
        return {"retain": Batch(torch.cat([retain.x, forget.x]), torch.cat([retain.y, wrong])), "forget": forget}

    def epoch_sets(self, epoch, sets, num_classes, generator):
        if self.params["rule"] != "epoch":
            return sets
        mixed, forget = sets["retain"], sets["forget"]
        labels = mixed.y.clone()
        labels[self.n_retain :] = any_labels(forget.y, num_classes, generator)
        return {**sets, "retain": Batch(mixed.x, labels)}

    def phases(self, epoch):
        return ("forget", "retain") if self.params["rule"] == "batch" else ("retain",)

    def loss(self, model, retain, forget, step):
        if forget is not None:  # "batch": this batch's labels drawn now
            return F.cross_entropy(model(forget.x), any_labels(forget.y, self.num_classes, self.generator))
        return F.cross_entropy(model(retain.x), retain.y)


class SalUn(RandomLabel):
    """Random labels through a saliency mask. The weights the mask leaves out stay exactly at
    their starting values (`fix_masked` = 1, the default): after every step they are put back and
    their momentum zeroed, as the SalUn code does since its weight-decay fix. With 0, only the
    gradient is masked, and weight decay and momentum still shrink the masked-out weights (to
    0.86 of their value after 300 steps at lr 0.1, 0.42 over a CIFAR-length run): the variant of
    the RUM code's copy, and of this tool before."""

    name = "salun"
    summary = "Random-label unlearning that updates only the weights most salient to the forget set."
    spec = {**RandomLabel.spec,
            "gamma": Param(0.5, "γ", "Share of the weights updated: those most salient to the forget set.", high=1,
                           sweep=(0.3, 0.5, 0.7)),
            "fix_masked": Param(1, "Keep masked weights fixed", "1 (the SalUn code): the weights outside the mask "
                                "stay exactly at their starting values; 0: only their gradient is masked, and weight "
                                "decay and momentum still move them.", high=1, switch=True)}

    def prepare(self, model, sets, num_classes, generator):
        params = [q for q in model.parameters() if q.requires_grad]
        forget, bs = sets["forget"], self.batch_size("forget")
        model.eval()  # one measuring pass: no batch-norm statistics should move
        for q in params:
            q.grad = None
        for i in range(0, len(forget), bs):  # gradient of the summed CE over S, batch by batch
            F.cross_entropy(model(forget.x[i : i + bs]), forget.y[i : i + bs], reduction="sum").backward()
        grads = [torch.zeros_like(q) if q.grad is None else q.grad for q in params]
        self.mask = saliency_mask(grads, self.params["gamma"])
        self.frozen_mask = bool(self.params["fix_masked"])
        for q in params:
            q.grad = None
        model.train()
        return super().prepare(model, sets, num_classes, generator)
