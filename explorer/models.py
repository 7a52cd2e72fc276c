"""Architecture registry, the checkpoint layouts other code bases save them in, and a user's own
architectures (`MODULE:CALLABLE`, `timm:NAME`).

A model's penultimate feature vector (maps, entanglement scores) is the input of its last
`nn.Linear`, or of the layer its `Arch.head` names. A model that expects other input than the
dataset's standardized pixels carries its own input transform (`Arch.normalize`), applied by a
forward pre-hook, so everything that evaluates, trains or unlearns it feeds it the same tensors
as any other model.
"""

from __future__ import annotations

import importlib
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .runtime import devices
from . import errors
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


def sigmoid_mlp(channels: int, num_classes: int, size: int, hidden: int = 1000) -> nn.Module:
    """One hidden layer of 1,000 sigmoid units: the MNIST model of the mnemonic-code paper
    (Yamashita et al., ACML 2024; its code's models/mlp.py), whose one-shot update it was tuned on."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(channels * size * size, hidden),
        nn.Sigmoid(),
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


class Scale(nn.Module):
    """Multiplies by a constant (no weights)."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor

    def extra_repr(self) -> str:
        return f"{self.factor:g}"


class Whiten(nn.Conv2d):
    """A 2×2 convolution fixed to whiten the 2×2 patches of the images it is fitted to: each
    filter an eigenvector of their covariance over the root of its eigenvalue, once as it is and
    once negated (airbench's stem: 12 directions × 2 for 3 channels). Its weights are not trained;
    its bias is. `init_from_data` fits it (training.fit and the ensembles call it on the model's
    own training samples, so a sample outside a model's subset never touches it)."""

    EPS = 5e-4
    PATCH_IMAGES = 5000  # the first images fitted to, as airbench

    def __init__(self, channels: int):
        super().__init__(channels, 2 * channels * 4, 2, bias=True)
        self.weight.requires_grad_(False)

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor) -> None:
        d = self.in_channels * 4
        cov, count = torch.zeros(d, d, dtype=torch.float64), 0
        for part in x[: self.PATCH_IMAGES].split(500):  # patches of 500 images at a time: bounded memory
            patches = nn.functional.unfold(part.double().cpu(), 2).transpose(1, 2).reshape(-1, d)
            cov += patches.T @ patches
            count += len(patches)
        cov /= max(count, 1)
        values, vectors = torch.linalg.eigh(cov)
        filters = (vectors / (values.clamp_min(0) + self.EPS).sqrt()).T.flip(0)  # largest eigenvalue first
        filters = filters.reshape(d, self.in_channels, 2, 2)
        self.weight.copy_(torch.cat([filters, -filters]).to(self.weight))


def fits_to_data(model: nn.Module) -> bool:
    """Whether `model` has layers whose weights come from its training data (`Whiten`)."""
    return any(isinstance(mod, Whiten) for mod in model.modules())


def init_from_data(model: nn.Module, x: torch.Tensor) -> None:
    """Fit every layer of `model` whose weights come from its training data (`Whiten`) to `x`."""
    for mod in model.modules():
        if isinstance(mod, Whiten):
            mod.init_from_data(x)


def _conv_group(c_in: int, c_out: int) -> list[nn.Module]:
    """Two 3×3 convolutions with batch norm and GELU, a 2×2 max-pool after the first."""
    def norm():  # fast-moving running statistics: a training of ~10 epochs has few steps
        return nn.BatchNorm2d(c_out, momentum=0.6)
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.MaxPool2d(2), norm(), nn.GELU(),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), norm(), nn.GELU()]


