"""Sample maps: 2-D layouts of a model's penultimate features (UMAP, PCA or t-SNE), which
explorer.pipeline.embed stores as records so each map is computed once.

A map covers the training samples (ids 0…n_train−1, the ones a forget set is drawn from)
followed by the test samples, so a user can see where unseen data falls. The record keeps the
features and predictions too: the Explore page needs them for entanglement and colouring, and
recomputing them for a CIFAR-size set on a CPU takes minutes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .. import models
from ..errors import UserError

METHODS = {
    "umap": "UMAP: keeps neighbourhoods, so clusters and the samples stranded among another class stand out",
    "pca": "PCA: the two directions of largest variance; instant, but classes overlap",
    "tsne": "t-SNE: tight clusters; slower than UMAP on large sets, distances between clusters mean little",
}


class MapError(UserError):
    """A map that cannot be made as asked; one-line message."""


def features(model: torch.nn.Module, x) -> np.ndarray:
    return models.penultimate(model, x).numpy()


def project(feats: np.ndarray, method: str = "umap", seed: int = 0) -> np.ndarray:
    """(n, 2) float32 coordinates of the samples; the same seed gives the same map."""
    feats = np.asarray(feats, dtype=np.float32)
    if method == "pca":
        from sklearn.decomposition import PCA

        xy = PCA(n_components=2, random_state=seed).fit_transform(feats)
    elif method == "umap":
        xy = _umap(feats, seed)
    elif method == "tsne":
        from sklearn.manifold import TSNE

        xy = TSNE(n_components=2, init="pca", perplexity=min(30.0, (len(feats) - 1) / 3), random_state=seed
                  ).fit_transform(feats)
    else:
        raise MapError(f"unknown map method {method!r}; choose one of {', '.join(METHODS)}")
    return np.asarray(xy, dtype=np.float32)


UMAP_NEIGHBOURS = 15
EXACT_NEIGHBOURS_UP_TO = 20_000  # beyond this UMAP's own approximate search (pynndescent) is faster


def _umap(feats: np.ndarray, seed: int) -> np.ndarray:
    """UMAP with its neighbour graph computed here. umap-learn's path for small sets calls a
    Python-level distance per pair (7 s for 1,800 samples) and then compiles numba kernels that it
    never caches (16 s in every new process); exact neighbours from scikit-learn and the kernels'
    compiled code kept on disk make a digits map 5× faster with the same graph."""
    import warnings

    import umap  # slow to import (numba): only when asked for

    _cache_umap_kernels()
    k = min(UMAP_NEIGHBOURS, len(feats) - 1)
    knn = (None, None, None)
    if len(feats) <= EXACT_NEIGHBOURS_UP_TO:
        from sklearn.neighbors import NearestNeighbors

        dists, idx = NearestNeighbors(n_neighbors=k).fit(feats).kneighbors(feats)  # each sample first, at 0
        knn = (idx.astype(np.int32), dists.astype(np.float32), None)
    with warnings.catch_warnings():  # a fixed random_state makes UMAP deterministic, and single-threaded
        warnings.filterwarnings("ignore", category=UserWarning)  # n_jobs; no search index kept (not needed)
        return umap.UMAP(n_components=2, n_neighbors=k, min_dist=0.1, random_state=seed,
                         precomputed_knn=knn).fit_transform(feats)


def _cache_umap_kernels() -> None:
    """Keep the compiled code of umap-learn's parallel kernels on disk (numba's own cache), as it
    does for its other functions: compiled once per install instead of once per process."""
    import umap.umap_
    from numba.core.caching import NullCache

    for kernel in (umap.umap_.smooth_knn_dist, umap.umap_.compute_membership_strengths):
        if isinstance(getattr(kernel, "_cache", None), NullCache):
            kernel.enable_caching()


@dataclass
class SampleMap:
    """A loaded map (explorer.store.artifacts.load_map). Rows are the training samples, then the
    test samples."""

    record: dict
    xy: np.ndarray  # (n_train + n_test, 2)
    features: np.ndarray  # (n_train + n_test, d) penultimate features
    pred: np.ndarray  # predicted class of each sample

    @property
    def n_train(self) -> int:
        return self.record["n_train"]

    @property
    def train_features(self) -> np.ndarray:
        return self.features[: self.n_train]


def neighbours(xy: np.ndarray, i: int, k: int = 8, among: np.ndarray | None = None) -> np.ndarray:
    """The k samples nearest to sample i on the map (optionally only among `among` ids)."""
    candidates = np.arange(len(xy)) if among is None else np.asarray(among)
    candidates = candidates[candidates != i]
    d = ((xy[candidates] - xy[i]) ** 2).sum(1)
    k = min(k, len(candidates))
    nearest = np.argpartition(d, k - 1)[:k] if k else np.array([], dtype=int)
    return candidates[nearest[np.argsort(d[nearest], kind="stable")]]
