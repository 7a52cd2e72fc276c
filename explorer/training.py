"""Training with SGD, recording per-sample learning dynamics along the way.

The dynamics come from the training-mode forward pass each mini-batch makes anyway, before the
optimizer step (METHODS.md §2): no extra pass over the data. They are kept on the device as
samples × epochs tensors and copied back once at the end.

With `mnemonic_tmix` > 0 (METHODS.md §5) each sample's input is swapped, with that probability, for
its class's mnemonic code in the loss; the recorder still sees every real sample.

With `amp` the forward passes run in bfloat16 (explorer/precision.py); losses, the recorded
dynamics and the weights stay float32.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save as st_save
from torch import nn

from . import models
from .errors import RecipeError
from .runtime import devices, optim, precision
from .runtime.progress import Progress, no_progress
from .unrolling import sd_loss

DYNAMICS = ("confidence", "max_conf", "neg_entropy", "correct", "loss", "sq_norm")


@dataclass
class Recipe:
    epochs: int = 30
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64
    seed: int = 0
    cosine: bool = False
    mnemonic_tmix: float = 0.0  # probability a training sample is swapped for its class's code
    codes_seed: int = 0
    sd_lambda: float = 0.0  # weight of the SD loss (METHODS.md §7): CE + λ·mean_b std(z_b)/C
    blocks: int = 0  # B ≥ 2: train block by block, keeping M_0 … M_B for DeepObliviate (explorer/blocks.py)
    amp: bool = False  # mixed precision: bf16 forward passes, float32 losses and weights (explorer/precision.py)

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1:
            raise RecipeError("epochs and batch size must be at least 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise RecipeError(f"learning rate must be a positive number, got {self.lr}")
        if not 0 <= self.mnemonic_tmix < 1:  # also refuses NaN
            raise RecipeError(f"mnemonic t_mix must be in [0, 1), got {self.mnemonic_tmix}")
        if not (self.sd_lambda >= 0 and math.isfinite(self.sd_lambda)):  # also refuses NaN
            raise RecipeError(f"the SD-loss weight must be a finite number, at least 0; got {self.sd_lambda}")
        if self.blocks == 1 or self.blocks < 0:
            raise RecipeError(f"blocks must be 0 (no blocks) or at least 2, got {self.blocks}")
        if self.amp not in (True, False):
            raise RecipeError(f"amp must be true or false, got {self.amp!r}")

    def as_meta(self) -> dict:
        meta = asdict(self)
        if not self.mnemonic_tmix:  # a model without codes keeps the exact record (and cache keys) it had
            del meta["mnemonic_tmix"], meta["codes_seed"]
        if not self.sd_lambda:  # likewise for a model trained without the SD loss
            del meta["sd_lambda"]
        if not self.blocks:  # likewise for a model trained in one piece
            del meta["blocks"]
        if not self.amp:  # likewise for a model trained in float32
            del meta["amp"]
        return meta


def make_codes(num_classes: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """One mnemonic code per class: uniform on [0, 1) in the model's (normalized) input space, as
    the official code draws them; the same seed always gives the same codes."""
    return torch.rand((num_classes, *shape), generator=torch.Generator().manual_seed(seed))


@dataclass
class TrainResult:
    log: list[dict] = field(default_factory=list)  # one row per epoch
    dynamics: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (n, epochs)
    seconds: float = 0.0
    codes: torch.Tensor | None = None  # (num_classes, C, H, W) on the CPU, when trained with codes


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
    progress: Progress = no_progress,
    opt: optim.SGD | None = None,
) -> TrainResult:
    """Train `model` in place on (x, y) with `recipe`; returns the epoch log and dynamics. A given
    `opt` is continued (its momentum carries over); with `recipe.blocks` the training is by blocks."""
    if recipe.blocks:  # DeepObliviate's block training: no dynamics, a checkpoint after each block
        from .blocks import fit_blocks

        # Without dynamics (the estimator's subset models) nobody reads the block snapshots either.
        return fit_blocks(model, x, y, recipe, device, x_test=x_test, y_test=y_test, progress=progress,
                          snapshots=record_dynamics)
    start = time.perf_counter()
    model.to(device)
    x, y = x.to(device), y.to(device)
    n = len(y)
    if opt is None:
        opt = optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    total_steps = recipe.epochs * math.ceil(n / recipe.batch_size)
    step = 0
    order = torch.Generator().manual_seed(recipe.seed)
    recorder = DynamicsRecorder(n, recipe.epochs, device) if record_dynamics else None
    result = TrainResult()
    mix = _CodeMixer(recipe, models.head(model).out_features, x.shape[1:], device) if recipe.mnemonic_tmix else None
    net = precision.wrap(model, device, recipe.amp)  # the model itself unless amp: then float32 logits from bf16
    for epoch in range(recipe.epochs):
        model.train()
        perm = torch.randperm(n, generator=order)
        if mix is not None:
            mix.draw(perm, recipe.batch_size)
        perm = devices.to_device(perm, device)  # without a host sync on a GPU
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        for b, i in enumerate(range(0, n, recipe.batch_size)):
            ids = perm[i : i + recipe.batch_size]
            if mix is None:
                logits = net(x[ids])
                losses = F.cross_entropy(logits, y[ids], reduction="none")
                train_loss = losses.mean()
            else:
                logits, losses, train_loss = mix.forward(net, x, y, ids, b, i)
            if recipe.sd_lambda:  # the SD loss on the real samples' logits; λ = 0 leaves the step as it was
                train_loss = train_loss + recipe.sd_lambda * sd_loss(logits)
            if recorder is not None:
                recorder.record(epoch, ids, logits.detach(), y[ids], losses.detach())
            if recipe.cosine:
                opt.lr = optim.cosine_lr(recipe.lr, step, total_steps)
            opt.zero_grad()
            train_loss.backward()
            opt.step()
            step += 1
            loss_sum += losses.detach().sum()
            correct += (logits.detach().argmax(1) == y[ids]).sum()
        row = {"epoch": epoch + 1, "loss": loss_sum.item() / n, "train_acc": correct.item() / n}
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
    if mix is not None:
        result.codes = mix.codes.cpu()
    result.seconds = time.perf_counter() - start
    return result


class _CodeMixer:
    """The mnemonic-code swap of one training run.

    Each epoch draws, on the CPU from its own seeded stream (the shuffling stream is untouched),
    which samples are swapped; a batch is then one training-mode pass over its real samples plus,
    appended, the codes of the swapped ones. The loss is the batch mean with the swapped samples
    replaced by their codes (the paper's swap; gradients are identical for models without batch
    norm), while the recorder gets every real sample's statistics from the same pass, so the
    dynamics and the proxies built on them keep one value per sample and epoch. The cost is
    t_mix more rows per forward pass. Everything per batch is sliced by Python ints: no host sync.
    """

    def __init__(self, recipe: Recipe, num_classes: int, shape, device: torch.device):
        self.tmix = recipe.mnemonic_tmix
        self.codes = make_codes(num_classes, tuple(shape), recipe.codes_seed).to(device)
        self.swaps = torch.Generator().manual_seed(recipe.seed + 7919)  # a stream apart from shuffling
        self.device = device

    def draw(self, perm: torch.Tensor, batch_size: int) -> None:
        swapped = torch.rand(len(perm), generator=self.swaps) < self.tmix  # by position in this epoch
        self.rate = swapped.float().mean().item()
        self.keep = (~swapped).float().to(self.device)
        self.swapped_ids = perm[swapped].to(self.device)
        # Where each batch's swapped ids start: swaps before positions 0, B, 2B, …, n (one numpy pass).
        before = np.concatenate([[0], np.cumsum(swapped.numpy())])
        self.offsets = before[[*range(0, len(perm), batch_size), len(perm)]].tolist()

    def forward(self, model: nn.Module, x, y, ids, b: int, i: int):
        sid = self.swapped_ids[self.offsets[b] : self.offsets[b + 1]]
        all_logits = model(torch.cat([x[ids], self.codes[y[sid]]]))
        logits = all_logits[: len(ids)]
        losses = F.cross_entropy(logits, y[ids], reduction="none")
        code_losses = F.cross_entropy(all_logits[len(ids) :], y[sid], reduction="sum")
        train_loss = ((losses * self.keep[i : i + len(ids)]).sum() + code_losses) / len(ids)
        return logits, losses, train_loss


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
