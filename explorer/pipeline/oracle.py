"""The oracle: the model retrained without the forget set, which every unlearning run is measured
against (the goal of unlearning is to end up where it is)."""

from __future__ import annotations

import torch

from .. import models, training
from ..evaluation import metrics
from ..runtime.progress import Progress, no_progress
from ..store import artifacts
from ..store.workspace import Workspace
from . import checkpoints

ORDER = "replay"  # the oracle's batch order, kept in its record (older oracles read as "shuffle": store.records)


def oracle(ws: Workspace, model_rec: dict, fs_rec: dict, device: torch.device,
           progress: Progress = no_progress) -> dict:
    """The model retrained from the original's initial weights and whole recipe on R alone,
    replaying the original run's batches without the forget set (`training.fit`'s `drop`: the
    retrain Thudi et al.'s verification error is measured against); made once per (model,
    forget set, device type) and kept as a model record with source "oracle" and order "replay".
    Per device, so a run's speed-up compares times taken on the same device. An oracle made
    before replaying (a fresh shuffle of R: order "shuffle") stays for the runs that used it, but
    is not reused: the next run retrains a replayed one."""
    found = ws.find("model", source="oracle", base_model_id=model_rec["id"], forget_set_id=fs_rec["id"],
                    device=device.type, order=ORDER)
    if found:
        return found[0]
    ds = artifacts.dataset_of(ws, model_rec)
    _, forget = metrics.split_ids(ds.n_train, fs_rec["ids"])
    recipe, recipe_from = recipe_for(model_rec)
    if artifacts.has(model_rec, artifacts.INIT):
        model = artifacts.load_model(ws, model_rec, which="init")
    else:  # an imported model: its initial weights are unknown, so a fresh draw of its architecture
        model = training.init_model(models.arch_of(model_rec), ds, recipe.seed)
    result = training.fit(model, ds.x_train, ds.y_train, recipe, device, record_dynamics=False, drop=forget,
                          progress=progress)
    return checkpoints.publish(ws, model, ds, model_rec["dataset_id"],
                               name=f"oracle of {model_rec['id']} without {fs_rec['id']}", source="oracle",
                               arch=models.arch_of(model_rec), recipe=recipe, result=result, device=device,
                               base_model_id=model_rec["id"], forget_set_id=fs_rec["id"], order=ORDER,
                               recipe_from=recipe_from)


def recipe_for(model_rec: dict) -> tuple[training.Recipe, str]:
    """The recipe a model's oracle retrains with, and where it comes from: "trained" (the model's
    own), "imported" (given with --recipe at import) or "default" (an import without one)."""
    recipe = artifacts.recipe_of(model_rec)
    if recipe is None:
        return training.Recipe(), "default"
    return recipe, "imported" if model_rec["source"] == "imported" else "trained"
