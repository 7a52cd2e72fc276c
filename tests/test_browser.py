"""End-to-end checks that drive the real Streamlit app in a headless Chromium through Playwright.

Each test starts `streamlit run app.py` on a fresh workspace (EXPLORER_WORKSPACE), waits for the
health endpoint, and clicks through a page like a user would. They need Debian's Chromium at
/usr/bin/chromium (Playwright cannot download its own browsers offline) and are skipped without it.
Run only these with `pytest -m browser`, or leave them out with `pytest -m "not browser"`.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from explorer.workspace import Workspace

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path(os.environ.get("EXPLORER_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (set EXPLORER_CHROMIUM)"),
]

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
expect = sync_api.expect


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"streamlit exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                if resp.read().decode().strip() == "ok":
                    return
        except OSError:
            pass
        time.sleep(0.25)
    pytest.fail(f"streamlit did not answer within {timeout:.0f} s:\n{log.read_text(errors='replace')}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _cancel_jobs(ws_path: Path) -> None:
    from explorer import jobs

    ws = Workspace(ws_path)
    jobs.refresh(ws)
    for job in jobs.list_jobs(ws, active_only=True):
        jobs.cancel(ws, job["id"])


@pytest.fixture
def app(tmp_path):
    """Start the app on tmp_path/ws; yields (base_url, workspace path). The workspace may be
    filled before the first request, since the app opens it lazily."""
    ws_path = tmp_path / "ws"
    port = _free_port()
    log = tmp_path / "streamlit.log"
    env = {**os.environ, "EXPLORER_WORKSPACE": str(ws_path), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
           "--server.headless", "true", "--server.address", "localhost",
           # No file watching: the checkout (with its .venv) is large, and edits must not rerun the app.
           "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false"]
    state = {}

    def start() -> str:
        with open(log, "wb") as out:
            state["proc"] = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                             start_new_session=True)
        url = f"http://localhost:{port}"
        _wait_healthy(url, state["proc"], log)
        return url

    try:
        yield start, ws_path
    finally:
        if "proc" in state:
            _stop(state["proc"])
        if ws_path.exists():
            _cancel_jobs(ws_path)  # jobs run in their own sessions, so killing the app leaves them running
        if log.exists():  # pytest shows captured output only when the test failed
            print(f"--- streamlit log ({log}) ---\n{log.read_text(errors='replace')[-20_000:]}")


@pytest.fixture
def page(request, tmp_path):
    """A fresh headless Chromium page; when the test fails, a screenshot is left in tmp_path."""
    failed_before = request.session.testsfailed
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            context.set_default_timeout(30_000)
            pg = context.new_page()
            yield pg
            if request.session.testsfailed > failed_before:  # the call phase is reported before teardown
                shot = tmp_path / "failure.png"
                pg.screenshot(path=str(shot), full_page=True)
                print(f"screenshot of the failed page: {shot}")
        finally:
            browser.close()


def _open(page, url: str, title: str) -> None:
    """Load the app at its root and click a page in the sidebar, as a user would."""
    page.goto(f"{url}/")
    expect(page.get_by_test_id("stSidebar").get_by_text("Workspace:")).to_be_visible(timeout=60_000)
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()
    expect(page.get_by_role("heading", name=title, exact=True, level=1)).to_be_visible(timeout=60_000)


def test_train_from_the_models_page(app, page):
    start, ws_path = app
    _open(page, start(), "Models")
    expect(page.get_by_text("No models yet")).to_be_visible(timeout=60_000)

    epochs = page.get_by_label("Epochs")
    epochs.fill("3")
    epochs.press("Tab")
    page.get_by_role("button", name="Train", exact=True).click()

    # The job's fragment polls every second and reruns the page once the job ends.
    chart = page.locator(".js-plotly-plot").filter(has_text="training loss")
    expect(chart).to_be_visible(timeout=90_000)
    expect(chart.locator(".annotation-text", has_text="accuracy")).to_have_count(1)
    expect(page.get_by_text("train digits cnn: done")).to_be_visible()
    expect(page.get_by_text("All models")).to_be_visible()
    expect(page.locator(".js-plotly-plot").filter(has_text="test accuracy per class")).to_be_visible()

    models = Workspace(ws_path).find("model")
    assert len(models) == 1
    assert (models[0]["arch"], models[0]["dataset"], models[0]["epochs"]) == ("cnn", "digits", 3)


def test_lasso_on_the_explore_map_saves_a_forget_set(app, page):
    from explorer import checkpoints, devices, training
    from explorer.data import DatasetSpec

    start, ws_path = app
    checkpoints.train(Workspace(ws_path), DatasetSpec(), "mlp", training.Recipe(epochs=3), devices.resolve("cpu"))
    _open(page, start(), "Explore")
    expect(page.get_by_text("Nothing selected yet")).to_be_visible(timeout=60_000)

    drag = page.locator(".js-plotly-plot").first.locator(".nsewdrag").first  # takes the lasso/box drags
    expect(drag).to_be_visible()
    box = drag.bounding_box()
    assert box is not None
    # A lasso (the map's default drag mode) around the middle of the PCA cloud, which is centred.
    cx, cy, rx, ry = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, box["width"] / 4, box["height"] / 4
    polygon = [(cx - rx, cy - ry), (cx + rx, cy - ry), (cx + rx, cy + ry), (cx - rx, cy + ry), (cx - rx, cy - ry)]
    page.mouse.move(*polygon[0])
    page.mouse.down()
    for (x0, y0), (x1, y1) in zip(polygon, polygon[1:]):
        for t in (0.25, 0.5, 0.75, 1.0):
            page.mouse.move(x0 + (x1 - x0) * t, y0 + (y1 - y0) * t, steps=2)
    page.mouse.up()

    heading = page.get_by_role("heading", name=re.compile(r"^\d+ samples selected"))
    expect(heading).to_be_visible(timeout=30_000)
    n = int(heading.inner_text().split()[0])
    assert n > 0
    page.get_by_role("button", name="Save as forget set").click()
    expect(page.get_by_text("Saved forget set")).to_be_visible(timeout=30_000)

    forget = Workspace(ws_path).find("forget_set")
    assert len(forget) == 1
    assert forget[0]["size"] == n


def test_deep_link_runs_the_entry_point(app, page):
    """Opening a page's URL straight away (a bookmark, a reload after a restart) must still run app.py:
    its page config, its navigation and the sidebar with the workspace. (A folder named pages/ next to
    app.py would make a fresh server run that page's file alone, which is why the pages live in views/.)"""
    start, _ = app
    page.goto(f"{start()}/models")
    expect(page.get_by_role("heading", name="Models", exact=True, level=1)).to_be_visible(timeout=60_000)
    expect(page.get_by_test_id("stSidebar").get_by_text("Workspace:")).to_be_visible(timeout=5_000)
