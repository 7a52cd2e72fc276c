"""Forget sets: a choice of training samples to unlearn (explorer.evaluation.choice), published
with how it was made, its entanglement with the rest and, when the model has an exact score set,
its mean memorization.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from ..evaluation import embeddings, metrics
from ..evaluation.choice import BY_SCORE, choose
from ..memorization import scores
from ..store import artifacts
from ..store.workspace import Workspace
from . import score_sets


def model_features(ws: Workspace, model_rec: dict) -> np.ndarray:
    """Penultimate features of the training samples: from a stored map when there is one."""
    stored = artifacts.find_maps(ws, model_rec["id"])
    if stored:
        return artifacts.load_map(ws, stored[0]).train_features
    ds = artifacts.dataset_of(ws, model_rec)
    return embeddings.features(artifacts.load_model(ws, model_rec), ds.x_train)


def create(ws: Workspace, model_rec: dict, strategy: str, name: str | None = None, features=None,
           score: tuple[str, np.ndarray] | None = None, score_id: str | None = None, **how) -> dict:
    """Build a forget set on the model's training data and publish it with its entanglement.

    `score` is (name, raw values) for the score strategies, or give `score_id` of a stored score
    set; `features` are the model's penultimate training features when the caller has them."""
    ds = artifacts.dataset_of(ws, model_rec)
    labels = ds.y_train.numpy()
    if score_id is not None:
        score_name, values, _ = score_sets.resolve(ws, model_rec, score_id)
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
        "es_centre": "halves",  # metrics.entanglement's centre; sets made before it followed the RUM code: pooled
        **memorization_summary(ws, model_rec, ids),
    }
    return ws.put("forget_set", meta)


def memorization_summary(ws: Workspace, model_rec: dict, ids: np.ndarray) -> dict:
    """Mean exact memorization of the samples, when the model has an exact score set."""
    exact = artifacts.latest_scores(ws, model_rec["id"]).get("exact")
    if exact is None:
        return {}
    values = artifacts.load_scores(ws, exact["id"]).values[ids]
    return {"mean_memorization": float(np.nanmean(values)) if np.isfinite(values).any() else None,
            "memorization_id": exact["id"]}


def describe(fs: dict) -> str:
    """One line on how a forget set was made."""
    how = fs["how"]
    parts = [fs["strategy"]]
    if how.get("score"):
        parts.append(f"by {how['score']}")
    if how.get("classes"):
        parts.append(f"classes {', '.join(map(str, how['classes']))}")
    if "seed" in how and fs["strategy"] in ("random", *BY_SCORE):
        parts.append(f"seed {how['seed']}")
    return " · ".join(parts)
