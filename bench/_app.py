"""The app served exactly as `make run` serves it, and a headless Chromium to drive it.

The browser tests and the browser benches share this, so what they measure is what a user runs:
the command of the Makefile's `run` target, whose settings all come from .streamlit/config.toml.
Only the port (a free one) and the workspace (EXPLORER_WORKSPACE) differ.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path(os.environ.get("EXPLORER_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
# `make run` runs `$(BIN)/python -m streamlit run app.py`; tests/test_serving.py checks they agree.
RUN_ARGS = ["-m", "streamlit", "run", "app.py"]


def command(port: int) -> list[str]:
    """The Makefile's `run` command with this interpreter, on `port`."""
    return [sys.executable, *RUN_ARGS, "--server.port", str(port)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


class Server:
    """`streamlit run app.py` on a free port and a workspace; its output goes to `log`."""

    def __init__(self, workspace: Path, log: Path):
        self.workspace, self.log, self.port = Path(workspace), Path(log), free_port()
        self.url = f"http://localhost:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> str:
        env = {**os.environ, "EXPLORER_WORKSPACE": str(self.workspace), "PYTHONPATH": str(ROOT)}
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(command(self.port), cwd=ROOT, env=env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as resp:
                    if resp.read().decode().strip() == "ok":
                        return self.url
            except OSError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"streamlit did not answer within {timeout:.0f} s:\n{self.log_text()}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def cancel_jobs(ws_path: Path) -> None:
    """Jobs run in their own sessions, so stopping the app leaves them running: cancel them."""
    from explorer.store import jobs
    from explorer.store.workspace import Workspace

    ws = Workspace(ws_path)
    jobs.refresh(ws)
    for job in jobs.list_jobs(ws, active_only=True):
        jobs.cancel(ws, job["id"])


@contextlib.contextmanager
def served(workspace: Path, log: Path):
    """A started Server; stopped (and its jobs cancelled) on exit."""
    server = Server(workspace, log)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        if Path(workspace).exists():
            cancel_jobs(Path(workspace))


@contextlib.contextmanager
def browser():
    """A headless Debian Chromium through Playwright (which cannot download its own browsers here)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def inotify_watches(pid: int) -> int:
    """How many inotify watches process `pid` holds (Linux), read from /proc/PID/fdinfo."""
    count = 0
    for info in Path(f"/proc/{pid}/fdinfo").iterdir():
        with contextlib.suppress(OSError):
            count += sum(line.startswith("inotify wd:") for line in info.read_text().splitlines())
    return count


# Waits poll inside the page (wait_for_function, once per animation frame) rather than through
# expect(): each failed try of an expect() takes an ARIA snapshot of the whole page, which cost the
# page's own main thread 0.2-0.5 s per wait on Explore (CDP profile) and so slowed what was timed.
_SETTLED = """() => document.querySelector('[data-testid=stApp]')?.getAttribute('data-test-script-state')
                    === 'notRunning'"""
_HEADING = """([selector, source, previous]) => [...document.querySelectorAll(selector)]
    .map(h => h.checkVisibility() ? h.innerText.trim() : null)
    .find(text => text !== null && new RegExp(source).test(text) && text !== previous) ?? null"""


def settled(page, timeout_ms: float = 600_000) -> None:
    """Wait until the app's script has finished. Streamlit's running indicator shows only after a
    delay, so its absence proves nothing; the app root's script state is exact."""
    page.wait_for_function(_SETTLED, timeout=timeout_ms)


# Drawn: no element still waiting for its code (Streamlit shows a skeleton while it loads, e.g.
# plotly's on first use, during which the main thread can sit idle), every chart drawn, and then a
# main-thread idle period of 50 ms (requestIdleCallback's longest): nothing left to draw.
_IDLE = """(limitMs) => Promise.race([
    new Promise(done => {
        const drawn = () => !document.querySelector('[data-testid=stSkeleton]') && [...document.querySelectorAll(
            '[data-testid=stPlotlyChart]')].every(chart => chart.querySelector('.main-svg'));
        const wait = () => requestIdleCallback(d => drawn() && d.timeRemaining() >= 49 ? done(true) : wait());
        wait(); }),
    new Promise(done => setTimeout(() => done(false), limitMs))])"""


def idle(page, timeout_ms: float = 30_000) -> bool:
    """Wait until the page is drawn, its charts included, and the browser sits idle; False if it
    was not after `timeout_ms`."""
    return page.evaluate(_IDLE, timeout_ms)


def heading(page, pattern: str, level: int | None = None, other_than: str | None = None,
            timeout_ms: float = 600_000) -> str:
    """Wait for a visible heading (h`level`, or any) whose text matches the regular expression
    `pattern` and is not `other_than`; returns its text."""
    selector = f"h{level}" if level else "h1, h2, h3, h4, h5, h6"
    return page.wait_for_function(_HEADING, arg=[selector, pattern, other_than], timeout=timeout_ms).json_value()


def lasso(page, reach: float, timeout_ms: float = 60_000) -> None:
    """Draw a lasso (the map's default drag mode) around the middle of the page's first map: a
    square reaching `reach` of the plot's width and height from its centre. A lasso that starts
    inside an earlier selection would move that selection instead, so grow `reach` between lassos."""
    drag = page.locator(".js-plotly-plot").first.locator(".nsewdrag").first  # takes the lasso/box drags
    drag.wait_for(timeout=timeout_ms)
    box = drag.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    rx, ry = box["width"] * reach, box["height"] * reach
    corners = [(cx - rx, cy - ry), (cx + rx, cy - ry), (cx + rx, cy + ry), (cx - rx, cy + ry), (cx - rx, cy - ry)]
    page.mouse.move(*corners[0])
    page.mouse.down()
    for (x0, y0), (x1, y1) in zip(corners, corners[1:]):
        for t in (0.25, 0.5, 0.75, 1.0):
            page.mouse.move(x0 + (x1 - x0) * t, y0 + (y1 - y0) * t, steps=2)
    page.mouse.up()
