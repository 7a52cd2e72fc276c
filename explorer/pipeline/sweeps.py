"""Sweeps: a small grid of settings per method, each point scored by ToW against the oracle and
by seconds, so methods are compared at settings tuned the same way (calibration matters more
than the method).

Base methods vary lr, epochs and their one knob. `rum` and `shuffle` are tuned per group:
group by group, in processing order, every candidate step (none, or a base method at a grid
point) is tried and the one whose model best matches the oracle on what has been forgotten so
far is kept; the chosen sequence is then run once more from the original model for an honest
time.
"""

from __future__ import annotations

import copy
import itertools

import numpy as np
import torch

from .. import models, unlearning
from ..evaluation import metrics
from ..runtime.progress import Progress, no_progress
from ..store.workspace import Workspace
from ..unlearning import sequence
from . import runs, score_sets

LR_FACTORS = (0.2, 1.0, 5.0)
EPOCH_FACTORS = (0.5, 1.0)
SWEEPABLE = tuple(name for name, cls in unlearning.REGISTRY.items() if cls.sweepable)  # the base methods
SEQUENCES = tuple(unlearning.SEQUENCES)  # tuned group by group from the base methods named with them


def grid(name: str, base: dict | None = None) -> list[dict]:
    """Settings around a method's defaults (or `base`): lr × {0.2, 1, 5}, epochs × {½, 1} and
    the method's knob over its `knob_values`, each point a full parameter dict."""
    cls = unlearning.resolve(name)
    start = {**cls.defaults, **(base or {})}
    lrs = [start["lr"] * f for f in LR_FACTORS]
    epoch_values = sorted({max(1, round(start["epochs"] * f)) for f in EPOCH_FACTORS})
    knobs = cls.knob_values or (None,)
    points = []
    for lr, ep, knob in itertools.product(lrs, epoch_values, knobs):
        point = {**start, "lr": float(f"{lr:.3g}"), "epochs": ep}
        if knob is not None:
            point[cls.knob] = knob
        points.append(point)
    return points


def best(points: list[dict]) -> dict:
    """Highest ToW; among equals, the fastest."""
    return max(points, key=lambda p: (round(p["tow"], 4), -p["seconds"]))


def front(points: list[dict]) -> list[dict]:
    """The points no other point beats on both ToW and seconds, fastest first."""
    ranked = sorted(points, key=lambda p: (p["seconds"], -p["tow"]))
    out, top = [], -np.inf
    for p in ranked:
        if p["tow"] > top:
            out.append(p)
            top = p["tow"]
    return out


class _PartialTarget:
    """ToW against the oracle on the part of S forgotten so far, R = D \\ S and T (no MIA: it
    only ranks candidates). The oracle's predictions come from the setup."""

    def __init__(self, s: runs.Setup):
        self.s = s
        self.y, self.y_test = s.ds.y_train.numpy(), s.ds.y_test.numpy()
        seen = s.seen["oracle"]
        self.oracle = seen["train_pred"] == self.y, seen["test_pred"] == self.y_test

    def _accuracies(self, train: np.ndarray, test: np.ndarray, forgotten: np.ndarray) -> dict:
        return {"acc_forget": train[forgotten].mean(), "acc_retain": train[self.s.retain].mean(), "acc_test": test.mean()}

    def tow(self, model, forgotten: np.ndarray) -> float:
        train = models.predict_proba(model, self.s.ds.x_train).argmax(1).numpy() == self.y
        test = models.predict_proba(model, self.s.ds.x_test).argmax(1).numpy() == self.y_test
        return metrics.tow(self._accuracies(train, test, forgotten), self._accuracies(*self.oracle, forgotten))


def tune_sequence(ws: Workspace, s: runs.Setup, kind: str, steps_from: dict[str, dict], device: torch.device,
                  progress: Progress = no_progress, beam: int = 2, **how) -> tuple[dict, list[dict]]:
    """Per-group tuning of `rum` or `shuffle` by beam search: group by group, every kept partial
    sequence is extended by every candidate step and the `beam` best, by ToW against the oracle
    on what has been forgotten so far, are kept. Returns (the chosen parameters, a summary of
    each group's search). `steps_from` maps each candidate method to the setting its grid is
    centred on."""
    candidates = [None] + [(n, p) for n, base in steps_from.items() for p in grid(n, base)]
    probe = runs.bind(ws, s.model_rec, kind, {**how, "steps": "none"})  # only to split the forget set
    groups = probe.groups(s.forget)
    ordered = [groups[i] for i in probe.order]
    names = sequence.group_names(len(groups))
    target = _PartialTarget(s)
    kept = [(0.0, s.original, [])]  # (partial ToW, model, steps chosen so far in processing order)
    forgotten, tried = np.array([], dtype=np.int64), []
    total = len(ordered) * len(candidates) * beam
    done = 0
    for k, (group, retain) in enumerate(zip(ordered, sequence.retain_sets(s.ds.n_train, ordered))):
        forgotten = np.union1d(forgotten, group)
        scored = []
        for _, model, steps in kept:
            for cand in candidates:
                done += 1
                progress(done / total, f"tuning {kind}: group {k + 1}/{len(ordered)}, trial {done}")
                trial = model
                if cand is not None and len(group):
                    trial = copy.deepcopy(model)
                    method = unlearning.make(*cand)
                    method.amp = probe.amp  # the precision `bind` took from the model's recipe
                    method.unlearn(trial, s.ds, retain, group, device)
                scored.append((target.tow(trial, forgotten), cand is None, trial.cpu(), steps + [cand]))
        scored.sort(key=lambda t: (round(t[0], 4), t[1]), reverse=True)  # ties → none (it costs nothing)
        kept = [(tow, model, steps) for tow, _, model, steps in scored[:beam]]
        tried.append({"group": names[probe.order[k]], "best_partial_tow": kept[0][0], "trials": len(scored)})
    chosen = [None] * len(groups)
    for i, cand in zip(probe.order, kept[0][2]):
        chosen[i] = "none" if cand is None else {"method": cand[0], "params": cand[1]}
    return {**how, "steps": chosen}, tried


