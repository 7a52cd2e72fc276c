"""Shared fixtures: fresh workspaces, and one populated workspace built once per test process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from explorer import training
from explorer.pipeline import checkpoints, forget_sets, runs
from explorer.runtime import devices
from explorer.data import DatasetSpec
from explorer.store.workspace import Workspace

ROOT = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")

torch.set_num_threads(1)  # tests run two processes on two cores


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return Workspace(tmp_path / "ws")


@pytest.fixture(scope="session")
def populated(tmp_path_factory) -> dict:
    """A workspace with a model trained on 5% flipped labels (with dynamics), the flipped samples
    as a forget set (the model memorized them; a model that never saw them cannot fit them), and
    a finetune run on it."""
    ws = Workspace(tmp_path_factory.mktemp("populated") / "ws")
    model = checkpoints.train(ws, DatasetSpec(label_noise=0.05), "mlp", training.default_for("mlp", "digits"), CPU)
    flipped = ws.get(model["dataset_id"], "dataset")["flipped"]
    fs = forget_sets.create(ws, model, "ids", ids=flipped, name="flipped labels")
    run = runs.unlearn(ws, model, fs, "finetune", {"epochs": 2}, CPU)
    return {"ws": ws, "model": model, "forget_set": fs, "run": run}


def snapshot(ws: Workspace) -> tuple:
    """Everything a command could have written: records, jobs and artifact files."""
    with ws.connect() as con:
        records = con.execute("SELECT id, meta FROM records ORDER BY id").fetchall()
        jobs = con.execute("SELECT id, state FROM jobs ORDER BY id").fetchall()
    files = sorted(str(p.relative_to(ws.path)) for p in ws.artifacts.rglob("*")) if ws.artifacts.exists() else []
    return [tuple(r) for r in records], [tuple(j) for j in jobs], files


def run_cli(*args: str, workspace: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m explorer …` in a real subprocess."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "explorer", *args]
    if workspace is not None:
        cmd += ["--workspace", str(workspace)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)


def last_json(stdout: str):
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture
def cpu():
    return devices.resolve("cpu")
