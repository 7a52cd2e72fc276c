"""Exact memorization: Feldman & Zhang's subsampled estimator (METHODS.md §1).

    mem(i) = P[h(x_i) = y_i | i ∈ S] − P[h(x_i) = y_i | i ∉ S]

estimated from K models trained from scratch on random subsets S_k of a fraction r of the
training set. Models are trained in chunks; each chunk's correctness is saved as soon as it is
done, so an interrupted run resumes where it stopped and, the subsets and seeds being fixed by
the seed, ends with the same estimate as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from . import checkpoints, ensembles, scores, training
from .errors import UserError
from .training import Progress, _no_progress
from .workspace import Workspace, write_atomic


@dataclass
class ExactConfig:
    models: int = 256
    ratio: float = 0.7
    epochs: int | None = None  # None: the model's own recipe
    seed: int = 0
    chunk: int | None = None  # models per saved chunk; None: 32 batched, 8 one at a time
    engine: str = "auto"  # auto, batched or sequential

    def check(self) -> None:
        if self.models < 2:
            raise UserError("--models must be at least 2")
        if not 0 < self.ratio < 1:
            raise UserError(f"--ratio must be between 0 and 1, got {self.ratio}")
        if self.epochs is not None and self.epochs < 1:
            raise UserError("--epochs must be at least 1")
        if self.chunk is not None and self.chunk < 1:
            raise UserError("--chunk must be at least 1")
        if self.engine not in ("auto", "batched", "sequential"):
            raise UserError(f"unknown engine {self.engine!r}; choose auto, batched or sequential")


def subsets(n: int, ratio: float, k: int, seed: int) -> np.ndarray:
    """(k, ⌊ratio·n⌋) sample ids, each row a uniform subset without replacement."""
    rng = np.random.default_rng(seed)
    m = int(ratio * n)
    return np.stack([np.sort(rng.permutation(n)[:m]) for _ in range(k)])


def masks_of(subs: np.ndarray, n: int) -> np.ndarray:
    masks = np.zeros((len(subs), n), dtype=bool)
    np.put_along_axis(masks, subs, True, axis=1)
    return masks


def estimate(masks: np.ndarray, correct: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sample memorization, its standard error, the held-out accuracy (a one-ratio C-score)
    and the in/out counts, from (K, n) membership masks and correctness. NaN where a sample was
    never held out (or never in)."""
    masks, correct = masks.astype(bool), correct.astype(np.float64)
    n_in, n_out = masks.sum(0), (~masks).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        p_in = (correct * masks).sum(0) / n_in
        p_out = (correct * ~masks).sum(0) / n_out
        stderr = np.sqrt(p_in * (1 - p_in) / n_in + p_out * (1 - p_out) / n_out)
    return {"values": p_in - p_out, "stderr": stderr, "cscore": p_out, "n_in": n_in, "n_out": n_out}


def convergence(masks: np.ndarray, correct: np.ndarray, step: int) -> list[dict]:
    """How the estimate settles as models are added: after every `step` models, the mean
    standard error and the mean absolute change since the previous point."""
    def nanmean(a):  # NaN, not a warning, while no sample has been held out yet
        finite = a[np.isfinite(a)]
        return float(finite.mean()) if len(finite) else float("nan")

    rows, previous = [], None
    for k in range(step, len(masks) + 1, step):
        est = estimate(masks[:k], correct[:k])
        change = nanmean(np.abs(est["values"] - previous)) if previous is not None else None
        rows.append({"models": k, "mean_stderr": nanmean(est["stderr"]), "mean_abs_change": change,
                     "undefined": int(np.isnan(est["values"]).sum())})
        previous = est["values"]
    return rows


def _partial_dir(ws: Workspace, model_id: str, cfg: ExactConfig, recipe: training.Recipe, engine: str) -> Path:
    key = json.dumps({"cfg": asdict(cfg), "recipe": recipe.as_meta(), "engine": engine}, sort_keys=True)
    return ws.path / "partial" / f"exact-{model_id}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def _recipe(model_rec: dict, cfg: ExactConfig) -> training.Recipe:
    base = dict(model_rec.get("recipe") or training.Recipe().as_meta())
    if cfg.epochs is not None:
        base["epochs"] = cfg.epochs
    return training.Recipe(**base)


def _load_chunks(folder: Path) -> list[dict]:
    chunks = []
    for path in sorted(folder.glob("chunk-*.npz")):
        with np.load(path) as z:
            chunks.append({k: z[k] for k in z.files})
    return chunks


