"""What the Compare page and the HTML report show: runs side by side with their references (the
original model and the oracle), settings repeated over seeds summarized, and each run's
per-sample outputs (explorer.store.artifacts.run_samples) cut for the charts. Functions of
records and arrays, so the page and the report share them."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np

from ..evaluation import forgetting, metrics
from ..store import artifacts
from ..store.workspace import Workspace
from ..unlearning import ParamError, sequence

# metric -> (label, what it means); the order is the order of tables and charts
METRICS = {
    "acc_retain": ("retain acc", "Accuracy on the training samples kept. Should stay close to the oracle's."),
    "acc_forget": ("forget acc", "Accuracy on the forget set, against its training labels. Should match the "
                                 "oracle's (with flipped labels the oracle, never having seen them, gets them wrong)."),
    "acc_test": ("test acc", "Accuracy on held-out data. Should stay close to the oracle's."),
    "mia_efficacy": ("MIA efficacy", "Share of the forget set a membership-inference attack (an SVC on confidence, "
                                     "trained on retain vs test) calls 'not trained on'. Should match the oracle's."),
    "mia_auc": ("MIA AUC", "How well a logistic regression on the loss tells forget samples from test samples "
                           "(cross-validated). 0.5 = indistinguishable, as if never trained on."),
    "tow": ("ToW", "Tug of war: product of (1 − |gap to oracle|) on forget, retain and test accuracy. 1 = identical "
                   "to the oracle."),
    "tow_mia": ("ToW-MIA", "ToW with the forget-accuracy gap replaced by the MIA-efficacy gap."),
    "verification_error": ("verification error", "Distance ‖θ_unlearned − θ_oracle‖₂ between the weights. 0 = the "
                                                 "oracle's weights exactly (Thudi et al.)."),
    "unlearning_error": ("unlearning error", "Thudi et al.'s proxy for the verification error, computed from the "
                                             "original's training alone: η²·t·½·‖θ_t − θ_0‖·σ (σ from the Hessian's top "
                                             "eigenvalue). Lower with a smaller lr, fewer steps or the SD loss."),
    "seconds": ("seconds", "Wall time of the unlearning itself."),
    "speedup": ("speed-up", "Oracle's retraining time / the method's time, on the same device."),
}
REFERENCE_METRICS = ("acc_retain", "acc_forget", "acc_test", "mia_efficacy", "mia_auc")


def rows(ws: Workspace, runs: list[dict]) -> list[dict]:
    """One row per run, then one per reference model (original, oracle) of each (model, forget
    set) pair the runs cover; references carry the metrics a model has on its own."""
    model_recs = {m["id"]: m for m in ws.find("model")}
    names = {r["id"]: r.get("name", r["id"]) for r in [*model_recs.values(), *ws.find("forget_set")]}
    out, refs = [], {}
    for r in runs:
        out.append({"run": r["id"], "method": r["method"], "model": names.get(r["model_id"], r["model_id"]),
                    "forget set": names.get(r["forget_set_id"], r["forget_set_id"]), "device": r.get("device"),
                    **{k: r["metrics"].get(k) for k in METRICS}, "settings": settings_text(r["params"])})
        refs.setdefault((r["model_id"], r["forget_set_id"]), r)
    for (model_id, fs_id), r in refs.items():
        for who in ("original", "oracle"):
            if r.get(who):
                out.append({"run": f"({who})", "method": who, "model": names.get(model_id, model_id),
                            "forget set": names.get(fs_id, fs_id), "device": r.get("device"),
                            **{k: r[who].get(k) for k in REFERENCE_METRICS},
                            "seconds": r["metrics"].get("retrain_seconds") if who == "oracle" else None,
                            **({"settings": oracle_recipe(model_recs.get(r.get("oracle_id")))} if who == "oracle" else {})})
    return out


RECIPE_FROM = {"trained": "its training recipe", "imported": "--recipe given at import",
               "default": "default recipe: imported without --recipe"}


def oracle_recipe(oracle_rec: dict | None) -> str | None:
    """Which recipe an oracle retrained with, and where it came from."""
    if not oracle_rec or not oracle_rec.get("recipe"):
        return None
    where = RECIPE_FROM.get(oracle_rec["recipe_from"], "")
    return f"retrained with {json.dumps(oracle_rec['recipe'])} ({where})"


def settings_text(params: dict) -> str:
    """Parameters as compact JSON, without the ones that never change."""
    return json.dumps({k: v for k, v in params.items() if k not in ("momentum", "weight_decay", "batch_size")})


def by_setting(runs: list[dict], keys=("acc_forget", "tow", "tow_mia", "mia_efficacy", "seconds")) -> list[dict]:
    """Runs that differ at most in their seed, summarized: how many runs and distinct seeds, and
    the mean ± 95% t-interval of each metric."""
    groups = defaultdict(list)
    for r in runs:
        setting = {k: v for k, v in r["params"].items() if k != "seed"}
        groups[(r["model_id"], r["forget_set_id"], r["method"], json.dumps(setting, sort_keys=True))].append(r)
    out = []
    for (_, _, method, setting), members in groups.items():
        row = {"method": method, "setting": setting, "runs": len(members),
               "seeds": len({m["params"].get("seed") for m in members})}
        for k in keys:
            values = [m["metrics"][k] for m in members if m["metrics"].get(k) is not None]
            mean, half = metrics.t_interval(values) if values else (None, None)
            row[k] = mean
            row[f"{k} ±"] = None if half is None or not np.isfinite(half) else half
        out.append(row)
    return out


def class_accuracies(s: dict[str, np.ndarray], y_test: np.ndarray, num_classes: int) -> dict[str, np.ndarray]:
    """Test accuracy per class under each model the run kept outputs of."""
    return {who: metrics.class_accuracy(s[f"{who}_test_pred"], y_test, num_classes)
            for who in ("original", "unlearned", "oracle") if f"{who}_test_pred" in s}


def loss_groups(s: dict[str, np.ndarray], forget_ids, n_train: int, who: str) -> dict[str, np.ndarray]:
    """Per-sample losses of one model split into forget, retain and test."""
    retain, forget = metrics.split_ids(n_train, forget_ids)
    loss = s[f"{who}_train_loss"]
    return {"forget": loss[forget], "retain": loss[retain], "test": s[f"{who}_test_loss"]}


def twin_projection(before_features: np.ndarray, after_features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both feature sets through one PCA fitted on the original's, so the two maps share axes."""
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2, random_state=0).fit(before_features)
    return pca.transform(before_features), pca.transform(after_features)


