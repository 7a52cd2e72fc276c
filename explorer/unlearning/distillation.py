"""SCRUB: a student that stays close to the original (the teacher) on R and moves away on S."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from ..runtime import precision
from .base import Method, ParamError


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
    knob = "alpha"
    knob_values = (0.001, 0.01, 0.1)
    fractions = ("alpha", "gamma")
    hidden = (*Method.hidden, "forget_batch_size")
    # forget_batch_size 0: the max steps use the same batch size as the min steps. SCRUB's code
    # takes its forget batches smaller (32 against 128 at large scale: the `paper` presets).
    defaults = {**Method.defaults, "epochs": 5, "lr": 5e-3, "msteps": 4, "gamma": 0.99, "alpha": 0.001,
                "temperature": 4.0, "forget_batch_size": 0}

    def __init__(self, **params):
        super().__init__(**params)
        if self.params["temperature"] <= 0:
            raise ParamError(f"{self.name}: temperature must be above 0")

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
