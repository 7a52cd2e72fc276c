"""Embedding: a model's samples laid out on a 2-D map (explorer.evaluation.embeddings), published as
a record with the features and predictions the Explore page needs, so each map is computed once.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from .. import models
from ..evaluation import embeddings
from ..runtime.progress import Progress, no_progress
from ..store import artifacts
from ..store.workspace import Workspace, npz_bytes


def compute(ws: Workspace, model_rec: dict, method: str = "umap", seed: int = 0, device: torch.device | None = None,
            progress: Progress = no_progress) -> dict:
    """Compute and publish a map of the model's samples; an existing map of the same method and
    seed is returned as it is."""
    if method not in embeddings.METHODS:
        raise embeddings.MapError(f"unknown map method {method!r}; choose one of {', '.join(embeddings.METHODS)}")
    existing = artifacts.find_maps(ws, model_rec["id"], method, seed)
    if existing:
        return existing[0]
    ds = artifacts.dataset_of(ws, model_rec)
    model = artifacts.load_model(ws, model_rec).to(device or torch.device("cpu"))
    progress(0.05, "penultimate features")
    x = torch.cat([ds.x_train, ds.x_test])
    feats = embeddings.features(model, x)
    pred = models.predict_proba(model, x).argmax(1).numpy().astype(np.int16)
    progress(0.2, f"{method.upper()} of {len(x):,} samples" + (" (UMAP compiles on first use)" if method == "umap" else ""))
    start = time.perf_counter()
    xy = embeddings.project(feats, method, seed)
    seconds = time.perf_counter() - start
    progress(0.99, "saving")
    return ws.put(
        "embedding",
        {
            "name": f"{method.upper()} of {model_rec['id']}",
            "model_id": model_rec["id"],
            "dataset_id": model_rec["dataset_id"],
            "method": method,
            "seed": seed,
            "n_train": ds.n_train,
            "n_test": len(ds.y_test),
            "feature_dim": int(feats.shape[1]),
            "seconds": seconds,
        },
        files={artifacts.MAP: npz_bytes(xy=xy, features=feats.astype(np.float32), pred=pred)},
    )