def evaluation_rows(evaluations: list[dict], runs: list[dict]) -> list[dict]:
    """One row per evaluation (forgetting quality F on the simultaneous bound with its interval,
    F on the competition's point estimate, the utility-adjusted score on each, mean KLoM, N),
    beside the mean ToW and ToW-MIA of the same method's runs on the same model and forget set:
    the per-sample judgement next to the averages'. Best F first, then best F (point) (an F that N
    cannot resolve last)."""
    out = []
    for ev in evaluations:
        mine = [r for r in runs if r["method"] == ev["method"] and r["model_id"] == ev["model_id"]
                and r["forget_set_id"] == ev["forget_set_id"]]
        tows = [r["metrics"]["tow"] for r in mine if r["metrics"].get("tow") is not None]
        lo, hi = ev["forgetting_quality_interval"]
        out.append({"evaluation": ev["id"], "method": ev["method"], "settings": settings_text(ev["params"] or {}),
                    "N": ev["models"], "F": _number(ev["forgetting_quality"]), "F low": _number(lo),
                    "F high": _number(hi), "F (point)": ev["forgetting_quality_point"], "score": _number(ev["score"]),
                    "score (point)": ev["score_point"], "KLoM": ev["klom"],
                    # older records bounded each rule alone: not the same F
                    "bound": "simultaneous" if ev["epsilon_bound"] == "simultaneous" else "per rule (older)",
                    "test acc": ev["unlearned_acc_test"], "retrained test acc": ev["retrained_acc_test"],
                    "ToW (runs)": float(np.mean(tows)) if tows else None, "runs": len(mine),
                    "seconds": ev["seconds"]})
    return sorted(out, key=lambda r: (r["F"] is None, -(r["F"] or 0.0), -r["F (point)"]))


