"""K subset models trained as one wide computation: the batched and fused ensemble engines.

Feldman & Zhang's K models are independent trainings, so any schedule that trains model k on
exactly its subset I_k with the recipe's SGD estimates the same thing. `Ensemble` holds the K
models' weights stacked, parameter p of model k being `p[k]`, and runs a layer of all K models as
one operation: a batched matmul, or one convolution with groups = K. Two batch orders:

- `order="own"` (the batched engine): each model draws its own batches from its own subset, with
  the seed, batch order and batch size `fit` would give it alone: the same algorithm as training
  the models one by one, only computed together.
- `order="shared"` (the fused engine): every model sees the same shuffled batches of the whole
  training set and weights its per-sample losses by membership, 1[i ∈ I_k], normalised by how
  many of its samples the batch holds. The first layer is then one matmul on a shared input,
  x[B, d] @ W[d, K·h] (or one convolution with K·C_out filters), near the machine's matmul rate
  even for small models, at the price of computing the 1 − r of each batch a model does not
  train on. What changes against training alone (docs/memorization.md): the models share the
  batch order, and a model's batch size varies around the recipe's (binomially, e.g. 64 ± 4 at
  r = 0.7), while its step count per epoch is the recipe's. A sample outside I_k contributes an
  exact zero to model k's gradient, so it never changes model k's weights.

Both honour the whole recipe: momentum, weight decay and the cosine schedule (elementwise on the
stacked weights, hence K independent optimizers), mnemonic codes (each model draws its own
swaps; the classes' codes ride along as C extra rows of each batch and a swapped sample's loss is
its class code's, as in codes.py), the SD loss on the real samples' logits, and bf16 autocast
with amp, flip-and-translate augmentation (own order: each model its own views, augment.py) and
label smoothing. `Ensemble` takes plain `nn.Sequential`s of linear, convolution, ReLU, pooling and
flatten layers (the registry's mlp and cnn) in either order; conv nets with batch norm and
residual blocks train in the own order as one wide model (wide.py), with the same loop.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import models
from ..runtime import devices, optim, precision
from ..runtime.progress import Progress, no_progress
from . import augment, by_hand, losses, wide
from .codes import make_codes, swap_stream
from .recipe import Recipe
from .wide import per_model_linear

_PER_CHANNEL = (nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)  # indifferent to whose channels


def unfusable(net: nn.Module) -> str | None:
    """Why this model cannot join a stacked `Ensemble`, hence cannot train fused, or None (the
    batched engine takes the others as one wide model, wide.py)."""
    if any(isinstance(mod, nn.modules.batchnorm._BatchNorm) for mod in net.modules()):
        return "a model with batch norm cannot train fused (on shared batches the models' batch statistics would mix)"
    if not isinstance(net, nn.Sequential):
        return "only a plain sequence of layers can train fused"
    for mod in net:
        if isinstance(mod, nn.Conv2d) and (mod.groups != 1 or mod.padding_mode != "zeros"):
            return "a grouped or non-zero-padded convolution cannot train fused"
        if isinstance(mod, nn.Flatten) and (mod.start_dim, mod.end_dim) != (1, -1):
            return "only a full flatten can train fused"
        if not isinstance(mod, (nn.Linear, nn.Conv2d, nn.Flatten, *_PER_CHANNEL)):
            return f"a {type(mod).__name__} layer cannot train fused"
    return None


class Ensemble:
    """K copies of one `nn.Sequential` architecture with their weights stacked."""

    def __init__(self, nets: list[nn.Sequential], device: torch.device):
        if why := unfusable(nets[0]):
            raise ValueError(why)
        self.k = len(nets)
        self.layers = list(nets[0])
        self.weights: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
        for i, mod in enumerate(self.layers):
            if isinstance(mod, (nn.Linear, nn.Conv2d)):
                w = torch.stack([net[i].weight.detach() for net in nets]).to(device).requires_grad_(
                    mod.weight.requires_grad)  # a fixed layer stays fixed
                b = None if mod.bias is None else torch.stack([net[i].bias.detach() for net in nets]).to(device)
                self.weights[i] = (w, None if b is None else b.requires_grad_(mod.bias.requires_grad))
        self.params = [t for pair in self.weights.values() for t in pair if t is not None]

    def train(self) -> None:  # no layer here behaves differently in training
        pass

    def eval(self) -> None:
        pass

    def forward(self, x: torch.Tensor, own: bool = False) -> torch.Tensor:
        """Logits (B, K, classes) of all K models: on shared inputs x (B, …), or with `own` on
        each model's own inputs x (K, B, …)."""
        K = self.k
        B = x.shape[1] if own else x.shape[0]
        # Layouts: "shared" (B, …) · "own" (K, B, …) · "wide" (B, K·C, H, W), model k's channels
        # one block · "flat" (B, K, F).
        h, layout, fresh = x, "own" if own else "shared", False
        for i, mod in enumerate(self.layers):
            if isinstance(mod, nn.Conv2d):
                w, b = self.weights[i]
                if layout == "own":  # each model's own images side by side as channel blocks
                    h = h.transpose(0, 1).reshape(B, K * h.shape[2], *h.shape[3:])
                h = F.conv2d(h, w.flatten(0, 1), None if b is None else b.flatten(), mod.stride, mod.padding,
                             mod.dilation, groups=1 if layout == "shared" else K)
                layout, fresh = "wide", True
            elif isinstance(mod, nn.Linear):
                w, b = self.weights[i]
                if layout == "shared":  # one wide matmul: (B, d) @ (d, K·h)
                    wt = w.flatten(0, 1).t()
                    h, layout = (h @ wt if b is None else torch.addmm(b.flatten(), h, wt)).view(B, K, -1), "flat"
                else:  # one batched matmul over the models, on (K, B, d)
                    h, layout = per_model_linear(h if layout == "own" else h.transpose(0, 1), w, b), "own"
                fresh = True
            elif isinstance(mod, nn.Flatten):
                h = {"shared": lambda: h.flatten(1), "own": lambda: h.flatten(2),
                     "wide": lambda: h.reshape(B, K, -1), "flat": lambda: h}[layout]()
                layout = "flat" if layout == "wide" else layout
            elif isinstance(mod, nn.ReLU) and fresh:  # in place on a layer's own output: one tensor less
                h, fresh = torch.relu_(h), False
            elif layout == "own" and h.dim() == 5:  # pooling takes (N, C, H, W)
                h, fresh = mod(h.flatten(0, 1)).unflatten(0, (K, B)), False
            else:
                h, fresh = mod(h), False
        if layout == "flat":
            return h
        return h.transpose(0, 1) if layout == "own" else h.unsqueeze(1).expand(B, K, *h.shape[1:])

    def module(self, k: int, template: nn.Sequential) -> nn.Sequential:
        """`template` (the architecture) given model k's weights."""
        with torch.no_grad():
            for i, (w, b) in self.weights.items():
                template[i].weight.copy_(w[k])
                if b is not None:
                    template[i].bias.copy_(b[k])
        return template


