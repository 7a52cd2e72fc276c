"""A run: unlearn a forget set from a model, then measure it against the original and the
oracle retrained without the forget set."""

from __future__ import annotations

import copy
import time

import torch

from . import checkpoints, metrics, training, unlearning
from .training import Progress, _no_progress
from .workspace import Workspace


def _stage(progress: Progress, lo: float, hi: float) -> Progress:
    """Map a sub-task's 0–1 progress onto [lo, hi] of the whole run."""
    return lambda f, msg: progress(lo + (hi - lo) * f, msg)


def oracle(ws: Workspace, model_rec: dict, fs_rec: dict, device: torch.device,
           progress: Progress = _no_progress) -> dict:
    """The model retrained from the original's initial weights and recipe on R alone; made
    once per (model, forget set, device type) and kept as a model record with source "oracle".
    Per device, so a run's speed-up compares times taken on the same device."""
    found = ws.find("model", source="oracle", base_model_id=model_rec["id"], forget_set_id=fs_rec["id"],
                    device=device.type)
    if found:
        return found[0]
    ds = checkpoints.dataset_of(ws, model_rec)
    retain, _ = metrics.split_ids(ds.n_train, fs_rec["ids"])
    if model_rec.get("recipe"):
        recipe = training.Recipe(**model_rec["recipe"])
        model = checkpoints.load_model(ws, model_rec, which="init")
    else:  # an imported model: no recipe or initial weights are known, so use the defaults
        recipe = training.Recipe()
        model = training.init_model(model_rec["arch"], ds, recipe.seed)
    result = training.fit(model, ds.x_train[retain], ds.y_train[retain], recipe, device,
                          record_dynamics=False, progress=progress)
    return checkpoints.publish(ws, model, ds, model_rec["dataset_id"],
                               name=f"oracle of {model_rec['id']} without {fs_rec['id']}", source="oracle",
                               arch=model_rec["arch"], recipe=recipe, result=result, device=device,
                               base_model_id=model_rec["id"], forget_set_id=fs_rec["id"])


def _measure(model, ds, forget_ids) -> dict:
    return {**metrics.accuracies(model, ds, forget_ids), "mia_efficacy": metrics.mia_efficacy(model, ds, forget_ids)}


def unlearn(ws: Workspace, model_rec: dict, fs_rec: dict, method_name: str, params: dict | None,
            device: torch.device, progress: Progress = _no_progress) -> dict:
    method = unlearning.make(method_name, params)  # bad parameters fail before any work
    if fs_rec["dataset_id"] != model_rec["dataset_id"]:
        raise unlearning.ParamError(f"forget set {fs_rec['id']} is on another dataset than model {model_rec['id']}")
    ds = checkpoints.dataset_of(ws, model_rec)
    retain, forget = metrics.split_ids(ds.n_train, fs_rec["ids"])
    original = checkpoints.load_model(ws, model_rec)
    before = _measure(original, ds, forget)

    oracle_rec = oracle(ws, model_rec, fs_rec, device, _stage(progress, 0.0, 0.6))
    oracle_model = checkpoints.load_model(ws, oracle_rec)
    target = _measure(oracle_model, ds, forget)

    if method.from_init:  # retrain: the original's initial weights and recipe, unless the user overrides it
        recipe = {k: v for k, v in (model_rec.get("recipe") or {}).items() if k in method.params}
        method = unlearning.make(method_name, {**recipe, **(params or {})})
        model = (checkpoints.load_model(ws, model_rec, which="init") if model_rec.get("recipe")
                 else training.init_model(model_rec["arch"], ds, training.Recipe().seed))
    else:
        model = copy.deepcopy(original)
    start = time.perf_counter()
    method.unlearn(model, ds, retain, forget, device, _stage(progress, 0.6, 0.95))
    seconds = time.perf_counter() - start
    model.cpu()
    after = _measure(model, ds, forget)
    progress(0.97, "measuring")
    result = {
        **after,
        "tow": metrics.tow(after, target),
        "tow_mia": metrics.tow(after, target, first="mia_efficacy"),
        "seconds": seconds,
        "retrain_seconds": oracle_rec["seconds"],
        "speedup": oracle_rec["seconds"] / seconds if seconds > 0 else float("inf"),
    }
    return ws.put(
        "run",
        {
            "name": f"{method_name} on {fs_rec['name']}",
            "model_id": model_rec["id"],
            "forget_set_id": fs_rec["id"],
            "oracle_id": oracle_rec["id"],
            "method": method_name,
            "params": method.params,
            "device": device.type,
            "metrics": result,
            "original": before,
            "oracle": target,
        },
        files={"weights.safetensors": training.state_bytes(model)},
    )