def _number(value) -> float | None:
    """NaN (stored as null) as None, for tables and sorting."""
    return None if value is None or (isinstance(value, float) and not np.isfinite(value)) else float(value)


def evaluation_groups(ws: Workspace, ev: dict) -> tuple[str, dict[str, dict]] | None:
    """(score name, figures per group) of an evaluation's forget samples split by the model's
    memorization as RUM splits them (terciles of the forget set's own ranking: low, mid, high):
    per group its size, mean memorization, F on the bound and on the point estimate, mean KLoM and
    mean ε of both. None when the model has no memorization score or a forget sample has no value.
    Random forget sets overstate forgetting: the memorized samples are the hard ones."""
    mem = artifacts.memorization_of(ws, ws.get(ev["model_id"], "model"))
    if mem is None:
        return None
    forget = np.asarray(ev["forget_ids"], dtype=np.int64)
    try:
        parts = sequence.split(mem[1], forget)
    except ParamError:  # samples never held out have no exact memorization
        return None
    at = {int(i): j for j, i in enumerate(forget)}
    arrays = artifacts.evaluation_samples(ws, ev)
    kloms = arrays["klom"] if "klom" in arrays else forgetting.klom(arrays["unlearned_phi"], arrays["retrained_phi"])
    names = sequence.group_names(len(parts))
    groups = forgetting.by_group({name: np.array([at[int(i)] for i in part], dtype=np.int64)
                                  for name, part in zip(names, parts)},
                                 arrays["epsilons"], ev["epsilon_cap"], arrays["epsilons_point"],
                                 ev["epsilon_cap_point"], kloms)
    for name, part in zip(names, parts):
        groups[name]["memorization"] = float(np.mean(mem[1][part])) if len(part) else float("nan")
    return mem[0], groups


def group_rows(ws: Workspace, evaluations: list[dict]) -> list[dict]:
    """One row per (evaluation, memorization group), for the table and the chart by group; empty
    when the model has no memorization score."""
    out = []
    for ev in evaluations:
        found = evaluation_groups(ws, ev)
        if found is None:
            continue
        name, groups = found
        for group, g in groups.items():
            out.append({"evaluation": ev["id"], "method": ev["method"], "N": ev["models"], "group": group,
                        "size": g["size"], f"mean {name}": g["memorization"], "F": _number(g["forgetting_quality"]),
                        "F (point)": _number(g["forgetting_quality_point"]), "KLoM": _number(g["klom"]),
                        "ε": _number(g["epsilon"]), "ε (point)": _number(g["epsilon_point"])})
    return out


def epsilon_points(evaluations: list[dict], memorization: np.ndarray | None) -> list[dict]:
    """Per forget sample of each evaluation: (method, sample id, ε, the point estimate's ε, KLoM,
    memorization or None), for the ε-against-memorization chart and its CSV."""
    out = []
    for ev in evaluations:
        none = [None] * len(ev["forget_ids"])  # older records: no KLoM kept in the record
        points, kloms = ev["epsilons_point"] or none, ev["kloms"] or none
        for i, eps, point, kl in zip(ev["forget_ids"], ev["epsilons"], points, kloms):
            out.append({"method": ev["method"], "evaluation": ev["id"], "sample_id": int(i), "epsilon": eps,
                        "epsilon_point": point, "klom": kl,
                        "memorization": None if memorization is None else float(memorization[i])})
    return out


def side_by_side(a: dict, b: dict) -> list[dict]:
    """Two runs' metrics as rows (metric, A, B, B − A), with the oracle's where it was measured:
    the Unlearning Comparator's A-against-B table."""
    out = []
    for k, (label, _) in METRICS.items():
        va, vb = a["metrics"].get(k), b["metrics"].get(k)
        if va is None and vb is None:
            continue
        oracle = (a.get("oracle") or {}).get(k)
        out.append({"metric": label, "A": va, "B": vb,
                    "B − A": vb - va if isinstance(va, (int, float)) and isinstance(vb, (int, float)) else None,
                    "oracle": oracle})
    return out
