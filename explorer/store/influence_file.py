"""An imported score set's influence matrix: infl(i → j), how much training sample i helps the
models get test sample j right, as a published file gave it (explorer.pipeline.score_files writes
it; store.artifacts.open_influence reads it back).

Two layouts, one reader. Dense: test samples × training samples, float32, NaN where the file gave
none, read memory-mapped (RUM's CIFAR-10 file holds 10,000 × 50,000 of them, 2 GB, so it is never
loaded whole). Blocks: Feldman & Zhang's CIFAR-100 matrix is within each class only, so it is kept
as its blocks (`train_{b}` sample ids, `test_{b}` test ids, `values_{b}` train × test) rather than
as a 2 GB matrix of NaN.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..evaluation import influence

COLUMNS_PER_BLOCK = 2048  # training samples read at a time from a dense file: (test samples × this) floats


class InfluenceFile:
    """Read access to a stored influence matrix, whichever its layout."""

    def __init__(self, dense: Path | None = None, blocks: Path | None = None):
        self.matrix = np.load(dense, mmap_mode="r") if dense is not None else None
        self.blocks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.where: dict[int, tuple[int, int]] = {}  # training sample -> (block, row)
        if blocks is not None:
            with np.load(blocks) as z:
                self.n_test = int(z["n_test"])
                count = int(z["blocks"])
                for b in range(count):
                    self.blocks.append((z[f"train_{b}"], z[f"test_{b}"], z[f"values_{b}"]))
            for b, (train, _, _) in enumerate(self.blocks):
                self.where.update({int(i): (b, r) for r, i in enumerate(train)})
        else:
            self.n_test = int(self.matrix.shape[0])

    def of_train(self, i: int) -> np.ndarray:
        """Training sample i's influence on every test sample (float64, NaN where unknown)."""
        if self.matrix is not None:
            return np.asarray(self.matrix[:, i], dtype=np.float64)
        out = np.full(self.n_test, np.nan)
        if int(i) in self.where:
            b, r = self.where[int(i)]
            out[self.blocks[b][1]] = self.blocks[b][2][r]
        return out

    def top_pairs(self, k: int = 5, rows=None) -> list[dict]:
        """influence.top_pairs' rows (each training sample's most helped and hurt test samples)
        from the stored matrix, for the training samples `rows` (all that it covers by default)."""
        if self.matrix is None:
            rows = sorted(self.where) if rows is None else rows
            return [pair for i in rows for pair in influence.pairs_of(int(i), self.of_train(int(i)), k)]
        rows = np.arange(self.matrix.shape[1]) if rows is None else np.asarray(rows, np.int64)
        out = []
        for lo in range(0, len(rows), COLUMNS_PER_BLOCK):
            block = rows[lo : lo + COLUMNS_PER_BLOCK]
            columns = np.asarray(self.matrix[:, block], dtype=np.float64)  # one strided read per block
            for c, i in enumerate(block):
                out += influence.pairs_of(int(i), columns[:, c], k)
        return out
