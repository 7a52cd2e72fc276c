"""Exact memorization: how fast each ensemble engine trains the K subset models, against a plain
one-model-at-a-time PyTorch loop over tensors in memory (the peer a researcher would write,
bench/_peers.py), and the machine's matmul
peak; whether the engines agree; whether the default recipes reach the memorization regime;
the demo's exact step; and how closely each proxy tracks exact (Spearman, precision@5%).

Everything is measured in this one run, side by side. `BENCH_QUICK=1` shrinks it (for a smoke test)."""

import os
import tempfile
import time
from dataclasses import replace

import numpy as np
import torch

from explorer import data, training
from explorer.evaluation import metrics
from explorer.memorization import estimator, proxies
from explorer.pipeline import checkpoints, demo, memorize
from explorer.runtime import devices
from explorer.store import artifacts
from explorer.store.workspace import Workspace
from explorer.training import ensembles

from bench._peers import matmul_peak, tensor_loop, training_flops_per_sample

QUICK = bool(os.environ.get("BENCH_QUICK"))


def speed(out: dict, device, peak: float) -> None:
    digits = data.load(data.DatasetSpec(label_noise=0.05))
    mnist5k = data.load(data.DatasetSpec(name="mnist5k", label_noise=0.05))
    cases = [("mlp", "mnist5k", mnist5k, 32, 2 if QUICK else 4), ("mlp", "digits", digits, 32, 4 if QUICK else 10),
             ("cnn", "digits", digits, 16, 1 if QUICK else 2)]
    for arch, name, ds, k, epochs in cases:
        recipe = replace(training.default_for(arch, name), epochs=epochs)
        subs = torch.as_tensor(estimator.subsets(ds.n_train, 0.7, k, seed=0))
        tag = f"{arch}_{name}[{device.type}]"
        flops = training_flops_per_sample(arch, ds)
        rates = {}
        start = time.perf_counter()
        for j in range(2):
            tensor_loop(arch, ds, subs[j], recipe, device, seed=j)
        rates["tensor_loop"] = 2 / (time.perf_counter() - start)
        for engine in ensembles.ENGINES:
            kk = 2 if engine == "sequential" else k
            start = time.perf_counter()
            ensembles.train_correctness(arch, ds, subs[:kk], list(range(kk)), recipe, device, engine)
            rates[engine] = kk / (time.perf_counter() - start)
        for engine, rate in rates.items():
            out[f"{tag}_{epochs}ep_models_per_s {engine}"] = round(rate, 2)
            if engine != "tensor_loop":
                out[f"{tag}_speedup_over_tensor_loop {engine}"] = round(rate / rates["tensor_loop"], 2)
            # For the cnn this says what its speed-up can be: the plain loop's fraction already.
            gflops = rate * epochs * subs.shape[1] * flops / 1e9
            out[f"{tag}_fraction_of_matmul_peak {engine}"] = round(gflops / peak, 3)
        cal = ensembles.calibrate(arch, ds, training.default_for(arch, name), device, k)
        out[f"{tag}_auto_picks"] = cal["engine"]


def agreement(out: dict, device) -> None:
    """Fused (shared batches) against batched (each model its own order, as fit draws it) on the
    digits MLP with the regime recipe: do they estimate the same memorization?"""
    ds = data.load(data.DatasetSpec(label_noise=0.05))
    k = 16 if QUICK else 64
    recipe = training.default_for("mlp", "digits")
    subs = estimator.subsets(ds.n_train, 0.7, 2 * k, seed=5)
    est = {}
    for engine, rows in (("fused", slice(0, k)), ("batched", slice(k, 2 * k))):
        correct, _ = ensembles.train_correctness("mlp", ds, torch.as_tensor(subs[rows]), list(range(k)), recipe,
                                                 device, engine)
        est[engine] = estimator.estimate(estimator.masks_of(subs[rows], ds.n_train), correct.numpy())
    a, b = est["fused"], est["batched"]
    ok = np.isfinite(a["values"]) & np.isfinite(b["values"]) & (a["stderr"] + b["stderr"] > 0)
    z = (a["values"] - b["values"])[ok] / np.sqrt(a["stderr"] ** 2 + b["stderr"] ** 2)[ok]
    flipped = np.zeros(ds.n_train, bool)
    flipped[ds.flipped] = True
    out[f"engines_agree_K{k}_share_within_2_stderr (fused vs batched; 0.95 if identical in law)"] = round(
        float(np.mean(np.abs(z) < 2)), 3)
    out[f"engines_agree_K{k}_mean_memorization fused"] = round(float(np.nanmean(a["values"])), 4)
    out[f"engines_agree_K{k}_mean_memorization batched"] = round(float(np.nanmean(b["values"])), 4)
    both = np.isfinite(a["values"]) & np.isfinite(b["values"])
    out[f"engines_agree_K{k}_spearman"] = round(metrics.rank_agreement(a["values"], b["values"], k=50)["spearman"], 3)
    for engine, e in est.items():
        out[f"flipped_auroc_of_exact_K{k} {engine}"] = round(metrics.auroc(flipped[both], e["values"][both]), 3)


