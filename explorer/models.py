"""Architecture registry. Every model ends in an `nn.Linear` head whose input is the
penultimate feature vector (used for maps and entanglement scores)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .runtime import devices
from .errors import UserError


class ArchError(UserError):
    """An architecture that does not exist or does not fit the data."""


def mlp(channels: int, num_classes: int, size: int, hidden: int = 128) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(channels * size * size, hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


def cnn(channels: int, num_classes: int, size: int, width: int = 32) -> nn.Module:
    """Three 3×3 convolutions, one pooling step and global average pooling: fits 8×8 to 32×32."""
    return nn.Sequential(
        nn.Conv2d(channels, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(2 * width, 2 * width, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, num_classes),
    )


def _resnet(depth: int) -> Callable[..., nn.Module]:
    def build(channels: int, num_classes: int, size: int) -> nn.Module:
        import torchvision

        model = getattr(torchvision.models, f"resnet{depth}")(num_classes=num_classes)
        # CIFAR stem: a 3×3 stride-1 convolution and no max-pool, so small images keep detail.
        model.conv1 = nn.Conv2d(channels, 64, 3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
        return model

    return build


def vgg16_bn(channels: int, num_classes: int, size: int) -> nn.Module:
    import torchvision

    model = torchvision.models.vgg16_bn(num_classes=num_classes)
    model.features[0] = nn.Conv2d(channels, 64, 3, padding=1)
    # The CIFAR variant: 512 features after global pooling, a small classifier.
    model.avgpool = nn.AdaptiveAvgPool2d(1)
    model.classifier = nn.Sequential(nn.Flatten(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, num_classes))
    return model


# name -> (builder, smallest image side it accepts)
ARCHS: dict[str, tuple[Callable[..., nn.Module], int]] = {
    "mlp": (mlp, 1),
    "cnn": (cnn, 2),
    "resnet18": (_resnet(18), 8),
    "resnet50": (_resnet(50), 8),
    "vgg16_bn": (vgg16_bn, 32),
}


def build(arch: str, channels: int, num_classes: int, size: int) -> nn.Module:
    if arch not in ARCHS:
        raise ArchError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    builder, min_size = ARCHS[arch]
    if size < min_size:
        raise ArchError(f"{arch} needs images at least {min_size}×{min_size}; these are {size}×{size}")
    return builder(channels, num_classes, size)


def for_dataset(arch: str, data) -> nn.Module:
    channels, size, _ = data.shape
    return build(arch, channels, data.num_classes, size)


def head(model: nn.Module) -> nn.Linear:
    """The last linear layer: its input is the penultimate representation."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1]


@torch.no_grad()
def eval_outputs(model: nn.Module, x: torch.Tensor, batch_size: int = 512):
    """Eval-mode outputs of `x`, batch by batch on the model's device (a generator); the model's
    train/eval mode is restored afterwards. Forward hooks see every batch. Outputs stay on the
    device: a caller that wants them on the host collects them and copies once."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for xb in devices.batches(x, device, batch_size):
            yield model(xb)
    finally:
        model.train(was_training)


@torch.no_grad()
def penultimate(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Eval-mode penultimate features of `x`, batched, returned on the CPU (one copy at the end)."""
    captured: list[torch.Tensor] = []
    hook = head(model).register_forward_hook(lambda mod, inp, out: captured.append(inp[0].detach()))
    try:
        for _ in eval_outputs(model, x, batch_size):
            pass
    finally:
        hook.remove()
    return torch.cat(captured).cpu()


@torch.no_grad()
def predict_proba(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Eval-mode softmax over `x`, batched, on the CPU (one copy at the end)."""
    return torch.cat([torch.softmax(out, 1) for out in eval_outputs(model, x, batch_size)]).cpu()