def fast_cnn(channels: int, num_classes: int, size: int, widths: tuple[int, int, int] = (64, 256, 256)) -> nn.Module:
    """The fast CIFAR-10 network after Jordan's airbench94 (arXiv 2404.00498: 94% test accuracy in
    a few seconds of one A100): a 2×2 stem fixed to whiten the training images' patches (`Whiten`,
    24 channels for RGB), three groups of two 3×3 convolutions with batch norm (64, 256, 256
    channels, each group halving the side), a global max-pool and a linear layer without bias,
    its logits scaled by 1/9. Written from the paper's description."""
    stem = Whiten(channels)
    return nn.Sequential(
        stem, nn.GELU(),
        *_conv_group(stem.out_channels, widths[0]), *_conv_group(widths[0], widths[1]), *_conv_group(widths[1], widths[2]),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(widths[2], num_classes, bias=False), Scale(1 / 9),
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


def vgg16_bn(channels: int, num_classes: int, size: int, variant: str | None = None) -> nn.Module:
    if variant is not None:
        return _vgg_variant(channels, num_classes, variant)
    import torchvision

    model = torchvision.models.vgg16_bn(num_classes=num_classes)
    model.features[0] = nn.Conv2d(channels, 64, 3, padding=1)
    # The CIFAR variant: 512 features after global pooling, a small classifier.
    model.avgpool = nn.AdaptiveAvgPool2d(1)
    model.classifier = nn.Sequential(nn.Flatten(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, num_classes))
    return model


VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
# Other code bases' VGG-16-BN, which differ from ours (torchvision's features, a 512-512-C classifier)
# in more than names: variant -> (ends with a max-pool, convolutions have biases, pooled side,
# hidden widths of the classifier).
VGG_VARIANTS = {
    "pytorch-cifar": (True, True, 1, ()),  # kuangliu/pytorch-cifar VGG('VGG16'): one Linear(512, C)
    "salun": (False, False, 2, (256, 256)),  # RUM/SalUn models/VGG.py vgg16_bn
    "salun-lth": (False, True, 1, ()),  # RUM/SalUn models/VGG_LTH.py vgg16_bn_lth
}


class _VGG(nn.Module):
    def __init__(self, features: nn.Module, pool: nn.Module, classifier: nn.Module):
        super().__init__()
        self.features, self.avgpool, self.classifier = features, pool, classifier

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _vgg_variant(channels: int, num_classes: int, variant: str) -> nn.Module:
    if variant not in VGG_VARIANTS:
        raise ArchError(f"unknown vgg16_bn variant {variant!r}; known: {', '.join(VGG_VARIANTS)}")
    last_pool, bias, side, hidden = VGG_VARIANTS[variant]
    layers: list[nn.Module] = []
    width = channels
    for v in VGG16 if last_pool else VGG16[:-1]:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(width, v, 3, padding=1, bias=bias), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
            width = v
    sizes = [512 * side * side, *hidden, num_classes]
    if len(sizes) == 2:  # the indices of a Sequential would not match these layouts' `classifier.weight`
        classifier: nn.Module = nn.Linear(*sizes)
    else:
        parts: list[nn.Module] = []
        for a, b in zip(sizes, sizes[1:]):
            parts += [nn.Linear(a, b), nn.ReLU(inplace=True)]
        classifier = nn.Sequential(*parts[:-1])
    return _VGG(nn.Sequential(*layers), nn.AdaptiveAvgPool2d(side), classifier)


# The layouts other code bases save the registry's architectures in, tried in this order: (name,
# variant of the architecture, key renames as (pattern, replacement, what it says), whether the file
# carries RUM/SalUn's `normalize.mean`/`normalize.std` buffers: True, False, or None for either).
_CIFAR_RESNET = (
    ("torchvision", None, (), None),
    ("pytorch-cifar", None, ((r"^(layer\d+\.\d+)\.shortcut\.", r"\1.downsample.",
                              "layerN.M.shortcut.* → layerN.M.downsample.*"),
                             (r"^linear\.", "fc.", "linear.* → fc.*")), None),
)
LAYOUTS: dict[str, tuple] = {
    "resnet18": _CIFAR_RESNET,
    "resnet50": _CIFAR_RESNET,
    "vgg16_bn": (("torchvision", None, (), None), ("pytorch-cifar", "pytorch-cifar", (), False),
                 ("RUM/SalUn vgg16_bn", "salun", (), True), ("RUM/SalUn vgg16_bn_lth", "salun-lth", (), True)),
}
NORMALIZE_KEYS = ("normalize.mean", "normalize.std")  # RUM/SalUn: the model normalizes [0, 1] pixels itself


def rename(state: dict, renames) -> tuple[dict, list[str]]:
    """The state dict with each key renamed by the first pattern it matches, and the description
    of each rename that matched some key."""
    out, used = {}, []
    for key, value in state.items():
        new = key
        for pattern, repl, says in renames:
            new, n = re.subn(pattern, repl, key)
            if n:
                used += [says] if says not in used else []
                break
        out[new] = value
    return out, used


# name -> (builder, smallest image side it accepts)
ARCHS: dict[str, tuple[Callable[..., nn.Module], int]] = {
    "mlp": (mlp, 1),
    "sigmoid_mlp": (sigmoid_mlp, 1),
    "cnn": (cnn, 2),
    "fast_cnn": (fast_cnn, 16),
    "resnet18": (_resnet(18), 8),
    "resnet50": (_resnet(50), 8),
    "vgg16_bn": (vgg16_bn, 32),
}


Stats = tuple[tuple[float, ...], tuple[float, ...]]  # per-channel (mean, std) on [0, 1] pixels


@dataclass(frozen=True)
class Arch:
    """An architecture beyond a bare registry name: a layout variant, a user's callable
    (`MODULE:CALLABLE`) or a timm model, the input it expects and its penultimate layer.
    `models.build` takes one wherever it takes a name; a model record keeps it (`arch_meta`)."""

    name: str  # a registry name, "module.path:callable" or "timm:model_name"
    kwargs: str = "{}"  # the user callable's keyword arguments, as JSON (kept hashable)
    variant: str | None = None  # a registry architecture's variant (VGG_VARIANTS)
    normalize: Stats | None = None  # what the model expects: (p - mean) / std of [0, 1] pixels p
    pixels: Stats | None = None  # the dataset's standardization, undone before `normalize`
    head: str | None = None  # the module whose input is the penultimate features
    path: str | None = None  # where a user module was found, for processes started elsewhere

    def __str__(self) -> str:
        return self.name


ARCH_FIELDS = ("arch_kwargs", "arch_variant", "normalize", "pixel_stats", "head", "arch_path")


def arch_of(rec: dict) -> str | Arch:
    """The architecture a model record describes: its bare name when it has nothing more."""
    if not any(rec.get(k) is not None for k in ARCH_FIELDS):
        return rec["arch"]
    norm, pix = rec.get("normalize"), rec.get("pixel_stats")
    return Arch(rec["arch"], json.dumps(rec.get("arch_kwargs") or {}, sort_keys=True), rec.get("arch_variant"),
                (tuple(norm["mean"]), tuple(norm["std"])) if isinstance(norm, dict) else None,
                (tuple(pix["mean"]), tuple(pix["std"])) if pix else None, rec.get("head"), rec.get("arch_path"))


def arch_meta(arch: str | Arch) -> dict:
    """The model-record fields of an architecture (`arch_of` reads them back). A bare name gives
    only `arch`, so the records of registry models are what they always were."""
    if isinstance(arch, str):
        return {"arch": arch}
    meta = {"arch": arch.name, "arch_kwargs": json.loads(arch.kwargs) or None, "arch_variant": arch.variant,
            "normalize": ({"mean": list(arch.normalize[0]), "std": list(arch.normalize[1])}
                          if arch.normalize else None),
            "pixel_stats": {"mean": list(arch.pixels[0]), "std": list(arch.pixels[1])} if arch.pixels else None,
            "head": arch.head, "arch_path": arch.path}
    return {k: v for k, v in meta.items() if v is not None or k == "arch"}


def is_user_arch(name: str) -> bool:
    return ":" in name


_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def _user_module(name: str, kwargs: dict, channels: int, num_classes: int, path: str | None) -> nn.Module:
    """Build `MODULE:CALLABLE(**kwargs)` (the user's code runs, as `python` would run it) or
    `timm:NAME` (timm's architecture, never its pretrained weights)."""
    module_name, _, attr = name.partition(":")
    if module_name == "timm":
        try:
            import timm
        except ImportError:
            raise ArchError("timm:NAME needs timm installed (pip install timm)") from None
        try:
            return timm.create_model(attr, pretrained=False, num_classes=num_classes, in_chans=channels, **kwargs)
        except Exception as err:  # noqa: BLE001 - an unknown name, a bad keyword: the user's input
            raise ArchError(f"timm cannot build {attr!r}: {first_line(err)}") from None
    if not (_DOTTED.fullmatch(module_name) and _DOTTED.fullmatch(attr)):
        raise ArchError(f"--arch {name!r} is not MODULE:CALLABLE (a Python import path such as mymodels:Net)")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if path is None or err.name != module_name.split(".")[0]:
            raise ArchError(f"cannot import {module_name}: {first_line(err)}") from None
        sys.path.append(path)  # the folder it was imported from when the model was registered
        try:
            module = importlib.import_module(module_name)
        except Exception as err:  # noqa: BLE001
            raise ArchError(f"cannot import {module_name}: {first_line(err)}") from None
    except Exception as err:  # noqa: BLE001 - any failure of the user's module while importing
        raise ArchError(f"cannot import {module_name}: {first_line(err)}") from None
    target = module
    for part in attr.split("."):
        target = getattr(target, part, None)
    if not callable(target):
        raise ArchError(f"{module_name} has no callable {attr!r}")
    try:
        model = target(**kwargs)
    except Exception as err:  # noqa: BLE001
        raise ArchError(f"{name}(**{json.dumps(kwargs)}) failed: {first_line(err)}") from None
    if not isinstance(model, nn.Module):
        raise ArchError(f"{name} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def first_line(err: BaseException) -> str:
    return errors.first_line(err, named=True)


def module_root(module_name: str) -> str | None:
    """The sys.path folder a user's module was imported from (None for an installed one)."""
    module = sys.modules.get(module_name.partition(":")[0])
    file = getattr(module, "__file__", None)
    if not file:
        return None
    levels = module_name.partition(":")[0].count(".") + (2 if Path(file).name == "__init__.py" else 1)
    root = Path(file).resolve().parents[levels - 1]
    return None if "site-packages" in root.parts else str(root)


def input_affine(arch: Arch, channels: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(scale, shift) per channel taking the dataset's standardized pixels to what the model
    expects; None when it expects them as they are."""
    if arch.normalize is None:
        return None
    if arch.pixels is None:
        raise ArchError("a model with its own input normalization needs the dataset's pixel statistics")
    mean, std = (torch.tensor(v, dtype=torch.float64).expand(channels) for v in arch.normalize)
    pix_mean, pix_std = (torch.tensor(v, dtype=torch.float64).expand(channels) for v in arch.pixels)
    # x = (p - m_d) / s_d  →  p = x·s_d + m_d  →  (p - M) / S = x·s_d/S + (m_d - M)/S
    return (pix_std / std).float().view(1, -1, 1, 1), ((pix_mean - mean) / std).float().view(1, -1, 1, 1)


def _transform_input(module: nn.Module, args: tuple):
    return (args[0] * module.explorer_input_scale + module.explorer_input_shift, *args[1:])


def parse_normalize(text: str | None, channels: int) -> Stats | None:
    """`--normalize`: "dataset" (or None) → None, the data as the explorer standardizes it;
    "none" → [0, 1] pixels; "MEAN/STD" → per-channel values, comma-separated (one value for all)."""
    if text is None or text == "dataset":
        return None
    if text == "none":
        return (0.0,) * channels, (1.0,) * channels
    try:
        mean_text, std_text = text.split("/")
        mean, std = ([float(v) for v in part.split(",")] for part in (mean_text, std_text))
    except ValueError:
        raise ArchError(f"--normalize {text!r} is not dataset, none or MEAN/STD "
                        "(e.g. 0.4914,0.4822,0.4465/0.2470,0.2435,0.2616)") from None
    for values in (mean, std):
        if len(values) == 1:
            values *= channels
        if len(values) != channels:
            raise ArchError(f"--normalize gives {len(values)} values per part but the images have {channels} "
                            f"channel{'s' * (channels > 1)}")
    if not all(math.isfinite(v) for v in mean + std) or min(std) <= 0:
        raise ArchError("--normalize needs finite means and positive standard deviations")
    return tuple(mean), tuple(std)


def build(arch: str | Arch, channels: int, num_classes: int, size: int) -> nn.Module:
    spec = arch if isinstance(arch, Arch) else Arch(arch)
    name = spec.name
    if is_user_arch(name):
        model = _user_module(name, json.loads(spec.kwargs), channels, num_classes, spec.path)
    else:
        if name not in ARCHS:
            raise ArchError(f"unknown architecture {name!r}; choose one of {', '.join(ARCHS)}, "
                            "or MODULE:CALLABLE, or timm:NAME")
        builder, min_size = ARCHS[name]
        if size < min_size:
            raise ArchError(f"{name} needs images at least {min_size}×{min_size}; these are {size}×{size}")
        if spec.variant is not None and name != "vgg16_bn":
            raise ArchError(f"{name} has no variant {spec.variant!r}")
        model = builder(channels, num_classes, size, **({"variant": spec.variant} if spec.variant else {}))
        model.explorer_registry = True  # ours: its forward is known to take channels-last tensors
    affine = input_affine(spec, channels)
    if affine is not None:
        # Buffers move with .to(device) and are copied with the model; not persistent, so the
        # state dict holds the architecture's own weights only.
        model.register_buffer("explorer_input_scale", affine[0], persistent=False)
        model.register_buffer("explorer_input_shift", affine[1], persistent=False)
        model.register_forward_pre_hook(_transform_input)
    if spec.head is not None:
        try:
            model.get_submodule(spec.head)
        except AttributeError:
            names = [n for n, _ in model.named_modules() if n][-6:]
            raise ArchError(f"the model has no layer {spec.head!r} (its last ones: {', '.join(names)})") from None
        model.explorer_head = spec.head
    return model


def for_dataset(arch: str | Arch, data) -> nn.Module:
    channels, size, _ = data.shape
    return build(arch, channels, data.num_classes, size)


def head(model: nn.Module) -> nn.Module:
    """The layer whose input is the penultimate representation: the one the model's `--head`
    named, else the last linear layer."""
    named = getattr(model, "explorer_head", None)
    if named is not None:
        return model.get_submodule(named)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ArchError("the model has no nn.Linear layer; name the layer whose input is its penultimate "
                        "features with --head NAME")
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
    # flatten(1): a --head layer may take feature maps rather than vectors
    hook = head(model).register_forward_hook(lambda mod, inp, out: captured.append(inp[0].detach().flatten(1)))
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


def logit_confidence(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """φ = log(p_y / (1 − p_y)) of the true-label softmax probability, from logits (…, C) and
    labels (…), computed stably as z_y − logsumexp_{c ≠ y} z_c (LiRA's logit scaling; never ±inf
    where p rounds to 1 or 0). Float32."""
    z = logits.float()
    idx = y.long().to(z.device).unsqueeze(-1).expand(*z.shape[:-1], 1)
    true = z.gather(-1, idx).squeeze(-1)
    rest = z.scatter(-1, idx, float("-inf")).logsumexp(-1)
    return true - rest


@torch.no_grad()
def predict_logit_confidence(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Eval-mode φ (`logit_confidence`) of every sample of (x, y), on the CPU."""
    y = torch.as_tensor(y)
    return torch.cat([logit_confidence(out, y[i : i + batch_size])
                      for i, out in zip(range(0, len(y), batch_size), eval_outputs(model, x, batch_size))]).cpu()
