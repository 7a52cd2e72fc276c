"""Forget-set choice: which training samples to unlearn, by strategy; pure, so it is easy to
test and to preview (explorer.pipeline.forget_sets publishes a choice as a record).

Strategies: `random`; `class` (one or several classes); `low` / `mid` / `high`
by a score, the N least memorized, the N closest to the middle (0.5 for exact memorization, the
median for a proxy) or the N most memorized; `mix`, a third of each; `ids` from a list; and
`selection`, the samples a user selected on the map.
"""

from __future__ import annotations

import numpy as np

from ..errors import UserError

BY_SCORE = ("low", "mid", "high", "mix")
STRATEGIES = ("random", "class", *BY_SCORE, "ids", "selection")


class ForgetSetError(UserError):
    """A forget set that cannot be built from what was asked; one-line message."""


def _by_score(strategy: str, values: np.ndarray, candidates: np.ndarray, size: int, centre: float,
              rng: np.random.Generator) -> np.ndarray:
    """Pick `size` of the candidates by their oriented score. Ties are broken by a seeded shuffle;
    samples without a value (NaN: never held out) are never picked."""
    candidates = rng.permutation(candidates[np.isfinite(values[candidates])])
    if size > len(candidates):
        raise ForgetSetError(f"--size {size} is more than the {len(candidates)} samples that have a score")
    ascending = candidates[np.argsort(values[candidates], kind="stable")]
    if strategy == "low":
        return ascending[:size]
    if strategy == "high":
        return ascending[::-1][:size]
    if strategy == "mid":
        return candidates[np.argsort(np.abs(values[candidates] - centre), kind="stable")][:size]
    # mix: a third high, a third low, the rest from the middle of what is left, all disjoint
    n_high, n_low = size // 3, size // 3
    high = ascending[::-1][:n_high]
    low = ascending[:n_low]
    rest = np.setdiff1d(candidates, np.r_[high, low], assume_unique=True)
    rest = rng.permutation(rest)
    mid = rest[np.argsort(np.abs(values[rest] - centre), kind="stable")][: size - n_high - n_low]
    return np.r_[low, mid, high]


def choose(strategy: str, labels: np.ndarray, *, size: int | None = None, seed: int = 0,
           classes: list[int] | None = None, ids: list[int] | None = None,
           values: np.ndarray | None = None, centre: float | None = None) -> np.ndarray:
    """Sorted sample ids for a strategy; pure, so it is easy to test and to preview.

    `values` are oriented scores (higher = more memorized) for the score strategies, `centre`
    the value `mid` is drawn around (default: their median). `classes` restricts random and
    score strategies to those classes. Whatever the strategy, the result is neither empty nor
    the whole training set (R must keep something)."""
    n = len(labels)
    rng = np.random.default_rng(seed)
    if classes:
        bad = [c for c in classes if not 0 <= c <= labels.max()]
        if bad:
            raise ForgetSetError(f"no class {bad[0]} in this dataset (classes 0–{labels.max()})")
    candidates = np.flatnonzero(np.isin(labels, classes)) if classes else np.arange(n)
    if strategy == "random":
        if not size or not 0 < size < n:
            raise ForgetSetError(f"--size must be between 1 and {n - 1} for a random forget set")
        chosen = rng.choice(candidates, size=min(size, len(candidates)), replace=False)
    elif strategy == "class":
        if not classes:
            raise ForgetSetError("give at least one --class for a class forget set")
        chosen = candidates
        if size:  # a random part of those classes
            chosen = rng.choice(chosen, size=min(size, len(chosen)), replace=False)
    elif strategy in BY_SCORE:
        if values is None:
            raise ForgetSetError(f"the {strategy} strategy needs a score set (--scores ID)")
        if len(values) != n:
            raise ForgetSetError(f"the score set has {len(values)} values but the training set has {n} samples")
        if not size or size < 1:
            raise ForgetSetError(f"give --size for a {strategy} forget set")
        finite = values[np.isfinite(values)]
        centre = float(np.median(finite)) if centre is None and len(finite) else centre
        chosen = _by_score(strategy, np.asarray(values, dtype=np.float64), candidates, size, centre or 0.0, rng)
    elif strategy in ("ids", "selection"):
        chosen = np.asarray(ids if ids is not None else [], dtype=np.int64)
        if len(chosen) and (chosen.min() < 0 or chosen.max() >= n):
            bad = int(chosen.min() if chosen.min() < 0 else chosen.max())
            raise ForgetSetError(f"sample ids must be in 0–{n - 1}; got {bad}")
    else:
        raise ForgetSetError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    chosen = np.unique(chosen)
    if len(chosen) == 0:
        raise ForgetSetError("the forget set is empty: select or list at least one sample")
    if len(chosen) == n:
        raise ForgetSetError("the forget set cannot be the whole training set")
    return chosen
