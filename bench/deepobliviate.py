"""DeepObliviate (Xu et al. 2021), as understood, on the embedded digits: a model trained in B
blocks, 20 samples forgotten; the speed-up over the oracle (the same block training on the retain
set, timed on the same device, as every run reports it), the unlearned model's test accuracy as
a % of the oracle's, and how far the stitched model is from the fully retrained chain
(‖θ − θ_chain‖₁ / ‖θ_original − θ_chain‖₁: 0 = the chain itself, 1 = no closer than the original).

Forget sets: three requests of 20 random samples of two adjacent blocks d, d+1 (d drawn at
random; one deletion request whose data arrived together), each unlearned with the ratio rule at
several τ, with τ = 0 (the full chain from d, the reference) and with the power-law rule; and 20
random samples of the whole set (they land in most blocks; the chain must reach the last block
holding one, so there is little to save). Lists give one value per request, in order of d.

The recipe is a stable one (lr 0.01): at the default lr 0.05 with momentum 0.9 the residual
memory does not decay at all on digits (Δ_k/Δ_d wanders around 1), so every τ < 1 retrains to
the last block. Everything comes from one workspace in one run."""

from __future__ import annotations

import tempfile

import numpy as np
import torch
from safetensors.torch import load_file

from explorer import data, training
from explorer.pipeline import checkpoints, forget_sets, runs
from explorer.store import artifacts
from explorer.runtime import devices
from explorer.store.workspace import Workspace

SETTINGS = {"arch": "mlp", "blocks": 100, "epochs": 10, "lr": 0.01, "forget": 20, "requests": 3, "seed": 0}
RATIO_TAUS = (0.5, 0.3, 0.05)


def _flat(state: dict) -> torch.Tensor:
    return torch.cat([v.double().flatten() for v in state.values() if v.is_floating_point()])


def measure(arch: str = "mlp", blocks_: int = 100, epochs: int = 10, lr: float = 0.01, forget: int = 20,
            requests: int = 3, seed: int = 0, taus=RATIO_TAUS, device: torch.device | None = None) -> dict:
    """Train once; unlearn `requests` forget sets (20 samples of blocks d, d+1, d drawn at random)
    with each setting, and one spread forget set. Returns the model and one row per run."""
    device = device or devices.resolve("auto")
    ws = Workspace(tempfile.mkdtemp(prefix="bench-deepobliviate-") + "/ws")
    rec = checkpoints.train(ws, data.DatasetSpec(), arch, training.Recipe(epochs=epochs, lr=lr, blocks=blocks_,
                                                                          seed=seed), device)
    store = artifacts.open_blocks(ws, rec)
    original = _flat(load_file(ws.read(rec, "weights.safetensors")))
    rng = np.random.default_rng(seed)
    settings = [(f"ratio tau={t:g}", {"tau": t}) for t in taus] + [("powerlaw eps=1e-3", {"rule": "powerlaw"})]
    rows = []
    for d in sorted(int(v) for v in rng.choice(np.arange(1, blocks_), requests, replace=False)):
        pool = np.concatenate(store.ids[d - 1 : d + 1])
        ids = rng.choice(pool, min(forget, len(pool)), replace=False)
        fs = forget_sets.create(ws, rec, "ids", ids=ids.tolist(), name=f"{forget} of blocks {d}, {d + 1}")
        full = runs.unlearn(ws, rec, fs, "deepobliviate", {"tau": 0.0}, device)  # the chain to block B
        chain = _flat(load_file(ws.read(full, "weights.safetensors")))
        for label, params in [("full chain", {"tau": 0.0}), *settings]:
            run = full if label == "full chain" else runs.unlearn(ws, rec, fs, "deepobliviate", params, device)
            mine = _flat(load_file(ws.read(run, "weights.safetensors")))
            to_chain = ((mine - chain).abs().sum() / (original - chain).abs().sum()).item()
            rows.append({"forget": "request", "d": d, "setting": label, **_row(run), "to_chain": to_chain})
    spread = forget_sets.create(ws, rec, "random", size=forget, seed=seed)
    label, params = settings[0]
    rows.append({"forget": "spread", "setting": label,
                 **_row(runs.unlearn(ws, rec, spread, "deepobliviate", params, device))})
    return {"model": rec, "rows": rows}


def _row(run: dict) -> dict:
    m, det = run["metrics"], run["details"]
    return {"speedup": m["speedup"], "acc_pct": 100 * m["acc_test"] / run["oracle"]["acc_test"],
            "retrained": det["retrained_blocks"], "stop": det["stop_block"], "rule": det["rule"]}


def run() -> dict:
    torch.set_num_threads(1)
    s = SETTINGS
    res = measure(s["arch"], s["blocks"], s["epochs"], s["lr"], s["forget"], s["requests"], s["seed"])
    tag = f"deepobliviate_digits_{s['arch']}_B{s['blocks']}_E{s['epochs']}_lr{s['lr']:g}"
    figures = {f"{tag}_block_MiB": round(res["model"]["block_bytes"] / 2**20, 2),
               f"{tag}_model_test_acc": round(res["model"]["test_acc"], 4)}
    rows = res["rows"]
    requests = [r for r in rows if r["forget"] == "request"]
    figures[f"{tag}_request_first_blocks"] = sorted({r["d"] for r in requests})
    for setting in dict.fromkeys(r["setting"] for r in requests):
        mine = [r for r in requests if r["setting"] == setting]
        key = f"{tag}_request_{setting.replace(' ', '_')}"
        figures[f"{key}_speedup"] = [round(r["speedup"], 1) for r in mine]
        figures[f"{key}_test_acc_pct_of_oracle_min"] = round(min(r["acc_pct"] for r in mine), 1)
        figures[f"{key}_retrained_blocks"] = [r["retrained"] for r in mine]
        figures[f"{key}_distance_to_full_chain"] = [round(r["to_chain"], 2) for r in mine]
    for r in rows:
        if r["forget"] == "spread":
            key = f"{tag}_spread_{r['setting'].replace(' ', '_')}"
            figures[f"{key}_speedup"] = round(r["speedup"], 2)
            figures[f"{key}_test_acc_pct_of_oracle"] = round(r["acc_pct"], 1)
            figures[f"{key}_retrained_blocks"] = r["retrained"]
    return figures
