"""What the engines are measured against: the loop a researcher writes over tensors already in
memory (one model at a time, a `randperm` of indices per epoch, slicing, `torch.optim.SGD`),
and the machine's matmul peak, with each model's training FLOPs to say what fraction of it an
engine reaches."""

import os
import time

import torch
from torch import nn

from explorer import models

QUICK = bool(os.environ.get("BENCH_QUICK"))


def matmul_peak(device) -> float:
    """GFLOP/s of a large float32 matmul, the best of five rounds (a burst of other work on the
    machine must not lower it): what "fraction of peak" divides by."""
    n = 1024 if QUICK else 2048
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    reps, best = 2 if QUICK else 4, 0.0
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - start) / 1e9)
    return best


def tensor_loop(arch, ds, subset, recipe, device, seed: int = 0) -> None:
    """The peer: one model on its subset, the data already tensors on the device, a fresh
    permutation each epoch and slices of it as batches, torch.optim.SGD and cross-entropy; then
    the correctness on the training set that each of the estimator's models reports."""
    torch.manual_seed(seed)
    model = models.for_dataset(arch, ds).to(device)
    x, y = ds.x_train[subset].to(device), ds.y_train[subset].to(device)
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    model.train()
    for _ in range(recipe.epochs):
        perm = torch.randperm(len(y), device=device)
        for i in range(0, len(y), recipe.batch_size):
            ids = perm[i : i + recipe.batch_size]
            opt.zero_grad()
            loss_fn(model(x[ids]), y[ids]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        torch.cat([model(xb).argmax(1) for xb in ds.x_train.to(device).split(512)]).eq(ds.y_train.to(device)).cpu()


def training_flops_per_sample(arch, ds) -> float:
    """Training FLOPs of one sample through the model's linear and convolution layers: forward,
    weight gradients, and the input gradients of every layer but the first (which needs none)."""
    model, flops = models.for_dataset(arch, ds), []

    def count(mod, inputs, out):
        per_output = mod.in_features if isinstance(mod, nn.Linear) else (
            mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1])
        flops.append(2 * out[0].numel() * per_output)

    for mod in model.modules():
        if isinstance(mod, (nn.Linear, nn.Conv2d)):
            mod.register_forward_hook(count)
    model.eval()
    with torch.no_grad():
        model(ds.x_train[:1])
    return 2 * flops[0] + 3 * sum(flops[1:])
