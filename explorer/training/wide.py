"""K models of one architecture as one wide model: the batched engine for conv nets with batch
norm and residual blocks (ResNet-18, VGG-16-BN, fast_cnn), where fused.py's `Ensemble` takes only
plain sequences without batch norm.

Model k's channels are the k-th block of the wide model's channels, so each layer that mixes
channels is replaced by its K-fold version and everything else runs unchanged:

- a convolution becomes one convolution with K times the groups (model k's filters see only
  model k's channels);
- a batch norm becomes one batch norm over K·C channels. Batch norm is per channel, hence per
  model: each model normalizes by the statistics of its own batch, keeps its own running
  statistics and its own affine parameters, in train and eval mode alike;
- a linear layer becomes a batched matmul over the models, (B, K·i) → (B, K·o).

ReLU, pooling, flatten and residual additions act per channel (a flatten of (B, K·C, H, W) keeps
each model's features in one block), so the architecture's own `forward` runs the wide model as it
is. A forward that mixes channels itself (a concatenation along channels, a reshape across them)
would mix the models: `Wide` compares its outputs with two of the models' own on construction and
refuses a model whose outputs differ.

Each model trains on its own batch: the input is (K, B, C, H, W), laid side by side as
(B, K·C, H, W). An input shared by all models (evaluation) is (B, C, H, W): the first layer takes
it as it is, as one ordinary convolution (or matmul) with the K models' filters stacked.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .. import models

# Leaf layers that act per channel (or per element) and hold no weights: kept as they are.
PER_CHANNEL = (nn.ReLU, nn.GELU, nn.Sigmoid, nn.Tanh, nn.SiLU, nn.Identity, nn.MaxPool2d, nn.AvgPool2d,
               nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, models.Scale)


def unwidenable(net: nn.Module) -> str | None:
    """Why K copies of `net` cannot be one wide model, or None."""
    if getattr(net, "explorer_input_scale", None) is not None:
        return "a model with its own input normalization trains one at a time"
    for name, mod in net.named_modules():
        if isinstance(mod, nn.Conv2d):
            if mod.padding_mode != "zeros":
                return f"{name} pads with {mod.padding_mode}, not zeros: it trains one at a time"
        elif isinstance(mod, nn.modules.batchnorm._BatchNorm):
            if not isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
                return f"a {type(mod).__name__} layer trains one at a time"
        elif isinstance(mod, nn.Flatten):
            if (mod.start_dim, mod.end_dim) != (1, -1):
                return "only a full flatten can be trained batched"
        elif isinstance(mod, nn.Dropout):
            if mod.p:  # each model would need its own masks, drawn as it draws them alone
                return "a model with dropout trains one at a time"
        elif isinstance(mod, nn.Linear) or isinstance(mod, PER_CHANNEL):
            pass
        elif next(mod.children(), None) is None:  # a leaf of another kind
            return f"a {type(mod).__name__} layer cannot be trained batched"
        elif any(True for _ in mod.parameters(recurse=False)) or any(True for _ in mod.buffers(recurse=False)):
            return f"{name or type(mod).__name__} holds weights of its own: it trains one at a time"
    return None


class WideConv2d(nn.Module):
    def __init__(self, convs: list[nn.Conv2d]):
        super().__init__()
        c = convs[0]
        self.k, self.in_channels, self.out_channels, self.groups = len(convs), c.in_channels, c.out_channels, c.groups
        self.stride, self.padding, self.dilation = c.stride, c.padding, c.dilation
        self.weight = nn.Parameter(torch.cat([m.weight.detach() for m in convs]),  # (K·out, in/g, kh, kw)
                                   requires_grad=c.weight.requires_grad)  # a fixed layer (models.Whiten) stays fixed
        self.bias = (None if c.bias is None
                     else nn.Parameter(torch.cat([m.bias.detach() for m in convs]), requires_grad=c.bias.requires_grad))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = self.groups * self.k
        if x.shape[1] == self.in_channels and self.k > 1:  # one input for all models
            if self.groups == 1:  # one ordinary convolution with every model's filters
                groups = 1
            else:
                x = x.repeat(1, self.k, 1, 1)
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, groups)

    def part(self, k: int) -> dict[str, torch.Tensor]:
        rows = slice(k * self.out_channels, (k + 1) * self.out_channels)
        return {"weight": self.weight[rows]} | ({} if self.bias is None else {"bias": self.bias[rows]})


class WideLinear(nn.Module):
    def __init__(self, linears: list[nn.Linear]):
        super().__init__()
        self.k, self.in_features, self.out_features = len(linears), linears[0].in_features, linears[0].out_features
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in linears]),  # (K, out, in)
                                   requires_grad=linears[0].weight.requires_grad)
        self.bias = (None if linears[0].bias is None
                     else nn.Parameter(torch.stack([m.bias.detach() for m in linears]),
                                       requires_grad=linears[0].bias.requires_grad))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        if x.shape[1] == self.in_features and self.k > 1:  # one input for all models: one wide matmul
            w = self.weight.flatten(0, 1).t()
            return x @ w if self.bias is None else torch.addmm(self.bias.flatten(), x, w)
        h = per_model_linear(x.view(B, self.k, self.in_features).transpose(0, 1), self.weight, self.bias)
        return h.transpose(0, 1).reshape(B, -1)

    def part(self, k: int) -> dict[str, torch.Tensor]:
        return {"weight": self.weight[k]} | ({} if self.bias is None else {"bias": self.bias[k]})


def _wide_norm(norms: list[nn.modules.batchnorm._BatchNorm]) -> nn.Module:
    b = norms[0]
    tensors = [*b.parameters(), *b.buffers()]
    dtype = b.running_mean.dtype if b.running_mean is not None else tensors[0].dtype if tensors else None
    wide = type(b)(b.num_features * len(norms), b.eps, b.momentum, b.affine, b.track_running_stats, dtype=dtype)
    with torch.no_grad():
        for name, tensor in wide.named_parameters(recurse=False):
            tensor.copy_(torch.cat([getattr(m, name).detach() for m in norms]))
        for name, tensor in wide.named_buffers(recurse=False):
            if name == "num_batches_tracked":  # a count of steps, the same for every model
                tensor.copy_(b.num_batches_tracked)
            else:
                tensor.copy_(torch.cat([getattr(m, name) for m in norms]))
    wide.part_size = b.num_features
    return wide


def _norm_part(wide: nn.Module, k: int) -> dict[str, torch.Tensor]:
    rows = slice(k * wide.part_size, (k + 1) * wide.part_size)
    return {name: t if name == "num_batches_tracked" else t[rows]
            for name, t in [*wide.named_parameters(recurse=False), *wide.named_buffers(recurse=False)]}


def _widen(nets: list[nn.Module]) -> tuple[nn.Module, dict[str, nn.Module]]:
    """A copy of nets[0] with each channel-mixing layer replaced by its K-fold version built from
    the K nets' own: (the wide model, name -> its wide layer)."""
    net, parts = copy.deepcopy(nets[0]), {}
    for name, mod in list(nets[0].named_modules()):
        if isinstance(mod, (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)):
            group = [other.get_submodule(name) for other in nets]
            wide = (WideConv2d(group) if isinstance(mod, nn.Conv2d) else WideLinear(group)
                    if isinstance(mod, nn.Linear) else _wide_norm(group))
            net.set_submodule(name, wide)
            parts[name] = wide
    return net, parts


