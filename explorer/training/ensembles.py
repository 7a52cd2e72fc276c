"""Training many small models on different subsets: the engines of exact memorization.

- `sequential`: one model after another through `fit`, exactly as the model itself trains.
- `batched`: the K models as one computation, each with its own batches from its own subset,
  drawn as `fit` would draw them (fused.py, `order="own"`): the same algorithm, computed together.
- `fused`: the K models on shared batches with membership-weighted losses (fused.py,
  `order="shared"`): one wide matmul per layer; the models share the batch order.

Every engine trains with the model's whole recipe (codes, SD loss, amp), and can report, from
the same evaluation pass as the correctness, each model's logit-scaled true-label confidence φ
(LiRA's input). `calibrate` times a few
steps of each engine that can train the architecture and says which is fastest here: what
`auto` picks. Conv nets with batch norm and residual blocks train batched as one wide model
(wide.py), not fused (shared batches would mix their batch statistics); recipes with blocks (a
different training algorithm, blocks.py) train one at a time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import nn

from .. import models
from ..runtime import devices
from ..runtime.progress import Progress, no_progress
from . import fused, wide
from . import fit  # the package's: in one piece, or by blocks when the recipe says so
from .loop import init_model
from .recipe import Recipe

ENGINES = ("sequential", "batched", "fused")
# arch -> (why not batched, why not fused, whether it has batch norm)
_WHY_NOT: dict[str, tuple[str | None, str | None, bool]] = {}


def _why_not(arch) -> tuple[str | None, str | None, bool]:
    """For a registry name or a `models.Arch` (a variant, an input normalization): why not batched,
    why not fused, and whether it has batch norm."""
    if arch not in _WHY_NOT:
        if str(arch) not in models.ARCHS:  # a user's or timm's: not built (its code run) just to ask
            why = f"{arch} is not in the registry: its models train one at a time"
            _WHY_NOT[arch] = (why, why, False)
        else:  # the layer types do not depend on the data's shape
            try:
                net = models.build(arch, 1, 2, 32)
            except models.ArchError as err:
                _WHY_NOT[arch] = (str(err), str(err), False)
                return _WHY_NOT[arch]
            norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
            _WHY_NOT[arch] = (wide.unwidenable(net), fused.unfusable(net), norm)
    return _WHY_NOT[arch]


def not_batchable(arch: str, recipe: dict | None = None) -> str | None:
    """Why these models cannot train batched (each on its own batches, as one computation), or None."""
    recipe = recipe or {}
    if recipe.get("blocks"):
        return "a recipe with blocks trains block by block, one model at a time"
    why, _, norm = _why_not(arch)
    if why is None and norm and recipe.get("mnemonic_tmix"):
        return ("with mnemonic codes a batch-norm model's batch statistics depend on how many codes its batch "
                "holds: it trains one at a time")
    return why


def not_fusable(arch: str, recipe: dict | None = None) -> str | None:
    """Why these models cannot train fused (on shared batches, weighted by membership), or None."""
    if why := not_batchable(arch, recipe):
        return why
    if (recipe or {}).get("augment"):
        return "augmentation gives each model its own views of its batch, which shared batches cannot"
    return _why_not(arch)[1]


def refused(engine: str, arch: str, recipe: dict | None = None, option: bool = False) -> str | None:
    """Why `engine` cannot train these models, and which can, in one line (named as the
    `--engine` option with `option`); None when it can."""
    if engine == "sequential":
        return None
    why = not_fusable(arch, recipe) if engine == "fused" else not_batchable(arch, recipe)
    if why is None:
        return None
    other = "sequential" if not_batchable(arch, recipe) else "batched"
    return f"{why}; use {f'--engine {other}' if option else f'the {other} engine'}"


def _predict_correct(predict: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                     device: torch.device, batch: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Correctness (n,) bool and φ (n,) float16 (models.logit_confidence) of predictions
    `predict(x_batch) -> (b, classes)`, left on the device (the caller copies all models' at once)."""
    right, conf = [], []
    y = devices.to_device(y, device)
    with torch.no_grad():
        for i, xb in zip(range(0, len(y), batch), devices.batches(x, device, batch)):
            logits = predict(xb)
            right.append(logits.argmax(-1) == y[i : i + batch])
            conf.append(models.logit_confidence(logits, y[i : i + batch]).half())
    return torch.cat(right, -1), torch.cat(conf, -1)


