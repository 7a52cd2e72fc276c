"""Forgetting quality F (the NeurIPS 2023 unlearning competition; Triantafillou et al. 2024,
arXiv 2406.09073, §3 and appendix) and KLoM (Georgiev et al. 2024, arXiv 2410.23232, §E.1): how
well an attacker who sees one model's output on a forget sample can tell whether the model was
unlearned or retrained without the sample.

For each forget sample we hold two distributions of a scalar output, the logit-scaled true-label
confidence φ = z_y − logsumexp_{c≠y} z_c (models.logit_confidence), over N unlearned models (the
method run with N seeds) and over N retrained ones (oracles trained on R with N seeds). Every
decision rule gives a false-positive and a false-negative rate, and with them the (ε, δ) the rule
certifies:

    ε = max(log((1 − δ − FPR) / FNR), log((1 − δ − FNR) / FPR)),   clipped at 0.

The rules come in the competition's two families: one threshold ("the side with the larger median
lies at or above t") and an interval ("the peakier side lies in [l, r]"). Three estimates of the
sample's ε, the largest over a set of rules:

- **point** (`competition_epsilons`, `confidence=None`): the competition's own estimate, as its
  `metric.py` (google-deepmind/unlearning_evaluation) computes it: the empirical rates; thresholds
  on a grid of 100 per unit over the pooled range; intervals whose right end lies within 2 of the
  peakier side's maximum (100 per unit) and whose width lies within ±2 of that side's range (400
  left ends per right end); "larger median" ties go to the unlearned side and "peakier" ties to
  the other one; a rule with exactly one rate 0 is skipped (too few models to say), both 0 is
  perfect separation (ε = ∞, capped at 50). It is an extreme over ~10⁵ rules of ratios of small
  counts: two samples of one distribution get ε ≈ 1–2 (F ≈ 0.17 at N = 32), so at the N a laptop
  affords it hardly tells a perfect unlearner from a poor one. Kept exact so that its numbers
  compare with the competition's (tests/test_forgetting.py checks it against the reference's
  output on fixed arrays).
- **pooled** (`pooled_epsilons`): the same point estimate over every rule that splits the pooled
  values differently (each threshold and interval with its ends at pooled values). A superset of
  the competition's rules, so never below its ε.
- **bound** (the default, `confidence=0.95`): a simultaneous 95% lower confidence bound on the
  largest ε over every threshold and every interval, wherever their ends. Each side's distribution
  function F gets a band that holds at all its N order statistics at once (F(X_(k)) is
  Beta(k, N − k + 1); Bonferroni over the 2N band ends of each side, α/2 per side), and every
  rule's FPR and FNR are replaced by the largest values the two bands allow (an interval's by the
  band's ends at its two ends). With probability ≥ 95% both bands hold, and then every rule's
  bounded rates are at least its true ones, so the reported ε is at most the true ε of the best
  rule, however many rules are tried. Identical distributions give ε = 0 in ≥ 95% of samples
  (every rule's true rates sum to 1; measured: 100% at N = 32 and 512), where the per-rule
  Clopper–Pearson bound this replaces, maximised over thousands of rules, was above 0 in 38% of
  samples at N = 32 and 85% at N = 512. The price is resolution: perfect separation certifies
  ε_max = log((1 − δ − u₀)/u₀), u₀ = 1 − (α/4N)^(1/N): 1.28 at N = 32, 3.87 at N = 512, nothing
  at N ≤ 9 (ε_max = 0: F is then NaN, not a score). Same families and tie-breaks as the
  competition's.
As in the competition, a side with under 1% of the other's spread is taken as a point mass and
told apart at the cap (a method that gives every seed the same output is distinguishable from
retraining wherever its value falls).

Each sample scores by its ε's bucket of width 0.5: 1 for [0, 0.5), ½ for [0.5, 1), …, up to
what N models resolve (the competition's ceil(log(N_u − 1)) for the point estimate; ε_max for the
bound), at and beyond which the sample scores 0. F is the mean score over the forget set: 1 when no
sample can be told apart, 0 when every one can. The final score scales F by the unlearned models'
mean retain and test accuracy relative to the retrained ones'.

KLoM per sample is KL(U ‖ R) between the histograms of the unlearned and the retrained models'
margins φ (the paper's margin: the correct logit minus the logsumexp of the others, which is φ) in
20 equal bins over their pooled range, as the Easy Data-Unlearning Bench computes it (margins
clipped to ±100, a retrained bin probability floored at 10⁻⁵ where the unlearned one is positive),
except that the pooled maximum counts in the last bin (the bench's np.digitize drops it, which
scores a method whose seeds all give the same, highest value a perfect 0). 0 for identical
samples, up to log(10⁵) ≈ 11.5 for disjoint ones. Arrays in, arrays out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import lru_cache

import numpy as np

DELTA = 1e-5  # the competition's δ
CONFIDENCE = 0.95
POINT_CAP = 50.0  # the competition's cap on a point estimate
BUCKET = 0.5
PER_UNIT = 100  # the competition's thresholds per unit of φ
WINDOW = 2.0  # the competition's interval window ("buffer"): right ends and widths within ±2
PEAKY = 0.01  # a spread under this share of the other distribution's is taken as a point mass
KLOM_BINS = 20  # the Attribute-to-Delete paper's / the Easy Data-Unlearning Bench's histogram
KLOM_FLOOR = 1e-5
KLOM_CLIP = 100.0


# -- rates and ε of a rule ------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _band(n: int, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """A simultaneous band for a distribution sampled n times: (a, b) with a[k] ≤ F(X_(k)) and
    F(X_(k)−) ≤ b[k] for every order statistic k = 1…n at once, with probability ≥ 1 − (1 −
    confidence)/2 (one of the two sides' share of α). F(X_(k)) is Beta(k, n − k + 1) for a continuous
    F and no lower for any other (F(X_(k)−) no higher), so each of the 2n ends at level α/(4n) is
    Bonferroni's. a[0] = 0 and b[n + 1] = 1 are the trivial ends."""
    from scipy.stats import beta  # scipy's import is slow: only when an evaluation scores

    k = np.arange(1, n + 1)
    tail = (1 - confidence) / 2 / (2 * n)
    a = np.r_[0.0, beta.ppf(tail, k, n - k + 1)]
    b = np.r_[0.0, beta.ppf(1 - tail, k, n - k + 1), 1.0]
    a.setflags(write=False)
    b.setflags(write=False)
    return a, b


def _eps_of_rates(fpr, fnr, delta: float):
    """ε of rules from their rates, clipped at 0; NaN where neither ratio is defined."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.clip(np.fmax(np.log(1 - delta - fpr) - np.log(fnr), np.log(1 - delta - fnr) - np.log(fpr)), 0, None)


@lru_cache(maxsize=64)
def _table(n_neg: int, n_pos: int, delta: float) -> np.ndarray:
    """The point estimate's ε of a rule for each count of false positives (rows, 0..n_neg) and false
    negatives (columns, 0..n_pos), from the empirical rates: NaN for a skipped rule (exactly one
    rate 0), ∞ for perfect separation. Counts are integers: computed once, not per rule."""
    fpr, fnr = (np.arange(n_neg + 1) / n_neg)[:, None], (np.arange(n_pos + 1) / n_pos)[None, :]
    eps = _eps_of_rates(fpr, fnr, delta)
    eps = np.where((fpr == 0) ^ (fnr == 0), np.nan, eps)
    eps = np.where((fpr == 0) & (fnr == 0), np.inf, eps)
    eps.setflags(write=False)  # cached and shared
    return eps


def _largest(table: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> float:
    """The largest ε over rules given by their counts; NaN when every rule is skipped."""
    eps = table[fp, fn]
    eps = eps[~np.isnan(eps)]
    return float(eps.max()) if len(eps) else math.nan


def cap(n_unlearned: int, n_retrained: int, delta: float = DELTA, confidence: float | None = CONFIDENCE) -> float:
    """The largest ε these model counts resolve: the competition's ceil(log(N_u − 1)) for the point
    estimate; for the bound the ε of perfect separation by a threshold (0 when N is too small to
    certify any: 9 models or fewer a side at 95%)."""
    if confidence is None:
        return float(math.ceil(math.log(max(n_unlearned - 1, 1))))
    out = 0.0
    for n_pos, n_neg in ((n_unlearned, n_retrained), (n_retrained, n_unlearned)):
        fnr, fpr = _band(n_pos, confidence)[1][1], 1 - _band(n_neg, confidence)[0][n_neg]
        out = max(out, float(_eps_of_rates(fpr, fnr, delta)))
    return out


# -- which side is which ----------------------------------------------------------------------------


def _sides(u: np.ndarray, r: np.ndarray):
    """(pos, neg, peaky, wide) as the competition picks them: the threshold family's positive is the
    side with the larger median (a tie: the unlearned side); the interval family's is the side with
    the smaller range (a tie: the threshold family's negative)."""
    pos, neg = (r, u) if np.median(r) > np.median(u) else (u, r)
    peaky, wide = (neg, pos) if np.ptp(pos) >= np.ptp(neg) else (pos, neg)
    return pos, neg, peaky, wide


def _point_mass(u: np.ndarray, r: np.ndarray) -> bool:
    """One side under 1% of the other's spread (two constant sides are not: their rules decide)."""
    small, large = sorted((np.ptp(u), np.ptp(r)))
    return large > 0 and small / large < PEAKY


def _threshold_counts(pos: np.ndarray, neg: np.ndarray, t: np.ndarray):
    """(FP, FN) counts of "positive when φ ≥ t" for each t."""
    return len(neg) - np.searchsorted(np.sort(neg), t, "left"), np.searchsorted(np.sort(pos), t, "left")


def _inside(x: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """How many of x lie in [left, right], for arrays of ends that broadcast (an empty interval
    holds none)."""
    x = np.sort(x)
    return np.maximum(np.searchsorted(x, right, "right") - np.searchsorted(x, left, "left"), 0)


# -- the competition's point estimate ----------------------------------------------------------------


def _competition_epsilon(u: np.ndarray, r: np.ndarray, delta: float) -> float:
    import torch  # its linspace, bit for bit: the reference's threshold grid is a torch.linspace

    if _point_mass(u, r):
        return POINT_CAP
    pos, neg, peaky, wide = _sides(u, r)
    lo, hi = min(pos.min(), neg.min()), max(pos.max(), neg.max())
    grid = torch.linspace(float(lo), float(hi), int(math.ceil((hi - lo) * PER_UNIT)), dtype=torch.float64).numpy()
    single = _table(len(neg), len(pos), delta), *_threshold_counts(pos, neg, grid)
    # Right ends from the peakier side's max − 2 to its max + 2, left ends ±2 around right − width,
    # in the reference's order of operations (its window starts at min + width − 2).
    width = peaky.max() - peaky.min()
    start, stop = peaky.min() + width - WINDOW, peaky.max() + WINDOW
    right = np.linspace(start, stop, num=int(np.ceil((stop - start) * PER_UNIT)))
    left = np.linspace(right - width - WINDOW, right - width + WINDOW, num=int(np.ceil(2 * WINDOW * PER_UNIT)), axis=1)
    right = right[:, None]  # broadcast against the left ends: each right end counted once
    double = (_table(len(wide), len(peaky), delta), _inside(wide, left, right),
              len(peaky) - _inside(peaky, left, right))
    eps = np.fmax(_largest(*single), _largest(*double))
    # Every rule skipped: the reference stops on an assertion; nothing tells the sides apart.
    return 0.0 if math.isnan(eps) else float(min(eps, POINT_CAP))


def competition_epsilons(unlearned: np.ndarray, retrained: np.ndarray, delta: float = DELTA) -> np.ndarray:
    """The competition's per-sample ε (its metric.py's `_get_epsilons` after its choice of sides), from
    φ of the forget samples under N_u unlearned and N_r retrained models: arrays (N_u, m) and
    (N_r, m) in, (m,) out, in [0, 50]. Computed in float64 (as the reference on float64 arrays)."""
    u, r = _check(unlearned, retrained)
    return np.array([_competition_epsilon(u[:, i], r[:, i], delta) for i in range(u.shape[1])])


# -- every rule between pooled values: the exact-threshold point estimate and the bound -------------


def _pooled_epsilon(u: np.ndarray, r: np.ndarray, delta: float) -> float:
    if _point_mass(u, r):
        return POINT_CAP
    pos, neg, peaky, wide = _sides(u, r)
    grid = np.unique(np.concatenate([u, r]))  # a rule's counts change only at pooled values
    single = _table(len(neg), len(pos), delta), *_threshold_counts(pos, neg, grid)
    li, ri = np.triu_indices(len(grid))
    left, right = grid[li], grid[ri]
    double = _table(len(wide), len(peaky), delta), _inside(wide, left, right), len(peaky) - _inside(peaky, left, right)
    eps = np.fmax(_largest(*single), _largest(*double))
    return 0.0 if math.isnan(eps) else float(min(eps, POINT_CAP))


def pooled_epsilons(unlearned: np.ndarray, retrained: np.ndarray, delta: float = DELTA) -> np.ndarray:
    """The point estimate over every threshold and interval with its ends at pooled values (the
    competition's families and tie-breaks, none of its grid): (N_u, m), (N_r, m) in, (m,) out."""
    u, r = _check(unlearned, retrained)
    return np.array([_pooled_epsilon(u[:, i], r[:, i], delta) for i in range(u.shape[1])])


def _bound_epsilon(u: np.ndarray, r: np.ndarray, delta: float, confidence: float, top: float) -> float:
    if _point_mass(u, r):
        return top
    pos, neg, peaky, wide = _sides(u, r)
    # Every threshold and interval, wherever its ends: their counts change only at pooled values.
    grid = np.unique(np.concatenate([u, r]))

    def below(x, side):  # how many of x lie below each grid value ("left"), or at or below it ("right")
        return np.searchsorted(np.sort(x), grid, side)

    b_pos, a_neg = _band(len(pos), confidence)[1], _band(len(neg), confidence)[0]
    # "pos when φ ≥ t": FNR = F_pos(t−) ≤ b[(#pos < t) + 1], FPR = 1 − F_neg(t−) ≤ 1 − a[#neg < t].
    eps = np.nanmax(_eps_of_rates(1 - a_neg[below(neg, "left")], b_pos[below(pos, "left") + 1], delta), initial=0.0)
    # "peaky when l ≤ φ ≤ r": FPR = F_w(r) − F_w(l−) ≤ b[(#w ≤ r) + 1] − a[#w < l],
    # FNR = 1 − F_p(r) + F_p(l−) ≤ 1 − a[#p ≤ r] + b[(#p < l) + 1]; l on the rows, r on the columns.
    a_p, b_p = _band(len(peaky), confidence)
    a_w, b_w = _band(len(wide), confidence)
    fpr = np.minimum(b_w[below(wide, "right") + 1][None, :] - a_w[below(wide, "left")][:, None], 1.0)
    fnr = np.minimum(1 - a_p[below(peaky, "right")][None, :] + b_p[below(peaky, "left") + 1][:, None], 1.0)
    double = np.where(np.triu(np.ones(fpr.shape, bool)), _eps_of_rates(fpr, fnr, delta), np.nan)
    eps = np.fmax(eps, np.nanmax(double, initial=0.0))
    return float(min(eps, top))


def bound_epsilons(unlearned: np.ndarray, retrained: np.ndarray, delta: float = DELTA,
                   confidence: float = CONFIDENCE) -> np.ndarray:
    """Per-sample simultaneous lower confidence bound on ε at `confidence`: (N_u, m), (N_r, m) in,
    (m,) out, in [0, cap]."""
    u, r = _check(unlearned, retrained)
    top = cap(len(u), len(r), delta, confidence)
    return np.array([_bound_epsilon(u[:, i], r[:, i], delta, confidence, top) for i in range(u.shape[1])])


def epsilons(unlearned: np.ndarray, retrained: np.ndarray, delta: float = DELTA,
             confidence: float | None = CONFIDENCE) -> np.ndarray:
    """Per-sample ε: the simultaneous bound at `confidence` (default), or with `confidence` None the
    competition's point estimate."""
    if confidence is None:
        return competition_epsilons(unlearned, retrained, delta)
    return bound_epsilons(unlearned, retrained, delta, confidence)


def _check(unlearned, retrained) -> tuple[np.ndarray, np.ndarray]:
    u, r = np.asarray(unlearned, np.float64), np.asarray(retrained, np.float64)
    if u.ndim != 2 or r.ndim != 2 or u.shape[1] != r.shape[1]:
        raise ValueError(f"need (models, samples) arrays with as many samples; got {u.shape} and {r.shape}")
    if min(len(u), len(r)) < 2:
        raise ValueError("ε needs at least 2 models on each side")
    return u, r


# -- scores -------------------------------------------------------------------------------------------


def sample_scores(eps: np.ndarray, top: float) -> np.ndarray:
    """Each sample's points: 2^−b for ε in the b-th bucket [b/2, (b+1)/2), 0 from `top` (what the
    model counts resolve, `cap`) on; NaN when `top` is 0 (nothing resolved: no score)."""
    eps = np.asarray(eps, np.float64)
    if top <= 0:
        return np.full(eps.shape, np.nan)
    return np.where(eps < top, 0.5 ** np.floor(np.clip(eps, 0, None) / BUCKET), 0.0)


def forgetting_quality(eps: np.ndarray, top: float) -> float:
    """F: the mean bucket score over the forget set (NaN for none, or when `top` is 0)."""
    return float(sample_scores(eps, top).mean()) if len(eps) else float("nan")


def utility_adjusted(f: float, retain_u: float, test_u: float, retain_r: float, test_r: float) -> float:
    """The competition's final score: F × (RA_u / RA_r) × (TA_u / TA_r), of mean accuracies."""
    return f * (retain_u / retain_r) * (test_u / test_r)


def interval(scores: np.ndarray, z: float = 1.96) -> tuple[float, float]:
    """A normal 95% interval of F from the forget samples' scores (their mean's standard error)."""
    scores = np.asarray(scores, np.float64)
    if len(scores) < 2 or not np.isfinite(scores).all():
        return float("nan"), float("nan")
    mean, se = scores.mean(), scores.std(ddof=1) / math.sqrt(len(scores))
    return float(max(0.0, mean - z * se)), float(min(1.0, mean + z * se))


# -- KLoM --------------------------------------------------------------------------------------------------


def klom(unlearned: np.ndarray, retrained: np.ndarray, bins: int = KLOM_BINS, floor: float = KLOM_FLOOR,
         clip: float = KLOM_CLIP) -> np.ndarray:
    """Per-sample KL(U ‖ R) of the margin histograms: arrays (N_u, m) and (N_r, m) in, (m,) out."""
    u, r = _check(unlearned, retrained)
    u, r = np.clip(u, -clip, clip), np.clip(r, -clip, clip)
    out = np.empty(u.shape[1])
    for i in range(u.shape[1]):
        lo, hi = min(u[:, i].min(), r[:, i].min()), max(u[:, i].max(), r[:, i].max())
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
        p = np.histogram(u[:, i], edges)[0] / len(u)
        q = np.histogram(r[:, i], edges)[0] / len(r)
        seen = p > 0
        out[i] = float(np.sum(p[seen] * np.log(p[seen] / np.maximum(q[seen], floor))))
    return out


# -- by memorization group ------------------------------------------------------------------------------


def by_group(groups: Mapping[str, np.ndarray], eps: np.ndarray, top: float, eps_point: np.ndarray, top_point: float,
             kloms: np.ndarray | None) -> dict[str, dict]:
    """The figures of each group of forget samples (positions into the per-sample arrays): its size,
    F on the bound and on the point estimate, and its mean KLoM, ε and point ε (NaN when empty)."""
    eps, eps_point = np.asarray(eps, np.float64), np.asarray(eps_point, np.float64)
    kloms = None if kloms is None else np.asarray(kloms, np.float64)

    def mean(a):
        return float(a.mean()) if a is not None and len(a) else float("nan")

    out = {}
    for name, at in groups.items():
        at = np.asarray(at, np.int64)
        out[name] = {"size": int(len(at)), "forgetting_quality": forgetting_quality(eps[at], top),
                     "forgetting_quality_point": forgetting_quality(eps_point[at], top_point),
                     "klom": mean(None if kloms is None else kloms[at]), "epsilon": mean(eps[at]),
                     "epsilon_point": mean(eps_point[at])}
    return out
