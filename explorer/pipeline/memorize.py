"""Memorizing: the exact estimate of a model's memorization (explorer.memorization.estimator) and
its cheap proxies, computed and published as score sets.

The exact estimate's K subset models are trained in chunks; each chunk's correctness is saved
as soon as it is done, so an interrupted run resumes where it stopped and, the subsets and seeds
being fixed by the seed, ends with the same estimate as an uninterrupted one.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import shutil
import time
from contextlib import closing, contextmanager
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from .. import models
from .. import errors
from ..errors import UserError
from ..memorization import proxies
from ..memorization.estimator import ExactConfig, estimate, masks_of, subsets
from ..models import ArchError
from ..runtime import devices
from ..runtime.progress import Progress, clock, no_progress
from ..store import artifacts
from ..store.workspace import Workspace, npz_bytes, write_atomic
from ..training import Recipe, ensembles
from ..unlearning import presets
from . import membership, score_sets
from .cluster import RayPool  # imports Ray only when a pool is made

BACKENDS = ("local", "ray")  # where the subset models train: this machine, or a Ray cluster (cluster.py)


def check_backend(backend: str, address: str | None) -> None:
    """Refuse, in one line, backend options that cannot go together."""
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; choose local or ray")
    if address is not None and backend != "ray":
        raise UserError("--address names a Ray cluster; use it with --backend ray")


def calibrated_engine(ws: Workspace, model_rec: dict, device: torch.device, k: int) -> dict:
    """The engine `auto` picks for this model on `device`: the fastest in a short measured
    calibration (ensembles.calibrate), measured once per kind of model, recipe, device and chunk
    size and kept in the workspace, so that a resumed run picks what its start picked."""
    recipe = artifacts.recipe_of(model_rec) or Recipe()
    threads = torch.get_num_threads() if device.type == "cpu" else 0
    arch = models.arch_of(model_rec)  # a variant or an input normalization is another model to time
    named = arch if isinstance(arch, str) else models.arch_meta(arch)
    key = json.dumps([named, model_rec["dataset_id"], recipe.cost_key(), devices.describe(device), threads, k],
                     sort_keys=True, default=str)
    path = ws.path / "calibration.json"
    known = json.loads(path.read_text()) if path.exists() else {}
    if key not in known:
        known[key] = ensembles.calibrate(arch, artifacts.dataset_of(ws, model_rec), recipe, device, k)
        write_atomic(path, json.dumps(known, indent=1).encode())
    return known[key]


MOST_PER_CHUNK = {"cpu": 32, "cuda": 256}  # models trained at once, at most (memory permitting)


def default_chunk(engine: str, model_rec: dict | None = None, ws: Workspace | None = None,
                  device: torch.device | None = None) -> int:
    """Models per chunk: 8 one after another (the chunk is only how often progress is saved); for
    the batched engines as many at once as half the device's memory holds, by the model's measured
    footprint (ensembles.footprint), a power of two up to MOST_PER_CHUNK. The device's total memory,
    not its free memory of the moment: the chunk is part of what identifies a run, so the same
    run on the same device must get the same chunk to resume; memory taken by others is met by
    halving a chunk that runs out (`_local_chunks`)."""
    if engine not in ("batched", "fused"):
        return 8
    most = MOST_PER_CHUNK.get(device.type, 32) if device is not None else 32
    if model_rec is None or ws is None or device is None:
        return most
    recipe = artifacts.recipe_of(model_rec) or Recipe()
    per_model = ensembles.footprint(models.arch_of(model_rec), artifacts.dataset_of(ws, model_rec), recipe)
    return ensembles.models_per_chunk(per_model, devices.total_bytes(device), most)


def _begun(ws: Workspace, cfg: ExactConfig, model_rec: dict) -> ExactConfig | None:
    """The resolved configuration of an unfinished run of this one (begun here or on a Ray
    cluster), so that `auto` and the default chunk resume it rather than start over."""
    for manifest in (folder / "manifest.json" for folder in artifacts.exact_folders(ws, model_rec["id"])):
        try:
            begun = ExactConfig(**json.loads(manifest.read_text())["cfg"])
        except (OSError, ValueError, TypeError, KeyError):
            continue
        engine = begun.engine if cfg.engine == "auto" else cfg.engine
        same = replace(cfg, engine=engine, epochs=cfg.epochs or begun.epochs, chunk=cfg.chunk or begun.chunk)
        if same == begun and any(manifest.parent.glob("chunk-*.npz")):
            return begun
    return None


def pick_engine(cfg: ExactConfig, model_rec: dict, device: torch.device, ws: Workspace | None = None,
                measure: bool = True) -> tuple[str, str]:
    """(engine, why) for this configuration: the one asked for, else the calibrated one
    (`calibrated_engine`); without `measure` (a Ray cluster's workers, not measurable from here)
    the batched one whenever the model can train batched."""
    if cfg.engine != "auto":
        return cfg.engine, "asked for"
    if why_not := ensembles.not_batchable(models.arch_of(model_rec), model_rec.get("recipe")):
        return "sequential", why_not
    if ws is not None and (begun := _begun(ws, cfg, model_rec)):
        return begun.engine, "the engine this run began with (resuming it)"
    if not measure or ws is None:
        return "batched", "not measured (a Ray cluster's workers, or no workspace to keep the measurement)"
    picked = calibrated_engine(ws, model_rec, device,
                               cfg.chunk or min(cfg.models, default_chunk("batched", model_rec, ws, device)))
    return picked["engine"], picked["why"]


def resolve(cfg: ExactConfig, model_rec: dict, device: torch.device, ws: Workspace | None = None,
            measure: bool = True) -> ExactConfig:
    """The configuration with every default made concrete (epochs, engine, chunk size): what
    identifies a run, so a resume from the CLI, the app or another device finds its chunks."""
    engine, _ = pick_engine(cfg, model_rec, device, ws, measure)
    epochs = cfg.epochs or (artifacts.recipe_of(model_rec) or Recipe()).epochs
    chunk = cfg.chunk
    if chunk is None and ws is not None and (begun := _begun(ws, replace(cfg, engine=engine), model_rec)):
        chunk = begun.chunk  # the chunks already saved decide
    if chunk is None:
        chunk = min(cfg.models, default_chunk(engine, model_rec, ws, device if measure else None))
    return replace(cfg, epochs=epochs, engine=engine, chunk=chunk)


def _recipe(model_rec: dict, cfg: ExactConfig) -> Recipe:
    return replace(artifacts.recipe_of(model_rec) or Recipe(), epochs=cfg.epochs)


def _run_key(model_rec: dict, cfg: ExactConfig) -> str:
    key = json.dumps({"cfg": asdict(cfg), "recipe": _recipe(model_rec, cfg).as_meta()}, sort_keys=True)
    return hashlib.sha1(key.encode()).hexdigest()[:10]


LOCK_WAIT_SECONDS = 10.0


@contextmanager
def _exclusive(folder: Path):
    """One process per run folder: a second start of the same run is refused, not duplicated."""
    try:
        import fcntl
    except ImportError:  # not on Unix: no advisory locks, run unguarded
        yield
        return
    with open(folder / "lock", "w") as handle:
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                # A process killed a moment ago can hold the lock until its threads are gone.
                if time.monotonic() > deadline:
                    raise UserError("this exact run is already going in another job; wait for it or cancel it") from None
                time.sleep(0.2)
        yield


def _load_chunks(folder: Path) -> list[dict]:
    chunks = []
    for path in sorted(folder.glob("chunk-*.npz")):
        with np.load(path) as z:
            chunks.append({k: z[k] for k in z.files})
    return chunks


def in_progress(ws: Workspace, model_id: str) -> list[dict]:
    """Exact runs of this model that have saved chunks but not finished: their (resolved) config
    and the correctness gathered so far (for a live view of the estimate converging)."""
    runs = []
    for folder in artifacts.exact_folders(ws, model_id):
        try:
            info = json.loads((folder / "manifest.json").read_text())
            chunks = _load_chunks(folder)
        except (OSError, ValueError):  # being removed as it finishes, or not started yet
            continue
        if not chunks:
            continue
        cfg = ExactConfig(**info["cfg"])
        train = np.concatenate([c["train"] for c in chunks])
        subs = subsets(info["n"], cfg.ratio, cfg.models, cfg.seed)[: len(train)]
        runs.append({"cfg": cfg, "models": cfg.models, "n": info["n"], "done": len(train),
                     "masks": masks_of(subs, info["n"]), "correct": train})
    return runs


CHUNK_ARRAYS = ("train", "test", "train_phi", "test_phi")  # a saved chunk's arrays, as train_correctness returns them


def _local_chunks(arch, ds, recipe, device, engine, todo, report):
    """The local backend: train the missing chunks one after the other on `device`. A chunk that
    runs out of memory is trained in halves (and the later chunks in pieces of the size that
    fitted): the same models with the same seeds, so the same chunk file."""
    fits = None  # models at once known to fit, after an out-of-memory error

    def train(subs, seeds, done: int):
        nonlocal fits
        if fits is not None and len(seeds) > fits:
            return _halves(subs, seeds, done, train)
        try:
            return ensembles.train_correctness(arch, ds, subs, seeds, recipe, device, engine,
                                               lambda f, msg: report(done + f * len(seeds)), phi=True)
        except Exception as err:
            if not devices.out_of_memory(err):
                raise
            if len(seeds) == 1:
                raise UserError(f"one model does not fit in {devices.describe(device)}'s free memory "
                                f"({errors.first_line(err)}); use a smaller batch size or another device") from None
        # Retried outside the except block: there its traceback would keep the failed attempt's
        # tensors (the ensemble, its activations) alive through the retry.
        gc.collect()
        devices.release(device)
        fits = len(seeds) // 2
        report(done, f" · out of memory with {len(seeds)} models at once: {fits} at a time from now on")
        return _halves(subs, seeds, done, train)

    for c, subs, seeds in todo:
        start = time.perf_counter()
        out = train(subs, seeds, 0)
        yield c, dict(zip(CHUNK_ARRAYS, (t.numpy() for t in out))), time.perf_counter() - start


def _halves(subs, seeds, done, train):
    """`train` on the first half of the models, then the second, joined as one chunk's outputs."""
    half = (len(seeds) + 1) // 2
    first = train(subs[:half], seeds[:half], done)
    second = train(subs[half:], seeds[half:], done + half)
    return tuple(torch.cat(pair) for pair in zip(first, second))


def exact(ws: Workspace, model_rec: dict, cfg: ExactConfig, device: torch.device | None,
          progress: Progress = no_progress, *, backend: str = "local", address: str | None = None) -> dict:
    """Run (or resume) the estimator and publish the score set named "exact". Running a
    configuration that was already published returns that score set.

    With `backend="ray"` the chunks are trained as tasks on the Ray cluster at `address` (a local
    Ray instance when None) on the cluster's devices, instead of one after the other on `device`.
    Both store chunks in the same folder, keyed by the resolved configuration: on the same kind of
    device (hence the same engine and chunk size) either resumes what the other began."""
    cfg.check()
    check_backend(backend, address)
    n = artifacts.dataset_of(ws, model_rec).n_train
    if not 1 <= int(cfg.ratio * n) <= n - 1:
        raise UserError(f"--ratio {cfg.ratio} leaves {int(cfg.ratio * n)} of {n} samples per subset; "
                        "it must keep at least one and hold out at least one")
    pool = None
    if backend == "ray":
        pool = RayPool(address)
        device = pool.device  # the workers' device decides the engine, hence the run
    engine, engine_why = pick_engine(cfg, model_rec, device, ws, measure=pool is None)
    cfg = resolve(replace(cfg, engine=engine), model_rec, device, ws)  # picked once: not measured again
    if why := ensembles.refused(cfg.engine, models.arch_of(model_rec), model_rec.get("recipe"), option=True):
        raise ArchError(why)
    key = _run_key(model_rec, cfg)
    folder = artifacts.exact_folder(ws, model_rec["id"], key)
    folder.mkdir(parents=True, exist_ok=True)
    progress(0.0, f"engine: {engine} ({engine_why}) · {cfg.chunk} models per chunk")
    with _exclusive(folder):
        # Published before (only the clean-up was missed), unless before the subset models' φ were kept.
        done = [r for r in ws.find("scores", model_id=model_rec["id"], name="exact")
                if r["params"].get("run_key") == key and "lira_auc" in r]
        if not done:
            write_atomic(folder / "manifest.json", json.dumps({"cfg": asdict(cfg), "n": n}).encode())
            start = time.perf_counter()
            _train_chunks(ws, model_rec, cfg, folder, device, pool, progress)
            done = [_publish(ws, model_rec, cfg, key, folder, device, device if pool is None else devices.resolve("auto"),
                             progress, backend=backend, engine_why=engine_why,
                             wall_seconds=round(time.perf_counter() - start, 3))]
        shutil.rmtree(folder, ignore_errors=True)
    return done[-1]


def _chunk_path(folder: Path, c: int) -> Path:
    return folder / f"chunk-{c:05d}.npz"


def _train_chunks(ws: Workspace, model_rec: dict, cfg: ExactConfig, folder: Path, device: torch.device,
                  pool: RayPool | None, progress: Progress) -> None:
    """Train the subset models of every chunk not yet in `folder`, saving each chunk as it ends."""
    ds = artifacts.dataset_of(ws, model_rec)
    n, recipe = ds.n_train, _recipe(model_rec, cfg)
    subs, seeds = subsets(n, cfg.ratio, cfg.models, cfg.seed), _seeds(cfg)
    bounds = [(lo, min(lo + cfg.chunk, cfg.models)) for lo in range(0, cfg.models, cfg.chunk)]
    todo = [(c, subs[lo:hi], seeds[lo:hi]) for c, (lo, hi) in enumerate(bounds) if not _chunk_path(folder, c).exists()]
    stored = cfg.models - sum(len(s) for _, s, _ in todo)  # by earlier, interrupted runs
    start, trained_here = time.perf_counter(), 0

    def report(in_flight: float, note: str = "") -> None:
        """Progress over all models: those stored plus `in_flight` models' worth of current work."""
        done_here = trained_here + in_flight
        rate = (time.perf_counter() - start) / done_here if done_here else None
        eta = f" · ETA {clock((cfg.models - stored - done_here) * rate)}" if rate else ""
        progress((stored + done_here) / cfg.models, f"models {stored + int(done_here)}/{cfg.models}{note}{eta}")

    if pool is None:
        finished = _local_chunks(models.arch_of(model_rec), ds, recipe, device, cfg.engine, todo, report)
    else:
        finished = pool.run(ds, models.arch_of(model_rec), recipe.as_meta(), cfg.engine, todo,
                            lambda running: report(0, f" · {running} chunks queued or running on {pool.describe()}"))
    with closing(finished):  # leaving early (a cancel, an error) stops the cluster's pending tasks at once
        for c, arrays, seconds in finished:
            write_atomic(_chunk_path(folder, c), npz_bytes(**arrays, seconds=np.float64(seconds)))
            trained_here += len(arrays["train"])
            report(0)


def _seeds(cfg: ExactConfig) -> list[int]:
    return [cfg.seed * 1_000_003 + k for k in range(cfg.models)]


def _publish(ws: Workspace, model_rec: dict, cfg: ExactConfig, key: str, folder: Path, device: torch.device,
             lira_device: torch.device, progress: Progress, **meta) -> dict:
    """The estimate from every chunk in `folder` (trained on `device`), with the original model's
    LiRA against the subset models (computed on `lira_device`), published as the score set "exact"."""
    chunks = _load_chunks(folder)
    n = artifacts.dataset_of(ws, model_rec).n_train
    correct = np.concatenate([c["train"] for c in chunks])
    expected = math.ceil(cfg.models / cfg.chunk)
    if len(chunks) != expected or correct.shape != (cfg.models, n):
        raise RuntimeError(f"{folder} holds {len(chunks)} chunks / {len(correct)} models, expected "
                           f"{expected} / {cfg.models}")
    masks = masks_of(subsets(n, cfg.ratio, cfg.models, cfg.seed), n)
    est = estimate(masks, correct)
    phis = {}  # the subset models' φ, for LiRA; absent from chunks saved before it was kept
    if all("train_phi" in c for c in chunks):
        phis = {"phi": np.concatenate([c["train_phi"] for c in chunks]),
                "test_phi": np.concatenate([c["test_phi"] for c in chunks])}
    lira_meta, lira_arrays = membership.original(ws, model_rec, masks, phis, lira_device) if phis else ({}, {})
    never = int((est["n_out"] == 0).sum())
    progress(1.0, f"{cfg.models} models · {never} samples never held out")  # last report: then publish
    return score_sets.publish(
        ws, model_rec, "exact", est["values"],
        seconds=float(sum(c["seconds"] for c in chunks)), device=device.type,
        params={**asdict(cfg), "run_key": key},
        arrays={k: est[k] for k in ("stderr", "cscore", "n_in", "n_out")}
        | {"masks": masks, "correct": correct, "test_correct": np.concatenate([c["test"] for c in chunks])}
        | phis | lira_arrays,
        models=cfg.models, never_held_out=never, **lira_meta, **meta,
    )


def default_proxies(model_rec: dict) -> list[str]:
    """The proxies computed when none are named: all of them (those a model without dynamics
    cannot have are skipped, saying why), and the average of curvature recorded in training
    when the model recorded it."""
    return [*proxies.ALL, *(proxies.RECORDED if model_rec.get("curvature_recorded") else ())]


def compute_proxies(ws: Workspace, model_rec: dict, only: list[str] | None, device: torch.device,
            progress: Progress = no_progress) -> tuple[list[dict], dict[str, str]]:
    """Compute every proxy asked for, then publish one score set each; returns (records,
    skipped name -> why). Nothing is published until all are computed."""
    wanted = list(only or default_proxies(model_rec))
    unknown = [w for w in wanted if w not in proxies.NAMES]
    if unknown:
        raise UserError(f"unknown proxy {unknown[0]!r}; choose from {', '.join(proxies.NAMES)}")
    from_dynamics = (*proxies.FROM_DYNAMICS, *proxies.RECORDED)
    skipped = {}
    if not model_rec.get("has_dynamics"):
        for name in [w for w in wanted if w in from_dynamics]:
            skipped[name] = "needs training dynamics: train the model here to get it"
    computed = []  # (name, values, seconds, device, params)
    dyn_names = [w for w in wanted if w in from_dynamics and w not in skipped]
    if dyn_names:
        start = time.perf_counter()
        values = proxies.from_dynamics(artifacts.load_dynamics(ws, model_rec))
        seconds = (time.perf_counter() - start) / len(dyn_names)  # one pass serves them all
        recorded = model_rec.get("curvature_recorded") or {}
        for name in dyn_names:
            if name == "curvature_avg" and name in values:  # its cost was paid in training: report it
                computed.append((name, values[name], recorded.get("seconds", 0.0) + seconds, model_rec.get("device")
                                 or "cpu", {"source": "recorded in training", "variant": "averaged over training "
                                            "(RUM code)", **{k: recorded.get(k) for k in ("epochs", "h")}}))
            elif name in values:
                computed.append((name, values[name], seconds, "cpu", {"source": "training dynamics"}))
            elif name == "curvature_avg":
                skipped[name] = ("curvature was not recorded while this model trained: train it with "
                                 "--curvature-every 1 (RUM: every epoch)")
            else:
                skipped[name] = "its dynamics were not recorded for this model; retrain it"
    model_names = [w for w in wanted if w in proxies.FROM_MODEL]
    if not computed and not model_names:
        raise UserError(f"none of the asked proxies can be computed for {model_rec['id']}: "
                        + "; ".join(f"{k} {v}" for k, v in skipped.items()))
    ds = artifacts.dataset_of(ws, model_rec) if model_names else None
    for i, name in enumerate(model_names):
        model = artifacts.load_model(ws, model_rec, device=device)

        def step(f, msg, i=i):
            progress((i + f) / len(model_names), msg)

        step(0.0, f"{name}…")
        start = time.perf_counter()
        if name == "ho_ret":  # at the batch size of the dataset's preset (the published 256; digits 64)
            batch = presets.settings(presets.default_for(model_rec.get("dataset", "")), "ho_ret").get(
                "batch_size", proxies.HOLDOUT_BATCH)
            values = proxies.holdout_retraining(model, ds, device, batch_size=batch, progress=step)
            params = {"lr": 0.1, "max_epochs": 30, "patience": 4, "holdout": "test split", "batch_size": batch}
        else:
            values = proxies.curvature(model, ds, device)
            params = {"h": 0.01, "variant": "final model"}
        if device.type == "cuda":
            torch.cuda.synchronize()
        computed.append((name, values, time.perf_counter() - start, device.type, params))
    progress(1.0, f"publishing {len(computed)} score sets")  # the last report: a cancel stops here at the latest
    records = [score_sets.publish(ws, model_rec, name, values, seconds, dev, params=params)
               for name, values, seconds, dev, params in computed]
    return records, skipped
