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
Δ/Δ_d ≈ a·x^(−h) + b with ≥ 15 residuals, stopping when the fitted curve decays (a > 0) and its
slope at the last block, |dΔ/dx|/Δ_d, is below `eps`: the residual then changes by less than that
share of the first block's per block. Δ is measured relative to Δ_d so that ε means the same for
every model size (an absolute ε of 1e-5 never stops; divided by the number of weights it always
did, even while Δ grew). With fewer blocks left to retrain than the fit needs, the ratio rule is
used and the report says so. Either way a request retrains at least 2 blocks (ratio) or 15
(powerlaw) unless the chain ends sooner, so one request saves at most B/2 or B/15.

On digits (bench/deepobliviate.py) Δ_k/Δ_d falls to a floor of about 0.1–0.5 and stays there
(with lr 0.05 and momentum 0.9 it does not fall at all), so the default τ = 0.05 rarely stops
early: the result is then the exact chain from block d, and the saving comes from d alone. τ = 0.5
stops after ~5 blocks (≥ 10× on B = 100) but its stitched weights are no closer to the full chain
than the original's: the per-block Δ stays at the floor, and the blocks left to stitch add it up.

The loop's parameters (epochs, lr, …) stay accepted but are unused: the blocks are retrained with
the recipe the model was trained with, so an unchanged block reproduces its stored update.

`requests` ("set", "blocks", "points") unlearns the forget set as one request or as a sequence of
per-block or per-point ones, as the paper's "given a data point to unlearn" frames it
(`DeepObliviate`, `Chain`); `plan` says before a run what it will retrain.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from ..runtime.progress import no_progress, stage
from ..training import Recipe, accuracy
from ..training.blocks import new_optimizer, param_names, restore, snapshot, train_block
from .base import Method, Param, ParamError, hide

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


def should_stop(residuals, rule: str, tau: float, eps: float) -> tuple[bool, dict | None]:
    """Whether the residuals so far (Δ_d … Δ_k) have decayed enough to stop at block k.

    ratio: Δ_k / Δ_d < τ (never at k = d). powerlaw: fit Δ/Δ_d ≈ a·x^(−h) + b on the points so
    far (at least MIN_POWERLAW_POINTS) and stop once the fit decays (a > 0: a fit that rises
    never stops the chain) and its slope |dΔ/dx|/Δ_d at the last point is below ε. Returns
    (stop, fit); the fit carries its `scale` Δ_d, so (a·x^(−h) + b)·Δ_d is the curve in Δ's
    units, and `decaying`."""
    r = np.asarray(residuals, dtype=float)
    if rule == "ratio":
        return len(r) >= 2 and bool((r[-1] / r[0] if r[0] > 0 else 0.0) < tau), None
    if rule != "powerlaw":
        raise ValueError(f"unknown stop rule {rule!r}")
    if len(r) < MIN_POWERLAW_POINTS:
        return False, None
    scale = float(r[0]) if r[0] > 0 else 1.0
    fit = {**powerlaw_fit(r / scale), "scale": scale}
    fit["slope"] = slope_at_end(fit, len(r))
    fit["decaying"] = bool(fit["a"] > 0)
    return fit["decaying"] and fit["slope"] < eps, fit


def stop_index(residuals, rule: str = "ratio", tau: float = 0.05, eps: float = 1e-3, min_index: int = 0,
               available: int | None = None) -> dict:
    """Where a run with these residuals (one per block from d on) stops: the first index ≥
    `min_index` at which `should_stop` holds, else the last. `residuals` may be a generator that
    retrains a block for each value it yields (the method's own run): it is read only as far as
    the stop. The rule falls back from powerlaw to ratio when fewer than its points can come
    (`available`, by default the number of residuals). Returns index, stopped, rule, note, fit
    and the residuals read."""
    if available is None:
        residuals = list(residuals)
        available = len(residuals)
    used, note = effective_rule(rule, available)
    seen, fit = [], None
    for i, value in enumerate(residuals):
        seen.append(value)
        if i >= min_index:
            stop, fit_i = should_stop(seen, used, tau, eps)
            fit = fit_i or fit
            if stop:
                return {"index": i, "stopped": True, "rule": used, "note": note, "fit": fit, "residuals": seen}
    return {"index": len(seen) - 1, "stopped": False, "rule": used, "note": note, "fit": fit, "residuals": seen}


