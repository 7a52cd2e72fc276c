"""Exact memorization: Feldman & Zhang's subsampled estimator.

    mem(i) = P[h(x_i) = y_i | i ∈ S] − P[h(x_i) = y_i | i ∉ S]

estimated from K models trained from scratch on random subsets S_k of a fraction r of the
training set (explorer.training.ensembles trains them; explorer.pipeline.memorize runs the whole
estimate, in resumable chunks). Here: the configuration, the subsets, the estimate from the
models' correctness, how it converges, and the cost model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UserError


@dataclass
class ExactConfig:
    models: int = 256
    ratio: float = 0.7
    epochs: int | None = None  # None: the model's own recipe
    seed: int = 0
    chunk: int | None = None  # models per saved chunk; None: 32 batched or fused, 8 one at a time
    engine: str = "auto"  # auto (calibrated), batched, fused or sequential

    def check(self) -> None:
        if self.models < 2:
            raise UserError("--models must be at least 2")
        if not 0 < self.ratio < 1:
            raise UserError(f"--ratio must be between 0 and 1, got {self.ratio}")
        if self.epochs is not None and self.epochs < 1:
            raise UserError("--epochs must be at least 1")
        if self.chunk is not None and self.chunk < 1:
            raise UserError("--chunk must be at least 1")
        if self.engine not in ("auto", "batched", "fused", "sequential"):
            raise UserError(f"unknown engine {self.engine!r}; choose auto, batched, fused or sequential")


def sample_passes(models: int, ratio: float, epochs: int, n: int) -> int:
    """The cost model of an exact run: each of K models makes `epochs` training passes over its
    ⌊ratio·n⌋ samples (forward and backward). Its time is this over a device's sample throughput;
    the evaluation of every model on all samples adds about one more epoch."""
    return models * epochs * int(ratio * n)


def measured_speed(exact_records: list[dict]) -> float | None:
    """Sample-passes per second of the latest of these published exact runs (None without one):
    what the cost model divides by to predict the next run's time on the same machine."""
    for rec in reversed(exact_records):
        p = rec.get("params", {})
        if rec.get("seconds") and p.get("epochs"):
            return sample_passes(p["models"], p["ratio"], p["epochs"], rec["n"]) / rec["seconds"]
    return None


def benched_speed(throughput: dict, device: str, arch: str) -> tuple[float, str] | None:
    """(sample-passes per second, engine) of the fastest engine the benches measured for `arch`
    on a `device` kind ("cpu", "cuda"), from `throughput` {device: {arch: {engine: rate}}} (what
    `python -m bench scale` and `bench gpu` record); None when they measured none."""
    rates = throughput.get(device, {}).get(arch) or {}
    if not rates:
        return None
    engine = max(rates, key=rates.get)
    return rates[engine], engine


# A conv net on CIFAR-shaped data whose exact run is this many times slower than fast_cnn's is
# offered fast_cnn in its stead (the Memorization page).
FAST_PROPOSAL_RATIO = 3.0


def subsets(n: int, ratio: float, k: int, seed: int) -> np.ndarray:
    """(k, ⌊ratio·n⌋) sample ids, each row a uniform subset without replacement."""
    rng = np.random.default_rng(seed)
    m = int(ratio * n)
    return np.stack([np.sort(rng.permutation(n)[:m]) for _ in range(k)])


def masks_of(subs: np.ndarray, n: int) -> np.ndarray:
    masks = np.zeros((len(subs), n), dtype=bool)
    np.put_along_axis(masks, subs, True, axis=1)
    return masks


def estimate(masks: np.ndarray, correct: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sample memorization, its standard error, the held-out accuracy (a one-ratio C-score)
    and the in/out counts, from (K, n) membership masks and correctness. NaN where a sample was
    never held out (or never in)."""
    masks, correct = np.asarray(masks).astype(bool, copy=False), np.asarray(correct)
    n_in = masks.sum(0)
    n_out = len(masks) - n_in
    if correct.dtype == bool:  # counted as integers: the same numbers as float sums of 0/1, at a
        hits_in = (correct & masks).sum(0)  # fraction of the memory (2,000 × 50,000 runs: 0.1 GB, not 0.8)
        hits_out = correct.sum(0) - hits_in
    else:
        correct = correct.astype(np.float64)
        hits_in, hits_out = (correct * masks).sum(0), (correct * ~masks).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        p_in = hits_in / n_in
        p_out = hits_out / n_out
        stderr = np.sqrt(p_in * (1 - p_in) / n_in + p_out * (1 - p_out) / n_out)
    return {"values": p_in - p_out, "stderr": stderr, "cscore": p_out, "n_in": n_in, "n_out": n_out}


def convergence(masks: np.ndarray, correct: np.ndarray, step: int) -> list[dict]:
    """How the estimate settles as models are added: after every `step` models, the mean
    standard error and the mean absolute change since the previous point."""
    def nanmean(a):  # NaN, not a warning, while no sample has been held out yet
        finite = a[np.isfinite(a)]
        return float(finite.mean()) if len(finite) else float("nan")

    rows, previous = [], None
    for k in range(step, len(masks) + 1, step):
        est = estimate(masks[:k], correct[:k])
        change = nanmean(np.abs(est["values"] - previous)) if previous is not None else None
        rows.append({"models": k, "mean_stderr": nanmean(est["stderr"]), "mean_abs_change": change,
                     "undefined": int(np.isnan(est["values"]).sum())})
        previous = est["values"]
    return rows
