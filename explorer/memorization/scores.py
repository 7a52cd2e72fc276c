"""Memorization scores: one value per training sample (exact memorization or a proxy), and
which way each points.

Raw values keep their natural meaning (confidence is a probability). Every consumer that needs
"higher = more memorized" (plots against exact, correlations, RUM's partitions) goes through
`oriented`, so no page or method flips signs on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# name -> (orientation, label). Orientation +1: a higher raw value means more memorized.
SCORES = {
    "exact": (+1, "exact memorization (Feldman–Zhang)"),
    # Imported (explorer.pipeline.score_files): Jiang et al.'s C-score, the expected accuracy on a
    # sample of models trained without it. High = typical, so 1 − C is the memorization-like score.
    "cscore": (-1, "C-score (Jiang et al.), held-out consistency"),
    "confidence": (-1, "mean true-label confidence"),
    "max_conf": (-1, "mean max confidence"),
    "entropy": (-1, "mean negative entropy"),
    "bi_acc": (-1, "mean correctness (binary accuracy)"),
    "loss": (+1, "final-epoch loss"),
    "el2n": (+1, "EL2N, early epochs"),
    "forgetting_events": (+1, "forgetting events"),
    "ho_ret": (+1, "holdout retraining (symmetric KL)"),
    "curvature": (+1, "loss curvature (final model)"),
    "curvature_avg": (+1, "loss curvature averaged over training (RUM code)"),
}
# Scores in [0, 1] that fall as memorization rises: turned around as 1 − v (not −v), which ranks
# the same and reads better on an axis.
PROBABILITIES = {"confidence", "max_conf", "bi_acc", "cscore"}


def orientation(name: str) -> int:
    return SCORES[name][0]


def label(name: str) -> str:
    return SCORES[name][1]


def oriented(name: str, values: np.ndarray) -> np.ndarray:
    """Values turned so that higher = more memorized (a monotone map: ranks are kept)."""
    values = np.asarray(values, dtype=np.float64)
    if orientation(name) > 0:
        return values
    return 1 - values if name in PROBABILITIES else -values


def oriented_name(name: str) -> str:
    """What `oriented` values are called on an axis."""
    if orientation(name) > 0:
        return name
    return f"1 − {name}" if name in PROBABILITIES else "entropy" if name == "entropy" else f"−{name}"


@dataclass
class ScoreSet:
    """A stored score set (explorer.store.artifacts.load_scores): its record, values and extra arrays."""

    record: dict
    values: np.ndarray
    arrays: dict[str, np.ndarray]

    @property
    def name(self) -> str:
        return self.record["name"]

    @property
    def oriented(self) -> np.ndarray:
        return oriented(self.name, self.values)