def in_progress(ws: Workspace, model_id: str) -> list[dict]:
    """Exact runs of this model that have saved chunks but not finished: their config and the
    correctness gathered so far (for a live view of the estimate converging)."""
    runs = []
    for folder in sorted((ws.path / "partial").glob(f"exact-{model_id}-*")):
        manifest = folder / "manifest.json"
        chunks = _load_chunks(folder)
        if not manifest.exists() or not chunks:
            continue
        info = json.loads(manifest.read_text())
        cfg = ExactConfig(**info["cfg"])
        train = np.concatenate([c["train"] for c in chunks])
        subs = subsets(info["n"], cfg.ratio, cfg.models, cfg.seed)[: len(train)]
        runs.append({"cfg": cfg, "models": cfg.models, "n": info["n"], "engine": info["engine"], "done": len(train),
                     "masks": masks_of(subs, info["n"]), "correct": train})
    return runs


def cli_args(model_id: str, cfg: ExactConfig) -> list[str]:
    """The `memorize` command line that runs (or resumes) this configuration."""
    argv = ["memorize", model_id, "--exact", "--models", str(cfg.models), "--ratio", str(cfg.ratio),
            "--seed", str(cfg.seed), "--engine", cfg.engine]
    argv += ["--epochs", str(cfg.epochs)] if cfg.epochs is not None else []
    return argv + (["--chunk", str(cfg.chunk)] if cfg.chunk is not None else [])


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h {seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m {seconds % 60:02d}s"


def exact(ws: Workspace, model_rec: dict, cfg: ExactConfig, device: torch.device,
          progress: Progress = _no_progress) -> dict:
    """Run (or resume) the estimator and publish the score set named "exact"."""
    cfg.check()
    ds = checkpoints.dataset_of(ws, model_rec)
    recipe = _recipe(model_rec, cfg)
    engine = ensembles.engine_for(model_rec["arch"], device) if cfg.engine == "auto" else cfg.engine
    chunk = cfg.chunk or (32 if engine == "batched" else 8)
    folder = _partial_dir(ws, model_rec["id"], cfg, recipe, engine)
    folder.mkdir(parents=True, exist_ok=True)
    n = ds.n_train
    write_atomic(folder / "manifest.json", json.dumps({"cfg": asdict(cfg), "n": n, "engine": engine}).encode())

    subs = subsets(n, cfg.ratio, cfg.models, cfg.seed)
    seeds = [cfg.seed * 1_000_003 + k for k in range(cfg.models)]
    bounds = [(lo, min(lo + chunk, cfg.models)) for lo in range(0, cfg.models, chunk)]
    start, trained_here = time.perf_counter(), 0
    for c, (lo, hi) in enumerate(bounds):
        path = folder / f"chunk-{c:05d}.npz"
        if path.exists():  # done by an earlier, interrupted run
            continue

        def step(f, msg, lo=lo, hi=hi):
            done_here = trained_here + f * (hi - lo)
            rate = (time.perf_counter() - start) / done_here if done_here else None
            left = (cfg.models - lo - f * (hi - lo)) * rate if rate else None
            eta = f" · ETA {_clock(left)}" if left is not None else ""
            progress((lo + f * (hi - lo)) / cfg.models, f"models {lo + int(f * (hi - lo))}/{cfg.models}{eta}")

        t0 = time.perf_counter()
        train_c, test_c = ensembles.train_correctness(model_rec["arch"], ds, subs[lo:hi], seeds[lo:hi], recipe,
                                                      device, engine, step)
        seconds = time.perf_counter() - t0
        write_atomic(path, scores._npz(train=train_c.numpy(), test=test_c.numpy(), seconds=np.float64(seconds)))
        trained_here += hi - lo

    chunks = _load_chunks(folder)
    correct = np.concatenate([c["train"] for c in chunks])
    masks = masks_of(subs, n)
    est = estimate(masks, correct)
    never = int((est["n_out"] == 0).sum())
    rec = scores.publish(
        ws, model_rec, "exact", est["values"],
        seconds=float(sum(c["seconds"] for c in chunks)), device=device.type,
        params={**asdict(cfg), "epochs": recipe.epochs, "engine": engine, "chunk": chunk},
        arrays={k: est[k] for k in ("stderr", "cscore", "n_in", "n_out")}
        | {"masks": masks, "correct": correct, "test_correct": np.concatenate([c["test"] for c in chunks])},
        models=cfg.models, never_held_out=never,
    )
    shutil.rmtree(folder, ignore_errors=True)
    progress(1.0, f"{cfg.models} models · {never} samples never held out")
    return rec
