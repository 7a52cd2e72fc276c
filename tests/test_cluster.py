"""The Ray backend of exact memorization, on a local Ray instance with 2 CPUs: the same estimate
as the local backend, a killed worker's task retried, a killed driver resumed."""

import importlib.util
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_cli, snapshot
from explorer import commands, training
from explorer.memorization import estimator
from explorer.pipeline import checkpoints, memorize
from explorer.store import artifacts
from explorer.data import DatasetSpec
from explorer.errors import UserError
from explorer.memorization.estimator import ExactConfig
from explorer.store.workspace import Workspace

CPU = torch.device("cpu")
HAS_RAY = importlib.util.find_spec("ray") is not None
# One Ray instance per test process: every test that starts it runs on the same xdist worker.
pytestmark = pytest.mark.xdist_group("ray")
needs_ray = pytest.mark.skipif(not HAS_RAY, reason="Ray is not installed (pip install '.[ray]')")

# Chunks of 4 MLPs × 20 epochs take about a second each: long enough to be caught running.
CFG = ExactConfig(models=16, chunk=4, epochs=20, seed=3, engine="batched")  # auto measures locally only


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster")
    ws = Workspace(root / "ws")
    rec = checkpoints.train(ws, DatasetSpec(label_noise=0.05), "mlp", training.Recipe(epochs=20), CPU)
    pristine = Workspace(shutil.copytree(ws.path, root / "pristine"))  # the model, no exact scores yet
    local = artifacts.load_scores(ws, memorize.exact(ws, rec, CFG, CPU))  # the local backend's estimate
    return pristine, rec, local


@pytest.fixture(scope="module")
def ray_instance():
    import ray

    from explorer.pipeline.cluster import RayPool

    pool = RayPool()  # starts a local instance as a user's first `--backend ray` does, shipping the package
    yield pool
    ray.shutdown()


def copy_of(ws: Workspace, tmp_path: Path) -> Workspace:
    """A copy of the model's workspace, before any exact run."""
    return Workspace(shutil.copytree(ws.path, tmp_path / "copy"))


def assert_same_estimate(a, b):
    assert np.array_equal(a.arrays["correct"], b.arrays["correct"])
    assert np.array_equal(a.arrays["test_correct"], b.arrays["test_correct"])
    assert np.allclose(a.values, b.values, equal_nan=True)


@needs_ray
def test_ray_backend_gives_the_local_estimate(trained, ray_instance, tmp_path):
    ws, rec, local = trained
    ws = copy_of(ws, tmp_path)
    messages = []
    out = memorize.exact(ws, rec, CFG, CPU, lambda f, m: messages.append((f, m)), backend="ray")
    assert out["backend"] == "ray" and out["device"] == "cpu"
    assert out["params"]["run_key"] == local.record["params"]["run_key"]  # the same run, wherever it trained
    assert_same_estimate(artifacts.load_scores(ws, out), local)
    fractions = [f for f, _ in messages]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert not list((ws.path / "partial").glob("*"))


def _ray_task_pids(name: str = "ray::_train_chunk") -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cmdline").read_bytes().startswith(name.encode()):
                pids.append(int(proc.name))
        except OSError:  # the process ended while we looked
            continue
    return pids


@needs_ray
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds Ray's worker processes through /proc")
def test_a_worker_killed_mid_task_is_retried(trained, ray_instance, tmp_path):
    ws, rec, local = trained
    ws = copy_of(ws, tmp_path)
    killed, stop = [], threading.Event()

    def kill_first_running_task():
        while not stop.is_set() and not killed:
            for pid in _ray_task_pids():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                break
            time.sleep(0.01)

    killer = threading.Thread(target=kill_first_running_task)
    killer.start()
    try:
        out = memorize.exact(ws, rec, CFG, CPU, backend="ray")
    finally:
        stop.set()
        killer.join()
    assert killed, "no chunk task was seen running"
    assert_same_estimate(artifacts.load_scores(ws, out), local)


