"""Block training for DeepObliviate, as understood (METHODS.md §6), and what its unlearning shares.

With `Recipe.blocks` = B ≥ 2 the training set is split into B class-stratified blocks (seeded);
the model is trained block by block in one pass, `recipe.epochs` epochs on each block and no
return to earlier blocks, with one optimizer whose momentum carries over from block to block.
After each block the weights and the momentum are kept: M_0 (the initial model) … M_B. They are
stored with the model as one safetensors file, `m<k>.<key>` (state dict), `v<k>.<param>` (momentum;
zeros for M_0, whose optimizer has not stepped yet) and `ids<k>` (the sample ids of block k, k ≥ 1).

Block k is trained by `training.fit` with the recipe's seed + k, so retraining a block (without
some points) shuffles it the same way; per-sample dynamics are not recorded (a 1/B-sized block
per epoch would leave holes in the samples × epochs table).

The stop rules (ratio, power law) and the residual-memory figure are here too, as pure functions.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save as st_save
from torch import nn

from . import training
from .runtime import optim
from .runtime.progress import Progress, no_progress

FILE = "blocks.safetensors"
RULES = ("ratio", "powerlaw")
MIN_POWERLAW_POINTS = 15  # the reading's fit needs at least this many residuals


# -- training --------------------------------------------------------------------------------------


def stratified_blocks(y, blocks: int, seed: int) -> list[np.ndarray]:
    """`blocks` disjoint sets of positions covering y, each class spread evenly over them (sizes
    differ by at most one); the same seed always gives the same blocks. Each block is sorted."""
    y = np.asarray(y)
    if not 2 <= blocks <= len(y):
        raise training.RecipeError(f"blocks must be between 2 and the {len(y)} training samples, got {blocks}")
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)])
    return [np.sort(order[k::blocks]) for k in range(blocks)]


def block_recipe(recipe: training.Recipe, k: int) -> training.Recipe:
    """The recipe block k (1-based) is trained with: plain (no blocks), its own shuffling seed and,
    with `cosine`, a learning rate that follows a cosine over the blocks (constant within one)."""
    lr = optim.cosine_lr(recipe.lr, k - 1, recipe.blocks) if recipe.cosine else recipe.lr
    return replace(recipe, blocks=0, seed=recipe.seed + k, cosine=False, lr=lr)


def param_names(model: nn.Module) -> list[str]:
    """Names of the parameters the optimizer updates, in its order."""
    return [n for n, p in model.named_parameters() if p.requires_grad]


def new_optimizer(model: nn.Module, recipe: training.Recipe) -> optim.SGD:
    return optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)


def snapshot(model: nn.Module, opt: optim.SGD) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Copies on the CPU of the model's state and the optimizer's momentum (zeros before a step)."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    momentum = {n: (b.detach().cpu().clone() if b is not None else torch.zeros_like(p.detach().cpu()))
                for n, p, b in zip(param_names(model), opt.params, opt.buffers)}
    return state, momentum


def restore(model: nn.Module, opt: optim.SGD, state: dict, momentum: dict | None, device: torch.device) -> None:
    """Put the model and the optimizer back at a stored point; momentum None (M_0) means the
    optimizer has not stepped yet, so its first step seeds the buffers as in training."""
    model.load_state_dict(state)
    model.to(device)
    opt.buffers = ([None] * len(opt.params) if momentum is None else
                   [momentum[n].to(device).clone() for n in param_names(model)])


def train_block(model: nn.Module, opt: optim.SGD, x: torch.Tensor, y: torch.Tensor, ids: np.ndarray,
                recipe: training.Recipe, k: int, device: torch.device, **kwargs) -> training.TrainResult:
    """Train block k (its positions `ids` in x, y) in place, continuing `opt`; an empty block is
    a no-op."""
    if len(ids) == 0:
        return training.TrainResult()
    index = torch.as_tensor(np.asarray(ids, dtype=np.int64))
    return training.fit(model, x[index], y[index], block_recipe(recipe, k), device, record_dynamics=False,
                        opt=opt, **kwargs)


@dataclass
class BlockResult(training.TrainResult):
    block_ids: list[np.ndarray] = field(default_factory=list)  # positions of each block, 1 … B
    states: list[dict[str, torch.Tensor]] = field(default_factory=list)  # M_0 … M_B
    momenta: list[dict[str, torch.Tensor]] = field(default_factory=list)  # v_0 … v_B


def fit_blocks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: training.Recipe, device: torch.device,
               *, x_test: torch.Tensor | None = None, y_test: torch.Tensor | None = None,
               progress: Progress = no_progress, snapshots: bool = True) -> BlockResult:
    """Train `model` in place block by block (module docstring); returns the log (one row per
    block: its last epoch's loss and accuracy, then the test accuracy, at epoch k·E) and, with
    `snapshots`, M_0 … M_B with their momenta."""
    start = time.perf_counter()
    B = recipe.blocks
    result = BlockResult(block_ids=stratified_blocks(y.cpu().numpy(), B, recipe.seed))
    model.to(device)
    opt = new_optimizer(model, recipe)
    def keep_snapshot():
        if snapshots:
            for part, kept in zip(snapshot(model, opt), (result.states, result.momenta)):
                kept.append(part)

    keep_snapshot()
    for k, ids in enumerate(result.block_ids, start=1):
        sub = train_block(model, opt, x, y, ids, recipe, k, device,
                          progress=lambda f, msg, k=k: progress((k - 1 + f) / B, f"block {k}/{B} · {msg}"))
        row = {**sub.log[-1], "epoch": k * recipe.epochs, "block": k}  # one row per block: its last epoch
        if x_test is not None:  # after the block, not after each of its (many, small) epochs
            row["test_acc"] = training.accuracy(model, x_test, y_test)
        result.log.append(row)
        if sub.codes is not None:
            result.codes = sub.codes
        keep_snapshot()
    result.seconds = time.perf_counter() - start
    return result


# -- storage ---------------------------------------------------------------------------------------


def pack(result: BlockResult) -> bytes:
    """The stored blocks file: M_0 … M_B, their momenta and each block's sample ids."""
    tensors = {}
    for k, (state, momentum) in enumerate(zip(result.states, result.momenta)):
        tensors.update({f"m{k}.{n}": v.contiguous() for n, v in state.items()})
        tensors.update({f"v{k}.{n}": v.contiguous() for n, v in momentum.items()})
    for k, ids in enumerate(result.block_ids, start=1):
        tensors[f"ids{k}"] = torch.as_tensor(np.asarray(ids, dtype=np.int64))
    return st_save(tensors)


class Store:
    """A model's stored blocks, read lazily: only the states an unlearning run needs are loaded."""

    def __init__(self, path: Path):
        self.path = str(path)
        self._file = safe_open(self.path, "pt")  # memory-mapped; parsing its header once saves ~1 ms a read
        keys = list(self._file.keys())
        self.ids = [self._file.get_tensor(f"ids{k}").numpy()
                    for k in range(1, 1 + sum(k.startswith("ids") for k in keys))]
        self.blocks = len(self.ids)
        self._keys = {p: [k.split(".", 1)[1] for k in keys if k.startswith(f"{p}0.")] for p in ("m", "v")}

    def _read(self, prefix: str, k: int) -> dict[str, torch.Tensor]:
        if not 0 <= k <= self.blocks:
            raise IndexError(f"no stored block {k}; there are {self.blocks}")
        return {n: self._file.get_tensor(f"{prefix}{k}.{n}") for n in self._keys[prefix]}

    def state(self, k: int) -> dict[str, torch.Tensor]:
        """M_k's state dict, on the CPU."""
        return self._read("m", k)

    def momentum(self, k: int) -> dict[str, torch.Tensor]:
        """The optimizer's momentum after block k, by parameter name."""
        return self._read("v", k)


# -- unlearning arithmetic ---------------------------------------------------------------------------


def residual(old_prev: dict, old: dict, new_prev: dict, new: dict, keys) -> float:
    """Δ_k = ‖(M_k − M_{k−1}) − (M'_k − M'_{k−1})‖₁ over the named tensors."""
    diffs = [((old[n] - old_prev[n]) - (new[n] - new_prev[n])).abs().sum(dtype=torch.float64) for n in keys]
    return torch.stack(diffs).sum().item() if diffs else 0.0


def stitch(new_t: dict, old_final: dict, old_t: dict) -> dict:
    """M_unlearned = M'_t + (M_B − M_t), entry by entry (integer counters included)."""
    return {n: new_t[n] + (old_final[n] - old_t[n]) for n in new_t}


# -- stop rules ----------------------------------------------------------------------------------------


def dfa_exponent(series) -> float:
    """Detrended fluctuation analysis (order 1): the slope of log F(s) against log s, the seed of
    the power-law exponent h. NaN when the series is too short (< 8 points) or flat."""
    x = np.asarray(series, dtype=float)
    n = len(x)
    if n < 8:
        return float("nan")
    profile = np.cumsum(x - x.mean())
    sizes = np.unique(np.round(np.geomspace(4, n // 2, num=8)).astype(int))
    fluct, used = [], []
    for s in sizes:
        windows = profile[: (n // s) * s].reshape(-1, s)
        t = np.arange(s)
        coef = np.polyfit(t, windows.T, 1)  # one line per window
        trend = np.outer(coef[0], t) + coef[1][:, None]
        f = np.sqrt(np.mean((windows - trend) ** 2))
        if f > 0:
            fluct.append(f)
            used.append(s)
    if len(used) < 2:
        return float("nan")
    return float(np.polyfit(np.log(used), np.log(fluct), 1)[0])


def powerlaw_fit(values) -> dict:
    """Least-squares fit of values[i] ≈ a·x^(−h) + b, x = 1 … n: a and b are linear for a given h,
    h is searched on a log grid around its DFA seed, then refined. Returns a, h, b, h_seed, sse."""
    y = np.asarray(values, dtype=float)
    x = np.arange(1, len(y) + 1, dtype=float)
    seed = dfa_exponent(y)
    h_seed = float(np.clip(seed, 0.05, 5.0)) if math.isfinite(seed) else 1.0

    def solve(hs: np.ndarray):
        u = x[None, :] ** (-hs[:, None])  # (H, n)
        su, suu, sy, suy, n = u.sum(1), (u * u).sum(1), y.sum(), (u * y).sum(1), len(y)
        det = suu * n - su * su
        ok = np.abs(det) > 1e-12 * np.maximum(suu * n, 1e-300)
        det = np.where(ok, det, 1.0)
        a = (suy * n - su * sy) / det
        b = (suu * sy - su * suy) / det
        sse = np.where(ok, ((a[:, None] * u + b[:, None] - y) ** 2).sum(1), np.inf)
        return a, b, sse

    hs = np.unique(np.concatenate([np.geomspace(1e-3, 20, 241), [h_seed]]))
    a, b, sse = solve(hs)
    i = int(np.argmin(sse))
    lo, hi = hs[max(i - 1, 0)], hs[min(i + 1, len(hs) - 1)]
    fine = np.geomspace(lo, hi, 201)
    fa, fb, fsse = solve(fine)
    j = int(np.argmin(fsse))
    if fsse[j] <= sse[i]:
        return {"a": float(fa[j]), "h": float(fine[j]), "b": float(fb[j]), "h_seed": h_seed, "sse": float(fsse[j])}
    return {"a": float(a[i]), "h": float(hs[i]), "b": float(b[i]), "h_seed": h_seed, "sse": float(sse[i])}


def slope_at_end(fit: dict, n: int) -> float:
    """|dΔ/dx| of the fitted curve at x = n."""
    return abs(fit["a"] * fit["h"] * n ** (-fit["h"] - 1))


def effective_rule(rule: str, available: int) -> tuple[str, str | None]:
    """The rule that can actually run with `available` residuals at most, and why it changed."""
    if rule == "powerlaw" and available < MIN_POWERLAW_POINTS:
        return "ratio", (f"only {available} block(s) could be retrained; the power-law fit needs at least "
                         f"{MIN_POWERLAW_POINTS} residuals, so the ratio rule was used")
    return rule, None


def should_stop(residuals, rule: str, tau: float, eps: float, weights: int = 1) -> tuple[bool, dict | None]:
    """Whether the residuals so far (Δ_d … Δ_k) have decayed enough to stop at block k.

    ratio: Δ_k / Δ_d < τ (never at k = d). powerlaw: fit Δ/W ≈ a·x^(−h) + b on the points so far
    (at least MIN_POWERLAW_POINTS; W = `weights`, the number of weights, so Δ/W is the mean
    residual per weight and ε means the same for every model size) and stop once the fitted
    slope |dΔ/dx|/W at the last point is below ε. Returns (stop, fit); the fit carries its
    `scale` W, so a·x^(−h)·W + b·W is the curve in Δ's units."""
    r = np.asarray(residuals, dtype=float)
    if rule == "ratio":
        return len(r) >= 2 and bool((r[-1] / r[0] if r[0] > 0 else 0.0) < tau), None
    if rule != "powerlaw":
        raise ValueError(f"unknown stop rule {rule!r}")
    if len(r) < MIN_POWERLAW_POINTS:
        return False, None
    fit = {**powerlaw_fit(r / weights), "scale": weights}
    fit["slope"] = slope_at_end(fit, len(r))
    return fit["slope"] < eps, fit


def stop_index(residuals, rule: str = "ratio", tau: float = 0.05, eps: float = 1e-5, weights: int = 1,
               min_index: int = 0) -> dict:
    """Where a run with these residuals (one per block from d on) stops: the first index ≥
    `min_index` at which `should_stop` holds, else the last. The rule falls back from powerlaw to
    ratio when there are too few residuals. Returns index, rule, note, fit."""
    used, note = effective_rule(rule, len(residuals))
    fit = None
    for i in range(min_index, len(residuals)):
        stop, fit_i = should_stop(residuals[: i + 1], used, tau, eps, weights)
        fit = fit_i or fit
        if stop:
            return {"index": i, "rule": used, "note": note, "fit": fit}
    return {"index": len(residuals) - 1, "rule": used, "note": note, "fit": fit}


# -- the figure ----------------------------------------------------------------------------------------


def residual_curve_figure(report: dict):
    """The residual memory Δ_k of each retrained block, where the run stopped, and the stop
    threshold (τ·Δ_d, or the fitted power law); blocks after the stop are shaded as stitched.
    A pure function of a deepobliviate run's `details`."""
    import plotly.graph_objects as go

    d, t, B = report["first_block"], report["stop_block"], report["blocks"]
    res = list(report.get("residual") or [])
    fig = go.Figure()
    if d is None:  # no stored block held a forgotten point: nothing was retrained
        return fig.update_layout(title=dict(text="No block held a forgotten point: nothing was retrained",
                                            font=dict(size=14)), height=200)
    if res:
        xs = list(range(d, d + len(res)))
        fig.add_trace(go.Scatter(x=xs, y=res, mode="lines+markers", name="Δ_k residual memory",
                                 hovertemplate="block %{x}<br>Δ = %{y:.4g}<extra></extra>"))
        fig.add_trace(go.Scatter(x=[t], y=[res[t - d]], mode="markers", name=f"stop: block {t}",
                                 marker=dict(symbol="star", size=16, color="#ef553b")))
        if report.get("rule") == "ratio" and report.get("threshold"):
            fig.add_hline(y=report["threshold"] * res[0], line_dash="dash", line_color="#888",
                          annotation_text=f"τ·Δ_{d} (τ = {report['threshold']:g})", annotation_position="top right")
        fit = report.get("fit")
        if report.get("rule") == "powerlaw" and fit:
            grid = np.linspace(1, len(res), 100)
            fig.add_trace(go.Scatter(x=grid + d - 1, y=(fit["a"] * grid ** (-fit["h"]) + fit["b"]) * fit.get("scale", 1),
                                     mode="lines", line=dict(dash="dot"), name=f"a·x^(−h) + b, h = {fit['h']:.2f}"))
    if t < B:
        fig.add_vrect(x0=t + 0.5, x1=B + 0.5, fillcolor="#00cc96", opacity=0.12, line_width=0,
                      annotation_text="stitched: M_B − M_t", annotation_position="top left")
    fig.update_layout(title=dict(text=f"Residual memory per retrained block (blocks {d}–{t} of {B})", font=dict(size=14)),
                      xaxis=dict(title=f"block (1 … {d - 1} untouched)" if d > 1 else "block",
                                 range=[d - 0.5, B + 0.5], dtick=1 if B - d < 30 else None),
                      yaxis=dict(title="Δ_k (L1)", type="log" if res and min(res) > 0 else "linear"),
                      hoverlabel=dict(bgcolor="white", font_color="#222"), margin=dict(t=40, b=40, l=60, r=10),
                      height=340, legend=dict(orientation="h", y=-0.25))
    return fig
