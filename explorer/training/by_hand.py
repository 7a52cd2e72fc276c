"""The batched engine's step for MLPs, with the gradient written out instead of taken by autograd.

For a stack of linear layers and ReLUs, each model on its own batch (the batched engine,
fused.py), the small tensors of a step — 128 models of 64 → 128 → 10 on 74 rows — make autograd's
bookkeeping and the loss's dozens of small operations cost as much as the matmuls on a CPU. The
gradient of the recipe's loss is short by hand. For model k with rows r of weight a_rk (the real
samples, and with mnemonic codes the classes' code rows, codes.py), s_rk on the real rows (the
SD loss), logits z_r of C classes and n_k its batch's sample count:

    L_k = (1/n_k) Σ_r [ a_rk · CE(z_r, y_r) + (λ/C) · s_rk · std(z_r) ]
    ∂L_k/∂z_r = (a_rk/n_k) (softmax(z_r) − e_{y_r}) + λ s_rk / (n_k C (C−1) std(z_r)) · (z_r − mean(z_r))

(std unbiased, as torch.std and the SD loss's official code), then back through each layer:
∂W = gᵀh and ∂b = Σ_rows g per model, g ← g·W masked by the ReLU. Same numbers as autograd up to
rounding; tests/test_memorization.py checks the weights against `fit` in float64.
"""

from __future__ import annotations

import torch
from torch import nn


def layers_of(net_layers: list[nn.Module]) -> list[tuple[int, bool]] | None:
    """[(index of a linear layer, whether a ReLU follows it)] for an optional leading flatten and
    then linear layers each optionally followed by one ReLU; None for any other model."""
    mods = net_layers[1:] if net_layers and isinstance(net_layers[0], nn.Flatten) else net_layers
    offset = len(net_layers) - len(mods)
    out, i = [], 0
    while i < len(mods):
        if not isinstance(mods[i], nn.Linear):
            return None
        relu = i + 1 < len(mods) and isinstance(mods[i + 1], nn.ReLU)
        out.append((offset + i, relu))
        i += 2 if relu else 1
    return out or None


def logit_grad(logits: torch.Tensor, y: torch.Tensor, ce_w: torch.Tensor, sd_w: torch.Tensor | None,
               sd_lambda: float) -> torch.Tensor:
    """∂L/∂z (K, R, C) of Σ_r ce_w·CE(z_r, y_r) + (λ/C)·sd_w·std(z_r), from logits (K, R, C),
    labels y (K, R) and row weights (K, R) (already divided by each model's sample count)."""
    g = torch.softmax(logits, 2)
    g.scatter_add_(2, y.unsqueeze(2), torch.full(y.shape + (1,), -1.0, dtype=g.dtype, device=g.device))
    g.mul_(ce_w.unsqueeze(2))
    if sd_lambda:
        C = logits.shape[2]
        centred = logits - logits.mean(2, keepdim=True)
        std = centred.norm(dim=2, keepdim=True) / (C - 1) ** 0.5
        g.addcmul_(centred, sd_w.unsqueeze(2) / std, value=sd_lambda / (C * (C - 1)))
    return g


@torch.no_grad()
def gradients(weights: list[tuple[torch.Tensor, torch.Tensor | None]], relus: list[bool], x: torch.Tensor,
              grad_of_logits, compute_dtype: torch.dtype | None = None) -> list[torch.Tensor]:
    """Forward on x (K, R, d) through the linear layers `weights` [(W (K, o, i), b (K, o) or None)],
    ReLU after layer l when relus[l]; `grad_of_logits(logits float) -> g` gives ∂L/∂logits.
    Returns the gradients in the order of the weights, bias after its matrix (as Ensemble.params).
    With `compute_dtype` (bf16 for amp) the matmuls run in it and the gradients come back in the
    weights' dtype, as autocast would do."""
    cast = (lambda t: t) if compute_dtype is None else (lambda t: t.to(compute_dtype))
    ws = [(cast(w), None if b is None else cast(b)) for w, b in weights]
    inputs, h = [], cast(x)
    for (w, b), relu in zip(ws, relus):
        inputs.append(h)
        h = torch.bmm(h, w.transpose(1, 2)) if b is None else torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
        if relu:
            h.relu_()
    g = cast(grad_of_logits(h if compute_dtype is None else h.float()))
    grads: list[torch.Tensor] = []
    for layer in reversed(range(len(ws))):
        (w, b), h = ws[layer], inputs[layer]
        grads_here = [torch.bmm(g.transpose(1, 2), h)] + ([] if b is None else [g.sum(1)])
        grads = grads_here + grads
        if layer:
            g = torch.bmm(g, w)
            if relus[layer - 1]:  # h is the ReLU's output: positive exactly where it passed
                g = torch.ops.aten.threshold_backward(g, h, 0)
    dtype = weights[0][0].dtype
    return [t.to(dtype) for t in grads]