@needs_ray
def test_a_killed_driver_loses_only_the_chunks_in_flight(trained, ray_instance, tmp_path, monkeypatch):
    ws, rec, local = trained
    ws = copy_of(ws, tmp_path)
    folder = lambda: next((ws.path / "partial").glob("exact-*"))  # noqa: E731

    def dies_after_two_chunks(fraction, message):
        if len(list(folder().glob("chunk-*.npz"))) >= 2:
            raise KeyboardInterrupt  # as if the driver were stopped

    with pytest.raises(KeyboardInterrupt):
        memorize.exact(ws, rec, CFG, CPU, dies_after_two_chunks, backend="ray")
    assert not ws.find("scores", name="exact")
    kept = {p.name for p in folder().glob("chunk-*.npz")}
    assert 2 <= len(kept) < 4  # the chunks in flight when it died are lost

    written = []
    real_write = memorize.write_atomic
    monkeypatch.setattr(memorize, "write_atomic",
                        lambda path, data: (written.append(path.name), real_write(path, data)))
    out = memorize.exact(ws, rec, CFG, CPU, backend="ray")  # resumes
    chunks = {n for n in written if n.startswith("chunk-")}
    assert chunks and not chunks & kept and len(chunks | kept) == 4  # only the missing ones trained
    assert_same_estimate(artifacts.load_scores(ws, out), local)


@needs_ray
def test_a_failing_task_is_reported_by_its_cause(trained, ray_instance):
    from explorer import data
    from explorer.models import ArchError

    ds = data.load(DatasetSpec(label_noise=0.05))
    recipe = training.Recipe(epochs=1).as_meta()
    subs = estimator.subsets(ds.n_train, 0.7, 2, 0)
    # A user error raised in the worker stays that error: one line, exit 2 from the CLI.
    with pytest.raises(ArchError, match="batch norm"):
        list(ray_instance.run(ds, "resnet18", recipe, "fused", [(0, subs, [0, 1])], lambda running: None))
    # A crash in the task names its cause, not Ray's process title.
    with pytest.raises(RuntimeError, match=r"chunk 0 failed on the cluster: IndexError"):
        list(ray_instance.run(ds, "mlp", recipe, "batched", [(0, subs + 10**6, [0, 1])], lambda running: None))


@needs_ray
def test_cancelling_a_ray_job_stops_it_cleanly_and_it_resumes(trained, tmp_path, monkeypatch):
    """The app cancels a job with SIGTERM; Ray must not turn that into an exit mid-write."""
    from explorer.store import jobs

    ws, rec, _ = trained
    ws = copy_of(ws, tmp_path)
    cfg = ExactConfig(models=64, chunk=4, epochs=20, seed=5)
    job_id = jobs.submit(ws, commands.memorize(rec["id"], cfg, "ray"), "exact on ray")
    deadline = time.monotonic() + 120
    while not list((ws.path / "partial").glob("exact-*/chunk-*.npz")):
        assert time.monotonic() < deadline and jobs.get(ws, job_id)["state"] in jobs.ACTIVE, jobs.get(ws, job_id)
        time.sleep(0.02)
    jobs.cancel(ws, job_id)
    assert jobs.wait(ws, job_id, timeout=60)["state"] == "cancelled"
    assert not ws.find("scores", name="exact")
    kept = {p.name for p in ws.path.glob("partial/exact-*/chunk-*.npz")}
    assert 0 < len(kept) < 16

    written = []
    real_write = memorize.write_atomic
    monkeypatch.setattr(memorize, "write_atomic",
                        lambda path, data: (written.append(path.name), real_write(path, data)))
    out = memorize.exact(ws, rec, cfg, CPU)  # resumed here, locally, from the chunks the job stored
    assert out["models"] == 64 and not kept & set(written)


def test_ray_is_imported_only_when_asked_for():
    import subprocess

    probe = "import sys, explorer.cli, explorer.pipeline.memorize; print('ray' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr


def test_ray_backend_without_ray_installed_is_one_line_and_writes_nothing(trained, monkeypatch, tmp_path):
    ws, rec, _ = trained
    ws = copy_of(ws, tmp_path)
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError
    before = snapshot(ws)
    with pytest.raises(UserError, match=r"pip install .*\[ray\]"):
        memorize.exact(ws, rec, CFG, CPU, backend="ray")
    assert snapshot(ws) == before


@pytest.mark.parametrize("args, message", [
    (["--address", "auto"], "use it with --backend ray"),
    (["--backend", "spark"], "unknown backend"),
    (["--backend", "ray", "--address", "not-an-address"], "host:port"),
    (["--backend", "ray", "--address", "127.0.0.1:1"], "nothing answers"),
    (["--backend", "ray", "--device", "cpu"], "leave out --device"),
])
def test_cli_refuses_bad_backend_options_and_writes_nothing(trained, tmp_path, args, message):
    if "127.0.0.1:1" in args and not HAS_RAY:
        pytest.skip("needs Ray to get as far as the address")
    ws, rec, _ = trained
    ws = copy_of(ws, tmp_path)
    before = snapshot(ws)
    done = run_cli("memorize", rec["id"], "--exact", "--models", "4", *args, workspace=ws.path)
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert snapshot(ws) == before
