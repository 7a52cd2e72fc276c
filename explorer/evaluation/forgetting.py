"""Forgetting quality F (the NeurIPS 2023 unlearning competition; Triantafillou et al. 2024,
arXiv 2406.09073, §3 and appendix): how well an attacker who sees one model's output on a forget
sample can tell whether the model was unlearned or retrained without the sample.

For each forget sample we hold two distributions of a scalar output, the logit-scaled true-label
confidence φ (models.logit_confidence), over N unlearned models (the method run with N seeds)
and over N retrained ones (oracles trained on R with N seeds). Every decision rule of two families
gives a false-positive and a false-negative rate, and with them the (ε, δ) the rule certifies:

    ε = max(log((1 − δ − FPR) / FNR), log((1 − δ − FNR) / FPR)),   clipped at 0;

the sample's ε is the largest over the rules. The families are the competition's: one threshold
("the distribution with the larger median lies above t") and an interval ("the peakier one lies
inside [l, r]"). We try every threshold and interval between the pooled values (a quantile grid
when there are many), where the competition code walks a grid of 100 per unit.

Two estimates of ε (`confidence`):
- **bound** (our default, `confidence=0.95`): FPR and FNR replaced by their one-sided
  Clopper–Pearson upper bounds, so ε is a 95% lower confidence bound, as DP audits report it. Two
  samples of one distribution then give ε ≈ 0 (F ≈ 0.96–1.0 at N = 32), and ε grows as the
  distributions separate, up to what N models can show: perfect separation gives
  ε_max(N) = log((1 − δ − u₀)/u₀), u₀ = 1 − 0.05^(1/N) (2.32 at N = 32).
- **point** (`confidence=None`, the competition's): the empirical rates, rules with exactly one
  of them zero skipped. Its ε is an extreme, over hundreds of rules, of ratios of small counts in
  the tails: two samples of one distribution get ε ≈ 1–2, and a perfect unlearner scores F ≈ 0.1
  at N = 32 (Gaussians; with the threshold family alone ≈ 0.35, at N = 32 as at 512), so at the
  N a laptop affords it hardly tells a perfect unlearner from a poor one. We report it beside the
  bound (`forgetting_quality_point`), to compare with the competition's numbers.
As in the competition code, a distribution under 1% of the other's spread is taken as a point
mass and told apart at the cap (a method that gives every seed the same output is distinguishable
from retraining wherever its value falls).

Each sample scores by its ε's bucket of width 0.5: 1 for [0, 0.5), ½ for [0.5, 1), …, up to
what N models resolve (ceil(log(N − 1)) for the point estimate, as the competition; ε_max(N) for
the bound), at and beyond which the sample scores 0. F is the mean score over the forget set: 1
when no sample can be told apart, 0 when every one can. The final score scales F by the unlearned
models' mean retain and test accuracy relative to the retrained ones'. Arrays in, arrays out.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

DELTA = 1e-5  # the competition's δ
CONFIDENCE = 0.95
POINT_CAP = 50.0  # the competition's cap on a point estimate
BUCKET = 0.5
MAX_GRID = 256  # pooled values per sample beyond which the rules are taken on a quantile grid
PEAKY = 0.01  # a spread under this share of the other distribution's is taken as a point mass


def _upper(k: np.ndarray, n: int, confidence: float) -> np.ndarray:
    """One-sided Clopper–Pearson upper bound of a rate observed as k of n."""
    from scipy.stats import beta  # scipy's import is slow: only when an evaluation scores

    k = np.asarray(k, np.float64)
    return np.where(k >= n, 1.0, beta.ppf(confidence, k + 1, np.maximum(n - k, 1)))


@lru_cache(maxsize=64)
def _rate_tables(n_neg: int, n_pos: int, confidence: float | None) -> tuple[np.ndarray, np.ndarray]:
    """The rate to use for each count 0..n of false positives and of false negatives: counts are
    integers, so the bounds are computed once per evaluation, not per rule."""
    if confidence is None:
        return np.arange(n_neg + 1) / n_neg, np.arange(n_pos + 1) / n_pos
    return _upper(np.arange(n_neg + 1), n_neg, confidence), _upper(np.arange(n_pos + 1), n_pos, confidence)


def _eps(fp, fn, tables, delta: float, point: bool) -> np.ndarray:
    """ε of each rule from its false-positive and false-negative counts; NaN for a skipped rule."""
    fpr, fnr = tables[0][np.asarray(fp)], tables[1][np.asarray(fn)]
    with np.errstate(divide="ignore", invalid="ignore"):
        eps = np.clip(np.fmax(np.log(1 - delta - fpr) - np.log(fnr), np.log(1 - delta - fnr) - np.log(fpr)), 0, None)
    if point:
        eps = np.where((fpr == 0) ^ (fnr == 0), np.nan, eps)  # one rate 0, the other not: too few samples
        eps = np.where((fpr == 0) & (fnr == 0), np.inf, eps)  # perfect separation
    return eps


def cap(n_unlearned: int, n_retrained: int, delta: float = DELTA, confidence: float | None = CONFIDENCE) -> float:
    """The largest ε these model counts resolve: ε of perfect separation for the bound, the
    competition's ceil(log(N − 1)) for the point estimate."""
    if confidence is None:
        return float(math.ceil(math.log(max(min(n_unlearned, n_retrained) - 1, 1))))
    return float(np.nanmax(_eps([0], [0], _rate_tables(n_retrained, n_unlearned, confidence), delta, False)))


