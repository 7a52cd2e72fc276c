"""Choosing the compute device (`auto` takes CUDA, then Apple's MPS, then the CPU), and moving
host data to it."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator

import torch

from ..errors import UserError

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


# id(host tensor) -> (weak reference to it, its version when pinned, its pinned copy)
_pinned: dict[int, tuple[weakref.ref, int, torch.Tensor]] = {}


def pinned(x: torch.Tensor) -> torch.Tensor:
    """`x` (on the CPU) in page-locked memory, from which copies to a CUDA GPU need not block the
    host. Pinning costs a full copy, so it is done once per tensor (a dataset's tensors are
    streamed again and again) and the copy is kept while `x` lives unchanged."""
    if x.is_pinned():
        return x
    key = id(x)
    hit = _pinned.get(key)
    if hit is not None and hit[0]() is x and hit[1] == x._version:  # _version: bumped by in-place edits
        return hit[2]
    copy = x.pin_memory()
    _pinned[key] = (weakref.ref(x, lambda _, key=key: _pinned.pop(key, None)), x._version, copy)
    return copy


def _streaming(x: torch.Tensor, device: torch.device) -> bool:
    return device.type == "cuda" and x.device.type == "cpu"


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`x` on `device`; a host tensor bound for a CUDA GPU goes from pinned memory, without
    blocking the host (work queued after it on the device waits for it, the host does not)."""
    return pinned(x).to(device, non_blocking=True) if _streaming(x, device) else x.to(device)


def batches(x: torch.Tensor, device: torch.device, batch_size: int) -> Iterator[torch.Tensor]:
    """Consecutive batches of `x` on `device`. A host tensor bound for a CUDA GPU is pinned once
    and each batch copied without blocking, so the next copy overlaps the current batch's work;
    elsewhere a batch is `x[i:j].to(device)` (on the CPU: the slice itself, no copy)."""
    if _streaming(x, device):
        x = pinned(x)
    for i in range(0, len(x), batch_size):
        yield x[i : i + batch_size].to(device, non_blocking=_streaming(x, device))  # a copy back must block


def total_bytes(device: torch.device) -> int | None:
    """The memory of `device`: the GPU's, or the host's for the CPU (Linux); None where it cannot be
    asked (MPS, or a CUDA device this machine does not have: a Ray cluster's)."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory) if torch.cuda.is_available() else None
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemTotal:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def out_of_memory(err: BaseException) -> bool:
    """Whether `err` is a device (or host) running out of memory for a tensor."""
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def release(device: torch.device) -> None:
    """Give cached blocks back after an out-of-memory error, so a smaller retry can have them."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def channels_last_helps(model: torch.nn.Module, device: torch.device) -> bool:
    """Whether convolutions of `model` should run channels-last on `device`: on CUDA (tensor
    cores) and on the CPU (oneDNN), where it measured 15–30% faster a training step for the
    registry's conv nets (resnet18, fast_cnn, cnn; docs/memorization.md); not elsewhere, and not
    for a user's or timm's architecture, whose forward may `.view` a channels-last tensor."""
    return (device.type in ("cpu", "cuda") and getattr(model, "explorer_registry", False)
            and any(isinstance(m, torch.nn.Conv2d) for m in model.modules()))


@contextlib.contextmanager
def conv_layout(model: torch.nn.Module, device: torch.device):
    """The model's weights channels-last while inside, where that helps (`channels_last_helps`),
    and back in the usual layout on leaving, however it is left: flat views of the weights
    (Fisher, unlearning) expect it. The parameters stay the same objects."""
    if not channels_last_helps(model, device):
        yield
        return
    model.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        model.to(memory_format=torch.contiguous_format)
