"""Per-sample membership inference with LiRA (Carlini et al. 2022, "Membership inference attacks
from first principles"), the shadow models being exact memorization's K subset models.

Every model's output on a sample is reduced to φ = log(p / (1 − p)) of its true-label confidence
(models.logit_confidence). For each sample, Gaussians are fitted to φ over the models trained
with it (IN) and without it (OUT). A target model's φ on the sample is then scored:

- `online`: the log likelihood ratio log N(φ; μ_in, σ_in) − log N(φ; μ_out, σ_out); defined for
  training samples only (a test sample has no IN model);
- `offline`: how far φ lies above the OUT Gaussian, −log Pr[Z > φ], Z ~ N(μ_out, σ_out²):
  defined for every sample that has OUT models, training or test.

Telling the original model's training samples (members) from test samples (non-members) needs
one score computed the same way for both, so AUC, TPR at low FPR and the "still a member" share
use the offline score (Carlini et al.'s offline LiRA): choosing the online score where IN models
exist would let the attack read membership off which samples have them.

With few shadow models a per-sample σ is noisy; as Carlini et al. advise below 64 of them, σ is
then one global value per side (`fixed_variance`, automatic by default). Arrays in, arrays out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FIXED_VARIANCE_BELOW = 64  # per-sample models under which σ is pooled over the samples (Carlini et al.)
SD_FLOOR = 1e-3  # no Gaussian narrower than this (a sample every model fits identically)


@dataclass
class Gaussians:
    """Per-sample IN and OUT Gaussians of φ; NaN where a side has no model."""

    mu_in: np.ndarray
    sd_in: np.ndarray
    n_in: np.ndarray
    mu_out: np.ndarray
    sd_out: np.ndarray
    n_out: np.ndarray


def _side(phi: np.ndarray, take: np.ndarray, fixed: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, sd, count) per column of φ over the rows where `take`; NaN with no row, and a
    per-sample sd NaN with one row (a pooled one is used whenever `fixed`)."""
    n = take.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = np.where(take, phi, 0).sum(0) / n
        dev2 = np.where(take, (phi - mu) ** 2, 0)
        if fixed:
            dof = (n - 1).clip(min=0).sum()
            sd = np.full(phi.shape[1], np.sqrt(dev2.sum() / dof) if dof > 0 else np.nan)
        else:
            sd = np.sqrt(dev2.sum(0) / (n - 1))
        sd = np.where(n > 0, np.maximum(sd, SD_FLOOR), np.nan)
    return mu, sd, n


def gaussians(phi: np.ndarray, masks: np.ndarray, fixed_variance: bool | None = None) -> Gaussians:
    """Fit the IN and OUT Gaussians of every sample from the shadow models' φ (K, n) and their
    membership (K, n) (all False for test samples: every model is OUT). `fixed_variance` None:
    pooled σ when the median OUT count is under FIXED_VARIANCE_BELOW."""
    phi = np.asarray(phi, np.float64)
    masks = np.asarray(masks, bool)
    if phi.shape != masks.shape:
        raise ValueError(f"φ {phi.shape} and masks {masks.shape} differ")
    if fixed_variance is None:
        fixed_variance = bool(np.median((~masks).sum(0)) < FIXED_VARIANCE_BELOW)
    mu_in, sd_in, n_in = _side(phi, masks, fixed_variance)
    mu_out, sd_out, n_out = _side(phi, ~masks, fixed_variance)
    return Gaussians(mu_in, sd_in, n_in, mu_out, sd_out, n_out)


def _log_normal(x, mu, sd):
    return -0.5 * ((x - mu) / sd) ** 2 - np.log(sd) - 0.5 * np.log(2 * np.pi)


def online(target_phi: np.ndarray, g: Gaussians) -> np.ndarray:
    """The log likelihood ratio of IN against OUT for the target's φ on each sample (higher =
    more likely a member); NaN where a sample has no IN or no OUT model."""
    x = np.asarray(target_phi, np.float64)
    with np.errstate(invalid="ignore"):
        return _log_normal(x, g.mu_in, g.sd_in) - _log_normal(x, g.mu_out, g.sd_out)


