"""Forgetting quality F on digits (`evaluate`, the NeurIPS 2023 unlearning competition's
evaluation): its cost with N = 32; per method F on the simultaneous 95% bound, F on the
competition's point estimate, the utility-adjusted score on each and mean KLoM, overall and per
memorization group (low / mid / high); the ranking of finetune, neggrad_plus, salun and rum by F
and by ToW side by side; and how per-sample ε follows memorization.

Setting: the digits MLP at its regime recipe with 5% flipped labels, exact memorization from 64
subset models (batched), a forget set of 25 low + 25 mid + 25 high by it. Each method runs with
its preset settings (not tuned): N = 32 seeded runs for F, one run against the oracle for ToW.
`BENCH_QUICK=1`: N = 12 (the fewest models a side with room for the bound to resolve some ε) and
16 subset models, a smoke run."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from explorer import training
from explorer.data import DatasetSpec
from explorer.memorization import estimator
from explorer.pipeline import checkpoints, evaluate, forget_sets, memorize, runs
from explorer.present import comparison
from explorer.runtime import devices
from explorer.store import artifacts
from explorer.store.workspace import Workspace

METHODS = ("finetune", "neggrad_plus", "salun", "rum")
TARGET_SECONDS = 120  # F with N = 32 on the digits mlp, on 2 cores


def _ranking(values: dict[str, float]) -> str:
    return " > ".join(sorted(values, key=lambda k: -values[k]))


def run() -> dict:
    quick = os.environ.get("BENCH_QUICK") == "1"
    n, k = (12, 16) if quick else (evaluate.MODELS, 64)
    device = devices.resolve("auto")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp) / "ws")
        model = checkpoints.train(ws, DatasetSpec(label_noise=0.05), "mlp", training.default_for("mlp", "digits"), device)
        exact = memorize.exact(ws, model, estimator.ExactConfig(models=k, engine="batched"), device)
        fs = forget_sets.create(ws, model, "mix", size=75, score_id=exact["id"])
        mem = np.asarray(artifacts.load_scores(ws, exact).values)

        start = time.perf_counter()
        first = evaluate.evaluate(ws, model, fs, "finetune", {}, n, device)
        out[f"evaluate_seconds[finetune, N={n}, oracles included]"] = round(time.perf_counter() - start, 1)
        out[f"evaluate_target_met(<={TARGET_SECONDS}s)"] = time.perf_counter() - start <= TARGET_SECONDS
        evals = {"finetune": first}
        for name in (*METHODS[1:], "retrain", "none"):
            start = time.perf_counter()
            evals[name] = evaluate.evaluate(ws, model, fs, name, {"rule": "fresh"} if name == "retrain" else {}, n, device)
            out[f"evaluate_seconds[{name}, N={n}, oracles cached]"] = round(time.perf_counter() - start, 1)
        f = {m: evals[m]["forgetting_quality"] for m in evals}
        for m, ev in evals.items():
            lo, hi = ev["forgetting_quality_interval"]
            out[f"F[{m}]"] = (f"bound {ev['forgetting_quality']:.3f} [{lo:.3f}, {hi:.3f}] · point "
                              f"{ev['forgetting_quality_point']:.3f} · score {ev['score']:.3f} · score_point "
                              f"{ev['score_point']:.3f} · KLoM {ev['klom']:.3f}")
            _, groups = comparison.evaluation_groups(ws, ev)
            out[f"F_by_group[{m}]"] = " · ".join(
                f"{g} ({v['size']}): bound {v['forgetting_quality']:.3f}, point {v['forgetting_quality_point']:.3f}, "
                f"KLoM {v['klom']:.3f}" for g, v in groups.items())
        out["F_retrain_highest_and_none_lowest"] = max(f, key=f.get) == "retrain" and min(f, key=f.get) == "none"
        point = {m: evals[m]["forgetting_quality_point"] for m in evals}
        klom = {m: evals[m]["klom"] for m in evals}
        out["F_point_retrain_highest_and_none_lowest"] = (max(point, key=point.get) == "retrain"
                                                          and min(point, key=point.get) == "none")
        out["KLoM_retrain_lowest_and_none_highest"] = min(klom, key=klom.get) == "retrain" and max(klom, key=klom.get) == "none"

        tow = {m: runs.unlearn(ws, model, fs, m, {}, device)["metrics"]["tow"] for m in METHODS}
        out["ToW[" + ", ".join(METHODS) + "]"] = ", ".join(f"{tow[m]:.3f}" for m in METHODS)
        out["ranking_by_F"] = _ranking({m: f[m] for m in METHODS})
        out["ranking_by_F_point"] = _ranking({m: point[m] for m in METHODS})
        out["ranking_by_KLoM (lowest first)"] = _ranking({m: -klom[m] for m in METHODS})
        out["ranking_by_ToW"] = _ranking(tow)
        out["spearman(F, ToW) over methods"] = round(float(spearmanr([f[m] for m in METHODS], [tow[m] for m in METHODS])[0]), 3)

        ids = np.asarray(first["forget_ids"])
        for m in (*METHODS, "retrain"):
            rho = spearmanr(mem[ids], evals[m]["epsilons"])[0]
            out[f"spearman(epsilon, exact memorization)[{m}]"] = round(float(rho), 3) if np.isfinite(rho) else "n/a (constant ε)"
            rho = spearmanr(mem[ids], evals[m]["kloms"])[0]
            out[f"spearman(KLoM, exact memorization)[{m}]"] = round(float(rho), 3) if np.isfinite(rho) else "n/a"
    return out
