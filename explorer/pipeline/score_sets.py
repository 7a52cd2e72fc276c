"""Score sets: a memorization score of every training sample of a model (the exact estimate or a
proxy), published with what it cost, found again by name or id, and exported.

A record keeps the score's label and orientation (explorer.memorization.scores) beside its raw
values, so whoever reads it knows which way is "more memorized".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UserError
from ..memorization import proxies
from ..memorization.scores import SCORES, label, orientation
from ..store import artifacts
from ..store.workspace import Workspace, npz_bytes


def publish(ws: Workspace, model_rec: dict, name: str, values: np.ndarray, seconds: float, device: str,
            params: dict | None = None, arrays: dict[str, np.ndarray] | None = None,
            files: dict[str, bytes | Path] | None = None, **meta) -> dict:
    """Store a score set of `model_rec`'s training samples (`files`: more artifacts beside its
    values, such as an imported influence matrix)."""
    values = np.asarray(values, dtype=np.float64)
    return ws.put(
        "scores",
        {
            "name": name,
            "label": label(name),
            "orientation": orientation(name),
            "model_id": model_rec["id"],
            "dataset_id": model_rec["dataset_id"],
            "params": params or {},
            "seconds": seconds,
            "device": device,
            "n": len(values),
            "n_nan": int(np.isnan(values).sum()),
            # Scores of a model trained with flips and shifts measure something else (regime.augmentation_note).
            **({"augmented": True} if (model_rec.get("recipe") or {}).get("augment") else {}),
            **meta,
        },
        files={artifacts.VALUES: npz_bytes(values=values, **(arrays or {})), **(files or {})},
    )


def export_rows(ws: Workspace, rec: dict) -> list[dict]:
    """One row per training sample: sample_id, label, value (+ stderr, + flipped under label noise)."""
    scores = artifacts.load_scores(ws, rec)
    model_rec = ws.get(rec["model_id"], "model")
    ds = artifacts.dataset_of(ws, model_rec)
    labels = ds.y_train.numpy()
    flipped = np.zeros(len(labels), dtype=bool)
    flipped[ds.flipped] = True
    rows = []
    for i, value in enumerate(scores.values):
        row = {"sample_id": i, "label": int(labels[i]), "value": float(value)}
        if "stderr" in scores.arrays:
            row["stderr"] = float(scores.arrays["stderr"][i])
        if ds.spec.label_noise > 0:
            row["flipped"] = int(flipped[i])
        rows.append(row)
    return rows


def resolve(ws: Workspace, model_rec: dict, ref: str) -> tuple[str, np.ndarray, str | None]:
    """(name, raw values, score-set id) for a score given by score-set id or by name: the newest
    stored set of that name, else — for a learning-event proxy of a model trained here — straight
    from its recorded dynamics (id None)."""
    if ref.startswith("s-"):
        rec = ws.get(ref, "scores")
        if rec["model_id"] != model_rec["id"]:
            raise UserError(f"score set {ref} belongs to model {rec['model_id']}, not {model_rec['id']}")
        return rec["name"], artifacts.load_scores(ws, rec).values, rec["id"]
    if ref not in SCORES:
        raise UserError(f"unknown score {ref!r}; give a score-set id or one of {', '.join(SCORES)}")
    stored = artifacts.latest_scores(ws, model_rec["id"]).get(ref)
    if stored is not None:
        return ref, artifacts.load_scores(ws, stored).values, stored["id"]
    if ref in (*proxies.FROM_DYNAMICS, *proxies.RECORDED) and model_rec.get("has_dynamics"):
        values = proxies.from_dynamics(artifacts.load_dynamics(ws, model_rec))
        if ref in values:  # curvature_avg only where training recorded curvature
            return ref, values[ref], None
    how = ("memorize MODEL --exact, or import-scores FILE --model MODEL" if ref == "exact" else
           "import-scores FILE --model MODEL" if ref == "cscore" else f"proxies MODEL --only {ref}")
    raise UserError(f"model {model_rec['id']} has no {ref} scores yet; compute them first ({how})")


def runs_arrays(ws: Workspace, rec: dict) -> dict[str, np.ndarray]:
    """An exact score set's subset runs in the raw-runs schema others publish (the CIFAR-10N
    memorization release, Google's held-out influence checkpoints): `trainset_mask`,
    `trainset_correctness`, `testset_correctness`, the models' margins φ = z_y − logsumexp of the
    other logits (`trainset_margins`, `testset_margins`), this set's `memorization`, and the labels
    as Feldman & Zhang's files carry them (`tr_labels`, `tt_labels`: the dataset's own targets, so
    an import can check its alignment; `trained_labels` too under label noise). Importing the file
    (score_files) gives the same estimate bit for bit."""
    if rec.get("kind") != "scores":
        raise UserError(f"--format npz exports a score set's subset runs; {rec['id']} is a {rec.get('kind')}")
    scores = artifacts.load_scores(ws, rec)
    if not {"masks", "correct"} <= scores.arrays.keys():
        raise UserError(f"score set {rec['id']} ({rec['name']}) has no subset runs to export: --format npz is for "
                        "exact memorization computed here (memorize --exact) or imported from runs")
    ds = artifacts.dataset_of(ws, ws.get(rec["model_id"], "model"))
    out = {"trainset_mask": scores.arrays["masks"], "trainset_correctness": scores.arrays["correct"],
           "memorization": scores.values, "tr_labels": ds.y_train_clean.numpy(), "tt_labels": ds.y_test.numpy()}
    for ours, theirs in (("test_correct", "testset_correctness"), ("phi", "trainset_margins"),
                         ("test_phi", "testset_margins")):
        if ours in scores.arrays:
            out[theirs] = scores.arrays[ours]
    if ds.spec.label_noise > 0:
        out["trained_labels"] = ds.y_train.numpy()
    return out
