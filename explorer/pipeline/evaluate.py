"""Evaluating an unlearning method the competition's way (explorer.evaluation.forgetting): N runs
of the method against N oracles retrained on R, compared sample by sample.

- The oracles are the model's architecture and recipe trained from N fresh seeds on R alone, as
  one ensemble with the batched engine (the same algorithm as training them one by one,
  explorer.training.fused), kept per (model, forget set, N) in the workspace's `oracles/` folder
  and reused by every method evaluated on that forget set.
- The runs are the method bound as `unlearn` binds it, seeded 0 … N−1 (a sequence's steps take
  the seed too). A method that starts from the initial weights (retrain) starts each run from a
  fresh draw of them, as the oracles do: from the original's one draw its N runs would vary less
  than the oracles, and be told apart for that alone. `none` is the original model, N times.
- Both are saved as they finish (oracles by chunk, runs one by one), so an interrupted
  evaluation resumes where it stopped; the evaluation is published whole at the end, as one
  record of kind "evaluation".
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import shutil
import time
from contextlib import contextmanager

import numpy as np
import torch

from .. import models, training, unlearning
from ..errors import UserError
from ..evaluation import forgetting, metrics
from ..runtime.progress import Progress, clock, no_progress, stage
from ..store import artifacts
from ..store.workspace import Workspace, npz_bytes, write_atomic
from ..training import ensembles
from ..unlearning import sequence
from . import memorize, runs
from .oracle import recipe_for

MODELS = 32  # N by default: F within minutes on a laptop for the embedded data
NONE = "none"  # the original model itself, N times: the floor every method should beat
ORACLE_SEED = 2_000_003  # oracle k trains from seed ORACLE_SEED + k: apart from the runs' 0 … N−1 and the subset models'
ORACLE_CHUNK = 32


def check(method_name: str, params: dict, n: int, preset: str | None) -> None:
    """Refuse bad input in one line before any work."""
    if n < 4:
        raise UserError(f"--models must be at least 4 (ε needs a few models per side); got {n}")
    if preset is not None and preset not in unlearning.presets.PRESETS:
        raise unlearning.ParamError(f"unknown preset {preset!r}; choose one of {', '.join(unlearning.presets.PRESETS)}")
    if method_name == NONE:
        if params:
            raise UserError("--method none takes no --params: it is the original model, unchanged")
        return
    unlearning.make(method_name, params, preset or "paper")


# -- oracles -----------------------------------------------------------------------------------------


def _oracle_folder(ws: Workspace, model_rec: dict, fs_rec: dict, n: int):
    recipe, _ = recipe_for(model_rec)
    key = json.dumps({"recipe": recipe.as_meta(), "n": n, "seed": ORACLE_SEED}, sort_keys=True, default=str)
    return ws.path / "oracles" / f"{model_rec['id']}-{fs_rec['id']}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def _accuracies(correct_train: np.ndarray, correct_test: np.ndarray, retain, forget) -> dict[str, np.ndarray]:
    return {"acc_retain": correct_train[:, retain].mean(1), "acc_forget": correct_train[:, forget].mean(1),
            "acc_test": correct_test.mean(1)}


def oracles(ws: Workspace, model_rec: dict, fs_rec: dict, n: int, device: torch.device,
            progress: Progress = no_progress) -> dict[str, np.ndarray]:
    """N oracles' φ on the forget samples (N, m) and their accuracies (N,) on R, S and the test
    set; trained (or resumed) once per (model, forget set, N), then read from the cache."""
    folder = _oracle_folder(ws, model_rec, fs_rec, n)
    done = folder / "oracles.npz"
    if not done.exists():
        folder.mkdir(parents=True, exist_ok=True)
        with _one_trainer(folder, progress):  # evaluations of several methods, launched together, train them once
            if not done.exists():
                _train_oracles(ws, model_rec, fs_rec, n, device, folder, progress)
    with np.load(done) as z:
        return {k: z[k] for k in z.files}


@contextmanager
def _one_trainer(folder, progress: Progress):
    """Wait while another process trains these oracles (reporting, so a cancel still stops it)."""
    try:
        import fcntl
    except ImportError:  # not on Unix: no advisory locks
        yield
        return
    with open(folder / "lock", "w") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                progress(0.0, "waiting for another job training the same oracles")
                time.sleep(0.5)
        yield


def _train_oracles(ws: Workspace, model_rec: dict, fs_rec: dict, n: int, device: torch.device, folder,
                   progress: Progress) -> None:
    done = folder / "oracles.npz"
    ds = artifacts.dataset_of(ws, model_rec)
    retain, forget = metrics.split_ids(ds.n_train, fs_rec["ids"])
    recipe, _ = recipe_for(model_rec)
    arch = models.arch_of(model_rec)
    engine = "sequential" if ensembles.not_batchable(models.arch_of(model_rec), recipe.as_meta()) else "batched"
    chunk = ORACLE_CHUNK if engine == "batched" else 8
    seeds = [ORACLE_SEED + k for k in range(n)]
    bounds = [(lo, min(lo + chunk, n)) for lo in range(0, n, chunk)]
    start = time.perf_counter()
    for c, (lo, hi) in enumerate(bounds):
        path = folder / f"chunk-{c:05d}.npz"
        if path.exists():
            continue
        subs = torch.as_tensor(np.tile(retain, (hi - lo, 1)))
        step = stage(progress, lo / n, hi / n)
        tr, te, tr_phi, _ = ensembles.train_correctness(
            arch, ds, subs, seeds[lo:hi], recipe, device, engine,
            lambda f, msg: step(f, f"oracles {lo + int(f * (hi - lo))}/{n} ({engine})"), phi=True)
        tr, te = tr.numpy(), te.numpy()
        write_atomic(path, npz_bytes(phi=tr_phi.numpy()[:, forget].astype(np.float32),
                                     **_accuracies(tr, te, retain, forget)))
    parts = []
    for c in range(len(bounds)):
        with np.load(folder / f"chunk-{c:05d}.npz") as z:
            parts.append({k: z[k] for k in z.files})
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    out["seconds"] = np.float64(time.perf_counter() - start)
    write_atomic(done, npz_bytes(**out))
    for c in range(len(bounds)):
        (folder / f"chunk-{c:05d}.npz").unlink(missing_ok=True)


def oracles_cached(ws: Workspace, model_rec: dict, fs_rec: dict, n: int) -> bool:
    return (_oracle_folder(ws, model_rec, fs_rec, n) / "oracles.npz").exists()


# -- the method's runs -------------------------------------------------------------------------------


def _seeded(ws: Workspace, model_rec: dict, method_name: str, params: dict, preset: str | None, seed: int):
    """The method bound as `unlearn` binds it, with `seed` in each of its (or its steps') parameters."""
    method = runs.bind(ws, model_rec, method_name, params, preset)
    for m in getattr(method, "steps", None) or [method]:
        if m is not None and "seed" in m.params:
            m.params["seed"] = seed
    return method


def _one_run(ws: Workspace, model_rec: dict, ds, retain, forget, original, method_name: str, params: dict,
             preset: str | None, seed: int, device: torch.device, progress: Progress) -> dict:
    if method_name == NONE:
        model, seconds = original, 0.0
    else:
        method = _seeded(ws, model_rec, method_name, params, preset, seed)
        if method.from_init:  # a fresh draw of the initial weights, as each oracle's
            model = training.init_model(models.arch_of(model_rec), ds, seed)
        else:
            model = copy.deepcopy(original)
        start = time.perf_counter()
        method.unlearn(model, ds, retain, forget, device, progress)
        seconds = time.perf_counter() - start
    model = model.to(device)
    out = runs.outputs(model, ds)
    phi = models.predict_logit_confidence(model, ds.x_train[torch.as_tensor(forget)], ds.y_train[torch.as_tensor(forget)])
    model.cpu()
    right_train = (out["train_pred"] == ds.y_train.numpy())[None]
    right_test = (out["test_pred"] == ds.y_test.numpy())[None]
    # At the oracles' precision (the ensembles keep φ as float16): neither side is finer than the other.
    return {"phi": phi.half().float().numpy(), **{k: v[0] for k, v in _accuracies(right_train, right_test, retain, forget).items()},
            "seconds": np.float64(seconds)}


def _run_folder(ws: Workspace, model_rec: dict, fs_rec: dict, method_name: str, params: dict, preset: str | None, n: int):
    key = json.dumps({"method": method_name, "params": params, "preset": preset, "n": n}, sort_keys=True, default=str)
    return ws.path / "partial" / f"evaluate-{model_rec['id']}-{fs_rec['id']}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


# -- cost and the evaluation ---------------------------------------------------------------------------


def cost(ws: Workspace, model_rec: dict, fs_rec: dict, method_name: str, n: int = MODELS,
         device: torch.device | None = None) -> dict:
    """What an evaluation will take, before it starts: the oracles (nothing when cached; else
    N trainings on R, from the engines' calibration on this device, measured once and kept, as
    `memorize --exact` measures it) and N runs of the method (at the median time of its earlier
    runs on this model, when there are some). {"oracle_seconds", "run_seconds" (None: not known
    before its first run), "text"}."""
    device = device or torch.device("cpu")
    if oracles_cached(ws, model_rec, fs_rec, n):
        oracle_s, oracle_text = 0.0, f"{n} oracles cached"
    else:
        recipe, _ = recipe_for(model_rec)
        n_train = artifacts.dataset_of(ws, model_rec).n_train
        steps = recipe.epochs * math.ceil((n_train - len(set(fs_rec["ids"]))) / recipe.batch_size)
        engine = "sequential" if ensembles.not_batchable(models.arch_of(model_rec), recipe.as_meta()) else "batched"
        if engine == "batched":
            per_step = memorize.calibrated_engine(ws, model_rec, device, ORACLE_CHUNK)["seconds_per_model_step"][engine]
            oracle_s = n * steps * per_step
        else:  # one at a time: at the original's own training speed
            oracle_s = n * (model_rec.get("seconds") or 0.0) * (n_train - len(fs_rec["ids"])) / n_train
        oracle_text = f"{n} oracles ≈ {clock(oracle_s)} ({engine})"
    if method_name == NONE:
        run_s = 0.0
    else:
        earlier = [r["metrics"]["seconds"] for r in ws.find("run", model_id=model_rec["id"], method=method_name)
                   if r["metrics"].get("seconds") is not None]
        run_s = n * float(np.median(earlier)) if earlier else None
    run_text = (f"{n} runs of {method_name} ≈ {clock(run_s)}" if run_s is not None
                else f"{n} runs of {method_name}: timed from the first")
    return {"oracle_seconds": oracle_s, "run_seconds": run_s, "text": f"{oracle_text}; {run_text}"}


def evaluate(ws: Workspace, model_rec: dict, fs_rec: dict, method_name: str, params: dict | None = None,
             n: int = MODELS, device: torch.device | None = None, preset: str | None = None,
             progress: Progress = no_progress) -> dict:
    """Forgetting quality F, per-sample ε and the utility-adjusted score of `method_name` on this
    forget set, against N oracles; publishes an "evaluation" record (the same configuration
    evaluated before is returned as it was)."""
    params = dict(params or {})
    device = device or torch.device("cpu")
    check(method_name, params, n, preset)
    if fs_rec["dataset_id"] != model_rec["dataset_id"]:
        raise UserError(f"forget set {fs_rec['id']} is on another dataset than model {model_rec['id']}")
    if method_name != NONE:
        runs.bind(ws, model_rec, method_name, params, preset)  # what the method needs is there: refused before work
    found = [r for r in ws.find("evaluation", model_id=model_rec["id"], forget_set_id=fs_rec["id"],
                                method=method_name, models=n)
             if r["params"] == params and r["preset"] == preset]
    if found:
        return found[-1]
    estimate = cost(ws, model_rec, fs_rec, method_name, n, device)
    progress(0.0, f"cost: {estimate['text']}")
    start = time.perf_counter()
    ds = artifacts.dataset_of(ws, model_rec)
    retain, forget = metrics.split_ids(ds.n_train, fs_rec["ids"])
    share = 0.5 if not oracles_cached(ws, model_rec, fs_rec, n) else 0.0
    ref = oracles(ws, model_rec, fs_rec, n, device, stage(progress, 0.0, share))

    folder = _run_folder(ws, model_rec, fs_rec, method_name, params, preset, n)
    folder.mkdir(parents=True, exist_ok=True)
    original = artifacts.load_model(ws, model_rec)
    todo = [k for k in range(n) if not (folder / f"run-{k:05d}.npz").exists()]
    t0 = time.perf_counter()
    for i, k in enumerate(todo):
        rate = (time.perf_counter() - t0) / i if i else None
        eta = f" · ETA {clock(rate * (len(todo) - i))}" if rate else ""
        step = stage(progress, share + (1 - share) * (n - len(todo) + i) / n,
                     share + (1 - share) * (n - len(todo) + i + 1) / n)
        step(0.0, f"run {k + 1}/{n} of {method_name}{eta}")
        one = _one_run(ws, model_rec, ds, retain, forget, original, method_name, params, preset, k, device, step)
        write_atomic(folder / f"run-{k:05d}.npz", npz_bytes(**one))
    got = []
    for k in range(n):
        with np.load(folder / f"run-{k:05d}.npz") as z:
            got.append({key: z[key] for key in z.files})
    unl = {key: np.stack([g[key] for g in got]) for key in got[0]}
    progress(1.0, "scoring every forget sample")
    result = score(unl, ref)
    rec = ws.put("evaluation", {
        "name": f"{method_name} on {fs_rec['name']} (N = {n})", "model_id": model_rec["id"],
        "forget_set_id": fs_rec["id"], "method": method_name, "params": params, "preset": preset,
        "models": n, "device": device.type, "forget_ids": [int(i) for i in forget],
        **result["meta"], "seconds": round(time.perf_counter() - start, 3),
        "run_seconds": float(unl["seconds"].sum()), "cost": estimate["text"],
    }, files={artifacts.EVALUATION_SAMPLES: npz_bytes(unlearned_phi=unl["phi"], retrained_phi=ref["phi"],
                                                     **result["arrays"])})
    shutil.rmtree(folder, ignore_errors=True)
    return rec


def score(unl: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict:
    """The evaluation's figures from the runs' and the oracles' φ and accuracies: F and the score on
    the simultaneous bound (`forgetting_quality`, `score`) and on the competition's point estimate
    (`forgetting_quality_point`, `score_point`), ε of both per forget sample, and KLoM (per sample,
    `kloms`, and its mean, `klom`). F on the bound is NaN when N is too small for it to resolve any ε."""
    n_u, n_r = len(unl["phi"]), len(ref["phi"])
    eps, top = forgetting.epsilons(unl["phi"], ref["phi"]), forgetting.cap(n_u, n_r)
    points = forgetting.sample_scores(eps, top)
    f = forgetting.forgetting_quality(eps, top)
    eps_point = forgetting.epsilons(unl["phi"], ref["phi"], confidence=None)
    top_point = forgetting.cap(n_u, n_r, confidence=None)
    f_point = forgetting.forgetting_quality(eps_point, top_point)
    kloms = forgetting.klom(unl["phi"], ref["phi"])
    means = {f"{who}_{k}": float(src[k].mean()) for who, src in (("unlearned", unl), ("retrained", ref))
             for k in ("acc_retain", "acc_forget", "acc_test")}
    utility = (means["unlearned_acc_retain"], means["unlearned_acc_test"], means["retrained_acc_retain"],
               means["retrained_acc_test"])
    lo, hi = forgetting.interval(points)
    meta = {"forgetting_quality": f, "forgetting_quality_interval": [lo, hi],
            "score": forgetting.utility_adjusted(f, *utility), "epsilons": [float(e) for e in eps], "epsilon_cap": top,
            "epsilon_bound": "simultaneous", "confidence": forgetting.CONFIDENCE,
            "forgetting_quality_point": f_point, "score_point": forgetting.utility_adjusted(f_point, *utility),
            "epsilons_point": [float(e) for e in eps_point], "epsilon_cap_point": top_point,
            "klom": float(kloms.mean()), "kloms": [float(k) for k in kloms], **means}
    return {"meta": meta, "arrays": {"epsilons": eps, "epsilons_point": eps_point, "points": points, "klom": kloms}}


def export_rows(ws: Workspace, rec: dict) -> list[dict]:
    """One row per forget sample: sample_id, label, epsilon (the bound), epsilon_point (the
    competition's), points (its bucket score), klom, the unlearned and the retrained models' median
    φ, and where the model has a memorization score its value (named in the column) and the sample's
    group by it (low / mid / high: RUM's terciles of the forget set)."""
    arrays = artifacts.evaluation_samples(ws, rec)
    kloms = arrays["klom"] if "klom" in arrays else forgetting.klom(arrays["unlearned_phi"], arrays["retrained_phi"])
    model_rec = ws.get(rec["model_id"], "model")
    labels = artifacts.dataset_of(ws, model_rec).y_train.numpy()
    mem = artifacts.memorization_of(ws, model_rec)
    group = {}
    if mem is not None and np.isfinite(mem[1][rec["forget_ids"]]).all():
        parts = sequence.split(mem[1], rec["forget_ids"])
        group = {int(i): name for name, part in zip(sequence.group_names(len(parts)), parts) for i in part}
    rows = []
    for j, i in enumerate(rec["forget_ids"]):
        row = {"sample_id": int(i), "label": int(labels[i]), "epsilon": float(arrays["epsilons"][j]),
               "epsilon_point": float(arrays["epsilons_point"][j]), "points": float(arrays["points"][j]),
               "klom": float(kloms[j]),
               "unlearned_phi_median": float(np.median(arrays["unlearned_phi"][:, j])),
               "retrained_phi_median": float(np.median(arrays["retrained_phi"][:, j]))}
        if mem is not None:
            row[f"memorization_{mem[0]}"] = float(mem[1][i])
            row["group"] = group.get(int(i))
        rows.append(row)
    return rows
