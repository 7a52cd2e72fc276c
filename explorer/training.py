"""Training with SGD, recording per-sample learning dynamics along the way.

The dynamics come from the training-mode forward pass each mini-batch makes anyway, before the
optimizer step (METHODS.md §2): no extra pass over the data. They are kept on the device as
samples × epochs tensors and copied back once at the end.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save as st_save
from torch import nn

from . import models, optim
from .errors import UserError

Progress = Callable[[float, str], None]

DYNAMICS = ("confidence", "max_conf", "neg_entropy", "correct", "loss", "sq_norm")


class RecipeError(UserError):
    """A training recipe with impossible values."""


def _no_progress(fraction: float, message: str) -> None:
    pass


@dataclass
class Recipe:
    epochs: int = 30
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64
    seed: int = 0
    cosine: bool = False

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1:
            raise RecipeError("epochs and batch size must be at least 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise RecipeError(f"learning rate must be a positive number, got {self.lr}")

    def as_meta(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    log: list[dict] = field(default_factory=list)  # one row per epoch
    dynamics: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (n, epochs)
    seconds: float = 0.0


class DynamicsRecorder:
    """Per-sample, per-epoch statistics of the softmax a batch produced during training."""

    def __init__(self, n: int, epochs: int, device: torch.device):
        self.values = torch.zeros(len(DYNAMICS), n, epochs, device=device)

    @torch.no_grad()
    def record(self, epoch: int, ids: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, loss: torch.Tensor):
        logp = torch.log_softmax(logits.float(), 1)
        p = logp.exp()
        stats = torch.stack(
            [
                p.gather(1, y[:, None])[:, 0],
                p.max(1).values,
                (p * logp).sum(1),  # log-softmax is finite, so 0·log 0 cannot produce NaN
                (logits.argmax(1) == y).float(),
                loss.float(),
                (p * p).sum(1),  # with confidence this gives EL2N: ‖p − e_y‖² = Σp² − 2p_y + 1
            ]
        )
        self.values[:, ids, epoch] = stats

    def arrays(self) -> dict[str, np.ndarray]:
        values = self.values.cpu().numpy()
        return {name: values[i] for i, name in enumerate(DYNAMICS)}


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    if len(y) == 0:
        return float("nan")
    pred = models.predict_proba(model, x).argmax(1)
    return (pred == y.cpu()).float().mean().item()


def fit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    recipe: Recipe,
    device: torch.device,
    *,
    x_test: torch.Tensor | None = None,
    y_test: torch.Tensor | None = None,
    record_dynamics: bool = True,
    progress: Progress = _no_progress,
) -> TrainResult:
    """Train `model` in place on (x, y) with `recipe`; returns the epoch log and dynamics."""
    start = time.perf_counter()
    model.to(device)
    x, y = x.to(device), y.to(device)
    n = len(y)
    opt = optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    total_steps = recipe.epochs * math.ceil(n / recipe.batch_size)
    step = 0
    order = torch.Generator().manual_seed(recipe.seed)
    recorder = DynamicsRecorder(n, recipe.epochs, device) if record_dynamics else None
    result = TrainResult()
    for epoch in range(recipe.epochs):
        model.train()
        perm = torch.randperm(n, generator=order).to(device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        for i in range(0, n, recipe.batch_size):
            ids = perm[i : i + recipe.batch_size]
            logits = model(x[ids])
            losses = F.cross_entropy(logits, y[ids], reduction="none")
            if recorder is not None:
                recorder.record(epoch, ids, logits.detach(), y[ids], losses.detach())
            if recipe.cosine:
                opt.lr = optim.cosine_lr(recipe.lr, step, total_steps)
            opt.zero_grad()
            losses.mean().backward()
            opt.step()
            step += 1
            loss_sum += losses.detach().sum()
            correct += (logits.detach().argmax(1) == y[ids]).sum()
        row = {"epoch": epoch + 1, "loss": loss_sum.item() / n, "train_acc": correct.item() / n}
        if x_test is not None:
            row["test_acc"] = accuracy(model, x_test, y_test)
        result.log.append(row)
        progress(
            (epoch + 1) / recipe.epochs,
            f"epoch {epoch + 1}/{recipe.epochs} · loss {row['loss']:.3f}"
            + (f" · test acc {row['test_acc']:.3f}" if "test_acc" in row else ""),
        )
    if recorder is not None:
        result.dynamics = recorder.arrays()
    result.seconds = time.perf_counter() - start
    return result


def init_model(arch: str, data, seed: int) -> nn.Module:
    """A freshly initialized model; the same seed always gives the same weights."""
    torch.manual_seed(seed)
    return models.for_dataset(arch, data)


def state_bytes(model: nn.Module) -> bytes:
    return st_save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})


def per_class_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int) -> list[float]:
    pred = models.predict_proba(model, x).argmax(1)
    y = y.cpu()
    return [
        (pred[y == c] == c).float().mean().item() if (y == c).any() else float("nan")
        for c in range(num_classes)
    ]
