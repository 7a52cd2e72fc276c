"""Memorization scores: proxies from recorded training dynamics (METHODS.md §2).

Raw values keep their natural meaning (confidence is a probability); every consumer that needs
"higher = more memorized" goes through `oriented`, never through ad-hoc sign flips.
"""

from __future__ import annotations

import numpy as np

from .errors import UserError
from .workspace import Workspace

# +1: higher raw value = more memorized; -1: lower raw value = more memorized.
ORIENTATION = {
    "exact": +1,
    "confidence": -1,
    "max_conf": -1,
    "entropy": -1,
    "bi_acc": -1,
    "loss": +1,
}

LABELS = {
    "confidence": "mean true-label confidence",
    "max_conf": "mean max confidence",
    "entropy": "mean negative entropy",
    "bi_acc": "mean correctness",
    "loss": "final-epoch loss",
}


def load_dynamics(ws: Workspace, model_rec: dict) -> dict[str, np.ndarray]:
    """The samples × epochs arrays recorded while the model trained."""
    if not model_rec.get("has_dynamics"):
        raise UserError(f"model {model_rec['id']} has no training dynamics (it was {model_rec.get('source')})")
    with np.load(ws.read(model_rec, "dynamics.npz")) as z:
        return {k: z[k] for k in z.files}


def learning_event_proxies(dynamics: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-sample proxies from the per-epoch dynamics, raw orientation."""
    return {
        "confidence": dynamics["confidence"].mean(1),
        "max_conf": dynamics["max_conf"].mean(1),
        "entropy": dynamics["neg_entropy"].mean(1),
        "bi_acc": dynamics["correct"].mean(1),
        "loss": dynamics["loss"][:, -1],
    }


def oriented(name: str, values: np.ndarray) -> np.ndarray:
    """Values turned so that higher = more memorized."""
    return ORIENTATION[name] * np.asarray(values, dtype=np.float64)
