"""Score sets: one value per training sample (exact memorization or a proxy), with what it cost.

Raw values keep their natural meaning (confidence is a probability). Every consumer that needs
"higher = more memorized" (plots against exact, correlations, RUM's partitions) goes through
`oriented`, so no page or method flips signs on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .workspace import Workspace, npz_bytes

# name -> (orientation, label). Orientation +1: a higher raw value means more memorized.
SCORES = {
    "exact": (+1, "exact memorization (Feldman–Zhang)"),
    "confidence": (-1, "mean true-label confidence"),
    "max_conf": (-1, "mean max confidence"),
    "entropy": (-1, "mean negative entropy"),
    "bi_acc": (-1, "mean correctness (binary accuracy)"),
    "loss": (+1, "final-epoch loss"),
    "el2n": (+1, "EL2N, early epochs"),
    "forgetting_events": (+1, "forgetting events"),
    "ho_ret": (+1, "holdout retraining (symmetric KL)"),
    "curvature": (+1, "loss curvature (final model)"),
}
# Scores in [0, 1] that fall as memorization rises: turned around as 1 − v (not −v), which ranks
# the same and reads better on an axis.
PROBABILITIES = {"confidence", "max_conf", "bi_acc"}


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
    record: dict
    values: np.ndarray
    arrays: dict[str, np.ndarray]

    @property
    def name(self) -> str:
        return self.record["name"]

    @property
    def oriented(self) -> np.ndarray:
        return oriented(self.name, self.values)


def publish(ws: Workspace, model_rec: dict, name: str, values: np.ndarray, seconds: float, device: str,
            params: dict | None = None, arrays: dict[str, np.ndarray] | None = None, **meta) -> dict:
    """Store a score set of `model_rec`'s training samples."""
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
            **meta,
        },
        files={"values.npz": npz_bytes(values=values, **(arrays or {}))},
    )


def load(ws: Workspace, rec: dict | str) -> ScoreSet:
    rec = ws.get(rec, "scores") if isinstance(rec, str) else rec
    with np.load(ws.read(rec, "values.npz")) as z:
        arrays = {k: z[k] for k in z.files}
    return ScoreSet(rec, arrays.pop("values"), arrays)


def latest(ws: Workspace, model_id: str) -> dict[str, dict]:
    """The newest score set of each name for a model, in the order of SCORES."""
    newest = {rec["name"]: rec for rec in ws.find("scores", model_id=model_id)}  # find is oldest first
    return {name: newest[name] for name in SCORES if name in newest}


def export_rows(ws: Workspace, rec: dict) -> list[dict]:
    """One row per training sample: sample_id, label, value (+ stderr, + flipped under label noise)."""
    from . import checkpoints

    scores = load(ws, rec)
    model_rec = ws.get(rec["model_id"], "model")
    ds = checkpoints.dataset_of(ws, model_rec)
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
    from . import proxies
    from .errors import UserError

    if ref.startswith("s-"):
        rec = ws.get(ref, "scores")
        if rec["model_id"] != model_rec["id"]:
            raise UserError(f"score set {ref} belongs to model {rec['model_id']}, not {model_rec['id']}")
        return rec["name"], load(ws, rec).values, rec["id"]
    if ref not in SCORES:
        raise UserError(f"unknown score {ref!r}; give a score-set id or one of {', '.join(SCORES)}")
    stored = latest(ws, model_rec["id"]).get(ref)
    if stored is not None:
        return ref, load(ws, stored).values, stored["id"]
    if ref in proxies.FROM_DYNAMICS and model_rec.get("has_dynamics"):
        return ref, proxies.from_dynamics(proxies.load_dynamics(ws, model_rec))[ref], None
    how = "memorize MODEL --exact" if ref == "exact" else f"proxies MODEL --only {ref}"
    raise UserError(f"model {model_rec['id']} has no {ref} scores yet; compute them first ({how})")
