"""The job queue's commands, `submit`, `jobs` and `cancel`, and the output every command shares
(errors as exit codes, --json, tables).

`python -m explorer submit|jobs|cancel …` runs this module alone (`__main__.py`): it needs the
standard library, Typer and the jobs store, not the rest of the CLI, so a script or a class
queueing many jobs does not load PyTorch (about a gigabyte and seconds) once per submitting
process. The full CLI (`explorer.cli`) registers the same three functions, so its `--help` and
its in-process callers see the same commands, options and output.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer
from typer.exceptions import TyperException

from .errors import UserError, first_line
from .store import jobs
from .store.workspace import Workspace

COMMANDS = ("jobs", "submit", "cancel")  # what `python -m explorer` serves from here
JOB_COMMANDS = ("train", "import-model", "import-scores", "memorize", "proxies", "embed", "unlearn", "evaluate", "demo")
JOB_COLUMNS = ["id", "title", "state", "progress", "message"]  # `jobs` and `list jobs`

WorkspaceOpt = Annotated[Optional[Path], typer.Option("--workspace", "-w", help="Workspace folder (default: ./workspace or $EXPLORER_WORKSPACE).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on the last line.")]

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Memorization-based machine unlearning explorer.")


def fail(message: str, code: int = 2):
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def query(workspace: Path | None, fetch: Callable[[Workspace], object]):
    """Run a quick read-only command body, turning bad input into exit 2."""
    try:
        return fetch(Workspace(workspace, create=False))
    except UserError as err:
        fail(str(err))


def _finite(value):
    """NaN and infinities become null: strict JSON parsers reject them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def emit(record, as_json: bool, text: str) -> None:
    typer.echo(json.dumps(_finite(record), default=str) if as_json else text)


def _table(rows: list[dict], columns: list[str]) -> str:
    def cell(v):
        return f"{v:.3f}" if isinstance(v, float) else "" if v is None else str(v)

    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def list_jobs(workspace: Path | None, as_json: bool) -> None:
    """`jobs` and `list jobs`: every job, newest first, those waiting with their place in line."""
    rows = query(workspace, jobs.list_jobs)
    emit(rows, as_json, _table(rows, JOB_COLUMNS) if rows else "no jobs yet")


@app.command("jobs")
def jobs_(
    max_jobs: Annotated[Optional[int], typer.Option("--max-jobs", help="Keep this many jobs running at once in this workspace (0: back to the default, one per core while free memory allows); the rest wait in line. $EXPLORER_MAX_JOBS overrides it.")] = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
):
    """List background jobs (the same as `list jobs`), those waiting with their place in line;
    with --max-jobs, set how many run at once."""
    if max_jobs is not None:
        if max_jobs < 0:
            fail(f"--max-jobs must be 0 (the default) or a whole number of at least 1, got {max_jobs}")
        query(workspace, lambda ws: jobs.set_max_jobs(ws, max_jobs or None))
        if not as_json:
            cap = query(workspace, jobs.max_jobs)
            typer.echo(f"at most {cap} job{'s' if cap > 1 else ''} at once in this workspace")
    list_jobs(workspace, as_json)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def submit(
    ctx: typer.Context,
    title: Annotated[Optional[str], typer.Option(help="What the job is called in lists (default: the command line).")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the job ends; exit 0 only if it succeeded.")] = False,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
):
    """Queue a command as a background job, as the app does: it starts when a slot is free
    (see `jobs --max-jobs`). Give the command after `--`, e.g. `submit -- unlearn M --forget FS`."""
    argv = list(ctx.args)
    if not argv or argv[0] not in JOB_COMMANDS:
        fail(f"give the command to queue after --, one of {', '.join(JOB_COMMANDS)}; got {' '.join(argv) or 'nothing'}")
    if {"--workspace", "-w", "--job"} & set(argv):
        fail("put --workspace before the -- (it is the queue's), and leave --job to the queue")
    try:
        ws = Workspace(workspace, create=True)  # a queued train may be the workspace's first job
        job = jobs.get(ws, jobs.submit(ws, argv, title or " ".join(argv)))
        if wait:
            job = jobs.wait(ws, job["id"], timeout=24 * 3600)
    except UserError as err:
        fail(first_line(err))
    emit(job, as_json, f"{job['id']}: {job['state']} ({job['message']})")
    if wait and job["state"] != "succeeded":
        raise typer.Exit(1)


@app.command()
def cancel(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
):
    """Cancel a running job; it stops cleanly and publishes nothing."""

    def stop(ws):
        jobs.cancel(ws, job_id)
        return jobs.get(ws, job_id)

    job = query(workspace, stop)
    emit(job, as_json, f"{job_id}: {job['state']} ({job['message']})")


def serve(typer_app: typer.Typer) -> None:
    """Run a Typer app as `python -m explorer` does: a command line Typer refuses (an unknown
    option, a value of the wrong type, a missing argument) is one line and its exit code."""
    try:
        code = typer_app(standalone_mode=False)
    except TyperException as err:
        message = err.format_message() if hasattr(err, "format_message") else str(err)
        typer.echo(f"error: {' '.join(message.split())}", err=True)
        sys.exit(getattr(err, "exit_code", 2))
    except KeyboardInterrupt:
        typer.echo("interrupted; nothing was written", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


def main() -> None:
    serve(app)