# -- requests: what is unlearned, one request after another ---------------------------------------------


REQUESTS = ("set", "blocks", "points")
MANY_BLOCKS_SPEEDUP = 2.0  # below this best-case speed-up a request "spans many blocks": the page warns


def block_of(block_ids: list[np.ndarray], n: int | None = None) -> np.ndarray:
    """Each sample's block (1 … B) by its id; 0 for an id no block holds."""
    ids = np.concatenate(block_ids)
    owner = np.zeros(max(int(ids.max()) + 1, n or 0), dtype=np.int64)
    owner[ids] = np.repeat(np.arange(1, len(block_ids) + 1), [len(b) for b in block_ids])
    return owner


def split_requests(block_ids: list[np.ndarray], forget_ids, requests: str = "set") -> list[np.ndarray]:
    """The forget set as the requests a run unlearns in turn: "set", all of it as one; "blocks",
    one request per block holding a point, in block order; "points", one per point, in the
    forget set's (ascending id) order. Ids no block holds are left to the set request (and
    dropped from the others: the model never trained on them)."""
    forget = np.unique(np.asarray(forget_ids, dtype=np.int64))
    if requests == "set":
        return [forget] if len(forget) else []
    if requests not in REQUESTS:
        raise ValueError(f"unknown requests {requests!r}")
    owner = block_of(block_ids, int(forget.max()) + 1 if len(forget) else 0)
    forget = forget[owner[forget] > 0]
    if requests == "points":
        return [forget[i : i + 1] for i in range(len(forget))]
    return [forget[owner[forget] == b] for b in np.unique(owner[forget])]


def fewest_blocks(d: int, last: int, blocks: int, rule: str = "ratio") -> int:
    """The fewest blocks a request from block d to block `last` can retrain: it never stops before
    `last`, the ratio rule never at d itself, the power-law fit not before it has its 15 residuals
    (with fewer blocks left it falls back to the ratio rule)."""
    used, _ = effective_rule(rule, blocks - d + 1)
    earliest = d + (MIN_POWERLAW_POINTS - 1 if used == "powerlaw" else 1)
    return min(blocks, max(last, earliest)) - d + 1


def plan(block_ids: list[np.ndarray], forget_ids, requests: str = "set", rule: str = "ratio") -> dict:
    """What a deepobliviate run on this forget set will retrain, known before it runs: the blocks
    the set touches, the first block d, and per request (and in all) the fewest and the most
    blocks retrained (the stop rule decides where in between; with τ = 0.05 it rarely stops
    early) against the B blocks of retraining the whole chain; `text` says it in words and
    `warnings` what costs the speed-up."""
    B = len(block_ids)
    forget = np.unique(np.asarray(forget_ids, dtype=np.int64))
    owner = block_of(block_ids, int(forget.max()) + 1 if len(forget) else 0)
    touched = sorted(set(owner[forget].tolist()) - {0})
    out = {"blocks": B, "points": len(forget), "touched": touched, "requests": 0, "per_request": [],
           "first_block": None, "last_block": None, "fewest": 0, "most": 0, "warnings": []}
    if not touched:
        out["text"] = "No block holds a point of this forget set: nothing will be retrained."
        return out
    for ids in split_requests(block_ids, forget, requests):
        hit = sorted(set(owner[ids].tolist()) - {0})
        d, last = hit[0], hit[-1]
        out["per_request"].append({"first_block": d, "last_block": last, "fewest": fewest_blocks(d, last, B, rule),
                                   "most": B - d + 1})
    per = out["per_request"]
    d, last = touched[0], touched[-1]
    out.update(requests=len(per), first_block=d, last_block=last, fewest=sum(r["fewest"] for r in per),
               most=sum(r["most"] for r in per))
    blocks_text = (", ".join(map(str, touched)) if len(touched) <= 6 else f"{d}–{last}")
    where = (f"The forget set's {_count(len(forget), 'point')} lie{'s' if len(forget) == 1 else ''} in "
             f"{len(touched)} of the {B} blocks (block{'s' if len(touched) > 1 else ''} {blocks_text}); "
             f"the first is block d = {d}.")
    if requests == "set":
        fewest, most = per[0]["fewest"], per[0]["most"]
        how = (f" As one request the chain is retrained from block {d} onward, at least through block "
               f"{d + fewest - 1}: {_between(fewest, most)} of the {B} blocks, a speed-up of "
               f"{_between(B / most, B / fewest, '{:.1f}×')} over retraining the whole chain.")
    else:
        how = (f" As {len(per)} requests (one per {'block' if requests == 'blocks' else 'point'}), each retrained "
               f"from its own first block onward: {_between(out['fewest'], out['most'])} block retrainings in all, "
               f"against the {B} of retraining the whole chain once.")
    out["text"] = where + how + (" The stop rule decides where in that range; with the default "
                                 f"τ = {DeepObliviate.spec['tau'].default:g} it rarely stops early."
                                 if out["fewest"] < out["most"] else "")
    for r, req in enumerate(per, start=1):
        if B / req["fewest"] < MANY_BLOCKS_SPEEDUP:
            name = "The request" if len(per) == 1 else f"Request {r}"
            out["warnings"].append(
                f"{name} spans blocks {req['first_block']}–{req['last_block']}: the chain is retrained from block "
                f"{req['first_block']} onward: little speed-up (at most {B / req['fewest']:.1f}×)."
                + (" Requests of points in one late block gain the most: try requests = blocks or points."
                   if requests == "set" and len(touched) > 1 else ""))
            break  # one warning says it; the per-request table shows the rest
    if len(per) > 1 and out["most"] > B:
        out["warnings"].append(
            f"{len(per)} requests retrain {'at least' if out['fewest'] > B else 'up to'} "
            f"{out['fewest'] if out['fewest'] > B else out['most']} blocks in all, more than the {B} of retraining "
            "the whole chain once: per-request unlearning pays only for few requests in late blocks.")
    return out


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _between(lo, hi, fmt: str = "{}") -> str:
    """`lo–hi`, or one value when they agree."""
    a, b = fmt.format(lo), fmt.format(hi)
    return a if a == b else f"{a}–{b}"


