"""The unlearning error of Unrolling SGD (Thudi et al., EuroS&P 2022): a cheap proxy of the
verification error ‖θ_u − θ_r‖₂, computed from the original's training run alone.

- `top_hessian_eigenvalue` is power iteration on Hessian-vector products (double backward) of the
  training loss (explorer/training/losses.py) over a fixed batch; it converges to the eigenvalue
  of largest magnitude.
- `unlearning_error` = η²·t·½·‖θ_t − θ_0‖₂·σ with σ = √λ_max, as the official code takes it
  (`sigma = np.sqrt(top_eigenvalues[-1])`). Power iteration returns the eigenvalue of largest
  magnitude, which on a non-convex loss can be negative; we take √|λ| (the square root of the
  Hessian's spectral norm), which equals the official σ whenever λ_max > 0 and is never NaN.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

import torch
from torch import nn

from ..training.losses import training_loss

HESSIAN_BATCH = 512  # samples the Hessian is taken over (all of them when there are fewer)


def training_steps(epochs: int, n: int, batch_size: int) -> int:
    """t: the SGD steps of a training run (every sample is seen once per epoch)."""
    return int(epochs) * math.ceil(int(n) / int(batch_size))


def hessian_batch(x: torch.Tensor, y: torch.Tensor, size: int = HESSIAN_BATCH, seed: int = 0):
    """A fixed batch: `size` samples drawn once with a seeded generator (in id order), or all
    of them when there are fewer; the same data and seed always give the same batch."""
    if len(y) <= size:
        return x, y
    ids = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:size].sort().values
    return x[ids], y[ids]


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


def top_hessian_eigenvalue(model: nn.Module, x: torch.Tensor, y: torch.Tensor, iters: int = 20, seed: int = 0, *,
                           sd_lambda: float = 0.0, tol: float = 1e-3, batch: int = HESSIAN_BATCH) -> float:
    """The eigenvalue of largest magnitude of the Hessian of the training loss (batch-mean
    cross-entropy, plus the SD term when sd_lambda > 0) with respect to the trainable parameters,
    over a fixed batch of `batch` samples of (x, y) (all of them if fewer).

    Power iteration on Hessian-vector products: the gradient graph is built once and each
    iteration is one double-backward pass. Stops after `iters` products, or earlier once the
    Rayleigh quotient changes by less than `tol` (relative), as PyHessian does. The model is
    evaluated in eval mode (as the official code does) and left in the mode it was in."""
    return _power_iteration(model, x, y, iters, seed, sd_lambda, tol, batch)[0]


def _power_iteration(model, x, y, iters, seed, sd_lambda, tol, batch) -> tuple[float, int]:
    """(eigenvalue, Hessian-vector products taken)."""
    params = _params(model)
    device = params[0].device
    xb, yb = hessian_batch(x, y, batch)
    xb, yb = xb.to(device), yb.to(device)
    was_training = model.training
    model.eval()
    try:
        loss = training_loss(model(xb), yb, sd_lambda)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        gen = torch.Generator().manual_seed(seed)
        v = [torch.randn(p.shape, generator=gen, dtype=p.dtype).to(device) for p in params]
        norm = torch.sqrt(sum((u * u).sum() for u in v))
        v = [u / norm for u in v]
        eig = float("nan")
        for k in range(1, iters + 1):
            hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=k < iters)
            quotient = sum((a * b).sum() for a, b in zip(hv, v))  # Rayleigh quotient vᵀHv, ‖v‖ = 1
            norm = torch.sqrt(sum((h * h).sum() for h in hv))
            new, norm_value = torch.stack([quotient, norm]).tolist()  # the stopping test's one host sync
            if not math.isfinite(new) or norm_value == 0.0:
                return new, k
            v = [h.detach() / norm for h in hv]
            if k > 1 and abs(new - eig) <= tol * (abs(eig) + 1e-12):
                return new, k
            eig = new
        return eig, iters
    finally:
        model.train(was_training)


def _flat(theta) -> torch.Tensor:
    """A flat float64 vector on the CPU from a tensor, a list of tensors or a name -> tensor mapping
    (moved first: Apple's MPS has no float64)."""
    if isinstance(theta, torch.Tensor):
        return theta.detach().reshape(-1).cpu().double()
    if isinstance(theta, Mapping):
        theta = theta.values()
    return torch.cat([t.detach().reshape(-1).cpu().double() for t in theta])


def unlearning_error(theta_t, theta_0, lr: float, steps: int, sigma: float) -> float:
    """e = η²·t·½·‖θ_t − θ_0‖₂·σ. θ_t and θ_0 are flat tensors, lists of tensors in
    the same order, or name -> tensor mappings with the same keys (the trainable parameters)."""
    if isinstance(theta_t, Mapping) and isinstance(theta_0, Mapping):
        theta_0 = [theta_0[k] for k in theta_t]
    shift = float(torch.linalg.vector_norm(_flat(theta_t) - _flat(theta_0)))
    return lr * lr * steps * 0.5 * shift * sigma


def unlearning_error_of(model: nn.Module, theta0_state: Mapping[str, torch.Tensor], recipe_lr: float, steps: int,
                        x: torch.Tensor, y: torch.Tensor, *, sd_lambda: float = 0.0, iters: int = 20,
                        seed: int = 0, tol: float = 1e-2) -> dict:
    """The unlearning error of a trained model θ_t (`model`) whose training started at
    `theta0_state` (its initial state dict; only the trainable parameters are used) and took
    `steps` SGD steps at learning rate `recipe_lr`; σ = √|λ_max| of the training loss's Hessian on
    a fixed batch of 512 samples of (x, y). Power iteration stops at a 1% relative change of the
    Rayleigh quotient (about 6 Hessian-vector products on a digits CNN; σ then within ~0.3% of
    the tol=1e-3 value), so it is cheap enough for every run. Returns the error with its parts:
    {"unlearning_error", "sigma", "lambda_max", "weight_shift", "lr", "steps", "hvps", "seconds"}."""
    start = time.perf_counter()
    named = {k: p for k, p in model.named_parameters() if p.requires_grad}
    missing = [k for k in named if k not in theta0_state]
    if missing:
        raise ValueError(f"the initial state has no {missing[0]!r}: not this model's initial weights")
    lam, hvps = _power_iteration(model, x, y, iters, seed, sd_lambda, tol, HESSIAN_BATCH)
    sigma = math.sqrt(abs(lam)) if math.isfinite(lam) else float("nan")
    theta_0 = {k: theta0_state[k] for k in named}
    shift = float(torch.linalg.vector_norm(_flat(named) - _flat(theta_0)))
    return {"unlearning_error": unlearning_error(named, theta_0, recipe_lr, steps, sigma), "sigma": sigma,
            "lambda_max": lam, "weight_shift": shift, "lr": recipe_lr, "steps": steps, "hvps": hvps,
            "seconds": time.perf_counter() - start}