def regime(out: dict, device) -> None:
    """Training accuracy and fitted flipped labels of each default recipe, at 5% and 10% noise."""
    for (arch, name) in training.REGIME:
        for noise in (0.05,) if QUICK else (0.05, 0.1):
            ds = data.load(data.DatasetSpec(name=name, label_noise=noise))
            model = training.init_model(arch, ds, 0)
            start = time.perf_counter()
            training.fit(model, ds.x_train, ds.y_train, training.default_for(arch, name), device, record_dynamics=False)
            seconds = time.perf_counter() - start
            ev = checkpoints.evaluate(model, ds)
            tag = f"regime_{arch}_{name}_noise{noise}"
            out[f"{tag}_train_acc (target >= 0.99)"] = round(ev["train_acc"], 4)
            out[f"{tag}_flipped_fit (target >= 0.9)"] = round(ev["flipped_fit"], 3)
            out[f"{tag}_test_acc"] = round(ev["test_acc"], 3)
            out[f"{tag}_train_seconds"] = round(seconds, 1)


def demo_exact_and_proxies(out: dict, device) -> None:
    """The demo's exact step (its model, K = 128, its chunk size, auto engine), then every proxy
    against it."""
    ds = data.load(data.DatasetSpec(label_noise=0.05))
    k = 32 if QUICK else 128
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(tmp)
        arch = demo.arch_for(device)
        model = checkpoints.train(ws, ds.spec, arch, demo.recipe_for(arch), device)
        start = time.perf_counter()
        exact_rec = memorize.exact(ws, model, estimator.ExactConfig(models=k, chunk=min(k, demo.DEMO_CHUNK)), device)
        out[f"demo_exact_step_K{k}_seconds (target <= 15 for K=128)"] = round(time.perf_counter() - start, 1)
        out["demo_exact_step_engine"] = f"{exact_rec['params']['engine']}: {exact_rec.get('engine_why', '')}"
        exact = artifacts.load_scores(ws, exact_rec).values
        flipped = np.zeros(ds.n_train, bool)
        flipped[ds.flipped] = True
        ok = np.isfinite(exact)
        out[f"demo_flipped_auroc_of_exact_K{k}"] = round(metrics.auroc(flipped[ok], exact[ok]), 3)
        records, _ = memorize.compute_proxies(ws, model, None, device)
        for rec in records:
            proxy = artifacts.load_scores(ws, rec)
            agree = metrics.rank_agreement(exact, proxy.oriented, k=ds.n_train // 20)
            out[f"proxy_{rec['name']}_spearman_vs_exact"] = round(agree["spearman"], 3)
            out[f"proxy_{rec['name']}_precision_at_5pct_vs_exact"] = round(agree["precision_at_k"], 3)
        cost = {"learning_events": sum(r["seconds"] for r in records if r["name"] in proxies.FROM_DYNAMICS)}
        cost |= {r["name"]: r["seconds"] for r in records if r["name"] in proxies.FROM_MODEL}
        for name, seconds in cost.items():
            out[f"cost_ratio_exact_over_{name}"] = round(exact_rec["seconds"] / max(seconds, 1e-9))
        out["exact_never_held_out"] = exact_rec["never_held_out"]
        out["exact_mean_stderr"] = round(float(np.nanmean(artifacts.load_scores(ws, exact_rec).arrays["stderr"])), 4)


def run() -> dict:
    device = devices.resolve("auto")
    out = {"torch_threads": torch.get_num_threads()}
    peak = matmul_peak(device)
    out[f"matmul_peak_gflops[{device.type}]"] = round(peak, 1)
    speed(out, device, peak)
    agreement(out, device)
    demo_exact_and_proxies(out, device)
    regime(out, device)
    return out
