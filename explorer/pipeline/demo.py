"""The teaching demo: the whole pipeline on the embedded digits, leaving a workspace ready to
explore. Every step looks for its result first, so a second run reuses what exists and an
interrupted one picks up where it stopped.

digits with 5% flipped labels → a model trained with mnemonic codes → exact memorization and
every proxy → a UMAP map → two forget sets (a low/mid/high mix by memorization, and one whole
class) → the oracle, rum, finetune, neggrad_plus and salun on the mix, mnemonic on the class.

On a CPU the model is the MLP: exact memorization trains K ≥ 128 copies, which takes about 20 s
for the MLP (batched) but ~12 min for the CNN here; with a GPU it is the CNN.
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch

from .. import training
from ..data import DatasetSpec
from ..memorization import proxies
from ..memorization.estimator import ExactConfig
from ..runtime.progress import Progress, no_progress, stage
from ..store import artifacts
from ..store.workspace import Workspace
from . import checkpoints, embed, forget_sets, memorize, runs

NAME = "demo"
MIX_SIZE, FORGET_CLASS = 75, 3
DEMO_CHUNK = 64  # the digits MLP's models per chunk: 64 at once train 10% faster than 32 (bench memorization)
METHODS = ("finetune", "neggrad_plus", "salun", "rum")  # on the mix; mnemonic on the class


def arch_for(device: torch.device) -> str:
    return "mlp" if device.type == "cpu" else "cnn"


def recipe_for(arch: str) -> training.Recipe:
    """The regime recipe (it fits the flipped labels, so there is memorization to see), with codes."""
    return replace(training.default_for(arch, "digits"), mnemonic_tmix=0.1)


def run(ws: Workspace, device: torch.device, progress: Progress = no_progress, models: int = 128,
        arch: str | None = None, map_method: str = "umap") -> dict:
    start = time.perf_counter()
    arch = arch or arch_for(device)
    spec, recipe = DatasetSpec(label_noise=0.05), recipe_for(arch)

    found = [m for m in ws.find("model", name=f"{NAME} {arch}") if m.get("recipe") == recipe.as_meta()]
    model = found[-1] if found else checkpoints.train(ws, spec, arch, recipe, device,
                                                      stage(progress, 0.0, 0.1, "training"), name=f"{NAME} {arch}")
    exact = artifacts.latest_scores(ws, model["id"]).get("exact") or memorize.exact(  # any exact estimate is reused
        ws, model, ExactConfig(models=models, chunk=min(models, DEMO_CHUNK)), device,
        stage(progress, 0.1, 0.45, "exact memorization"))
    missing = [p for p in proxies.ALL if p not in artifacts.latest_scores(ws, model["id"])]
    if missing:
        memorize.compute_proxies(ws, model, missing, device, stage(progress, 0.45, 0.5, "proxies"))
    if not artifacts.find_maps(ws, model["id"]):  # any map of the model leaves it ready to explore
        embed.compute(ws, model, map_method, 0, device, stage(progress, 0.5, 0.65, "map"))

    def forget_set(name: str, strategy: str, **how) -> dict:
        existing = ws.find("forget_set", model_id=model["id"], name=name)
        return existing[-1] if existing else forget_sets.create(ws, model, strategy, name=name, **how)

    mix = forget_set("demo: low/mid/high mix", "mix", size=MIX_SIZE, score_id=exact["id"])
    one_class = forget_set(f"demo: all of class {FORGET_CLASS}", "class", classes=[FORGET_CLASS])
    plan = [(mix, m, {"score": exact["id"]} if m == "rum" else {}) for m in METHODS] + [(one_class, "mnemonic", {})]
    made = []
    for i, (fs, method, params) in enumerate(plan):
        done = [r for r in ws.find("run", model_id=model["id"], forget_set_id=fs["id"], method=method)
                if r.get("demo")]
        if done:
            made.append(done[-1])
            continue
        lo = 0.65 + 0.35 * i / len(plan)
        made.append(runs.unlearn(ws, model, fs, method, params, device,
                                 stage(progress, lo, lo + 0.35 / len(plan), f"{method} on {fs['name']}"), demo=True))
    progress(1.0, "ready")
    return {"id": model["id"], "kind": "demo", "model": model["id"], "exact": exact["id"],
            "forget_sets": [mix["id"], one_class["id"]], "runs": [r["id"] for r in made],
            "seconds": time.perf_counter() - start,
            "tow": {r["method"]: r["metrics"]["tow"] for r in made}}

