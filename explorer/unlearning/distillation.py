"""SCRUB: a student that stays close to the original (the teacher) on R and moves away on S."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from ..runtime import precision
from .base import Method, Param, with_defaults


def distill_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher ‖ student) of the temperature-softened outputs, times T² so its gradient keeps
    the scale of a cross-entropy's (Hinton et al.); mean over the batch."""
    t = temperature
    kl = F.kl_div(F.log_softmax(student_logits / t, 1), F.log_softmax(teacher_logits / t, 1),
                  log_target=True, reduction="batchmean")
    return kl * t * t


class Scrub(Method):
    name = "scrub"
    summary = "Distill the original into a copy that agrees with it on the retain set and departs from it on the forget set."
    spec = {**with_defaults(Method.spec, epochs=5, lr=5e-3),
            "msteps": Param(4, "max steps", "Epochs that begin with a max step on the forget set."),
            "gamma": Param(0.99, "γ", "Weight of the retain set's cross-entropy in a min step.", high=1),
            "alpha": Param(0.001, "α", "Weight of the distillation term in a min step.", high=1,
                           sweep=(0.001, 0.01, 0.1)),
            "temperature": Param(4.0, "temperature", "Softmax temperature of the distillation.", positive=True),
            # 0: the max steps use the min steps' batch size. SCRUB's code takes its forget batches
            # smaller (32 against 128 at large scale: the `paper` presets).
            "forget_batch_size": Param(0, "forget batch size", "The max steps' batch size; 0: the batch size.",
                                       hidden=True)}

    def batch_size(self, name):
        if name == "forget" and self.params["forget_batch_size"]:
            return self.params["forget_batch_size"]
        return self.params["batch_size"]

    def prepare(self, model, sets, num_classes, generator):
        teacher = copy.deepcopy(model).eval().requires_grad_(False)
        self.teacher = precision.wrap(teacher, next(model.parameters()).device, self.amp)  # as the student runs
        return sets

    def phases(self, epoch):
        # Max steps over S (only in the first msteps epochs), then min steps over R.
        return ("forget", "retain") if epoch < self.params["msteps"] else ("retain",)

    def loss(self, model, retain, forget, step):
        batch = forget if forget is not None else retain
        logits = model(batch.x)
        with torch.no_grad():
            target = self.teacher(batch.x)
        kl = distill_kl(logits, target, self.params["temperature"])
        if forget is not None:
            return -kl  # max step: move away from the teacher on S
        return self.params["gamma"] * F.cross_entropy(logits, batch.y) + self.params["alpha"] * kl
