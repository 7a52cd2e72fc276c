"""2-D maps of the training samples from the model's penultimate features."""

from __future__ import annotations

import numpy as np
from torch import nn

from . import models

METHODS = ("pca",)


def features(model: nn.Module, x) -> np.ndarray:
    return models.penultimate(model, x).numpy()


def project(feats: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """(n, 2) coordinates of the samples."""
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(feats)
    raise ValueError(f"unknown map method {method!r}; choose one of {', '.join(METHODS)}")
