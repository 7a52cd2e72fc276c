"""Training many small models on different subsets, as one batched computation where it pays.

The batched engine stacks the K models' parameters and runs them through `torch.func.vmap`:
each model draws its own mini-batches from its own subset, with the same initial weights, batch
order and update as `fit` would give it alone, so the engine is a speed choice, not a different
estimator. Models with batch-norm (running statistics updated in place) train one at
a time.
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace
from typing import Callable

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from .. import models
from ..runtime import devices, optim, precision
from ..runtime.progress import Progress, no_progress
from . import fit  # the package's: in one piece, or by blocks when the recipe says so
from .loop import init_model
from .recipe import Recipe

BATCHABLE = {"mlp", "cnn"}


def not_batchable(arch: str, recipe: dict | None = None) -> str | None:
    """Why these models cannot train batched, or None. The batched engine is plain SGD on the
    cross-entropy: a recipe with mnemonic codes, the SD loss or blocks trains one model at a time,
    as `fit` trains the model itself, so the estimate is of that model's own algorithm."""
    if arch not in BATCHABLE:
        return f"{arch} cannot be trained batched (it has batch-norm)"
    extras = [name for key, name in (("mnemonic_tmix", "mnemonic codes"), ("sd_lambda", "the SD loss"),
                                     ("blocks", "blocks")) if (recipe or {}).get(key)]
    if extras:
        return f"a recipe with {' and '.join(extras)} cannot be trained batched"
    return None


def engine_for(arch: str, device: torch.device, recipe: dict | None = None) -> str:
    """Measured on a 2-core CPU (bench/memorization.py): batching a 64-128-10 MLP is several
    times faster than one model at a time, while vmapped (grouped) convolutions are slower than
    plain ones on CPU; on a GPU batching pays for both."""
    if not_batchable(arch, recipe):
        return "sequential"
    if device.type == "cpu" and arch != "mlp":
        return "sequential"
    return "batched"


def _predict_correct(predict: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                     device: torch.device, batch: int = 512) -> torch.Tensor:
    """Correctness (…, n) of predictions `predict(x_batch) -> (…, b, classes)`, on the CPU: kept on
    the device batch by batch and copied once."""
    out = []
    y = devices.to_device(y, device)
    with torch.no_grad():
        for i, xb in zip(range(0, len(y), batch), devices.batches(x, device, batch)):
            out.append(predict(xb).argmax(-1) == y[i : i + batch])
    return torch.cat(out, -1).cpu()


def _sequential(arch, ds, subsets, seeds, recipe, device, progress):
    train_c, test_c = [], []
    for k, (subset, seed) in enumerate(zip(subsets, seeds)):
        model = init_model(arch, ds, seed)
        sub = torch.as_tensor(subset)
        step = lambda f, m, k=k: progress((k + f) / len(seeds), m)  # noqa: E731
        fit(model, ds.x_train[sub], ds.y_train[sub], replace(recipe, seed=seed), device, record_dynamics=False,
            progress=step)
        model.eval()
        train_c.append(_predict_correct(model, ds.x_train, ds.y_train, device))
        test_c.append(_predict_correct(model, ds.x_test, ds.y_test, device))
    return torch.stack(train_c), torch.stack(test_c)


def _batched(arch, ds, subsets, seeds, recipe, device, progress):
    nets = [init_model(arch, ds, seed).to(device) for seed in seeds]
    params, buffers = stack_module_state(nets)
    skeleton = copy.deepcopy(nets[0]).to("meta")

    def forward(p, b, x):
        return functional_call(skeleton, (p, b), (x,))

    per_model = vmap(precision.functional(forward, device, recipe.amp))  # each model its own inputs: (K, B, …)
    shared = vmap(forward, in_dims=(0, 0, None))  # every model the same inputs: (B, …); float32 predictions

    K, m = subsets.shape
    subsets = torch.as_tensor(subsets).to(device)
    x, y = ds.x_train.to(device), ds.y_train.to(device)
    opt = optim.SGD(list(params.values()), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    orders = [torch.Generator().manual_seed(seed) for seed in seeds]  # as the loop seeds its batch order
    total_steps = recipe.epochs * math.ceil(m / recipe.batch_size)
    step = 0
    for epoch in range(recipe.epochs):
        perms = devices.to_device(torch.stack([torch.randperm(m, generator=g) for g in orders]), device)
        order = subsets.gather(1, perms)
        for i in range(0, m, recipe.batch_size):
            ids = order[:, i : i + recipe.batch_size]
            logits = per_model(params, buffers, x[ids])  # float32, also with amp
            losses = F.cross_entropy(logits.flatten(0, 1), y[ids].flatten(), reduction="none")
            if recipe.cosine:
                opt.lr = optim.cosine_lr(recipe.lr, step, total_steps)
            opt.zero_grad()
            losses.view(K, -1).mean(1).sum().backward()  # sum of per-model means: independent gradients
            opt.step()
            step += 1
        progress((epoch + 1) / recipe.epochs, f"epoch {epoch + 1}/{recipe.epochs} of {K} models at once")
    predict = lambda xb: shared(params, buffers, xb)  # noqa: E731
    train_c = _predict_correct(predict, ds.x_train, ds.y_train, device)
    return train_c, _predict_correct(predict, ds.x_test, ds.y_test, device)


def train_correctness(arch: str, ds, subsets: torch.Tensor, seeds: list[int], recipe: Recipe, device: torch.device,
                      engine: str = "auto", progress: Progress = no_progress) -> tuple[torch.Tensor, torch.Tensor]:
    """Train one model per row of `subsets` (sample ids, equal lengths), model k from seed
    `seeds[k]`, and return whether each got each training and each test sample right:
    bool tensors (K, n_train) and (K, n_test)."""
    if engine == "auto":
        engine = engine_for(arch, device, recipe.as_meta())
    if engine == "batched" and (why := not_batchable(arch, recipe.as_meta())):
        raise models.ArchError(f"{why}; use the sequential engine")  # else: silently another algorithm
    run = _batched if engine == "batched" else _sequential
    return run(arch, ds, torch.as_tensor(subsets), list(seeds), recipe, device, progress)
