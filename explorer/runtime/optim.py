"""Plain SGD with momentum and weight decay, the update of `torch.optim.SGD` (no dampening,
no Nesterov), written out because constructing a `torch.optim` optimizer imports TorchDynamo:
over a second at the start of every job, for an update that is three foreach calls."""

from __future__ import annotations

import math

import torch


class SGD:
    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.buffers: list[torch.Tensor | None] = [None] * len(self.params)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor | None] | None = None) -> None:
        """One update; `grads` (aligned with the parameters) overrides `p.grad`, e.g. masked ones.
        Parameters without a gradient are skipped, their momentum untouched."""
        grads = grads if grads is not None else [p.grad for p in self.params]
        idx = [i for i, g in enumerate(grads) if g is not None]
        if not idx:
            return
        params, grads = [self.params[i] for i in idx], [grads[i] for i in idx]
        if self.momentum and len({(t.device, t.dtype) for t in params + grads}) == 1 and self._same_layout(idx, params, grads):
            self._fused(idx, params, grads)
            return
        if self.weight_decay:
            grads = torch._foreach_add(grads, params, alpha=self.weight_decay)
        if self.momentum:
            seen = [k for k, i in enumerate(idx) if self.buffers[i] is not None]
            if seen:
                bufs = [self.buffers[idx[k]] for k in seen]
                torch._foreach_mul_(bufs, self.momentum)
                torch._foreach_add_(bufs, [grads[k] for k in seen])
            for k, i in enumerate(idx):
                if self.buffers[i] is None:  # the first step seeds the buffer with the gradient
                    self.buffers[i] = grads[k].clone()
            grads = [self.buffers[i] for i in idx]
        torch._foreach_add_(params, grads, alpha=-self.lr)

    def _same_layout(self, idx, params, grads) -> bool:
        """Whether each parameter, its gradient and its momentum share strides: the fused kernel
        walks them element by element in memory order (a channels-last gradient of a contiguous
        weight would be added to the wrong elements)."""
        return all(g.stride() == p.stride() and (self.buffers[i] is None or self.buffers[i].stride() == p.stride())
                   for i, p, g in zip(idx, params, grads))

    def _fused(self, idx, params, grads) -> None:
        """The same update as the foreach path, bit for bit, in one pass over each tensor (PyTorch's
        fused SGD kernel): half the memory traffic, which is most of a small ensemble's step."""
        fresh = [self.buffers[i] is None for i in idx]  # a first update seeds the buffer with the gradient
        for first in (True, False):
            ks = [k for k in range(len(idx)) if fresh[k] == first]
            if not ks:
                continue
            if first:
                for k in ks:
                    self.buffers[idx[k]] = torch.empty_like(grads[k])
            torch._fused_sgd_([params[k] for k in ks], [grads[k] for k in ks], [self.buffers[idx[k]] for k in ks],
                              weight_decay=self.weight_decay, momentum=self.momentum, lr=self.lr, dampening=0.0,
                              nesterov=False, maximize=False, is_first_step=first)


def cosine_lr(base_lr: float, step: int, total_steps: int) -> float:
    """Cosine annealing from base_lr to 0 over total_steps."""
    return 0.5 * base_lr * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
