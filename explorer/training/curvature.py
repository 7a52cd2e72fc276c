"""Loss curvature around each sample (Garg et al. 2023): ‖∇ₓℓ(x + z) − ∇ₓℓ(x)‖₂ with
z = h·sign(∇ₓℓ)/‖sign(∇ₓℓ)‖, in eval mode. One kernel for both variants: the proxy on a final
model (explorer.memorization.proxies.curvature) and the recording during training that the RUM
code does and averages over epochs (`CurvatureRecorder`, used by loop.py).

The recording follows the RUM code (memorization_proxy/loss_curvature.py): at each recorded
epoch, every mini-batch's samples are scored on the model as it stands before that batch's
optimizer step, in eval mode, on the real samples (not their mnemonic codes). It takes no
gradient of the weights and draws no random number, so a model trained with it has the very
weights it would have had without.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .recipe import RecipeError

H = 0.01  # the perturbation size, the RUM code's default (--h 0.01) at every epoch


def sample_curvature(model: nn.Module, x: torch.Tensor, y: torch.Tensor, h: float = H) -> torch.Tensor:
    """The curvature of each sample of the batch (x, y), on x's device; the model is scored in
    eval mode and left in the mode it was in."""
    was = model.training
    model.eval()

    def input_grad(inputs):
        inputs = inputs.detach().requires_grad_(True)
        # Summed loss: each sample's input gradient is its own (eval mode, no cross-sample terms).
        (grad,) = torch.autograd.grad(F.cross_entropy(model(inputs), y, reduction="sum"), inputs)
        return grad

    try:
        with torch.enable_grad():
            g = input_grad(x)
            direction = g.sign()
            norms = direction.flatten(1).norm(dim=1).clamp_min(1e-12)
            z = h * direction / norms.view(-1, *[1] * (x.dim() - 1))
            return (input_grad(x + z) - g).flatten(1).norm(dim=1).detach()
    finally:
        model.train(was)


def recorded_epochs(epochs: int, every: int) -> list[int]:
    """The epochs (1-based) at which curvature is recorded with `every` = k: k, 2k, … (1: every
    epoch, as the RUM code does). 0 records none."""
    if every == 0:
        return []
    if not 1 <= every <= epochs:
        raise RecipeError(f"curvature recording: every must be 0 (off) or between 1 and the {epochs} epochs, got {every}")
    return list(range(every, epochs + 1, every))


class CurvatureRecorder:
    """Per-sample curvature at the recorded epochs, samples × recorded epochs, kept on the device
    (NaN where a sample was not scored), and the seconds spent on it: the proxy's real cost."""

    def __init__(self, n: int, epochs: list[int], device: torch.device, h: float = H):
        self.epochs, self.h, self.device = epochs, h, device
        self.column = {e - 1: i for i, e in enumerate(epochs)}  # 0-based epoch -> its column
        self.values = torch.full((n, len(epochs)), float("nan"), device=device)
        self.seconds = 0.0

    def wants(self, epoch: int) -> bool:
        return epoch in self.column

    def record(self, epoch: int, ids: torch.Tensor, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        start = time.perf_counter()
        self.values[ids, self.column[epoch]] = sample_curvature(model, x, y, self.h)
        if self.device.type == "cuda":  # the time is the cost a user pays for the proxy: measured, not queued
            torch.cuda.synchronize(self.device)
        self.seconds += time.perf_counter() - start

    def arrays(self) -> dict[str, np.ndarray]:
        return {"curvature": self.values.cpu().numpy(), "curvature_epochs": np.asarray(self.epochs, dtype=np.int64)}