def _sequential(arch, ds, subsets, seeds, recipe, device, progress):
    out = []  # per model: (train correct, test correct, train φ, test φ)
    for k, (subset, seed) in enumerate(zip(subsets, seeds)):
        model = init_model(arch, ds, seed)
        sub = torch.as_tensor(subset)
        step = lambda f, m, k=k: progress((k + f) / len(seeds), m)  # noqa: E731
        fit(model, ds.x_train[sub], ds.y_train[sub], replace(recipe, seed=seed), device, record_dynamics=False,
            progress=step)
        model.eval()
        (tr, tr_phi), (te, te_phi) = (_predict_correct(model, ds.x_train, ds.y_train, device),
                                      _predict_correct(model, ds.x_test, ds.y_test, device))
        out.append((tr, te, tr_phi, te_phi))
    return tuple(torch.stack(col).cpu() for col in zip(*out))  # one copy to the host per output


def _together(order):
    def run(arch, ds, subsets, seeds, recipe, device, progress):
        nets = [init_model(arch, ds, seed) for seed in seeds]
        ens = fused.train(nets, ds.x_train, ds.y_train, subsets, recipe, device, seeds, order, progress)
        (tr, tr_phi), (te, te_phi) = (fused.outputs(ens, ds.x_train, ds.y_train, device),
                                      fused.outputs(ens, ds.x_test, ds.y_test, device))
        return tr, te, tr_phi, te_phi
    return run


_RUN = {"sequential": _sequential, "batched": _together("own"), "fused": _together("shared")}


# The fused engine changes the algorithm (shared batch order, varying batch sizes): `auto` takes
# it only when it is clearly faster than the batched engine, which computes training alone exactly.
FUSED_MARGIN = 1.25


def calibrate(arch: str, ds, recipe: Recipe, device: torch.device, k: int, steps: int = 2, rounds: int = 3) -> dict:
    """Time every engine that can train this architecture with this recipe, the batched ones with
    `k` models at once: one warm-up step each (allocations, kernel choice), then `rounds` rounds of
    `steps` optimizer steps, the engines taking turns; each engine's best round counts, so a burst
    of other work on the machine (a browser, a server) does not decide. Returns {"engine": the
    pick, "why": one line, "seconds_per_model_step": {engine: seconds}}: the fastest, except that
    fused must beat batched by FUSED_MARGIN."""
    candidates = [e for e, why in (("sequential", None), ("batched", not_batchable(arch, recipe.as_meta())),
                                   ("fused", not_fusable(arch, recipe.as_meta()))) if why is None]
    m = steps * recipe.batch_size  # a subset of `steps` batches
    n = min(ds.n_train, math.ceil(m / 0.7))
    rng = torch.Generator().manual_seed(0)
    cut = replace(recipe, epochs=1, cosine=False)
    subsets = {e: torch.stack([torch.randperm(n, generator=rng)[:m] for _ in range(1 if e == "sequential" else k)])
               for e in candidates}

    # The batched engines copy their initial weights, so one set serves every round (fit trains
    # its model in place: the sequential engine builds one each time, as it does for real).
    nets = {e: [init_model(arch, ds, seed) for seed in range(k)] for e in candidates if e != "sequential"}

    def seconds(engine: str, batches: int) -> float:
        start = time.perf_counter()
        _train_only(_RUN[engine], arch, ds, subsets[engine][:, : batches * recipe.batch_size],
                    list(range(len(subsets[engine]))), cut, device, nets.get(engine))
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for engine in candidates:
        seconds(engine, 1)
    best = {e: math.inf for e in candidates}
    for _ in range(rounds):
        for engine in candidates:
            best[engine] = min(best[engine], seconds(engine, steps))
    timed = {e: best[e] / (steps * len(subsets[e])) for e in candidates}
    engine, why = pick(timed)
    return {"engine": engine, "why": why or not_batchable(arch, recipe.as_meta()) or not_fusable(arch, recipe.as_meta()),
            "seconds_per_model_step": timed}