class Wide:
    """K models of one architecture (`nets`, their initial weights) as one wide model on `device`,
    with the interface of fused.Ensemble: `forward`, `params`, `module`, `train`/`eval`.
    `example`: an input of the shape the models take ((1, C, H, W) or (1, d)), for the check that
    the architecture's forward keeps the models apart."""

    def __init__(self, nets: list[nn.Module], device: torch.device, channels_last: bool = False,
                 example: torch.Tensor | None = None):
        if why := unwidenable(nets[0]):
            raise ValueError(why)
        _check(nets, example)
        self.k = len(nets)
        self.net, self.parts = _widen(nets)
        self.net.to(device)
        self.channels_last = channels_last
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        self.params = [p for p in self.net.parameters() if p.requires_grad]

    def forward(self, x: torch.Tensor, own: bool = False) -> torch.Tensor:
        """Logits (B, K, classes): on shared inputs x (B, …), or with `own` on each model's own
        inputs x (K, B, …)."""
        if own:
            x = x.transpose(0, 1).reshape(x.shape[1], -1, *x.shape[3:])
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        out = self.net(x)
        return out.view(out.shape[0], self.k, -1)

    def train(self) -> None:
        self.net.train()

    def eval(self) -> None:
        self.net.eval()

    def state(self, k: int) -> dict[str, torch.Tensor]:
        """Model k's state dict (views into the wide model's tensors)."""
        out = {}
        for name, wide in self.parts.items():
            part = _norm_part(wide, k) if isinstance(wide, nn.modules.batchnorm._BatchNorm) else wide.part(k)
            out |= {f"{name}.{key}": value for key, value in part.items()}
        return out

    def module(self, k: int, template: nn.Module) -> nn.Module:
        """`template` (the architecture) given model k's weights and statistics."""
        with torch.no_grad():
            template.load_state_dict({key: t.detach() for key, t in self.state(k).items()}, strict=True)
        return template