BEAM = 2  # partial sequences RUM and shuffle keep per group: each step of width costs a grid of trials


def can_sweep(name: str) -> bool:
    """Whether a sweep can tune this method: one of ours that says so, a sequence, or your own."""
    return name in SWEEPABLE or name in SEQUENCES or _sweepable_own(name)


def _sweepable_own(name: str) -> bool:
    """A user's own method (MODULE:CLASS) a sweep can tune: a base method that says it is."""
    if not unlearning.is_user_method(name):
        return False
    cls = unlearning.resolve(name)
    return issubclass(cls, unlearning.Method) and cls.sweepable


def check(methods: list[str], beam: int = BEAM) -> None:
    """Refuse, in one line, a sweep that cannot run."""
    if isinstance(beam, bool) or not isinstance(beam, int) or beam < 1:
        raise unlearning.ParamError(f"--beam must be a whole number of at least 1, got {beam!r}")
    if not methods:
        raise unlearning.ParamError("name at least one method to sweep")
    unknown = [m for m in methods if m not in (*SWEEPABLE, *SEQUENCES) and not _sweepable_own(m)]
    if unknown:
        raise unlearning.ParamError(f"cannot sweep {unknown[0]!r}; sweepable: {', '.join((*SWEEPABLE, *SEQUENCES))}")
    if set(SEQUENCES) & set(methods) and not any(m in SWEEPABLE or _sweepable_own(m) for m in methods):
        raise unlearning.ParamError("name the base methods RUM may choose from, e.g. --method finetune,salun,rum")


def sweep(ws: Workspace, model_rec: dict, fs_rec: dict, methods: list[str], device: torch.device,
          progress: Progress = no_progress, score: str = "exact", base: dict | None = None,
          preset: str | None = None, beam: int = BEAM) -> dict:
    """Sweep each method; publish the best run of each and one sweep record with every point.
    RUM and shuffle keep the `beam` best partial sequences per group (a wider search finds better
    sequences, at `beam` times the trials)."""
    check(methods, beam)
    base_methods = [m for m in methods if m in SWEEPABLE or unlearning.is_user_method(m)]
    sequences = [m for m in methods if m in SEQUENCES]
    if any("score" in unlearning.SEQUENCES[m].needs for m in sequences):
        score_sets.resolve(ws, model_rec, score)  # a missing score fails before any training
    s = runs.setup(ws, model_rec, fs_rec, device, progress=lambda f, m: progress(0.2 * f, f"oracle: {m}"))
    points, winners = [], {}
    preset = runs.preset_of(model_rec, preset)
    centre = {n: {**unlearning.presets.settings(preset, n), **(base or {}).get(n, {})} for n in base_methods}
    plan = [(n, p) for n in base_methods for p in grid(n, centre[n])]
    for j, (name, params) in enumerate(plan):
        progress(0.2 + 0.4 * j / len(plan), f"{name}: point {j + 1}/{len(plan)}")
        method = runs.bind(ws, s.model_rec, name, params)
        model, result, out = runs.apply(ws, s, method, device)
        point = {"method": name, "params": method.params, **result}
        points.append(point)
        if name not in winners or best([winners[name][0], point]) is point:
            winners[name] = (point, method, model, out)
    for j, kind in enumerate(sequences):
        span = 0.4 / len(sequences)
        refine = {"score": score} if "score" in unlearning.SEQUENCES[kind].needs else {}  # RUM's, not shuffle's
        params, tried = tune_sequence(ws, s, kind, {n: centre[n] for n in base_methods}, device,
                                      lambda f, m, j=j: progress(0.6 + span * (j + f), m), beam=beam, **refine)
        method = runs.bind(ws, s.model_rec, kind, params)
        model, result, out = runs.apply(ws, s, method, device)
        method.report["tuning"] = tried
        point = {"method": kind, "params": method.params, **result}
        points.append(point)
        winners[kind] = (point, method, model, out)
    progress(0.99, "saving")
    best_runs = {name: runs.publish(ws, s, name, method, model, point_result(point), out, device,
                                    tuned_by="sweep", preset=preset)["id"]
                 for name, (point, method, model, out) in winners.items()}
    return ws.put("sweep", {
        "name": f"sweep of {', '.join(methods)} on {fs_rec['name']}",
        "model_id": model_rec["id"], "forget_set_id": fs_rec["id"], "oracle_id": s.oracle_rec["id"],
        "methods": methods, "preset": preset, "beam": beam, "device": device.type, "points": points,
        "best_runs": best_runs,
        "best": {name: winners[name][0] for name in winners}, "retrain_seconds": s.oracle_rec["seconds"],
    })


def point_result(point: dict) -> dict:
    return {k: v for k, v in point.items() if k not in ("method", "params")}


def summary(rec: dict) -> list[dict]:
    """Best setting per method, best ToW first."""
    rows = [{"method": name, "tow": p["tow"], "tow_mia": p["tow_mia"], "seconds": p["seconds"],
             "speedup": p["speedup"], "acc_forget": p["acc_forget"], "params": p["params"],
             "run_id": rec["best_runs"].get(name)} for name, p in rec["best"].items()]
    return sorted(rows, key=lambda r: -r["tow"])

