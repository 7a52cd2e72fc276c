"""Cheap memorization proxies: each a score per training sample, from far less than exact
memorization's K models.

Learning-event proxies come from the dynamics recorded while the model trained, so they cost
next to nothing but need a model trained here. Holdout retraining and loss curvature need only
the final model, so they also work for an imported one. `curvature_avg`, the RUM code's
curvature averaged over training, exists only for a model trained with the recording on
(`train --curvature-every 1`; explorer/training/curvature.py): it is in the dynamics then.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import models
from ..runtime import devices, optim
from ..runtime.progress import Progress, no_progress
from ..training.curvature import H, sample_curvature

FROM_DYNAMICS = ("confidence", "max_conf", "entropy", "bi_acc", "loss", "el2n", "forgetting_events")
FROM_MODEL = ("ho_ret", "curvature")
ALL = FROM_DYNAMICS + FROM_MODEL  # what every model trained here gets by default
RECORDED = ("curvature_avg",)  # from dynamics recorded only on request (a training option)
NAMES = ALL + RECORDED  # every proxy a user can ask for


def forgetting_events(correct: np.ndarray) -> np.ndarray:
    """Correct → incorrect transitions per sample (Toneva et al.); a sample never learned counts
    as forgotten at every epoch, more than any learned sample can be."""
    correct = correct.astype(bool)
    events = (correct[:, :-1] & ~correct[:, 1:]).sum(1).astype(np.float64)
    events[~correct.any(1)] = correct.shape[1]
    return events


def el2n(dynamics: dict[str, np.ndarray], early: int | None = None) -> np.ndarray:
    """‖softmax − one-hot(y)‖₂ averaged over the first `early` epochs (default: the first tenth,
    at least one), from Σp² and p_y recorded in training (Paul et al. 2021)."""
    epochs = dynamics["confidence"].shape[1]
    early = early or max(1, math.ceil(epochs / 10))
    sq = dynamics["sq_norm"][:, :early] - 2 * dynamics["confidence"][:, :early] + 1
    return np.sqrt(np.clip(sq, 0, None)).mean(1)


def from_dynamics(dynamics: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every learning-event proxy, raw orientation (see scores.SCORES)."""
    values = {
        "confidence": dynamics["confidence"].mean(1),
        "max_conf": dynamics["max_conf"].mean(1),
        "entropy": dynamics["neg_entropy"].mean(1),
        "bi_acc": dynamics["correct"].mean(1),
        "loss": dynamics["loss"][:, -1],
        "forgetting_events": forgetting_events(dynamics["correct"]),
    }
    if "sq_norm" in dynamics:  # recorded since EL2N was added
        values["el2n"] = el2n(dynamics)
    if "curvature" in dynamics:  # recorded on request: the RUM code's average over the recorded epochs
        values["curvature_avg"] = dynamics["curvature"].astype(np.float64).mean(1)
    return values


def symmetric_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    p, q = p.clamp_min(1e-10), q.clamp_min(1e-10)
    return 0.5 * ((p * (p / q).log()).sum(1) + (q * (q / p).log()).sum(1))


HOLDOUT_BATCH = 256  # the RUM code's --batch_size (the digits preset keeps 64)


def holdout_retraining(model: nn.Module, ds, device: torch.device, lr: float = 0.1, max_epochs: int = 30,
                       patience: int = 4, batch_size: int = HOLDOUT_BATCH, seed: int = 0,
                       progress: Progress = no_progress) -> np.ndarray:
    """Fine-tune a copy on held-out data (the test split) until its summed training loss stops
    falling for `patience` epochs; score each training sample by the symmetric KL between the
    original's and the copy's softmax (Carlini et al. 2019, as used by RUM)."""
    before = models.predict_proba(model, ds.x_train)
    tuned = copy.deepcopy(model).to(device).train()
    x, y = ds.x_test.to(device), ds.y_test.to(device)
    opt = optim.SGD(tuned.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    order = torch.Generator().manual_seed(seed)
    best, stale = math.inf, 0
    for epoch in range(max_epochs):
        losses = []  # read once per epoch, not once per batch
        for ids in torch.randperm(len(y), generator=order).to(device).split(batch_size):
            loss = F.cross_entropy(tuned(x[ids]), y[ids])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        total = sum(torch.stack(losses).tolist())  # summed on the host in float64, in batch order
        progress((epoch + 1) / max_epochs, f"holdout retraining: epoch {epoch + 1}, loss {total:.2f}")
        if total < best:
            best, stale = total, 0
        else:
            stale += 1
            if stale >= patience:
                break
    after = models.predict_proba(tuned, ds.x_train)
    return symmetric_kl(before, after).double().numpy()


def curvature(model: nn.Module, ds, device: torch.device, h: float = H, batch_size: int = 256) -> np.ndarray:
    """Loss curvature around each sample on the final model (Garg et al. 2023):
    ‖∇ₓℓ(x + z) − ∇ₓℓ(x)‖₂ with z = h·sign(∇ₓℓ)/‖sign(∇ₓℓ)‖ (training.curvature, the kernel the
    recording during training uses too)."""
    model = model.to(device).eval()
    out = []  # on the device, copied once at the end
    for x, y in zip(devices.batches(ds.x_train, device, batch_size), devices.batches(ds.y_train, device, batch_size)):
        out.append(sample_curvature(model, x, y, h))
    return torch.cat(out).cpu().double().numpy()
