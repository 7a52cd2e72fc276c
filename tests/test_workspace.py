import multiprocessing as mp
import sys

import pytest

from explorer.store import jobs, workspace
from explorer.store.workspace import Workspace, WorkspaceError


def test_put_get_find_round_trip(ws):
    rec = ws.put("model", {"arch": "cnn", "dataset": "digits"}, files={"weights.safetensors": b"abc"})
    assert rec["id"].startswith("m-") and rec["kind"] == "model"
    assert ws.get(rec["id"])["arch"] == "cnn"
    assert ws.read(rec, "weights.safetensors").read_bytes() == b"abc"
    assert [r["id"] for r in ws.find("model", arch="cnn")] == [rec["id"]]
    assert ws.find("model", arch="mlp") == []
    with pytest.raises(WorkspaceError, match="no forget set"):
        ws.get(rec["id"], "forget_set")


def test_failed_publish_leaves_no_record(ws, monkeypatch):
    real = workspace.write_atomic
    calls = []

    def flaky(path, data):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        real(path, data)

    monkeypatch.setattr(workspace, "write_atomic", flaky)
    with pytest.raises(OSError):
        ws.put("model", {"arch": "cnn"}, files={"a.bin": b"1", "b.bin": b"2"})
    assert ws.find("model") == []
    assert list(ws.artifacts.rglob("*.bin")) == []  # the file written before the failure is gone too


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    target = tmp_path / "f.bin"
    workspace.write_atomic(target, b"one")
    workspace.write_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_schema_version_and_migration_keeps_records(tmp_path, monkeypatch):
    ws = Workspace(tmp_path)
    assert ws.schema_version() == len(workspace.MIGRATIONS)
    rec = ws.put("dataset", {"name": "digits"})
    monkeypatch.setattr(workspace, "MIGRATIONS", [*workspace.MIGRATIONS, "ALTER TABLE records ADD COLUMN note TEXT"])
    upgraded = Workspace(tmp_path)
    assert upgraded.schema_version() == len(workspace.MIGRATIONS)
    assert upgraded.get(rec["id"])["name"] == "digits"


def test_newer_workspace_is_refused(tmp_path, monkeypatch):
    Workspace(tmp_path)
    with Workspace(tmp_path).connect(write=True) as con:
        con.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(WorkspaceError, match="newer"):
        Workspace(tmp_path)


def _writer(path, barrier, tag, count):
    ws = Workspace(path)
    barrier.wait()
    for i in range(count):
        ws.put("scores", {"writer": tag, "i": i}, files={"values.bin": bytes([i % 256])})
        with ws.connect(write=True) as con:
            con.execute(
                "INSERT INTO jobs (id, argv, title, state, created) VALUES (?, '[]', 't', 'running', 0)",
                (f"j-{tag}-{i}",),
            )


def test_two_processes_writing_at_once_both_land(tmp_path, monkeypatch):
    import types

    # A spawned child first re-runs the parent's __main__; in a test worker that has run AppTest,
    # that is app.py, which cannot run outside Streamlit. The child needs only this module.
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    Workspace(tmp_path)
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(tmp_path, barrier, tag, 40)) for tag in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    ws = Workspace(tmp_path)
    assert len(ws.find("scores", writer="a")) == 40 and len(ws.find("scores", writer="b")) == 40
    assert len(jobs.list_jobs(ws)) == 80


def test_a_full_disk_during_a_publish_is_one_line_and_leaves_nothing(ws, monkeypatch):
    import errno

    real = workspace.write_atomic

    def full(path, data):
        if path.name.endswith(".b.bin"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(workspace, "write_atomic", full)
    with pytest.raises(WorkspaceError, match="is full: nothing of this model was written"):
        ws.put("model", {"arch": "cnn"}, files={"a.bin": b"1", "b.bin": b"2"})
    assert ws.find("model") == [] and list(ws.artifacts.rglob("*.bin")) == []


def test_a_damaged_or_missing_artifact_is_one_line_naming_it_and_the_rest_still_works(tmp_path):
    """A truncated weights file and a deleted one: each command that needs it fails in one line
    naming the file, writing nothing; another model in the same workspace unlearns as usual."""
    from conftest import run_cli, snapshot
    from explorer import training
    from explorer.data import DatasetSpec
    from explorer.pipeline import checkpoints, forget_sets
    from explorer.runtime import devices

    ws = workspace.Workspace(tmp_path / "ws")
    cpu = devices.resolve("cpu")
    damaged, deleted, fine = (checkpoints.train(ws, DatasetSpec(), "mlp", training.Recipe(epochs=1, seed=s), cpu)
                              for s in range(3))
    fs = forget_sets.create(ws, fine, "random", size=10)
    weights = ws.artifact("model", damaged["id"], "weights.safetensors")
    weights.write_bytes(weights.read_bytes()[:100])
    ws.artifact("model", deleted["id"], "weights.safetensors").unlink()
    before = snapshot(ws)
    for model, says in ((damaged, "cannot be read"), (deleted, "is missing")):
        out = run_cli("unlearn", model["id"], "--forget", fs["id"], "--method", "finetune", workspace=ws.path)
        assert out.returncode == 2, out.stderr
        [line] = out.stderr.strip().splitlines()
        assert says in line and f"{model['id']}" in line and "weights.safetensors" in line
    assert snapshot(ws) == before
    ok = run_cli("unlearn", fine["id"], "--forget", fs["id"], "--method", "finetune", "--params", '{"epochs": 1}',
                 workspace=ws.path)
    assert ok.returncode == 0, ok.stderr