class Chain:
    """The block chain M_0 … M_B (with momenta) a request unlearns from: the stored one, then as
    each request leaves it. A request that retrained blocks d … t and stitched the rest turns
    M_k into M'_k for d ≤ k ≤ t (with the retrained momenta) and, for k > t, into
    M'_t + (M_k − M_t): the stitch that made M_B's unlearned weights, applied to every later block,
    so the next request restarting at any block finds the chain its predecessor implies. Later
    blocks keep their momenta (the stitch takes their updates as the original's). Only the
    changed blocks are held in memory; the rest are read from the store."""

    def __init__(self, store):
        self.store, self.blocks = store, store.blocks
        self._states: dict[int, dict] = {}
        self._momenta: dict[int, dict] = {}

    def state(self, k: int) -> dict:
        return self._states[k] if k in self._states else self.store.state(k)

    def momentum(self, k: int) -> dict | None:
        """Momentum after block k; None at M_0, whose optimizer has not stepped yet."""
        if k == 0:
            return None
        return self._momenta[k] if k in self._momenta else self.store.momentum(k)

    def update(self, d: int, states: list[dict], momenta: list[dict]) -> None:
        """Blocks d … t = d + len(states) − 1 retrained to `states`; later ones stitched."""
        t = d + len(states) - 1
        old_t = self.state(t)
        for k in range(t + 1, self.blocks + 1):
            self._states[k] = stitch(states[-1], self.state(k), old_t)
        for k, (state, momentum) in enumerate(zip(states, momenta), start=d):
            self._states[k], self._momenta[k] = state, momentum


# -- the method ----------------------------------------------------------------------------------------


