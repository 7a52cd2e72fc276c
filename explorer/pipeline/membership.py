"""Membership and influence from an exact score set's subset models: LiRA of the original model
(published with the score set by memorize.exact), LiRA of any other model (an unlearned one), and
the per-sample tables the `export` command writes (explorer.evaluation.lira, .influence).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .. import models
from ..errors import UserError
from ..evaluation import influence, lira
from ..store import artifacts
from ..store.workspace import Workspace

PHI = ("phi", "test_phi")  # the subset models' φ on the training and test samples, in the score set
STORED = ("lira", "lira_online", "lira_test", "target_phi", "target_test_phi")  # the original model's LiRA


def _exact(ws: Workspace, rec: dict) -> dict[str, np.ndarray]:
    if rec.get("name") != "exact":
        raise UserError(f"score set {rec['id']} is {rec.get('name')!r}; LiRA and influence need the exact "
                        "memorization's subset models (memorize MODEL --exact)")
    return artifacts.load_scores(ws, rec).arrays


def shadows(ws: Workspace, rec: dict) -> dict[str, np.ndarray]:
    """The exact score set's arrays, refused in one line when it predates the subset models' φ."""
    arrays = _exact(ws, rec)
    if not all(k in arrays for k in PHI):
        p = rec.get("params", {})
        again = " ".join(f"--{k} {p[k]}" for k in ("models", "ratio", "epochs", "seed", "engine", "chunk") if k in p)
        raise UserError(f"score set {rec['id']} was made before the subset models' confidences were kept; LiRA "
                        f"needs a rerun: memorize {rec['model_id']} --exact {again}")
    return arrays


def target_phi(model: nn.Module, ds) -> tuple[np.ndarray, np.ndarray]:
    """A model's φ (models.logit_confidence) on the training and the test samples."""
    return (models.predict_logit_confidence(model, ds.x_train, ds.y_train).double().numpy(),
            models.predict_logit_confidence(model, ds.x_test, ds.y_test).double().numpy())


def lira_of(model: nn.Module, ds, arrays: dict[str, np.ndarray]) -> dict:
    """LiRA of `model` against the subset models (lira.evaluate), with its φ (`target_phi`,
    `target_test_phi`)."""
    tr, te = target_phi(model, ds)
    out = lira.evaluate(arrays["phi"], arrays["masks"], arrays["test_phi"], tr, te)
    return out | {"target_phi": tr, "target_test_phi": te}


def original(ws: Workspace, model_rec: dict, masks: np.ndarray, phis: dict[str, np.ndarray],
             device: torch.device) -> tuple[dict, dict[str, np.ndarray]]:
    """The original model's LiRA, as memorize.exact publishes it: (record fields `lira_auc` and
    `lira_tpr_at_0.1fpr`, per-sample arrays named as STORED)."""
    model = artifacts.load_model(ws, model_rec, device=device)
    out = lira_of(model, artifacts.dataset_of(ws, model_rec), {"masks": masks, **phis})
    meta = {"lira_auc": out["auc"], "lira_tpr_at_0.1fpr": out["tpr_at_0.1fpr"]}
    arrays = {"lira": out["offline"], "lira_online": out["online"], "lira_test": out["offline_test"],
              "target_phi": out["target_phi"], "target_test_phi": out["target_test_phi"]}
    return meta, arrays


def still_member(ws: Workspace, rec: dict, model: nn.Module, ids, fpr: float = 0.01) -> float:
    """The share of the training samples `ids` that LiRA (offline, against the subset models of
    the exact score set `rec`) still judges members of `model` at the threshold that flags `fpr`
    of its test samples."""
    return still_member_of(model, artifacts.dataset_of(ws, ws.get(rec["model_id"], "model")), shadows(ws, rec), ids, fpr)


def still_member_of(model: nn.Module, ds, arrays: dict[str, np.ndarray], ids, fpr: float = 0.01) -> float:
    """`still_member` from the shadow arrays already loaded (`shadows`)."""
    out = lira_of(model, ds, arrays)
    return lira.still_member(out["offline"][np.asarray(ids, np.int64)], out["offline_test"], fpr)


def shadows_of_model(ws: Workspace, model_rec: dict) -> dict[str, np.ndarray] | None:
    """The newest exact score set's shadow arrays of a model, or None when it has none with the
    subset models' φ (LiRA is then not measured, never guessed)."""
    for rec in reversed(ws.find("scores", model_id=model_rec["id"], name="exact")):
        arrays = _exact(ws, rec)
        if all(k in arrays for k in PHI):
            return arrays
    return None


def lira_rows(ws: Workspace, rec: dict) -> list[dict]:
    """One row per training and test sample: split, sample_id, label, the original model's φ,
    the IN/OUT Gaussians' means, the online and offline LiRA scores, and whether the sample is
    flagged at the threshold that flags 1% of the test samples."""
    arrays = shadows(ws, rec)
    model_rec = ws.get(rec["model_id"], "model")
    ds = artifacts.dataset_of(ws, model_rec)
    if all(k in arrays for k in STORED):
        stored = arrays
        g = lira.evaluate(arrays["phi"], arrays["masks"], arrays["test_phi"], arrays["target_phi"],
                          arrays["target_test_phi"])
    else:  # published without them: computed now (on the CPU)
        g = lira_of(artifacts.load_model(ws, model_rec), ds, arrays)
        stored = {"lira": g["offline"], "lira_online": g["online"], "lira_test": g["offline_test"],
                  "target_phi": g["target_phi"], "target_test_phi": g["target_test_phi"]}
    t = lira.threshold(stored["lira_test"])
    rows = []
    for split, y, phi, on, off, gs in (
            ("train", ds.y_train.numpy(), stored["target_phi"], stored["lira_online"], stored["lira"], g["train"]),
            ("test", ds.y_test.numpy(), stored["target_test_phi"], np.full(len(ds.y_test), np.nan),
             stored["lira_test"], g["test"])):
        for i in range(len(y)):
            rows.append({"split": split, "sample_id": i, "label": int(y[i]), "phi": float(phi[i]),
                         "mu_in": float(gs.mu_in[i]), "mu_out": float(gs.mu_out[i]),
                         "n_in": int(gs.n_in[i]), "n_out": int(gs.n_out[i]),
                         "lira_online": float(on[i]), "lira": float(off[i]),
                         "member_at_1pct_fpr": int(np.isfinite(off[i]) and off[i] > t)})
    return rows


def influence_rows(ws: Workspace, rec: dict, k: int = 5, ids=None) -> list[dict]:
    """The test samples each training sample (of `ids`, all by default) helps and hurts most
    (influence.top_pairs), from the exact score set's masks and test correctness, or from the
    influence matrix it was imported with."""
    imported = artifacts.open_influence(ws, rec)
    if imported is not None:  # published with the file it was imported from (score_files)
        rows = imported.top_pairs(k, ids)
    else:
        arrays = _exact(ws, rec)
        if "test_correct" not in arrays:
            raise UserError(f"score set {rec['id']} has no test correctness of its subset models; rerun memorize "
                            "--exact" if not rec.get("imported") else
                            f"score set {rec['id']} was imported without subset runs or an influence matrix")
        rows = influence.top_pairs(arrays["masks"], arrays["test_correct"], k, ids)
    if not rows:
        raise UserError(f"score set {rec['id']}: no training sample changes any test sample's correctness")
    return rows