def _epsilon(u: np.ndarray, r: np.ndarray, delta: float, confidence: float | None, top: float) -> float:
    point = confidence is None
    su, sr = np.ptp(u), np.ptp(r)
    if su == sr == 0:
        return 0.0 if u[0] == r[0] else top
    if min(su, sr) / max(su, sr) < PEAKY:
        return top
    grid = np.unique(np.concatenate([u, r]))
    if len(grid) > MAX_GRID:
        grid = np.unique(np.quantile(grid, np.linspace(0, 1, MAX_GRID)))
    # One threshold: "positive" (the larger median) when φ ≥ t.
    pos, neg = (u, r) if np.median(u) > np.median(r) else (r, u)
    fn = np.searchsorted(np.sort(pos), grid, "left")  # positives below t
    fp = len(neg) - np.searchsorted(np.sort(neg), grid, "left")  # negatives at or above t
    single = _eps(fp, fn, _rate_tables(len(neg), len(pos), confidence), delta, point)
    # An interval: "positive" (the peakier) when l ≤ φ ≤ r, for every l ≤ r on the grid.
    pos, neg = (u, r) if su < sr else (r, u)
    upper = np.triu_indices(len(grid))

    def inside(x):
        x = np.sort(x)
        return (np.searchsorted(x, grid, "right")[None, :] - np.searchsorted(x, grid, "left")[:, None])[upper]

    double = _eps(inside(neg), len(pos) - inside(pos), _rate_tables(len(neg), len(pos), confidence), delta, point)
    eps = np.concatenate([single, double])
    return 0.0 if np.isnan(eps).all() else float(min(np.nanmax(eps), top))


def epsilons(unlearned: np.ndarray, retrained: np.ndarray, delta: float = DELTA,
             confidence: float | None = CONFIDENCE) -> np.ndarray:
    """Per-sample ε from φ of the forget samples under N_u unlearned and N_r retrained models:
    arrays (N_u, m) and (N_r, m) in, (m,) out, in [0, cap]. `confidence` None: the competition's
    point estimate (capped at 50); else a lower confidence bound at that level."""
    u, r = np.asarray(unlearned, np.float64), np.asarray(retrained, np.float64)
    if u.ndim != 2 or r.ndim != 2 or u.shape[1] != r.shape[1]:
        raise ValueError(f"need (models, samples) arrays with as many samples; got {u.shape} and {r.shape}")
    if min(len(u), len(r)) < 2:
        raise ValueError("ε needs at least 2 models on each side")
    top = POINT_CAP if confidence is None else cap(len(u), len(r), delta, confidence)
    return np.array([_epsilon(u[:, i], r[:, i], delta, confidence, top) for i in range(u.shape[1])])


def sample_scores(eps: np.ndarray, top: float) -> np.ndarray:
    """Each sample's points: 2^−b for ε in the b-th bucket [b/2, (b+1)/2), 0 from `top` (what the
    model counts resolve, `cap`) on."""
    eps = np.asarray(eps, np.float64)
    return np.where(eps < top - 1e-12, 0.5 ** np.floor(np.clip(eps, 0, None) / BUCKET), 0.0)


def forgetting_quality(eps: np.ndarray, top: float) -> float:
    """F: the mean bucket score over the forget set."""
    return float(sample_scores(eps, top).mean()) if len(eps) else float("nan")


def utility_adjusted(f: float, retain_u: float, test_u: float, retain_r: float, test_r: float) -> float:
    """The competition's final score: F × (RA_u / RA_r) × (TA_u / TA_r), of mean accuracies."""
    return f * (retain_u / retain_r) * (test_u / test_r)


def interval(scores: np.ndarray, z: float = 1.96) -> tuple[float, float]:
    """A normal 95% interval of F from the forget samples' scores (their mean's standard error)."""
    scores = np.asarray(scores, np.float64)
    if len(scores) < 2:
        return float("nan"), float("nan")
    mean, se = scores.mean(), scores.std(ddof=1) / math.sqrt(len(scores))
    return float(max(0.0, mean - z * se)), float(min(1.0, mean + z * se))
