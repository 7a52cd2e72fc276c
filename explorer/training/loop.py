"""The SGD loop over a recipe's epochs, in one piece, recording per-sample learning dynamics
along the way (block training, blocks.py, runs it once per block).

The dynamics come from the training-mode forward pass each mini-batch makes anyway, before the
optimizer step: no extra pass over the data (they feed the learning-event proxies). They are kept on the device as
samples × epochs tensors and copied back once at the end.

With `mnemonic_tmix` > 0 (codes.py) each sample's input is swapped, with that probability, for
its class's mnemonic code in the loss; the recorder still sees every real sample.

With `amp` the forward passes run in bfloat16 (explorer/runtime/precision.py); losses, the recorded
dynamics and the weights stay float32.

With `drop` the run *replays* the one it would have made on all of (x, y), with those samples taken
out of their mini-batches: the same permutations, code swaps and learning-rate schedule, each batch
the original's minus the dropped samples (its mean over the ones left), a batch left empty skipped.
This is the retrain that Thudi et al.'s verification error compares against; a fresh shuffle of
the retain set would add SGD-order noise to θ_u − θ_r. With nothing dropped it is the original
run, bit for bit.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from safetensors.torch import save as st_save
from torch import nn

from .. import models
from ..runtime import devices, optim, precision
from ..runtime.progress import Progress, no_progress
from . import augment, losses as loss_of
from .codes import CodeMixer
from .curvature import CurvatureRecorder, recorded_epochs
from .losses import sd_loss
from .recipe import Recipe

DYNAMICS = ("confidence", "max_conf", "neg_entropy", "correct", "loss", "sq_norm")


@dataclass
class TrainResult:
    log: list[dict] = field(default_factory=list)  # one row per epoch
    dynamics: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (n, epochs)
    seconds: float = 0.0
    codes: torch.Tensor | None = None  # (num_classes, C, H, W) on the CPU, when trained with codes
    curvature_seconds: float | None = None  # time spent recording curvature (curvature_every > 0)


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


def run(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    recipe: Recipe,
    device: torch.device,
    *,
    x_test: torch.Tensor | None = None,
    y_test: torch.Tensor | None = None,
    record_dynamics: bool = True,
    progress: Progress = no_progress,
    opt: optim.SGD | None = None,
    drop=None,
    curvature_every: int = 0,
) -> TrainResult:
    """Train `model` in place on (x, y) with `recipe`, in one piece (its `blocks` are not looked at:
    `explorer.training.fit` is what honours them); returns the epoch log and dynamics. A given
    `opt` is continued (its momentum carries over). `drop`: positions in (x, y) replayed out of
    the run (module docstring). `curvature_every` = k > 0 also records each sample's loss curvature
    at epochs k, 2k, … into the dynamics (curvature.py; the RUM code records it every epoch): two
    more input-gradient passes per batch of those epochs; 0 (the default) records none and costs
    nothing."""
    start = time.perf_counter()
    model.to(device)
    x, y = x.to(device), y.to(device)
    n = len(y)
    dropped = None
    if drop is not None:  # even empty: a replay without drops must retrace the original exactly
        dropped = torch.zeros(n, dtype=torch.bool)
        dropped[torch.as_tensor(np.asarray(drop, dtype=np.int64))] = True
    seen = n - (int(dropped.sum()) if dropped is not None else 0)  # samples each epoch trains on
    if opt is None:
        opt = optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    total_steps = recipe.epochs * math.ceil(n / recipe.batch_size)
    step = 0
    order = torch.Generator().manual_seed(recipe.seed)
    recorder = DynamicsRecorder(n, recipe.epochs, device) if record_dynamics else None
    curv = None
    if curvature_every:
        curv = CurvatureRecorder(n, recorded_epochs(recipe.epochs, curvature_every), device)
    result = TrainResult()
    mix = CodeMixer(recipe, models.head(model).out_features, x.shape[1:], device) if recipe.mnemonic_tmix else None
    net = precision.wrap(model, device, recipe.amp)  # the model itself unless amp: then float32 logits from bf16
    views = augment.stream(recipe.seed) if recipe.augment else None
    for epoch in range(recipe.epochs):
        model.train()
        perm = torch.randperm(n, generator=order)
        kept, bounds = batch_bounds(perm, recipe.batch_size, dropped)
        if mix is not None:
            mix.draw(perm, bounds, kept)  # drawn over every position: a replay swaps as the original did
        if views is not None:  # likewise: each position's flip and shift, kept ones as the original's
            flips, shifts = augment.draw(n, views)
            if kept is not None:
                flips, shifts = flips[kept], shifts[kept]
            flips, shifts = devices.to_device(flips, device), devices.to_device(shifts, device)  # once an epoch
        if kept is not None:
            perm = perm[kept]
        perm = devices.to_device(perm, device)  # without a host sync on a GPU
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        for b, (i, j) in enumerate(zip(bounds[:-1], bounds[1:])):
            if i == j:  # every sample of this batch was dropped: no step, but the schedule moves on
                step += 1
                continue
            ids = perm[i:j]
            xb = x[ids] if views is None else augment.apply(x[ids], flips[i:j], shifts[i:j])
            if mix is None:
                logits = net(xb)
                losses = loss_of.per_sample(logits, y[ids], label_smoothing=recipe.label_smoothing)
                train_loss = losses.mean()
            else:
                logits, losses, train_loss = mix.forward(net, xb, y, ids, b, i)
            if recipe.sd_lambda:  # the SD loss on the real samples' logits; λ = 0 leaves the step as it was
                train_loss = train_loss + recipe.sd_lambda * sd_loss(logits)
            if recorder is not None:
                recorder.record(epoch, ids, logits.detach(), y[ids], losses.detach())
            if curv is not None and curv.wants(epoch):  # as the RUM code: after the forward, before the step
                curv.record(epoch, ids, model, x[ids], y[ids])
            if recipe.cosine:
                opt.lr = optim.cosine_lr(recipe.lr, step, total_steps)
            opt.zero_grad()
            train_loss.backward()
            opt.step()
            step += 1
            loss_sum += losses.detach().sum()
            correct += (logits.detach().argmax(1) == y[ids]).sum()
        row = {"epoch": epoch + 1, "loss": loss_sum.item() / max(seen, 1), "train_acc": correct.item() / max(seen, 1)}
        if mix is not None:
            row["code_rate"] = mix.rate
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
    if curv is not None:
        result.dynamics.update(curv.arrays())
        result.curvature_seconds = curv.seconds
    if mix is not None:
        result.codes = mix.codes.cpu()
    result.seconds = time.perf_counter() - start
    return result


def batch_bounds(perm: torch.Tensor, batch_size: int, dropped: torch.Tensor | None
                 ) -> tuple[torch.Tensor | None, list[int]]:
    """(kept, bounds): which positions of `perm` stay (None: all), and where each batch starts in
    the kept order, then its end. Batch b is the original's b-th batch minus the dropped samples."""
    n = len(perm)
    starts = [*range(0, n, batch_size), n]
    if dropped is None:
        return None, starts
    kept = ~dropped[perm]
    before = np.concatenate([[0], np.cumsum(kept.numpy())])  # kept positions before each start
    return kept, before[starts].tolist()


def init_model(arch: str, data, seed: int) -> nn.Module:
    """A freshly initialized model; the same seed always gives the same weights."""
    # The weights are drawn on the CPU. torch.manual_seed would also queue a lazy seeding of
    # every accelerator backend, with a captured traceback each (0.26 ms a model on a machine
    # without one; the demo's exact step builds 640). CUDA's generator is still seeded where
    # there is one, as before.
    torch.random.default_generator.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
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
