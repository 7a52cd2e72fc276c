"""Influence of training samples on other samples' correctness (Feldman & Zhang 2020), from exact
memorization's K subset models:

    infl(i → j) = P[h(x_j) = y_j | i ∈ I] − P[h(x_j) = y_j | i ∉ I],

the first mean over the models trained with i, the second over those trained without it. With j a
test sample, a positive value means i helps the models get j right ("without this training image,
this test image would be misclassified"); negative, it hurts. Taking the training samples' own
correctness as the targets, infl(i → i) is mem(i). Arrays in, arrays out; NaN where i is never in
or never out.
"""

from __future__ import annotations

import numpy as np

ROWS_PER_BLOCK = 2048  # training samples per matrix product: (rows × m) floats at a time


def influence(masks: np.ndarray, correct: np.ndarray, rows=None) -> np.ndarray:
    """infl(i → j) for the training samples `rows` (all by default) and every target sample j:
    (len(rows), m) from membership masks (K, n) and the targets' correctness (K, m)."""
    masks = np.asarray(masks, bool)
    correct = np.asarray(correct, np.float64)
    rows = np.arange(masks.shape[1]) if rows is None else np.asarray(rows, np.int64)
    m_in = masks[:, rows].astype(np.float64)
    n_in = m_in.sum(0)[:, None]
    n_out = len(masks) - n_in
    hits_in = m_in.T @ correct  # (rows, m): right answers on j by the models trained with i
    hits_out = correct.sum(0)[None, :] - hits_in
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_in > 0) & (n_out > 0), hits_in / n_in - hits_out / n_out, np.nan)


def top_pairs(masks: np.ndarray, test_correct: np.ndarray, k: int = 5, rows=None) -> list[dict]:
    """For each training sample in `rows` (all by default): the `k` test samples it helps most
    (largest positive influence) and the `k` it hurts most (most negative), as rows
    {train_id, test_id, influence, direction: "helps" | "hurts", rank (1 = strongest)}; pairs of
    zero or undefined influence are left out. Computed in blocks of training samples."""
    masks = np.asarray(masks, bool)
    rows = np.arange(masks.shape[1]) if rows is None else np.asarray(rows, np.int64)
    out = []
    for lo in range(0, len(rows), ROWS_PER_BLOCK):
        block = rows[lo : lo + ROWS_PER_BLOCK]
        for i, values in zip(block, influence(masks, test_correct, block)):
            out += pairs_of(int(i), values, k)
    return out


def pairs_of(i: int, values: np.ndarray, k: int = 5) -> list[dict]:
    """`top_pairs`' rows for one training sample i from its influence on every test sample
    (`values`, NaN where undefined): however that influence was obtained, estimated here from
    subset models or imported with a published matrix."""
    values = np.asarray(values, np.float64)
    if not np.isfinite(values).any():
        return []
    kk = min(k, len(values))
    v = np.nan_to_num(values, nan=0.0)
    order = np.argsort(-v, kind="stable")
    out = []
    for direction, ids in (("helps", order[:kk]), ("hurts", order[::-1][:kk])):
        rank = 0
        for j in ids:
            if (v[j] > 0) if direction == "helps" else (v[j] < 0):
                rank += 1
                out.append({"train_id": int(i), "test_id": int(j), "influence": float(v[j]),
                            "direction": direction, "rank": rank})
    return out
