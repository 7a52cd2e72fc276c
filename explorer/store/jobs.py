"""Background jobs: CLI commands run as subprocesses that report into their row of the catalog.

`submit` starts `python -m explorer <argv> --job ID`; inside that process `run` marks the row
running, forwards progress, and finishes it as succeeded (with the id of what it made), failed
(with the error) or cancelled (on SIGTERM, before anything was published). `refresh` turns rows
whose process has vanished into failures carrying the tail of their log.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from ..errors import first_line
from .workspace import Workspace, WorkspaceError

ACTIVE = ("queued", "running")
PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the checkout holding explorer/

# Popen handles of the jobs this process started, so finished children get reaped (a zombie
# would otherwise look alive to `os.kill(pid, 0)`).
_children: dict[str, subprocess.Popen] = {}


class Cancelled(BaseException):
    """Raised inside a job at its first progress report after SIGTERM; BaseException so no
    `except Exception` eats it."""


def _row(row) -> dict:
    job = dict(row)
    job["argv"] = json.loads(job["argv"])
    return {"kind": "job", **job}


def _set(ws: Workspace, job_id: str, **fields) -> None:
    cols = ", ".join(f"{k} = ?" for k in fields)
    with ws.connect(write=True) as con:
        con.execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*fields.values(), job_id))


def get(ws: Workspace, job_id: str) -> dict:
    with ws.connect() as con:
        row = con.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        raise WorkspaceError(f"no job with id {job_id!r} in {ws.path}")
    return _row(row)


def list_jobs(ws: Workspace, active_only: bool = False) -> list[dict]:
    refresh(ws)
    query = "SELECT * FROM jobs"
    if active_only:
        query += " WHERE state IN ('queued', 'running')"
    with ws.connect() as con:
        return [_row(r) for r in con.execute(query + " ORDER BY created DESC").fetchall()]


def submit(ws: Workspace, argv: list[str], title: str) -> str:
    """Start `python -m explorer *argv` in the background; returns the job id."""
    job_id = ws.new_id("job")
    log_path = ws.logs / f"{job_id}.log"
    with ws.connect(write=True) as con:
        con.execute(
            "INSERT INTO jobs (id, argv, title, state, message, log_path, created) VALUES (?, ?, ?, 'queued', 'starting', ?, ?)",
            (job_id, json.dumps(argv), title, str(log_path), time.time()),
        )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "explorer", *argv, "--workspace", str(ws.path.resolve()), "--job", job_id]
    try:
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
            )
    except OSError as err:
        _set(ws, job_id, state="failed", message=f"could not start: {err}", finished=time.time())
        return job_id
    _children[job_id] = proc
    _set(ws, job_id, pid=proc.pid)
    return job_id


def _alive(pid: int | None, job_id: str) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path(f"/proc/{pid}")
    if proc.exists():  # Linux: rule out zombies and a recycled pid
        try:
            state = proc.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = proc.joinpath("cmdline").read_bytes()
        except OSError:
            return False
        return state != "Z" and job_id.encode() in cmdline
    return True


def log_tail(job: dict, lines: int = 20) -> str:
    try:
        text = Path(job["log_path"]).read_text(errors="replace")
    except (OSError, TypeError):
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def refresh(ws: Workspace) -> None:
    """Mark active jobs whose process is gone as failed, with the last line of their log."""
    for proc in list(_children.values()):
        proc.poll()
    with ws.connect() as con:
        rows = [_row(r) for r in con.execute("SELECT * FROM jobs WHERE state IN ('queued', 'running')")]
    for job in rows:
        if job["pid"] and not _alive(job["pid"], job["id"]):
            # Re-read: the job may have finished between the query and the liveness check.
            if get(ws, job["id"])["state"] in ACTIVE:
                tail = log_tail(job, 1) or "no output"
                _set(ws, job["id"], state="failed", message=f"process died: {tail}", finished=time.time())


def cancel(ws: Workspace, job_id: str) -> None:
    job = get(ws, job_id)
    if job["state"] not in ACTIVE:
        return
    if _alive(job["pid"], job_id):
        os.kill(job["pid"], signal.SIGTERM)
        _set(ws, job_id, message="cancelling…")
    else:
        _set(ws, job_id, state="cancelled", message="cancelled", finished=time.time())


def wait(ws: Workspace, job_id: str, timeout: float = 600, poll: float = 0.2) -> dict:
    """Block until the job leaves the active states (for scripts and tests)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        refresh(ws)
        job = get(ws, job_id)
        if job["state"] not in ACTIVE:
            return job
        time.sleep(poll)
    raise TimeoutError(f"job {job_id} still {job['state']} after {timeout:.0f} s")


