"""A run: unlearn a forget set from a model, then measure it against the original and the
oracle retrained without the forget set.

A method is bound here: what its `needs` name is loaded from the model's record (`needed`) and
handed to it, so the methods never see the workspace."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .. import models, training, unlearning
from ..errors import UserError
from ..evaluation import metrics, unlearning_error
from ..memorization import scores
from ..runtime.progress import Progress, no_progress, stage
from ..store import artifacts
from ..store.workspace import Workspace, npz_bytes
from . import membership, score_sets
from .oracle import oracle

# What a method is told when the model lacks something it needs and does not mark optional
# (formatted with the method's name and the model's id and source). A score that cannot be found
# is refused by score_sets.resolve itself.
_TRAINED_HERE = ("{method} needs the initial weights and recipe of the training run, which model {id} ({source}) "
                 "does not have; use a model trained here (explorer train)")
MISSING = {
    "init": _TRAINED_HERE,
    "recipe": _TRAINED_HERE,
    "codes": "{method} needs a model trained with mnemonic codes; {id} was not: train one with --mnemonic-tmix 0.1",
    "blocks": "{method} needs a model trained in blocks; {id} was not: train one with --blocks 10",
}


def outputs(model, ds) -> dict[str, np.ndarray]:
    """Per-sample confidence, loss and prediction on the training and the test set."""
    train, test = metrics.per_sample(model, ds.x_train, ds.y_train), metrics.per_sample(model, ds.x_test, ds.y_test)
    return {**{f"train_{k}": v for k, v in train.items()}, **{f"test_{k}": v for k, v in test.items()}}


def measure(out: dict[str, np.ndarray], ds, forget_ids) -> dict:
    """Accuracy on R, S and T, MIA efficacy (SVC on confidence) and a loss-based attack on S vs T."""
    retain, forget = metrics.split_ids(ds.n_train, forget_ids)
    right = out["train_pred"] == ds.y_train.numpy()
    return {
        "acc_retain": float(right[retain].mean()),
        "acc_forget": float(right[forget].mean()),
        "acc_test": float((out["test_pred"] == ds.y_test.numpy()).mean()),
        "mia_efficacy": metrics.mia_efficacy_of(out["train_confidence"], out["test_confidence"], forget),
        **{k: v for k, v in metrics.mia_attack(out["train_loss"][forget], out["test_loss"]).items()
           if k in ("mia_acc", "mia_auc")},
    }


@dataclass
class Setup:
    """What every method on one (model, forget set) is measured against; made once per run or
    sweep."""

    model_rec: dict
    fs_rec: dict
    ds: object
    retain: np.ndarray
    forget: np.ndarray
    original: nn.Module
    before: dict
    oracle_rec: dict | None
    target: dict | None
    oracle_model: nn.Module | None
    seen: dict[str, dict[str, np.ndarray]]  # per-sample outputs of the original and the oracle
    unlearning_error: dict | None  # Thudi et al.'s bound for the original's training run
    shadows: dict[str, np.ndarray] | None = None  # the exact score set's subset models, for LiRA


def setup(ws: Workspace, model_rec: dict, fs_rec: dict, device: torch.device, with_oracle: bool = True,
          progress: Progress = no_progress) -> Setup:
    if fs_rec["dataset_id"] != model_rec["dataset_id"]:
        raise unlearning.ParamError(f"forget set {fs_rec['id']} is on another dataset than model {model_rec['id']}")
    ds = artifacts.dataset_of(ws, model_rec)
    retain, forget = metrics.split_ids(ds.n_train, fs_rec["ids"])
    original = artifacts.load_model(ws, model_rec, device=device)  # evaluated where the work runs, kept on the CPU
    seen = {"original": outputs(original, ds)}
    shadows = membership.shadows_of_model(ws, model_rec)
    before = measure(seen["original"], ds, forget) | still_member(original, ds, shadows, forget)
    oracle_rec = target = oracle_model = None
    if with_oracle:
        oracle_rec = oracle(ws, model_rec, fs_rec, device, progress)
        oracle_model = artifacts.load_model(ws, oracle_rec, device=device)
        seen["oracle"] = outputs(oracle_model, ds)
        target = measure(seen["oracle"], ds, forget) | still_member(oracle_model, ds, shadows, forget)
        oracle_model.cpu()
    return Setup(model_rec, fs_rec, ds, retain, forget, original.cpu(), before,
                 oracle_rec, target, oracle_model, seen, unlearning_error_of_record(ws, model_rec, device), shadows)


def still_member(model: nn.Module, ds, shadows: dict | None, forget) -> dict:
    """`forget_still_member`: the share of the forget set LiRA still judges members of the model
    at the threshold that flags 1% of the test samples (membership.still_member); None when the
    model has no exact memorization with its subset models' confidences."""
    if shadows is None:
        return {"forget_still_member": None}
    return {"forget_still_member": membership.still_member_of(model, ds, shadows, forget)}