def pick(timed: dict[str, float]) -> tuple[str, str | None]:
    """The engine to use from measured seconds per model-step, and why (None with one candidate)."""
    fastest = min(timed, key=timed.get)
    if len(timed) == 1:
        return fastest, None
    rates = f"model-steps per second: {', '.join(f'{e} {_rate(1 / t)}' for e, t in timed.items())}"
    if fastest == "fused" and timed["batched"] < FUSED_MARGIN * timed["fused"]:
        return "batched", (f"the same algorithm as training alone and within {FUSED_MARGIN:g}× of fused, the "
                           f"fastest of {len(timed)} measured here ({rates})")
    return fastest, f"fastest of {len(timed)} measured here ({rates})"


def _rate(r: float) -> str:
    return f"{r:,.0f}" if r >= 100 else f"{r:.3g}"  # slow models (a ResNet on a CPU: 0.72) keep their digits


def _train_only(run, arch, ds, subsets, seeds, recipe, device, nets=None):
    """Training alone, without the evaluation passes, for timing; `nets` the batched engines'
    initial models."""
    if run is _sequential:
        model = init_model(arch, ds, seeds[0])
        fit(model, ds.x_train[subsets[0]], ds.y_train[subsets[0]], recipe, device, record_dynamics=False)
    else:
        fused.train(nets, ds.x_train[: subsets.max() + 1], ds.y_train[: subsets.max() + 1], subsets, recipe, device,
                    seeds, "shared" if run is _RUN["fused"] else "own")


def footprint(arch: str, ds, recipe: Recipe, probe: int = 8) -> int:
    """Bytes one more model adds to a batched chunk, measured: its weights, gradients and momentum
    (three copies of its parameters, plus one for the step's temporaries) and the activations a
    training step keeps for its backward pass, counted as autograd saves them (each storage once)
    on a batch of `probe` samples, on the CPU (the sizes are the same on every device), scaled to
    the recipe's batch, half as much again for the backward pass's own buffers; halved with amp."""
    net = init_model(arch, ds, 0)
    weights = sum(p.numel() * p.element_size() for p in net.parameters())
    storages: dict[int, int] = {}

    def count(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    x = ds.x_train[:probe]
    with torch.autograd.graph.saved_tensors_hooks(count, lambda t: t):
        net(x).logsumexp(1).sum()
    saved = sum(storages.values()) - x.untyped_storage().nbytes() * (x.untyped_storage().data_ptr() in storages)
    activations = 1.5 * saved * recipe.batch_size / len(x) / (2 if recipe.amp else 1)
    return int(4 * weights + activations)


def models_per_chunk(per_model: int, memory: int | None, most: int, fraction: float = 0.5) -> int:
    """How many models one chunk trains at once: as many as `fraction` of `memory` holds at
    `per_model` bytes each, rounded down to a power of two, at least 1 and at most `most` (`most`
    when the memory is unknown)."""
    if memory is None:
        return most
    fits = max(1, min(most, int(fraction * memory // max(1, per_model))))
    return 1 << (fits.bit_length() - 1)


def train_correctness(arch: str, ds, subsets: torch.Tensor, seeds: list[int], recipe: Recipe, device: torch.device,
                      engine: str = "auto", progress: Progress = no_progress, phi: bool = False) -> tuple[torch.Tensor, ...]:
    """Train one model per row of `subsets` (sample ids, equal lengths), model k from seed
    `seeds[k]`, and return whether each got each training and each test sample right:
    bool tensors (K, n_train) and (K, n_test). With `phi`, also each model's logit-scaled
    true-label confidence φ (models.logit_confidence, LiRA's input) of every training and test
    sample, float16 (K, n_train) and (K, n_test), from the same evaluation pass: four tensors.
    `auto` calibrates first (see `calibrate`)."""
    if engine == "auto":
        engine = calibrate(arch, ds, recipe, device, len(seeds))["engine"]
    if engine not in _RUN:
        raise ValueError(f"unknown engine {engine!r}")
    if why := refused(engine, arch, recipe.as_meta()):  # else: silently another algorithm
        raise models.ArchError(why)
    out = _RUN[engine](arch, ds, torch.as_tensor(subsets), list(seeds), recipe, device, progress)
    return out if phi else out[:2]