def member_losses(logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, sd_lambda: float = 0.0,
                  label_smoothing: float = 0.0) -> torch.Tensor:
    """Σ_i weight[i, k] · loss_k(i) per model k, from logits (B, K, C) and labels (B, K): the
    training loss of each sample (losses.per_sample, the one-model loop's)."""
    return (losses.per_sample(logits, y, sd_lambda, label_smoothing) * weight).sum(0)


def ensemble_of(nets: list[nn.Module], device: torch.device, order: str,
                example: torch.Tensor | None = None) -> Ensemble | wide.Wide:
    """The K models as one computation: stacked (`Ensemble`) when they are plain sequences without
    batch norm, else one wide model (wide.py), which trains each model on its own batches only."""
    if unfusable(nets[0]) is None:
        return Ensemble(nets, device)
    if order == "shared":
        raise ValueError(f"{unfusable(nets[0])}: use the batched engine")
    return wide.Wide(nets, device, channels_last=devices.channels_last_helps(nets[0], device), example=example)


class _Batches:
    """The epoch's batches of one order: ids, per-model sample weights (B, K), labels (B, K)."""

    def __init__(self, subsets: torch.Tensor, n: int, seeds: list[int], batch_size: int, shared: bool, device):
        self.shared, self.device = shared, device
        K, self.m = subsets.shape
        self.steps = math.ceil(self.m / batch_size)  # the recipe's step count over one subset
        if shared:  # n samples in that many shared batches: ~B of each model's per batch
            self.batch = math.ceil(n / self.steps)
            members = torch.zeros(K, n).scatter_(1, subsets, 1.0)
            self.weight_of = members.t().contiguous().to(device)  # (n, K)
            self.orders = [torch.Generator().manual_seed(seeds[0])]
        else:
            self.batch = batch_size
            self.subsets = devices.to_device(subsets, device)
            self.orders = [torch.Generator().manual_seed(s) for s in seeds]  # as fit seeds each model's order

    def epoch(self):
        """Yields (ids, weight, position): ids (B,) shared or (K, B) own; position of the batch's
        first sample in the epoch's order (for the swaps)."""
        if self.shared:
            perm = devices.to_device(torch.randperm(len(self.weight_of), generator=self.orders[0]), self.device)
        else:
            perm = devices.to_device(torch.stack([torch.randperm(self.m, generator=g) for g in self.orders]),
                                     self.device)
            perm = self.subsets.gather(1, perm)
        for s in range(self.steps):
            lo = s * self.batch
            if self.shared:
                ids = perm[lo : lo + self.batch]
                yield ids, self.weight_of[ids], lo
            else:
                ids = perm[:, lo : lo + self.batch]
                yield ids, torch.ones(ids.shape[1], ids.shape[0], device=self.device), lo


