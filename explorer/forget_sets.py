"""Forget sets: which training samples to unlearn, and how they were chosen.

Strategies (METHODS.md §3): `random`; `class` (one or several classes); `low` / `mid` / `high`
by a score, the N least memorized, the N closest to the middle (0.5 for exact memorization, the
median for a proxy) or the N most memorized; `mix`, a third of each; `ids` from a list; and
`selection`, the samples a user selected on the map.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from . import checkpoints, embeddings, metrics, scores
from .errors import UserError
from .workspace import Workspace

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


def model_features(ws: Workspace, model_rec: dict) -> np.ndarray:
    """Penultimate features of the training samples: from a stored map when there is one."""
    stored = embeddings.find(ws, model_rec["id"])
    if stored:
        return embeddings.load(ws, stored[0]).train_features
    ds = checkpoints.dataset_of(ws, model_rec)
    return embeddings.features(checkpoints.load_model(ws, model_rec), ds.x_train)


def create(ws: Workspace, model_rec: dict, strategy: str, name: str | None = None, features=None,
           score: tuple[str, np.ndarray] | None = None, score_id: str | None = None, **how) -> dict:
    """Build a forget set on the model's training data and publish it with its entanglement.

    `score` is (name, raw values) for the score strategies, or give `score_id` of a stored score
    set; `features` are the model's penultimate training features when the caller has them."""
    ds = checkpoints.dataset_of(ws, model_rec)
    labels = ds.y_train.numpy()
    if score_id is not None:
        score_name, values, _ = scores.resolve(ws, model_rec, score_id)
        score = score_name, values
    if strategy in BY_SCORE and score is not None:
        score_name, raw = score
        how["values"] = scores.oriented(score_name, raw)
        how["centre"] = 0.5 if score_name == "exact" else None
    ids = choose(strategy, labels, **how)
    es = metrics.entanglement(model_features(ws, model_rec) if features is None else features, ids)
    counts = Counter(labels[ids].tolist())
    provenance = {k: v for k, v in how.items() if k not in ("ids", "values", "centre") and v is not None}
    if strategy in BY_SCORE and score is not None:
        provenance.update(score=score[0], **({"score_id": score_id} if score_id else {}))
    meta = {
        "name": name or f"{strategy} · {len(ids)} samples",
        "dataset_id": model_rec["dataset_id"],
        "model_id": model_rec["id"],
        "strategy": strategy,
        "how": provenance,
        "ids": ids.tolist(),
        "size": len(ids),
        "classes": sorted(counts),
        "class_counts": {str(k): v for k, v in sorted(counts.items())},
        "es": es,
        **memorization_summary(ws, model_rec, ids),
    }
    return ws.put("forget_set", meta)


def memorization_summary(ws: Workspace, model_rec: dict, ids: np.ndarray) -> dict:
    """Mean exact memorization of the samples, when the model has an exact score set."""
    exact = scores.latest(ws, model_rec["id"]).get("exact")
    if exact is None:
        return {}
    values = scores.load(ws, exact["id"]).values[ids]
    return {"mean_memorization": float(np.nanmean(values)) if np.isfinite(values).any() else None,
            "memorization_id": exact["id"]}


def describe(fs: dict) -> str:
    """One line on how a forget set was made."""
    how = fs.get("how", {})
    parts = [fs["strategy"]]
    if how.get("score"):
        parts.append(f"by {how['score']}")
    if how.get("classes"):
        parts.append(f"classes {', '.join(map(str, how['classes']))}")
    if "seed" in how and fs["strategy"] in ("random", *BY_SCORE):
        parts.append(f"seed {how['seed']}")
    return " · ".join(parts)