def wait_first_line(ws: Workspace, job_id: str, timeout: float = 3.0, poll: float = 0.05) -> dict:
    """Wait (at most `timeout`) until the job's process has said it started, or the job ended: the
    page that launched it then shows its first line at once, not at its first poll."""
    deadline = time.monotonic() + timeout
    job = get(ws, job_id)
    while job["state"] in ACTIVE and job["message"] == "starting" and time.monotonic() < deadline:
        time.sleep(poll)
        job = get(ws, job_id)
    return job


def announce(argv: list[str]) -> None:
    """First words of a job's own process (`... --workspace PATH --job ID`), written before the slow
    imports; a plain command line, or a job row that is gone, is left alone."""
    def value(flag: str) -> str | None:
        return argv[argv.index(flag) + 1] if flag in argv[:-1] else None

    job_id, path = value("--job"), value("--workspace")
    if not job_id or not path:
        return
    try:
        ws = Workspace(path, create=False)
        if get(ws, job_id)["state"] == "queued":
            _set(ws, job_id, message="started: loading PyTorch")
    except (WorkspaceError, OSError, sqlite3.Error):
        pass  # the job itself reports the problem once the CLI runs


class Reporter:
    """The progress callback handed to library code inside a job; writes at most twice a second,
    and is where a requested cancel takes effect."""

    def __init__(self, ws: Workspace, job_id: str, min_interval: float = 0.5):
        self.ws, self.job_id, self.min_interval = ws, job_id, min_interval
        self._last = 0.0
        self.cancel_requested = False

    def __call__(self, fraction: float, message: str) -> None:
        if self.cancel_requested:
            raise Cancelled()
        now = time.monotonic()
        if now - self._last >= self.min_interval or fraction >= 1:
            self._last = now
            _set(self.ws, self.job_id, progress=max(0.0, min(1.0, fraction)), message=message)
        print(f"[{fraction:6.1%}] {message}", flush=True)


def run(ws: Workspace, job_id: str, work: Callable[[Reporter], dict]) -> dict:
    """Run `work` as job `job_id`: `work` gets a progress callback and returns the record it made.

    SIGTERM only raises a flag; the work stops at its next progress report. Library code reports
    progress while it computes and never after it has published, so a cancel can interrupt the
    computation but never a write, and a job that got as far as publishing ends as succeeded."""
    reporter = Reporter(ws, job_id)

    def on_sigterm(signum, frame):
        reporter.cancel_requested = True

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    _set(ws, job_id, state="running", pid=os.getpid(), started=time.time(), message="running")
    try:
        record = work(reporter)
    except Cancelled:
        _set(ws, job_id, state="cancelled", message="cancelled", finished=time.time())
        raise
    except BaseException as err:
        message = first_line(err)
        _set(ws, job_id, state="failed", message=message, finished=time.time())
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    made = record.get("ids") or [record.get("id")]
    message = f"done → {made[0]}" if len(made) == 1 else f"done → {len(made)} records ({made[0]}, …)"
    _set(ws, job_id, state="succeeded", progress=1.0, message=message, result_id=record.get("id"), finished=time.time())
    return record
