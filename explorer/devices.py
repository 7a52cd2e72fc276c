"""Choosing the compute device: `auto` takes CUDA, then Apple's MPS, then the CPU."""

from __future__ import annotations

import torch

from .errors import UserError

CHOICES = ("auto", "cpu", "cuda", "mps")


class DeviceError(UserError):
    pass


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resolve(name: str = "auto") -> torch.device:
    if name not in CHOICES:
        raise DeviceError(f"unknown device {name!r}; choose one of {', '.join(CHOICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda was asked for but no CUDA GPU is available")
    if name == "mps" and not _mps_available():
        raise DeviceError("--device mps was asked for but MPS is not available")
    return torch.device(name)


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type