def offline(target_phi: np.ndarray, g: Gaussians) -> np.ndarray:
    """−log Pr[Z > φ], Z ~ N(μ_out, σ_out²), for the target's φ on each sample (higher = more
    likely a member; 0 far below the OUT models, log 2 at their mean); NaN without OUT models."""
    import torch  # log Φ(−z) = log Pr[Z > z], accurate far in the tail; scipy.stats costs 3 s to import

    x = np.asarray(target_phi, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (x - g.mu_out) / g.sd_out
    return -torch.special.log_ndtr(torch.from_numpy(np.asarray(-z, np.float64))).numpy()


def roc(members: np.ndarray, nonmembers: np.ndarray, fpr: float = 1e-3) -> dict[str, float]:
    """AUC and the TPR at `fpr` of "member iff score ≥ t" (NaNs dropped): the best TPR of any
    threshold whose FPR is at most `fpr`; with fewer than 1/fpr non-members that is the TPR at
    no false positive. NaN when a side is empty. (scikit-learn's roc_curve and roc_auc_score give
    the same, ties included; written out because importing sklearn costs seconds in a job.)"""
    a, b = np.asarray(members, float), np.asarray(nonmembers, float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if not len(a) or not len(b):
        return {"auc": float("nan"), "tpr": float("nan")}
    values, where = np.unique(np.r_[a, b], return_inverse=True)  # ascending distinct scores
    pos = np.bincount(where[: len(a)], minlength=len(values))[::-1]  # per threshold, highest first
    neg = np.bincount(where[len(a) :], minlength=len(values))[::-1]
    tp, fp = np.cumsum(pos), np.cumsum(neg)  # flagged at "score ≥ each distinct value"
    tpr, fpr_at = np.r_[0, tp] / len(a), np.r_[0, fp] / len(b)
    auc = float(np.sum(np.diff(fpr_at) * (tpr[1:] + tpr[:-1]) / 2))  # trapezoids: ties count half
    return {"auc": auc, "tpr": float(tpr[fpr_at <= fpr].max())}


def threshold(test_scores: np.ndarray, fpr: float = 0.01) -> float:
    """The score above which `fpr` of the (finite) test scores lie: the threshold that flags that
    share of non-members."""
    s = np.asarray(test_scores, float)
    s = s[np.isfinite(s)]
    return float(np.quantile(s, 1 - fpr)) if len(s) else float("nan")


def still_member(scores: np.ndarray, test_scores: np.ndarray, fpr: float = 0.01) -> float:
    """The share of samples (e.g. a forget set, scored offline on an unlearned model) still judged
    members at the threshold that flags `fpr` of the same model's test samples; NaN when no
    sample of the set is scored."""
    s = np.asarray(scores, float)
    s = s[np.isfinite(s)]
    return float((s > threshold(test_scores, fpr)).mean()) if len(s) else float("nan")


def evaluate(phi: np.ndarray, masks: np.ndarray, test_phi: np.ndarray, target_phi: np.ndarray,
             target_test_phi: np.ndarray, fixed_variance: bool | None = None) -> dict:
    """LiRA of one target model from the shadow models' φ on the training (K, n) and test (K,
    n_test) samples and their training masks, and the target's φ on them: per-sample scores
    (`online` and `offline` of the training samples, `offline_test`) and, taking the training
    samples as members and the test samples as non-members (true of the original model), `auc`
    and `tpr_at_0.1fpr`."""
    masks = np.asarray(masks, bool)
    k = len(masks)
    both = gaussians(np.concatenate([phi, test_phi], 1), np.concatenate([masks, np.zeros((k, test_phi.shape[1]), bool)], 1),
                     fixed_variance)
    n = masks.shape[1]
    train = Gaussians(*(getattr(both, f)[:n] for f in Gaussians.__dataclass_fields__))
    test = Gaussians(*(getattr(both, f)[n:] for f in Gaussians.__dataclass_fields__))
    off, off_test = offline(target_phi, train), offline(target_test_phi, test)
    r = roc(off, off_test)
    return {"online": online(target_phi, train), "offline": off, "offline_test": off_test,
            "auc": r["auc"], "tpr_at_0.1fpr": r["tpr"], "train": train, "test": test}