_CHECKED: set[str] = set()  # architectures and input shapes whose wide outputs matched their own


@torch.no_grad()
def _check(nets: list[nn.Module], example: torch.Tensor | None) -> None:
    """Refuse an architecture whose forward mixes channels: a wide copy of its first and last model,
    in float64 on the CPU (no TF32, no rounding to hide behind), must give each model's own outputs
    on a random input of the models' shape, in eval mode. Once per architecture and shape."""
    first = next(m for m in nets[0].modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    shape = tuple(example.shape[1:]) if example is not None else (
        (first.in_channels, 32, 32) if isinstance(first, nn.Conv2d) else (first.in_features,))
    key = f"{nets[0]!r}{shape}"
    if key in _CHECKED:
        return
    pair = [copy.deepcopy(net).cpu().double().eval() for net in (nets[0], nets[-1])]
    probe, _ = _widen(pair)
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    name = type(nets[0]).__name__
    try:
        wide = probe.eval()(x).view(2, 2, -1)
        for k, net in enumerate(pair):
            own = net(x)
            if not torch.allclose(wide[:, k], own, rtol=1e-7, atol=1e-9 * (1 + float(own.abs().max()))):
                raise ValueError(f"{name}'s forward mixes channels across layers: it trains one at a time")
    except RuntimeError as err:  # a shape its forward cannot take as a wide model: the same verdict
        raise ValueError(f"{name} cannot be trained batched ({err})") from None
    _CHECKED.add(key)


class _PerModelLinear(torch.autograd.Function):
    """x (K, B, i) → x_k @ w_kᵀ + b_k (K, B, o), w in nn.Linear's (K, o, i) layout. Autograd's own
    backward of a bmm forms the weight gradient as xᵀ·g (K, i, o) and transposes it; g ᵀ·x gives
    it in w's layout directly, 3× faster on a CPU for a 10-class output layer."""

    @staticmethod
    def forward(ctx, x, w, b):
        kind = x.device.type
        ctx.dtypes = (x.dtype, w.dtype, None if b is None else b.dtype)
        if torch.is_autocast_enabled(kind):  # the custom backward runs outside autocast: cast here
            dtype = torch.get_autocast_dtype(kind)
            x, w, b = x.to(dtype), w.to(dtype), None if b is None else b.to(dtype)
        ctx.save_for_backward(x, w)
        with torch.autocast(kind, enabled=False):
            return torch.bmm(x, w.transpose(1, 2)) if b is None else torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        g = g.to(w.dtype)
        gx = torch.bmm(g, w) if ctx.needs_input_grad[0] else None
        gw = torch.bmm(g.transpose(1, 2), x) if ctx.needs_input_grad[1] else None
        gb = g.sum(1) if ctx.needs_input_grad[2] else None  # False for a missing bias
        return tuple(None if grad is None else grad.to(dtype) for grad, dtype in zip((gx, gw, gb), ctx.dtypes))


def per_model_linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    return _PerModelLinear.apply(x, w, b)
