"""Background jobs: CLI commands run as subprocesses that report into their row of the catalog.

`submit` queues `python -m explorer <argv> --job ID`, and `dispatch` starts queued jobs, oldest
first, while fewer than `max_jobs` run: at once when a slot is free, else when one frees. Every
job's own process dispatches as it ends (whatever way it ends), and so does every look at the
jobs (`refresh`: a page's poll, `jobs` on the command line, the app server as it starts), so the
line moves on with no page open and after a restart, and a job killed outright frees its slot at
the next look. The claim on a slot is one write transaction: two processes dispatching at once
never exceed the cap. Each job gets its share of the cores (`EXPLORER_THREADS`: torch threads).

Inside a job's process `run` marks the row running, forwards progress, and finishes it as
succeeded (with the id of what it made), failed (with the error) or cancelled (on SIGTERM,
before anything was published). `refresh` turns rows whose process has vanished into failures
carrying the tail of their log.
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
JOB_MEMORY = 1.5 * 2**30  # what one job may take: the default cap leaves this much free memory per job
START_TIMEOUT = 60.0  # a dispatched job whose process never came up in this long failed to start
CONFIG = "config.json"  # the workspace's settings file (`max_jobs`)

# Popen handles of the jobs this process started, so finished children get reaped (a zombie
# would otherwise look alive to `os.kill(pid, 0)`).
_children: dict[str, subprocess.Popen] = {}


class Cancelled(BaseException):
    """Raised inside a job at its first progress report after SIGTERM; BaseException so no
    `except Exception` eats it."""


def _row(row, place: int | None = None) -> dict:
    """A job as the CLI and the pages see it; `place` is its place in line while it waits."""
    job = dict(row)
    job["argv"] = json.loads(job["argv"])
    job["place"] = place
    if place is not None:
        job["message"] = f"queued: {_ordinal(place)} in line"
    return {"kind": "job", **job}


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _places(con) -> dict[str, int]:
    """Each waiting job's place in line, 1 for the next to start."""
    waiting = con.execute("SELECT id FROM jobs WHERE state = 'queued' AND dispatched IS NULL ORDER BY created, id")
    return {row[0]: i for i, row in enumerate(waiting.fetchall(), start=1)}


def _set(ws: Workspace, job_id: str, **fields) -> None:
    cols = ", ".join(f"{k} = ?" for k in fields)
    with ws.connect(write=True) as con:
        con.execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*fields.values(), job_id))


def get(ws: Workspace, job_id: str) -> dict:
    with ws.connect() as con:
        row = con.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        place = _places(con).get(job_id) if row is not None and row["dispatched"] is None else None
    if row is None:
        raise WorkspaceError(f"no job with id {job_id!r} in {ws.path}")
    return _row(row, place)


def list_jobs(ws: Workspace, active_only: bool = False) -> list[dict]:
    refresh(ws)
    query = "SELECT * FROM jobs"
    if active_only:
        query += " WHERE state IN ('queued', 'running')"
    with ws.connect() as con:
        places = _places(con)
        return [_row(r, places.get(r["id"])) for r in con.execute(query + " ORDER BY created DESC").fetchall()]


# -- the queue ---------------------------------------------------------------------------------


def _available_memory() -> float | None:
    """Bytes of memory available to new processes (Linux), else None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def default_max_jobs() -> int:
    """One job per core, fewer when the free memory cannot hold JOB_MEMORY for each."""
    cores = os.cpu_count() or 1
    memory = _available_memory()
    return max(1, min(cores, int(memory // JOB_MEMORY) if memory else cores))


def max_jobs(ws: Workspace) -> int:
    """How many jobs may run at once: $EXPLORER_MAX_JOBS, else the workspace's setting
    (`jobs --max-jobs N`), else `default_max_jobs()`."""
    for source in (os.environ.get("EXPLORER_MAX_JOBS"), _config(ws).get("max_jobs")):
        try:
            if source is not None and int(source) >= 1:
                return int(source)
        except (TypeError, ValueError):
            pass
    return default_max_jobs()


def _config(ws: Workspace) -> dict:
    try:
        value = json.loads((ws.path / CONFIG).read_text())
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


def set_max_jobs(ws: Workspace, n: int | None) -> None:
    """Keep a cap in the workspace's settings (None: back to the default), and start what it allows."""
    from .workspace import write_atomic

    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise WorkspaceError(f"--max-jobs must be a whole number of at least 1, got {n!r}")
    config = {k: v for k, v in _config(ws).items() if k != "max_jobs"} | ({"max_jobs": n} if n else {})
    write_atomic(ws.path / CONFIG, json.dumps(config, indent=1).encode())
    dispatch(ws)


def submit(ws: Workspace, argv: list[str], title: str) -> str:
    """Queue `python -m explorer *argv` as a background job, and start it if a slot is free;
    returns the job id."""
    job_id = ws.new_id("job")
    log_path = ws.logs / f"{job_id}.log"
    with ws.connect(write=True) as con:
        con.execute(
            "INSERT INTO jobs (id, argv, title, state, message, log_path, created) VALUES (?, ?, ?, 'queued', 'queued', ?, ?)",
            (job_id, json.dumps(argv), title, str(log_path), time.time()),
        )
    dispatch(ws)
    return job_id


