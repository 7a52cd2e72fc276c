"""`deepobliviate`: DeepObliviate (He et al. 2021) as understood; no shared loop.

The model must have been trained with `--blocks B` (explorer/training/blocks.py): it needs the
stored M_0 … M_B with their block ids and the model's recipe (`bind`). Unlearning restarts from
M_{d−1} (weights and momentum) at the first block d holding a forgotten point, retrains blocks d,
d+1, … without the forgotten points with the model's own recipe, measures each retrained block's residual memory
Δ_k = ‖(M_k − M_{k−1}) − (M'_k − M'_{k−1})‖₁, stops at block t once Δ has decayed, and stitches
M_unlearned = M'_t + (M_B − M_t).

The chain never stops before the last block holding a forgotten point: a point left in a block
after t would stay learned (its update is inside M_B − M_t). So the speed-up is large when the
forgotten points sit in few, late blocks (recent data), and small for points spread over the set.

Stop rules (`rule`): "ratio" (default), Δ_k / Δ_d < `tau`; "powerlaw", the reading's fit
Δ/W ≈ a·x^(−h) + b (W the number of weights: the mean residual per weight) with ≥ 15 residuals,
stopping when the fitted |dΔ/dx|/W < `eps`. With fewer blocks left to retrain than the fit needs,
the ratio rule is used and the report says so.

On digits (bench/deepobliviate.py) Δ_k/Δ_d falls to a floor of about 0.1–0.5 and stays there
(with lr 0.05 and momentum 0.9 it does not fall at all), so the default τ = 0.05 rarely stops
early: the result is then the exact chain from block d, and the saving comes from d alone. τ = 0.5
stops after ~5 blocks (≥ 10× on B = 100) but its stitched weights are no closer to the full chain
than the original's: the per-block Δ stays at the floor, and the blocks left to stitch add it up.

The loop's parameters (epochs, lr, …) stay accepted but are unused: the blocks are retrained with
the recipe the model was trained with, so an unchanged block reproduces its stored update.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..runtime.progress import no_progress
from ..training import Recipe
from ..training.blocks import new_optimizer, param_names, restore, train_block
from .base import Method, ParamError

RULES = ("ratio", "powerlaw")
MIN_POWERLAW_POINTS = 15  # the reading's fit needs at least this many residuals


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


# -- the method ----------------------------------------------------------------------------------------


class DeepObliviate(Method):
    name = "deepobliviate"
    summary = ("DeepObliviate, as understood (He et al. 2021): retrain the stored training blocks from the first "
               "one holding a forgotten point until the residual memory Δ decays, then stitch the rest of the "
               "original's updates back on. Needs a model trained with --blocks; uses that model's recipe "
               "(epochs, lr here are unused).")
    knob = None
    sweepable = False
    hidden = (*Method.hidden, "epochs", "lr", "seed")  # the blocks are retrained with the recipe
    fractions = ("tau",)
    defaults = {**Method.defaults, "tau": 0.05, "eps": 1e-5}
    rules = RULES  # the choices of the `rule` parameter, the first the default
    rule_label = "Stop rule"
    rule_help = ("ratio: stop once a block's residual memory Δ_k falls below τ·Δ of the first retrained block; "
                 "powerlaw: fit Δ ≈ a·x^(−h) + b and stop when its slope is below ε "
                 "(needs ≥ 15 blocks, else it falls back to ratio).")
    needs = ("blocks", "recipe")

    def __init__(self, **params):
        super().__init__(**params)
        self.store = None  # the stored blocks: .blocks, .ids[k − 1], .state(k), .momentum(k)
        self.recipe: Recipe | None = None
        self.report: dict = {}

    def bind(self, blocks, recipe: Recipe) -> None:
        """The model's stored blocks (explorer.store.block_file.BlockFile) and its recipe."""
        self.store, self.recipe = blocks, recipe

    def unlearn(self, model, ds, retain_ids, forget_ids, device, progress=no_progress):
        if self.store is None or self.recipe is None:
            raise ParamError("deepobliviate needs a model trained in blocks: train one with --blocks 10")
        p, store, recipe = self.params, self.store, self.recipe
        B = store.blocks
        forget = np.unique(np.asarray(forget_ids, dtype=np.int64))
        owner = np.repeat(np.arange(1, B + 1), [len(ids) for ids in store.ids])  # each stored id's block
        hit = np.unique(owner[np.isin(np.concatenate(store.ids), forget)]).tolist()
        if not hit:  # no stored block holds a forgotten point: the model never saw them
            self.report = {"first_block": None, "stop_block": None, "rule": p["rule"], "threshold": None,
                           "residual": [], "retrained_blocks": 0, "blocks": B}
            return model
        d, last = hit[0], hit[-1]
        rule, note = effective_rule(p["rule"], B - d + 1)
        threshold = p["tau"] if rule == "ratio" else p["eps"]
        names = param_names(model)
        weights = sum(q.numel() for n, q in model.named_parameters() if n in names)

        old_prev = store.state(d - 1)
        new_prev = old_prev
        opt = new_optimizer(model.to(device), recipe)
        restore(model, opt, old_prev, store.momentum(d - 1) if d > 1 else None, device)
        x, y = ds.x_train, ds.y_train
        residuals, fit, t = [], None, B
        for k in range(d, B + 1):
            kept = store.ids[k - 1][~np.isin(store.ids[k - 1], forget)]
            train_block(model, opt, x, y, kept, recipe, k, device)
            new = {n: v.detach().cpu().clone() for n, v in model.state_dict().items()}
            old = store.state(k)
            residuals.append(residual(old_prev, old, new_prev, new, names))
            progress((k - d + 1) / (B - d + 1), f"deepobliviate: retrained block {k}/{B}, Δ = {residuals[-1]:.4g}")
            stop = False
            if k >= last:  # every forgotten point is out of the chain: the residual may end it
                stop, fit_k = should_stop(residuals, rule, p["tau"], p["eps"], weights)
                fit = fit_k or fit
            old_prev, new_prev = old, new
            if stop:
                t = k
                break
        new_t, old_t = new_prev, old_prev
        if t < B:
            state = stitch(new_t, store.state(B), old_t)
            model.load_state_dict(state)
        else:  # t = B: the fully retrained chain, as it is
            model.load_state_dict(new_t)
        model.to(device)
        total = torch.stack([v.float().abs().sum() for v in model.state_dict().values()]).sum()
        if not torch.isfinite(total):
            raise ParamError("deepobliviate: retraining diverged (weights became NaN or infinite)")
        self.report = {"first_block": d, "stop_block": t, "last_block": last, "rule": rule, "threshold": threshold,
                       "residual": residuals, "retrained_blocks": t - d + 1, "blocks": B,
                       "block_sizes": [len(ids) for ids in store.ids],
                       **({"requested_rule": p["rule"], "note": note} if note else {}),
                       **({"fit": fit} if fit else {})}
        progress(1.0, f"deepobliviate: retrained blocks {d}–{t} of {B}" + (f", stitched {t + 1}–{B}" if t < B else ""))
        return model