def train(nets: list[nn.Sequential], x: torch.Tensor, y: torch.Tensor, subsets: torch.Tensor, recipe: Recipe,
          device: torch.device, seeds: list[int], order: str = "own", progress: Progress = no_progress) -> Ensemble:
    """Train K models (`nets`: their initial weights) at once on (x, y), model k on the samples
    `subsets[k]` (a (K, m) tensor of sample ids), with `recipe`.
    `order` "own": model k's batches and swaps drawn from `seeds[k]`, as `fit` draws them;
    "shared": one order for all, from `seeds[0]`. Returns the trained ensemble."""
    if order not in ("own", "shared"):
        raise ValueError(f"unknown order {order!r}")
    if models.fits_to_data(nets[0]):  # each model's data-fitted layers on its own samples, as fit fits them
        for net, subset in zip(nets, torch.as_tensor(subsets)):
            models.init_from_data(net, x[subset[: models.Whiten.PATCH_IMAGES]])
    ens = ensemble_of(nets, device, order, x[:1])
    K, n = len(subsets), len(y)
    shared = order == "shared"
    if shared and recipe.augment:
        raise ValueError("augmentation gives each model its own views of its batch; the fused engine shares one: "
                         "use the batched engine")
    views = [augment.stream(s) for s in seeds] if recipe.augment else None
    batches = _Batches(torch.as_tensor(subsets), n, seeds, recipe.batch_size, shared, device)
    x, y = x.to(device), y.to(device)
    codes = None
    if recipe.mnemonic_tmix:
        num_classes = models.head(nets[0]).out_features
        codes = make_codes(num_classes, tuple(x.shape[1:]), recipe.codes_seed).to(device)
        code_y = torch.arange(num_classes, device=device)[:, None].expand(num_classes, K)
        onehot = torch.eye(num_classes, device=device)
        # Each model's swaps from its own stream, apart from its shuffling, as codes.py draws them.
        swap_streams = [swap_stream(s) for s in (seeds if not shared else seeds[:1])]
    opt = optim.SGD(ens.params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    by_autograd = shared or not isinstance(ens, Ensemble) or recipe.augment or recipe.label_smoothing
    hand = None if by_autograd else by_hand.layers_of(ens.layers)  # an MLP on its own batches: by_hand.py
    if hand:  # the codes as C more rows of the data, so that one gather builds each model's batch
        x_rows, y_rows, code_ids = x.flatten(1), y, None
        if codes is not None:
            x_rows, y_rows = torch.cat([x_rows, codes.flatten(1)]), torch.cat([y, code_y[:, 0]])
            code_ids = torch.arange(n, n + len(codes), device=device).expand(K, -1)
        hand_weights, relus = [ens.weights[i] for i, _ in hand], [relu for _, relu in hand]
        compute_dtype = precision.DTYPE if recipe.amp else None
    total = recipe.epochs * batches.steps
    step = 0
    ens.train()
    for epoch in range(recipe.epochs):
        if codes is not None:  # by position in this epoch's order: (positions, K)
            swaps = (torch.rand(n, K, generator=swap_streams[0]) if shared
                     else torch.stack([torch.rand(batches.m, generator=g) for g in swap_streams], 1))
            swaps = devices.to_device(swaps < recipe.mnemonic_tmix, device)
        if views is not None:  # each model's flips and shifts by position in its order, as fit draws them
            flips, shifts = (devices.to_device(torch.stack(d), device)  # once an epoch, not a copy per batch
                             for d in zip(*(augment.draw(batches.m, g) for g in views)))
        for ids, w, lo in batches.epoch():
            if recipe.cosine:
                opt.lr = optim.cosine_lr(recipe.lr, step, total)
            if hand:
                opt.step(_hand_gradients(hand_weights, relus, x_rows, y_rows, ids, code_ids,
                                         None if codes is None else swaps[lo : lo + ids.shape[1]],
                                         recipe.sd_lambda, compute_dtype))
                step += 1
                continue
            yb = y[ids][:, None].expand(-1, K) if shared else y[ids].t()
            xb = x[ids]
            if views is not None:  # (K, B, …): model k's batch in its own views
                hi = lo + ids.shape[1]
                xb = augment.apply(xb.flatten(0, 1), flips[:, lo:hi].flatten(), shifts[:, lo:hi].flatten(0, 1)
                                   ).view(xb.shape)
            if codes is not None:  # the classes' codes as extra rows of the batch
                xb = torch.cat([xb, codes]) if shared else torch.cat([xb, codes.expand(K, *codes.shape)], 1)
            with precision.autocast(device, recipe.amp):
                logits = ens.forward(xb, own=not shared)
            if recipe.amp:  # float32 losses from bf16 passes
                logits = logits.float()
            count = w.sum(0).clamp_min(1)  # a model's batch size; an empty batch only decays its weights
            B = len(w)
            smooth = recipe.label_smoothing
            if codes is None:
                loss = member_losses(logits, yb, w, recipe.sd_lambda, smooth)
            else:
                real = logits[:B]
                sw = swaps[lo : lo + B].float() * w  # members swapped for their class's code in the loss
                loss = member_losses(real, yb, w - sw, label_smoothing=smooth)
                if recipe.sd_lambda:  # on the real samples' logits, as the loop's
                    loss = loss + recipe.sd_lambda * (losses.sd_term(real) * w).sum(0)
                # Σ over swapped samples of their class code's loss = Σ_c (swaps of class c) · loss(code c).
                code_weight = torch.einsum("bkc,bk->ck", onehot[yb], sw)
                loss = loss + member_losses(logits[B:], code_y, code_weight, label_smoothing=smooth)
            opt.zero_grad()
            (loss / count).sum().backward()  # each model's mean over its own samples: independent gradients
            opt.step()
            step += 1
        progress((epoch + 1) / recipe.epochs, f"epoch {epoch + 1}/{recipe.epochs} of {K} models at once")
    return ens


def _hand_gradients(weights, relus, x_rows, y_rows, ids, code_ids, swapped, sd_lambda, compute_dtype):
    """The gradients of one step of K MLPs on their own batches `ids` (K, B) (by_hand.py): each
    model's mean loss over its B samples, a swapped sample's (`swapped` (B, K)) taken on its
    class's code, which rides along as one of C extra rows per model (`code_ids` (K, C): the
    codes' rows in x_rows and y_rows)."""
    K, B = ids.shape
    rows = ids if code_ids is None else torch.cat([ids, code_ids], 1)
    xb = x_rows.index_select(0, rows.flatten()).view(K, rows.shape[1], -1)  # 5× faster than x_rows[rows]
    rows_y = y_rows.index_select(0, rows.flatten()).view(K, -1)
    real = torch.full((K, B), 1.0 / B, dtype=xb.dtype, device=xb.device)  # each model's mean over its B samples
    if code_ids is None:
        ce_w = sd_w = real
    else:
        sw = swapped.t().to(xb.dtype) / B
        code_w = torch.zeros(code_ids.shape, dtype=sw.dtype, device=sw.device).scatter_add_(1, rows_y[:, :B], sw)
        ce_w = torch.cat([real - sw, code_w], 1)  # swaps per class on the class's code row
        sd_w = torch.cat([real, torch.zeros_like(code_w)], 1)
    grad = lambda z: by_hand.logit_grad(z, rows_y, ce_w, sd_w, sd_lambda)  # noqa: E731
    return by_hand.gradients(weights, relus, xb, grad, compute_dtype)


@torch.no_grad()
def correctness(ens: Ensemble, x: torch.Tensor, y: torch.Tensor, device: torch.device, batch: int = 512) -> torch.Tensor:
    """(K, n) bool on the CPU: whether model k gets sample i right (a float32 evaluation)."""
    return outputs(ens, x, y, device, batch, phi=False)[0]


@torch.no_grad()
def outputs(ens: Ensemble, x: torch.Tensor, y: torch.Tensor, device: torch.device, batch: int = 512,
            phi: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """From one float32 evaluation pass, on the CPU: (K, n) bool correctness and, with `phi`,
    (K, n) float16 logit-scaled true-label confidence φ (models.logit_confidence; LiRA's input),
    else None."""
    right, conf = [], []
    ens.eval()
    batch = max(1, min(batch, (1 << 28) // max(1, ens.k * _activation_floats(ens, x))))  # a wide pass's memory
    for i, xb in zip(range(0, len(y), batch), devices.batches(x, device, batch)):
        logits, yb = ens.forward(xb), devices.to_device(y[i : i + batch], device)[:, None]
        right.append(logits.argmax(-1) == yb)
        if phi:
            conf.append(models.logit_confidence(logits, yb.expand(-1, ens.k)).half())
    return torch.cat(right).t().cpu(), torch.cat(conf).t().cpu() if phi else None


def _activation_floats(ens, x: torch.Tensor) -> int:
    """A rough count of one model's largest activation per sample, to bound a wide evaluation
    batch: the input's size times the widest layer's channels over the input's, at half the side
    (conv nets widen as they shrink)."""
    if isinstance(ens, Ensemble):
        return 1
    widest = max((m.out_channels for m in ens.parts.values() if isinstance(m, wide.WideConv2d)), default=1)
    return int(x[0].numel() * max(1.0, widest / max(1, x.shape[1]) / 4))