def unlearning_error_of_record(ws: Workspace, model_rec: dict, device: torch.device | str = "cpu",
                               **kwargs) -> dict | None:
    """`unlearning_error_of` for a model record: its weights, initial weights, recipe (lr, epochs,
    batch size, sd_lambda) and training set; None for a model without initial weights or recipe
    (an imported one)."""
    recipe = artifacts.recipe_of(model_rec)
    if recipe is None or not artifacts.has(model_rec, artifacts.INIT):
        return None
    ds = artifacts.dataset_of(ws, model_rec)
    model = artifacts.load_model(ws, model_rec, device=device)
    theta0 = artifacts.load_model(ws, model_rec, which="init", device=device).state_dict()
    steps = unlearning_error.training_steps(recipe.epochs, ds.n_train, recipe.batch_size)
    return unlearning_error.unlearning_error_of(model, theta0, recipe.lr, steps, ds.x_train, ds.y_train,
                                                sd_lambda=recipe.sd_lambda, **kwargs)


def preset_of(model_rec: dict, preset: str | None = None) -> str:
    return preset or unlearning.presets.default_for(model_rec.get("dataset", ""))


def needed(ws: Workspace, model_rec: dict, method) -> dict:
    """What the method's `needs` name (unlearning.NEEDS), loaded from the model's record; one it
    does not mark `optional` and the model lacks is refused in one line, before any work."""
    loaders = {
        "recipe": lambda: artifacts.recipe_of(model_rec),
        "init": lambda: artifacts.load_init(ws, model_rec),
        "codes": lambda: artifacts.load_codes(ws, model_rec),
        "blocks": lambda: artifacts.open_blocks(ws, model_rec),
        "score": lambda: _score(ws, model_rec, method.score),
    }
    given = {}
    for need in method.needs:
        given[need] = loaders[need]()
        if given[need] is None and need not in method.optional:
            raise unlearning.ParamError(MISSING[need].format(method=method.name, id=model_rec.get("id", "?"),
                                                             source=model_rec.get("source", "imported")))
    return given


def _score(ws: Workspace, model_rec: dict, ref: str) -> tuple[str, np.ndarray, str | None]:
    """(name, oriented values, score-set id) of a score given by name or id."""
    name, values, score_id = score_sets.resolve(ws, model_rec, ref)
    return name, scores.oriented(name, values), score_id


def bind(ws: Workspace, model_rec: dict, method_name: str, params: dict | None, preset: str | None = None):
    """The method with what it needs of the model (`needed`): its recipe for `retrain`, the
    memorization score for `rum`, the mnemonic codes for `mnemonic`, … Unset parameters come from
    the preset (by default the one calibrated for the model's dataset, if there is one). A model
    trained with mixed precision (`amp`) is unlearned with it too."""
    method = unlearning.make(method_name, params, preset_of(model_rec, preset))
    method.bind(**needed(ws, model_rec, method))
    recipe = artifacts.recipe_of(model_rec)
    method.amp = bool(recipe and recipe.amp)  # unlearn at the precision it was trained at
    return method


def starting_model(ws: Workspace, s: Setup, method) -> nn.Module:
    if not method.from_init:
        return copy.deepcopy(s.original)
    if artifacts.has(s.model_rec, artifacts.INIT):
        return artifacts.load_model(ws, s.model_rec, which="init")
    # an imported model: its initial weights are unknown, so start where the oracle starts
    return training.init_model(models.arch_of(s.model_rec), s.ds, (artifacts.recipe_of(s.model_rec)
                                                                   or training.Recipe()).seed)


def apply(ws: Workspace, s: Setup, method, device: torch.device, progress: Progress = no_progress
          ) -> tuple[nn.Module, dict, dict]:
    """Run a bound method on a copy of the model; returns it (on the CPU), its metrics (with the
    method's `run_metrics`, if it has any) and its per-sample outputs."""
    model = starting_model(ws, s, method)
    start = time.perf_counter()
    method.unlearn(model, s.ds, s.retain, s.forget, device, progress)
    seconds = time.perf_counter() - start
    out = outputs(model.to(device), s.ds)  # on the device: evaluating a big model on the CPU would dominate
    model.cpu()
    after = measure(out, s.ds, s.forget) | still_member(model, s.ds, s.shadows, s.forget)
    error = s.unlearning_error["unlearning_error"] if s.unlearning_error else None
    # A method's own figures (deepobliviate's per-request ones) join the metrics, never replacing one.
    result = {**after, **against_oracle(after, seconds, s, model), "unlearning_error": error}
    own = {k: v for k, v in (getattr(method, "run_metrics", None) or {}).items() if k not in result}
    return model, {**result, **own}, out


