"""Metrics of an unlearned model against the original and the retrained oracle (METHODS.md §8)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from . import models


def split_ids(n: int, forget_ids) -> tuple[np.ndarray, np.ndarray]:
    """(retain ids, forget ids) of a training set of n samples."""
    forget = np.unique(np.asarray(forget_ids, dtype=np.int64))
    mask = np.ones(n, dtype=bool)
    mask[forget] = False
    return np.flatnonzero(mask), forget


def _acc(pred: torch.Tensor, y: torch.Tensor) -> float:
    return (pred == y).float().mean().item() if len(y) else float("nan")


def accuracies(model: nn.Module, ds, forget_ids) -> dict[str, float]:
    """Accuracy on the retain set R, the forget set S and the test set T."""
    retain, forget = split_ids(ds.n_train, forget_ids)
    pred = models.predict_proba(model, ds.x_train).argmax(1)
    test_pred = models.predict_proba(model, ds.x_test).argmax(1)
    y = ds.y_train
    return {
        "acc_retain": _acc(pred[retain], y[retain]),
        "acc_forget": _acc(pred[forget], y[forget]),
        "acc_test": _acc(test_pred, ds.y_test),
    }


def true_label_confidence(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    p = models.predict_proba(model, x)
    return p.gather(1, y[:, None].cpu())[:, 0].numpy()


def mia_efficacy(model: nn.Module, ds, forget_ids, seed: int = 0) -> float:
    """Fraction of S an SVC on true-label confidence calls a non-member, the SVC having been
    trained with retain samples as members and test samples as non-members, balanced."""
    from sklearn.svm import SVC

    retain, forget = split_ids(ds.n_train, forget_ids)
    conf_train = true_label_confidence(model, ds.x_train, ds.y_train)
    conf_test = true_label_confidence(model, ds.x_test, ds.y_test)
    rng = np.random.default_rng(seed)
    k = min(len(retain), len(conf_test))
    members = conf_train[rng.choice(retain, size=k, replace=False)]
    non_members = conf_test[rng.choice(len(conf_test), size=k, replace=False)]
    svc = SVC(C=3, kernel="rbf", gamma="auto")
    svc.fit(np.r_[members, non_members][:, None], np.r_[np.ones(k), np.zeros(k)])
    return float((svc.predict(conf_train[forget][:, None]) == 0).mean())


def tow(unlearned: dict, oracle: dict, first: str = "acc_forget") -> float:
    """Tug of war: 1 = the unlearned model matches the oracle on S, R and T exactly.
    With `first="mia_efficacy"` this is ToW-MIA."""
    factors = [first, "acc_retain", "acc_test"]
    return float(np.prod([1 - abs(unlearned[k] - oracle[k]) for k in factors]))


def entanglement(features: torch.Tensor, forget_ids) -> float:
    """RUM's entanglement score of S within D from penultimate features; higher = harder."""
    g = torch.as_tensor(features).double()
    retain, forget = split_ids(len(g), forget_ids)
    g_r, g_s = g[retain], g[forget]
    mu, mu_r, mu_s = g.mean(0), g_r.mean(0), g_s.mean(0)
    within = ((g_r - mu_r) ** 2).sum(1).mean() + ((g_s - mu_s) ** 2).sum(1).mean()
    between = 0.5 * (((mu_r - mu) ** 2).sum() + ((mu_s - mu) ** 2).sum())
    return float(within / between)


def rank_agreement(reference: np.ndarray, other: np.ndarray, k: int) -> dict[str, float]:
    """How well `other` (oriented: higher = more memorized) tracks `reference` (e.g. exact
    memorization): Spearman, Pearson and Kendall correlations, and precision@k — the fraction
    of `other`'s top k that are among the reference's top k. Pairs with a NaN are left out."""
    from scipy import stats

    keep = np.isfinite(reference) & np.isfinite(other)
    a, b = np.asarray(reference, float)[keep], np.asarray(other, float)[keep]
    k = max(1, min(k, len(a)))
    top_a = set(np.argsort(-a, kind="stable")[:k])
    top_b = np.argsort(-b, kind="stable")[:k]
    return {
        "spearman": float(stats.spearmanr(a, b).statistic),
        "pearson": float(stats.pearsonr(a, b).statistic),
        "kendall": float(stats.kendalltau(a, b).statistic),
        "precision_at_k": len(top_a.intersection(top_b)) / k,
        "k": k,
        "n": int(keep.sum()),
    }


def auroc(positives: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve of `score` (higher = positive) for a boolean label; NaNs dropped."""
    from sklearn.metrics import roc_auc_score

    keep = np.isfinite(score)
    positives = np.asarray(positives, bool)[keep]
    if positives.all() or not positives.any():
        return float("nan")
    return float(roc_auc_score(positives, np.asarray(score)[keep]))