class DeepObliviate(Method):
    """See the module docstring. `requests` says what one unlearning request is: "set" (default:
    the whole forget set at once, as before), "blocks" (the points of one block each) or "points"
    (one point each: the paper's "given a data point to unlearn"). Requests are unlearned in turn,
    each from the chain its predecessor left (`Chain`: the retrained blocks, the later ones
    stitched), so a point of a later request is still in the chain an earlier one retrains, and
    every retrained block leaves out all the points unlearned so far.

    Per request, `run_metrics["requests"]` gives its blocks, the blocks retrained, its speed-up
    as the ratio of blocks, B / retrained (retraining the chain from block 0 trains all B blocks:
    deterministic, and what the method saves; its measured seconds stand beside it), and the test
    accuracy (with the accuracy on the request's own points) after it."""

    name = "deepobliviate"
    summary = ("DeepObliviate, as understood (He et al. 2021): retrain the stored training blocks from the first "
               "one holding a forgotten point until the residual memory Δ decays, then stitch the rest of the "
               "original's updates back on. Needs a model trained with --blocks; uses that model's recipe "
               "(epochs, lr here are unused).")
    sweepable = False
    # The loop's parameters stay accepted, unused: the blocks are retrained with the model's recipe.
    spec = {**hide(Method.spec, "epochs", "lr", "seed"),
            "tau": Param(0.05, "τ", "ratio rule: stop once Δ_k < τ·Δ_d.", high=1),
            "eps": Param(1e-3, "ε", "powerlaw rule: stop once the fitted slope |dΔ/dx|/Δ_d is below ε.",
                         positive=True),
            "rule": Param(RULES[0], "Stop rule",
                          "ratio: stop once a block's residual memory Δ_k falls below τ·Δ of the first retrained "
                          "block; powerlaw: fit Δ/Δ_d ≈ a·x^(−h) + b and stop once the fit decays and its slope is "
                          f"below ε (needs ≥ {MIN_POWERLAW_POINTS} blocks, else it falls back to ratio).",
                          choices=RULES),
            "requests": Param(REQUESTS[0], "Requests",
                              "set: the whole forget set is one request. blocks: one request per block holding "
                              "forgotten points; points: one request per point (the paper's \"given a data point to "
                              "unlearn\"). Requests run in turn, each from the chain the previous one left; each "
                              "gets its own speed-up and accuracy.", choices=REQUESTS)}
    needs = ("blocks", "recipe")

    def __init__(self, **params):
        super().__init__(**params)
        self.store = None  # the stored blocks: .blocks, .ids[k − 1], .state(k), .momentum(k)
        self.recipe: Recipe | None = None

    @classmethod
    def preview(cls, needed: dict, forget_ids, params: dict) -> dict | None:
        """Where the forget set sits in the chain and what that costs the speed-up (`plan`)."""
        chain = plan(needed["blocks"].ids, forget_ids, params.get("requests", REQUESTS[0]), params.get("rule", RULES[0]))
        return {"text": chain["text"], "warnings": chain["warnings"]}

    def bind(self, blocks, recipe: Recipe) -> None:
        """The model's stored blocks (explorer.store.block_file.BlockFile) and its recipe."""
        self.store, self.recipe = blocks, recipe

    def unlearn(self, model, ds, retain_ids, forget_ids, device, progress=no_progress):
        if self.store is None or self.recipe is None:
            raise ParamError("deepobliviate needs a model trained in blocks: train one with --blocks 10")
        p, store = self.params, self.store
        B = store.blocks
        forget = np.unique(np.asarray(forget_ids, dtype=np.int64))
        requests = split_requests(store.ids, forget, p["requests"])
        owner = block_of(store.ids, ds.n_train)
        chain, gone = Chain(store), np.empty(0, dtype=np.int64)
        reports, figures = [], []
        for r, ids in enumerate(requests):
            gone = np.union1d(gone, ids)  # every retrained block leaves out all points unlearned so far
            start = time.perf_counter()
            report = self._request(model, chain, owner, ds, ids, gone, device, keep=r < len(requests) - 1,
                                   progress=stage(progress, r / len(requests), (r + 1) / len(requests),
                                                  f"request {r + 1}/{len(requests)}" if len(requests) > 1 else None))
            seconds = time.perf_counter() - start
            n = report["retrained_blocks"]
            figures.append({"request": r + 1, "points": len(ids), "blocks": sorted(set(owner[ids].tolist()) - {0}),
                            "first_block": report["first_block"], "stop_block": report["stop_block"],
                            "retrained_blocks": n, "speedup": B / n if n else None, "seconds": seconds,
                            "acc_test": accuracy(model, ds.x_test, ds.y_test),
                            "acc_forget": accuracy(model, ds.x_train[ids], ds.y_train[ids])})
            reports.append({**report, "ids": ids.tolist()})
        if not requests:
            reports = [self._request(model, chain, owner, ds, forget, forget, device, keep=False, progress=progress)]
        self.run_metrics = {"requests": figures}
        if p["requests"] == "set":
            self.report = {k: v for k, v in reports[0].items() if k != "ids"}  # the run's details, as before
        else:  # the whole run, then each request with its residual curve
            done = [q for q in reports if q["first_block"] is not None]
            self.report = {"first_block": min((q["first_block"] for q in done), default=None),
                           "stop_block": max((q["stop_block"] for q in done), default=None),
                           "last_block": max((q["last_block"] for q in done), default=None),
                           "rule": p["rule"], "threshold": p["tau"] if p["rule"] == "ratio" else p["eps"],
                           "residual": None, "retrained_blocks": sum(q["retrained_blocks"] for q in reports),
                           "blocks": B, "block_sizes": [len(b) for b in store.ids], "requests": reports}
        return model

    def _request(self, model, chain: Chain, owner: np.ndarray, ds, ids: np.ndarray, gone: np.ndarray, device,
                 keep: bool, progress=no_progress) -> dict:
        """Unlearn one request (`ids`) from `chain`, leaving its result in `model`; with `keep`,
        update the chain for the next request. `owner`: each sample's block (`block_of`); `gone`:
        every point unlearned so far, this request's included, left out of each retrained block.
        Returns the request's report."""
        p, store, recipe, B = self.params, self.store, self.recipe, chain.blocks
        hit = sorted(set(owner[ids].tolist()) - {0})
        if not hit:  # no stored block holds a forgotten point: the model never saw them
            return {"first_block": None, "stop_block": None, "rule": p["rule"], "threshold": None,
                    "residual": [], "retrained_blocks": 0, "blocks": B}
        d, last = hit[0], hit[-1]
        names = param_names(model)
        opt = new_optimizer(model.to(device), recipe)
        restore(model, opt, chain.state(d - 1), chain.momentum(d - 1), device)
        x, y = ds.x_train, ds.y_train
        at = {"old": chain.state(d - 1)}  # M_{k−1} and M'_{k−1} as the chain is retrained
        at["new"] = at["old"]
        states, momenta = [], []  # the retrained blocks, kept for the next request

        def retrained():
            """Retrain blocks d, d+1, … one per residual asked for; `stop_index` asks until it stops."""
            for k in range(d, B + 1):
                kept = store.ids[k - 1][~np.isin(store.ids[k - 1], gone)]
                train_block(model, opt, x, y, kept, recipe, k, device)
                if keep:
                    new, momentum = snapshot(model, opt)
                    states.append(new)
                    momenta.append(momentum)
                else:
                    new = {n: v.detach().cpu().clone() for n, v in model.state_dict().items()}
                old = chain.state(k)
                value = residual(at["old"], old, at["new"], new, names)
                at["old"], at["new"] = old, new
                progress((k - d + 1) / (B - d + 1), f"deepobliviate: retrained block {k}/{B}, Δ = {value:.4g}")
                yield value

        # Never before the last block holding a forgotten point: a point left in a stitched block stays learned.
        out = stop_index(retrained(), p["rule"], p["tau"], p["eps"], min_index=last - d, available=B - d + 1)
        rule, note, fit, residuals = out["rule"], out["note"], out["fit"], out["residuals"]
        threshold = p["tau"] if rule == "ratio" else p["eps"]
        t = d + out["index"]
        new_t, old_t = at["new"], at["old"]
        if t < B:
            model.load_state_dict(stitch(new_t, chain.state(B), old_t))
        else:  # t = B: the fully retrained chain, as it is
            model.load_state_dict(new_t)
        model.to(device)
        total = torch.stack([v.float().abs().sum() for v in model.state_dict().values()]).sum()
        if not torch.isfinite(total):
            raise ParamError("deepobliviate: retraining diverged (weights became NaN or infinite)")
        if keep:
            chain.update(d, states, momenta)
        progress(1.0, f"deepobliviate: retrained blocks {d}–{t} of {B}" + (f", stitched {t + 1}–{B}" if t < B else ""))
        return {"first_block": d, "stop_block": t, "last_block": last, "rule": rule, "threshold": threshold,
                "residual": residuals, "retrained_blocks": t - d + 1, "blocks": B,
                "block_sizes": [len(b) for b in store.ids],
                **({"requested_rule": p["rule"], "note": note} if note else {}),
                **({"fit": fit} if fit else {})}
