"""Exact memorization on the embedded digits: batched vs one-model-at-a-time training, the cost
of exact against the proxies, and how closely each proxy tracks exact (Spearman, oriented)."""

import tempfile
import time

import numpy as np
import torch

from explorer import data, training
from explorer.evaluation import metrics
from explorer.memorization import estimator, proxies
from explorer.pipeline import checkpoints, memorize
from explorer.store import artifacts
from explorer.training import ensembles
from explorer.runtime import devices
from explorer.store.workspace import Workspace


def _ms_per_model(arch: str, engine: str, ds, device, k: int, epochs: int) -> float:
    subs = torch.as_tensor(estimator.subsets(ds.n_train, 0.7, k, seed=0))
    start = time.perf_counter()
    ensembles.train_correctness(arch, ds, subs, list(range(k)), training.Recipe(epochs=epochs), device, engine)
    return 1000 * (time.perf_counter() - start) / k


def run() -> dict:
    device = devices.resolve("auto")
    ds = data.load(data.DatasetSpec(label_noise=0.05))
    out = {}
    ensembles.train_correctness("cnn", ds, torch.as_tensor(estimator.subsets(ds.n_train, 0.7, 2, 0)), [0, 1],
                                training.Recipe(epochs=1), device, "sequential")  # warm-up
    for arch, k in (("mlp", 32), ("cnn", 8)):
        seq = _ms_per_model(arch, "sequential", ds, device, k, 10)
        bat = _ms_per_model(arch, "batched", ds, device, k, 10)
        out[f"{arch}_10_epochs_ms_per_model[{device.type}] sequential"] = round(seq, 1)
        out[f"{arch}_10_epochs_ms_per_model[{device.type}] batched"] = round(bat, 1)
        out[f"{arch}_batched_speedup[{device.type}]"] = round(seq / bat, 2)

    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(tmp)
        model = checkpoints.train(ws, ds.spec, "mlp", training.Recipe(epochs=60), device)
        exact_rec = memorize.exact(ws, model, estimator.ExactConfig(models=128), device)
        exact = artifacts.load_scores(ws, exact_rec).values
        records, _ = memorize.compute_proxies(ws, model, None, device)
        out["exact_mlp_128_models_seconds"] = round(exact_rec["seconds"], 1)
        for rec in records:
            proxy = artifacts.load_scores(ws, rec)
            agree = metrics.rank_agreement(exact, proxy.oriented, k=ds.n_train // 20)
            out[f"proxy_{rec['name']}_spearman_vs_exact"] = round(agree["spearman"], 3)
            out[f"proxy_{rec['name']}_precision_at_5pct_vs_exact"] = round(agree["precision_at_k"], 3)
        # One read of the recorded dynamics serves all learning-event proxies: one cost for them.
        cost = {"learning_events": sum(r["seconds"] for r in records if r["name"] in proxies.FROM_DYNAMICS)}
        cost |= {r["name"]: r["seconds"] for r in records if r["name"] in proxies.FROM_MODEL}
        for name, seconds in cost.items():
            out[f"cost_ratio_exact_over_{name}"] = round(exact_rec["seconds"] / max(seconds, 1e-9))
        out["exact_never_held_out"] = exact_rec["never_held_out"]
        out["exact_mean_stderr"] = round(float(np.nanmean(artifacts.load_scores(ws, exact_rec).arrays["stderr"])), 4)
    return out
