"""The teaching demo: the whole pipeline on the embedded digits, leaving a workspace ready to
explore. Every step looks for its result first, so a second run reuses what exists and an
interrupted one picks up where it stopped.

digits with 5% flipped labels → a model in the memorization regime → exact memorization and
every proxy → a UMAP map → a low/mid/high mix of the samples by memorization → the oracle, rum,
finetune, neggrad_plus and salun on it. Then one-shot class forgetting as its paper shows it: the
paper's own MNIST model and recipe (`sigmoid_mlp`, trained with mnemonic codes) forgets all of
class 3 with `mnemonic`, against its own oracle.

On a CPU the memorization model is the MLP: exact memorization trains K ≥ 128 copies, which
takes about 20 s for the MLP (batched) but ~12 min for the CNN here; with a GPU it is the CNN.
Class forgetting gets a model of its own because the update was tuned on the paper's model: on
the ReLU MLP of the memorization regime the published λ leave the class recognised.
"""

from __future__ import annotations

import time

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


MNEMONIC_ARCH = "sigmoid_mlp"  # the mnemonic-code paper's MNIST model; its default recipe is the paper's


def recipe_for(arch: str) -> training.Recipe:
    """The regime recipe: it fits the flipped labels, so there is memorization to see."""
    return training.default_for(arch, "digits")


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

    def forget_set(of: dict, name: str, strategy: str, **how) -> dict:
        existing = ws.find("forget_set", model_id=of["id"], name=name)
        return existing[-1] if existing else forget_sets.create(ws, of, strategy, name=name, **how)

    def unlearn(of: dict, fs: dict, method: str, params: dict, lo: float, hi: float) -> dict:
        done = [r for r in ws.find("run", model_id=of["id"], forget_set_id=fs["id"], method=method) if r.get("demo")]
        return done[-1] if done else runs.unlearn(ws, of, fs, method, params, device,
                                                  stage(progress, lo, hi, f"{method} on {fs['name']}"), demo=True)

    mix = forget_set(model, "demo: low/mid/high mix", "mix", size=MIX_SIZE, score_id=exact["id"])
    made = []
    for i, method in enumerate(METHODS):
        lo = 0.65 + 0.2 * i / len(METHODS)
        made.append(unlearn(model, mix, method, {"score": exact["id"]} if method == "rum" else {}, lo,
                            lo + 0.2 / len(METHODS)))

    mnemonic_recipe = training.default_for(MNEMONIC_ARCH, "digits")
    found = [m for m in ws.find("model", name=f"{NAME} {MNEMONIC_ARCH}") if m.get("recipe") == mnemonic_recipe.as_meta()]
    coded = found[-1] if found else checkpoints.train(ws, spec, MNEMONIC_ARCH, mnemonic_recipe, device,
                                                      stage(progress, 0.85, 0.93, "training the paper's model, "
                                                                                  "with mnemonic codes"),
                                                      name=f"{NAME} {MNEMONIC_ARCH}")
    one_class = forget_set(coded, f"demo: all of class {FORGET_CLASS}", "class", classes=[FORGET_CLASS])
    made.append(unlearn(coded, one_class, "mnemonic", {}, 0.93, 1.0))
    progress(1.0, "ready")
    return {"id": model["id"], "kind": "demo", "model": model["id"], "mnemonic_model": coded["id"],
            "exact": exact["id"], "forget_sets": [mix["id"], one_class["id"]], "runs": [r["id"] for r in made],
            "seconds": time.perf_counter() - start,
            "tow": {r["method"]: r["metrics"]["tow"] for r in made}}

