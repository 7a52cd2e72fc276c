"""What the Explore page shows about samples: the colourings of the map and summaries of a
selection. Pure functions of arrays, so the page stays thin and this is testable."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..evaluation import influence
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


def class_table(selected_labels: np.ndarray, train_labels: np.ndarray, class_names) -> list[dict]:
    """Per class: how many of the selection are in it, how many a random pick of the same size
    would hold on average, and the ratio of the two (over 1: the class is over-represented)."""
    k = len(class_names)
    counts = np.bincount(np.asarray(selected_labels, np.int64), minlength=k)[:k]
    expected = np.bincount(np.asarray(train_labels, np.int64), minlength=k)[:k] * len(selected_labels) / max(len(train_labels), 1)
    return [{"class": str(name), "selected": int(n), "a random pick": float(e),
             "× a random pick": float(n / e) if e > 0 else float("nan")}
            for name, n, e in zip(class_names, counts, expected)]


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


class Entanglement:
    """RUM's entanglement score (evaluation.metrics.entanglement) of any selection of one set of
    features, from sums over all rows taken once: a selection then costs a pass over the smaller
    of itself and the rest, not several passes over every row in float64 copies (a lasso on a
    50,000-sample map: milliseconds instead of about half a second)."""

    def __init__(self, features):
        self.features = np.asarray(features)
        g = self.features.astype(np.float64)
        self.n, self.total, self.squares = len(g), g.sum(0), float(np.einsum("ij,ij->", g, g))

    def _sums(self, ids: np.ndarray) -> tuple[np.ndarray, float]:
        g = self.features[ids].astype(np.float64)
        return g.sum(0), float(np.einsum("ij,ij->", g, g))

    def __call__(self, ids) -> float:
        chosen = np.zeros(self.n, dtype=bool)
        chosen[np.asarray(ids, dtype=np.int64)] = True
        n_s = int(chosen.sum())
        if n_s <= self.n // 2:
            sum_s, sq_s = self._sums(np.flatnonzero(chosen))
            sum_r, sq_r = self.total - sum_s, self.squares - sq_s
        else:
            sum_r, sq_r = self._sums(np.flatnonzero(~chosen))
            sum_s, sq_s = self.total - sum_r, self.squares - sq_r
        n_r = self.n - n_s
        mu_s, mu_r = sum_s / n_s, sum_r / n_r
        mu = 0.5 * (mu_r + mu_s)  # the RUM code's centre, as metrics.entanglement's default
        # The mean squared distance to a group's centre is E‖g‖² − ‖μ‖².
        within = (sq_r / n_r - mu_r @ mu_r) + (sq_s / n_s - mu_s @ mu_s)
        between = 0.5 * (((mu_r - mu) ** 2).sum() + ((mu_s - mu) ** 2).sum())
        return float(within / between)


def percentile(values: np.ndarray, i: int) -> float:
    """Share of samples with a value at most sample i's (NaN-free), as a percentage."""
    finite = values[np.isfinite(values)]
    return float((finite <= values[i]).mean() * 100) if np.isfinite(values[i]) and len(finite) else float("nan")


def influence_pairs(masks: np.ndarray, test_correct: np.ndarray, i: int, k: int = 5) -> list[dict]:
    """The `k` test samples training sample i helps most and the `k` it hurts most
    (influence.top_pairs on row i alone: one K × m product), each row with the share of the
    subset models trained with i that get the test sample right (`right_with`) and of those
    trained without it (`right_without`): influence = right_with − right_without."""
    rows = influence.top_pairs(masks, test_correct, k, rows=[i])
    if rows:
        with_i = np.asarray(masks, bool)[:, i]
        ids = [r["test_id"] for r in rows]
        correct = np.asarray(test_correct)[:, ids].astype(np.float64)
        for r, a, b in zip(rows, correct[with_i].mean(0), correct[~with_i].mean(0)):
            r["right_with"], r["right_without"] = float(a), float(b)
    return rows


def _ids(rows: list[dict]) -> str:
    ids = [f"#{r['test_id']}" for r in rows]
    return ids[0] if len(ids) == 1 else f"{', '.join(ids[:-1])} and {ids[-1]}"


def influence_sentence(i: int, rows: list[dict], n_models: int) -> str:
    """influence_pairs in plain words: what the test samples would lose (or gain) without i."""
    helps = [r for r in rows if r["direction"] == "helps"]
    hurts = [r for r in rows if r["direction"] == "hurts"]
    if not rows:
        return (f"Across the {n_models} subset models, training sample #{i} changes no test sample's correctness: "
                "the models trained with it and those trained without it get the same test samples right.")
    said = []
    if helps:
        top = helps[0]
        said.append(f"Without training image #{i}, test images {_ids(helps)} would be misclassified more often: "
                    f"test image #{top['test_id']} is right in {top['right_with']:.0%} of the subset models trained with "
                    f"it and in {top['right_without']:.0%} of those trained without it.")
    if hurts:
        top = hurts[0]
        said.append(f"It hurts test images {_ids(hurts)}: without it they would be right more often "
                    f"(test image #{top['test_id']}: right in {top['right_with']:.0%} of the models with it, "
                    f"{top['right_without']:.0%} without).")
    return " ".join(said) + f" From the {n_models} subset models of the exact memorization."
