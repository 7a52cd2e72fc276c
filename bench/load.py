"""Jobs under load: 20 jobs (train, memorize, unlearn, evaluate) submitted at once into one
workspace, half through the app's job API and half from the command line (`python -m explorer
submit`, each its own process), against the same 20 jobs one after another.

Each mode gets its own workspace, prepared the same way before the clock starts (a model and a
forget set for the jobs that need one), so neither reuses the other's oracles or chunks. The
queue runs `jobs.max_jobs` at once (default: one per core while free memory allows), each on its
share of the cores. Reported: wall seconds of both and their ratio (target ≤ 1.2), jobs that did
not succeed (target 0), SQLite's integrity check, and the peak memory of the jobs' processes
together (sampled every 0.2 s) against the cap times one job's peak (target ≤ 1), and apart from
it the peak of the `submit` processes themselves (each loads only the queue's commands, not
PyTorch: explorer/queue_cli.py)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from explorer import training
from explorer.data import DatasetSpec
from explorer.pipeline import checkpoints, forget_sets
from explorer.runtime import devices
from explorer.store import jobs
from explorer.store.workspace import Workspace


def _workspace(root: Path) -> tuple[Workspace, list[tuple[list[str], str]]]:
    ws = Workspace(root / "ws")
    model = checkpoints.train(ws, DatasetSpec(label_noise=0.05), "mlp", training.default_for("mlp", "digits"),
                              devices.resolve("cpu"))
    fs = forget_sets.create(ws, model, "random", size=30, seed=0)
    m, f = model["id"], fs["id"]
    plan = [(["train", "--arch", "mlp", "--epochs", "30", "--seed", str(i), "--device", "cpu"], f"train {i}")
            for i in range(8)]
    plan += [(["memorize", m, "--exact", "--models", "16", "--seed", str(i), "--device", "cpu"], f"memorize {i}")
             for i in range(4)]
    plan += [(["unlearn", m, "--forget", f, "--method", name, "--device", "cpu"], f"unlearn {name}")
             for name in ("finetune", "neggrad_plus", "salun", "l1_sparse")]
    plan += [(["evaluate", m, "--forget", f, "--method", name, "--models", "4", "--device", "cpu"], f"evaluate {name}")
             for name in ("finetune", "neggrad_plus", "salun", "none")]
    return ws, plan


def _rss_of(marker: str, jobs_only: bool) -> int:
    """Resident bytes of every process whose command line names `marker` (one workspace): its
    jobs (`--job`), or the processes submitting to it (`submit`)."""
    total = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            if marker.encode() not in cmdline or (b"--job" in cmdline) != jobs_only:
                continue
            for line in (proc / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def _submit(ws: Workspace, argv: list[str], title: str, cli: bool) -> str:
    """Queue a job as the app does (the job API) or as a script does (`submit`, its own process)."""
    if not cli:
        return jobs.submit(ws, argv, title)
    out = subprocess.run([sys.executable, "-m", "explorer", "submit", "--workspace", str(ws.path), "--title", title,
                          "--json", "--", *argv], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    return json.loads(out.stdout.strip().splitlines()[-1])["id"]


def _run(ws: Workspace, plan, together: bool) -> dict:
    peak, clients, singles, stop = [0], [0], [], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_of(str(ws.path.resolve()), jobs_only=True))
            clients[0] = max(clients[0], _rss_of(str(ws.path), jobs_only=False))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    if together:  # everyone at once: the command-line half in parallel processes
        with ThreadPoolExecutor(len(plan)) as pool:
            ids = list(pool.map(lambda k: _submit(ws, *plan[k], cli=k % 2 == 1), range(len(plan))))
        done = [jobs.wait(ws, i, timeout=3600, poll=0.5) for i in ids]
    else:
        done = []
        for k, (argv, title) in enumerate(plan):
            before = peak[0]
            peak[0] = 0
            done.append(jobs.wait(ws, _submit(ws, argv, title, cli=k % 2 == 1), timeout=3600, poll=0.2))
            singles.append(peak[0])
            peak[0] = max(before, peak[0])
    seconds = time.perf_counter() - start
    stop.set()
    sampler.join()
    with sqlite3.connect(ws.path / "catalog.sqlite") as con:
        integrity = con.execute("PRAGMA integrity_check").fetchone()[0]
    failed = [f"{j['title']}: {j['state']} ({j['message']})" for j in done if j["state"] != "succeeded"]
    return {"seconds": seconds, "failed": failed, "integrity": integrity, "peak": peak[0], "singles": singles,
            "clients": clients[0]}


def run() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["EXPLORER_MAX_JOBS"] = "1"  # one after another: each job alone, on every core
        try:
            ws, plan = _workspace(tmp / "alone")
            alone = _run(ws, plan, together=False)
        finally:
            del os.environ["EXPLORER_MAX_JOBS"]
        ws, plan = _workspace(tmp / "together")
        cap = jobs.max_jobs(ws)
        together = _run(ws, plan, together=True)
    one = max(alone["singles"])
    return {
        "load.jobs": f"{len(plan)} (8 train, 4 memorize, 4 unlearn, 4 evaluate), half through the job API and half "
                     f"by `python -m explorer submit`, cap {cap} at once",
        "load.seconds_one_after_another": round(alone["seconds"], 1),
        "load.seconds_submitted_together": round(together["seconds"], 1),
        "load.together_vs_one_after_another": round(together["seconds"] / alone["seconds"], 2),
        "load.target_met(<=1.2)": together["seconds"] / alone["seconds"] <= 1.2,
        "load.not_succeeded": "; ".join(together["failed"] + alone["failed"]) or 0,
        "load.sqlite_integrity": together["integrity"],
        "load.peak_memory_gib[together, one job alone at most]": f"{together['peak'] / 2**30:.2f}, {one / 2**30:.2f}",
        "load.peak_vs_cap_times_one_job": round(together["peak"] / (cap * one), 2),
        "load.peak_memory_gib_of_the_submitting_processes[together]": f"{together['clients'] / 2**30:.2f}",
    }
