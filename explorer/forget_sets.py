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
    """Sample ids for a strategy; pure, so it is easy to test and to preview."""
    n = len(labels)
    if strategy == "random":
        if not size or not 0 < size < n:
            raise ForgetSetError(f"--size must be between 1 and {n - 1} for a random forget set")
        return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
    if strategy == "class":
        if not classes:
            raise ForgetSetError("give at least one --class for a class forget set")
        bad = [c for c in classes if not 0 <= c <= labels.max()]
        if bad:
            raise ForgetSetError(f"no class {bad[0]} in this dataset (classes 0–{labels.max()})")
        chosen = np.flatnonzero(np.isin(labels, classes))
        if size:  # a random part of those classes
            chosen = np.sort(np.random.default_rng(seed).choice(chosen, size=min(size, len(chosen)), replace=False))
        return chosen
    if strategy in ("ids", "selection"):
        chosen = np.unique(np.asarray(ids or [], dtype=np.int64))
        if len(chosen) == 0:
            raise ForgetSetError("the forget set is empty: select or list at least one sample")
        if chosen[0] < 0 or chosen[-1] >= n:
            raise ForgetSetError(f"sample ids must be in 0–{n - 1}; got {int(chosen[0] if chosen[0] < 0 else chosen[-1])}")
        if len(chosen) == n:
            raise ForgetSetError("the forget set cannot be the whole training set")
        return chosen
    raise ForgetSetError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")


def create(ws: Workspace, model_rec: dict, strategy: str, name: str | None = None, **how) -> dict:
    """Build a forget set on the model's training data and publish it with its entanglement."""
    ds = checkpoints.dataset_of(ws, model_rec)
    labels = ds.y_train.numpy()
    ids = choose(strategy, labels, **how)
    model = checkpoints.load_model(ws, model_rec)
    es = metrics.entanglement(models.penultimate(model, ds.x_train), ids)
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