def dispatch(ws: Workspace) -> list[str]:
    """Start the oldest waiting jobs while fewer than `max_jobs` are running; returns their ids.
    Claiming the slots is one write transaction, so concurrent dispatchers never overfill them."""
    cap = max_jobs(ws)
    with ws.connect(write=True) as con:
        running = con.execute("SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running') "
                              "AND dispatched IS NOT NULL").fetchone()[0]
        free = cap - running
        chosen = [] if free <= 0 else [dict(r) for r in con.execute(
            "SELECT * FROM jobs WHERE state = 'queued' AND dispatched IS NULL ORDER BY created, id LIMIT ?", (free,))]
        now = time.time()
        for job in chosen:
            con.execute("UPDATE jobs SET dispatched = ?, message = 'starting' WHERE id = ?", (now, job["id"]))
    threads = max(1, (os.cpu_count() or 1) // cap)
    for job in chosen:
        _launch(ws, job, threads)
    return [job["id"] for job in chosen]


def _launch(ws: Workspace, job: dict, threads: int) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
           "EXPLORER_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "explorer", *json.loads(job["argv"]), "--workspace", str(ws.path.resolve()),
           "--job", job["id"]]
    try:
        with open(job["log_path"], "ab") as log:
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
            )
    except OSError as err:
        _set(ws, job["id"], state="failed", message=f"could not start: {err}", finished=time.time())
        return
    _children[job["id"]] = proc
    _set(ws, job["id"], pid=proc.pid)


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
    """Mark active jobs whose process is gone as failed, with the last line of their log, and
    start what waits in line if that freed a slot."""
    for proc in list(_children.values()):
        proc.poll()
    with ws.connect() as con:
        rows = [_row(r) for r in con.execute("SELECT * FROM jobs WHERE state IN ('queued', 'running') "
                                             "AND dispatched IS NOT NULL")]
        waiting = con.execute("SELECT 1 FROM jobs WHERE state = 'queued' AND dispatched IS NULL LIMIT 1").fetchone()
    now = time.time()
    for job in rows:
        never_started = not job["pid"] and now - job["dispatched"] > START_TIMEOUT
        if (job["pid"] and not _alive(job["pid"], job["id"])) or never_started:
            # Re-read: the job may have finished between the query and the liveness check.
            if get(ws, job["id"])["state"] in ACTIVE:
                tail = log_tail(job, 1) or "no output"
                _set(ws, job["id"], state="failed", finished=time.time(),
                     message="could not start its process" if never_started else f"process died: {tail}")
    if waiting:
        dispatch(ws)


def cancel(ws: Workspace, job_id: str) -> None:
    """Stop a job: one waiting in line leaves it; a running one stops cleanly at its next progress
    report (SIGTERM), publishing nothing."""
    job = get(ws, job_id)
    if job["state"] not in ACTIVE:
        return
    if job["dispatched"] is None:
        with ws.connect(write=True) as con:  # only while it still waits: a dispatcher may just have claimed it
            con.execute("UPDATE jobs SET state = 'cancelled', message = 'cancelled in the queue', finished = ? "
                        "WHERE id = ? AND dispatched IS NULL", (time.time(), job_id))
        job = get(ws, job_id)
        if job["state"] not in ACTIVE:
            return
    deadline = time.monotonic() + 5
    while not job["pid"] and job["state"] in ACTIVE and time.monotonic() < deadline:
        time.sleep(0.05)  # claimed a moment ago by a dispatcher: its process is being started
        job = get(ws, job_id)
    if _alive(job["pid"], job_id):
        os.kill(job["pid"], signal.SIGTERM)
        _set(ws, job_id, message="cancelling…")
    elif job["state"] in ACTIVE:
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


def _job_of(argv: list[str]) -> tuple[str | None, str | None]:
    """(job id, workspace path) of a job's own command line (`... --workspace PATH --job ID`)."""
    def value(flag: str) -> str | None:
        return argv[argv.index(flag) + 1] if flag in argv[:-1] else None

    return value("--job"), value("--workspace")


def ended(argv: list[str]) -> None:
    """Last words of a job's own process, however it ended (success, failure, bad input, exit):
    its slot is free, so start what waits in line. A plain command line is left alone."""
    job_id, path = _job_of(argv)
    if not job_id or not path:
        return
    try:
        ws = Workspace(path, create=False)
        if get(ws, job_id)["state"] in ACTIVE:  # it never reached `run` (a malformed command line)
            _set(ws, job_id, state="failed", finished=time.time(),
                 message=f"stopped before it ran: {log_tail(get(ws, job_id), 1) or 'no output'}")
        dispatch(ws)
    except (WorkspaceError, OSError, sqlite3.Error):
        pass


def announce(argv: list[str]) -> None:
    """First words of a job's own process (`... --workspace PATH --job ID`), written before the slow
    imports; a plain command line, or a job row that is gone, is left alone."""
    job_id, path = _job_of(argv)
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
    if threads := os.environ.get("EXPLORER_THREADS"):  # this job's share of the cores (`dispatch`)
        import torch

        torch.set_num_threads(max(1, int(threads)))
        print(f"[job] {torch.get_num_threads()} torch threads (its share of the cores)", flush=True)

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
