"""Exact memorization on the Ray backend against the local one, on this machine: what fanning
chunks out as Ray tasks costs or gains (start-up, shipping the data, one thread per task), and
the throughput in sample-passes per second that the README's cost model divides by."""

import importlib.util
import shutil
import tempfile
import time

import numpy as np
import torch

from explorer import training
from explorer.memorization import estimator
from explorer.pipeline import checkpoints, memorize
from explorer.store import artifacts
from explorer.data import DatasetSpec
from explorer.memorization.estimator import ExactConfig
from explorer.store.workspace import Workspace


def run() -> dict:
    if importlib.util.find_spec("ray") is None:
        return {"cluster": "skipped: Ray is not installed (pip install '.[ray]')"}
    import ray

    cpu = torch.device("cpu")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(f"{tmp}/ws")
        model = checkpoints.train(ws, DatasetSpec(label_noise=0.05), "mlp", training.Recipe(epochs=30), cpu)
        copy = Workspace(shutil.copytree(ws.path, f"{tmp}/copy"))
        cfg = ExactConfig(models=128, chunk=16, seed=1)
        n = artifacts.dataset_of(ws, model).n_train
        passes = estimator.sample_passes(cfg.models, cfg.ratio, model["epochs"], n)

        start = time.perf_counter()
        local = memorize.exact(ws, model, cfg, cpu)
        local_s = time.perf_counter() - start

        start = time.perf_counter()
        ray.init(include_dashboard=False, log_to_driver=False, logging_level="WARNING")
        init_s = time.perf_counter() - start
        remote = memorize.exact(copy, model, cfg, cpu, backend="ray")
        ray_s = time.perf_counter() - start - init_s
        ray.shutdown()
        same = np.array_equal(artifacts.load_scores(ws, local).arrays["correct"], artifacts.load_scores(copy, remote).arrays["correct"])

    out["exact_mlp_128_models_local_seconds"] = round(local_s, 1)
    out["exact_mlp_128_models_ray_seconds (after start-up)"] = round(ray_s, 1)
    out["ray_start_seconds"] = round(init_s, 1)
    out["ray_over_local_wall_ratio"] = round(ray_s / local_s, 2)
    out["local_sample_passes_per_second[mlp, cpu, batched]"] = f"{passes / local['seconds']:.3g}"
    out["ray_same_estimate_as_local"] = bool(same)
    return out
