"""Forget sets: which training samples to unlearn, and how they were chosen."""

from __future__ import annotations

from collections import Counter

import numpy as np

from . import checkpoints, metrics, models
from .errors import UserError
from .workspace import Workspace

STRATEGIES = ("random", "class", "ids", "selection")


class ForgetSetError(UserError):
    """A forget set that cannot be built from what was asked; one-line message."""


def choose(strategy: str, labels: np.ndarray, *, size: int | None = None, seed: int = 0,
           classes: list[int] | None = None, ids: list[int] | None = None) -> np.ndarray:
    """Sorted sample ids for a strategy; pure, so it is easy to test and to preview. Whatever the
    strategy, the result is neither empty nor the whole training set (R must keep something)."""
    n = len(labels)
    rng = np.random.default_rng(seed)
    if strategy == "random":
        if not size or not 0 < size < n:
            raise ForgetSetError(f"--size must be between 1 and {n - 1} for a random forget set")
        chosen = rng.choice(n, size=size, replace=False)
    elif strategy == "class":
        if not classes:
            raise ForgetSetError("give at least one --class for a class forget set")
        bad = [c for c in classes if not 0 <= c <= labels.max()]
        if bad:
            raise ForgetSetError(f"no class {bad[0]} in this dataset (classes 0–{labels.max()})")
        chosen = np.flatnonzero(np.isin(labels, classes))
        if size:  # a random part of those classes
            chosen = rng.choice(chosen, size=min(size, len(chosen)), replace=False)
    elif strategy in ("ids", "selection"):
        chosen = np.asarray(ids or [], dtype=np.int64)
        if len(chosen) and (chosen.min() < 0 or chosen.max() >= n):
            raise ForgetSetError(f"sample ids must be in 0–{n - 1}; got {int(chosen.min() if chosen.min() < 0 else chosen.max())}")
    else:
        raise ForgetSetError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    chosen = np.unique(chosen)
    if len(chosen) == 0:
        raise ForgetSetError("the forget set is empty: select or list at least one sample")
    if len(chosen) == n:
        raise ForgetSetError("the forget set cannot be the whole training set")
    return chosen


def create(ws: Workspace, model_rec: dict, strategy: str, name: str | None = None, features=None, **how) -> dict:
    """Build a forget set on the model's training data and publish it with its entanglement
    (from `features`, the model's penultimate features, when the caller has them already)."""
    ds = checkpoints.dataset_of(ws, model_rec)
    labels = ds.y_train.numpy()
    ids = choose(strategy, labels, **how)
    if features is None:
        features = models.penultimate(checkpoints.load_model(ws, model_rec), ds.x_train)
    es = metrics.entanglement(features, ids)
    counts = Counter(labels[ids].tolist())
    return ws.put(
        "forget_set",
        {
            "name": name or f"{strategy} · {len(ids)} samples",
            "dataset_id": model_rec["dataset_id"],
            "model_id": model_rec["id"],
            "strategy": strategy,
            "how": {k: v for k, v in how.items() if k != "ids" and v is not None},
            "ids": ids.tolist(),
            "size": len(ids),
            "classes": sorted(counts),
            "class_counts": {str(k): v for k, v in sorted(counts.items())},
            "es": es,
        },
    )