def against_oracle(after: dict, seconds: float, s: Setup, model: nn.Module) -> dict:
    """ToW, ToW-MIA, verification error (weight distance) and speed-up; None (missing, never
    guessed) when the oracle was skipped."""
    if s.target is None:
        return {"tow": None, "tow_mia": None, "verification_error": None, "seconds": seconds,
                "retrain_seconds": None, "speedup": None}
    retrain = s.oracle_rec["seconds"]
    return {"tow": metrics.tow(after, s.target), "tow_mia": metrics.tow(after, s.target, first="mia_efficacy"),
            "verification_error": metrics.verification_error(model, s.oracle_model),
            "seconds": seconds, "retrain_seconds": retrain,
            "speedup": retrain / seconds if seconds > 0 else float("inf")}


def analysis(s: Setup, model: nn.Module, device: torch.device | None = None, max_samples: int = 500) -> dict:
    """Linear CKA per layer of the unlearned model against the original and the oracle, on test
    samples: which layers the method changed, and whether they now look like the oracle's.
    Computed on `device`; the models are back on the CPU afterwards."""
    def cka(other: nn.Module) -> dict[str, float]:
        try:
            return metrics.cka_by_layer(model.to(device), other.to(device), s.ds.x_test, max_samples)
        finally:
            model.cpu(), other.cpu()

    device = device or torch.device("cpu")
    out = {"cka_original": cka(s.original)}
    if s.unlearning_error:
        out["unlearning_error"] = s.unlearning_error
    if s.oracle_model is not None:
        out["cka_oracle"] = cka(s.oracle_model)
    return out


def publish(ws: Workspace, s: Setup, method_name: str, method, model: nn.Module, result: dict, out: dict,
            device: torch.device, **extra) -> dict:
    """Publish a run: weights, metrics, CKA, and every sample's outputs under the original, the
    unlearned model and the oracle (for the Compare page's per-sample and MIA views)."""
    report = getattr(method, "report", None)
    samples = {f"{who}_{k}": v for who, o in (*s.seen.items(), ("unlearned", out)) for k, v in o.items()}
    return ws.put(
        "run",
        {
            "name": f"{method_name} on {s.fs_rec['name']}",
            "model_id": s.model_rec["id"],
            "forget_set_id": s.fs_rec["id"],
            "oracle_id": s.oracle_rec["id"] if s.oracle_rec else None,
            "method": method_name,
            "params": method.params,
            "device": device.type,
            "metrics": result,
            "original": s.before,
            "oracle": s.target,
            "analysis": analysis(s, model, device),
            **({"details": report} if report else {}),
            **extra,
        },
        files={artifacts.WEIGHTS: training.state_bytes(model), artifacts.SAMPLES: npz_bytes(**samples)},
    )


def unlearn(ws: Workspace, model_rec: dict, fs_rec: dict, method_name: str, params: dict | None,
            device: torch.device, progress: Progress = no_progress, with_oracle: bool = True,
            preset: str | None = None, **extra) -> dict:
    """Unlearn a forget set with one method and publish the run with its metrics (and `extra`
    fields in its record)."""
    method = bind(ws, model_rec, method_name, params, preset)  # bad input fails before any work
    s = setup(ws, model_rec, fs_rec, device, with_oracle, stage(progress, 0.0, 0.6))
    model, result, out = apply(ws, s, method, device, stage(progress, 0.6, 0.95))
    progress(0.97, "measuring and saving")
    return publish(ws, s, method_name, method, model, result, out, device, preset=preset_of(model_rec, preset), **extra)


def sample_rows(ws: Workspace, run: dict) -> list[dict]:
    """One row per training and test sample of a run: split, sample_id, label, in_forget, and
    the original's, the unlearned model's and the oracle's confidence, loss and prediction."""
    samples = artifacts.run_samples(ws, run)
    if samples is None:
        raise UserError(f"run {run['id']} was made before per-sample outputs were kept; rerun it")
    ds = artifacts.dataset_of(ws, ws.get(run["model_id"], "model"))
    forget = set(int(i) for i in ws.get(run["forget_set_id"], "forget_set")["ids"])
    who = [w for w in ("original", "unlearned", "oracle") if f"{w}_train_pred" in samples]
    rows = []
    for split, labels in (("train", ds.y_train.numpy()), ("test", ds.y_test.numpy())):
        for i, y in enumerate(labels):
            row = {"split": split, "sample_id": i, "label": int(y), "in_forget": int(split == "train" and i in forget)}
            for w in who:
                for k in ("confidence", "loss", "pred"):
                    v = samples[f"{w}_{split}_{k}"][i]
                    row[f"{w}_{k}"] = int(v) if k == "pred" else float(v)
            rows.append(row)
    return rows
