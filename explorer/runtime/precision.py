"""Mixed precision (`Recipe.amp`): the one place that says how a forward pass runs in bf16.

Training forward passes (training.fit, hence block training and every ensemble engine; the
shared unlearning loop) run under bfloat16 autocast (`wrap`, `autocast`); the outputs come back
as float32, so losses, softmax statistics and everything after the model are float32 on every
device (CPU autocast,
unlike CUDA's, would leave e.g. log_softmax in bf16). Weights, gradients and the optimizer stay
float32. bf16 has float32's range, so no loss scaling is needed; a CUDA GPU without bf16 (before
Ampere) is refused rather than given a float16 path with a GradScaler, which our hand-written
optimizer would have to learn. Evaluation passes and the one-shot computations (Fisher, Hessian,
the forget gradient) stay float32: they are a small part of the cost and what gets measured.
With amp off nothing is wrapped: the computation is exactly the float32 one.
"""

from __future__ import annotations

import contextlib
import functools
import warnings

import torch
from torch import nn

from ..errors import RecipeError

DTYPE = torch.bfloat16


def _native_bf16(device: torch.device) -> bool:
    """Whether `device` computes in bf16 natively. Emulated bf16 (which `is_bf16_supported`
    accepts by default on older GPUs) is slower than float32; torch before 2.4 lacks the keyword."""
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:
        return torch.cuda.get_device_capability(device) >= (8, 0)


@functools.cache
def check(device: torch.device) -> None:
    """Refuse, in one line, mixed precision on a device that cannot run it."""
    if device.type == "cuda" and not _native_bf16(device):
        raise RecipeError(f"mixed precision (amp) needs bfloat16, which {torch.cuda.get_device_name(device)} "
                          f"lacks; train without amp, or use another device")
    with warnings.catch_warnings(record=True) as caught:  # a device without bf16 autocast only warns
        warnings.simplefilter("always")
        torch.autocast(device.type, dtype=DTYPE)
    if any("autocast" in str(w.message).lower() for w in caught):
        raise RecipeError(f"mixed precision (amp) is not available on {device.type} with this torch; train without amp")


def autocast(device: torch.device, enabled: bool):
    """The context a forward pass runs in: bf16 autocast on `device` when `enabled`, else nothing."""
    if not enabled:
        return contextlib.nullcontext()
    check(device)
    return torch.autocast(device.type, dtype=DTYPE)


class Autocast(nn.Module):
    """`model` with its forward under `autocast` and its outputs cast to float32; its parameters
    (float32 throughout) are the model's own, so optimizers and penalties see the same tensors."""

    def __init__(self, model: nn.Module, device: torch.device):
        super().__init__()
        self.model, self.device = model, device

    def forward(self, *args, **kwargs):
        with autocast(self.device, True):
            out = self.model(*args, **kwargs)
        return out.float()


def wrap(model: nn.Module, device: torch.device, enabled: bool) -> nn.Module:
    """`model` itself when amp is off (bit for bit the float32 computation), else `Autocast(model)`."""
    return Autocast(model, device) if enabled else model
