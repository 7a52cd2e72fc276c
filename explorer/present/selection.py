"""What the Explore page shows about samples: the colourings of the map and summaries of a
selection. Pure functions of arrays, so the page stays thin and this is testable."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..memorization import scores


@dataclass
class Colouring:
    values: np.ndarray  # one per map row: integer codes with `categories`, else an oriented score
    name: str
    categories: list[str] | None = None


def colourings(labels: np.ndarray, pred: np.ndarray, n_train: int, class_names, flipped: np.ndarray,
               raw_scores: dict[str, np.ndarray]) -> dict[str, Colouring]:
    """Every way to colour a map whose rows are the n_train training samples then the test
    samples. Scores exist for training samples only: test rows get NaN (drawn grey)."""
    n = len(labels)
    names = [str(c) for c in class_names]
    split = (np.arange(n) >= n_train).astype(np.int64)
    out = {
        "class": Colouring(labels, "class", names),
        "predicted class": Colouring(pred.astype(np.int64), "predicted", names),
        "correct": Colouring((pred == labels).astype(np.int64), "prediction", ["wrong", "right"]),
        "split": Colouring(split, "split", ["train", "test"]),
    }
    if flipped.any():
        is_flipped = np.zeros(n, dtype=np.int64)
        is_flipped[flipped] = 1
        out["flipped label"] = Colouring(is_flipped, "label", ["clean", "flipped"])
    for name, raw in raw_scores.items():
        padded = np.full(n, np.nan)
        padded[:n_train] = scores.oriented(name, raw)
        out[name] = Colouring(padded, scores.oriented_name(name))
    return out


def training_only(ids, n_train: int) -> tuple[np.ndarray, int]:
    """(the training sample ids of a selection, how many test samples it also held)."""
    ids = np.asarray(ids, dtype=np.int64)
    train = ids[ids < n_train]
    return train, len(ids) - len(train)


def score_summary(selected: np.ndarray, raw_scores: dict[str, np.ndarray]) -> list[dict]:
    """Per score, the selection against all training samples, oriented (higher = more
    memorized): means, and the share of the selection among the 10% most memorized."""
    rows = []
    for name, raw in raw_scores.items():
        values = scores.oriented(name, raw)
        finite = np.isfinite(values)
        if not finite[selected].any():
            continue
        top = values >= np.nanquantile(values, 0.9)
        rows.append({
            "score": scores.oriented_name(name),
            "mean (selected)": float(np.nanmean(values[selected])),
            "mean (all)": float(np.nanmean(values)),
            "median (selected)": float(np.nanmedian(values[selected])),
            "in top 10%": float(top[selected][finite[selected]].mean()),
        })
    return rows


def percentile(values: np.ndarray, i: int) -> float:
    """Share of samples with a value at most sample i's (NaN-free), as a percentage."""
    finite = values[np.isfinite(values)]
    return float((finite <= values[i]).mean() * 100) if np.isfinite(values[i]) and len(finite) else float("nan")
