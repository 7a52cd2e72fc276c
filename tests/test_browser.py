"""End-to-end checks that drive the real Streamlit app in a headless Chromium through Playwright.

Each test serves the app exactly as `make run` does (bench/_app.py; only the port and the
workspace differ), waits for the health endpoint, and clicks through a page like a user would. They need Debian's Chromium at
/usr/bin/chromium (Playwright cannot download its own browsers offline) and are skipped without it.
Run only these with `pytest -m browser`, or leave them out with `pytest -m "not browser"`.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from bench import _app
from explorer.store.workspace import Workspace

ROOT = _app.ROOT

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not _app.CHROMIUM.exists(), reason=f"no Chromium at {_app.CHROMIUM} (set EXPLORER_CHROMIUM)"),
]

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
expect = sync_api.expect


@pytest.fixture
def app(tmp_path):
    """The app as `make run` serves it, on tmp_path/ws; yields (start, workspace path). The
    workspace may be filled before `start()`, since the app opens it lazily."""
    ws_path = tmp_path / "ws"
    server = _app.Server(ws_path, tmp_path / "streamlit.log")
    state = {}

    def start() -> str:
        try:
            state["url"] = server.start()
        except RuntimeError as err:
            pytest.fail(str(err))
        return state["url"]

    start.server = server
    try:
        yield start, ws_path
    finally:
        server.stop()
        if ws_path.exists():
            _app.cancel_jobs(ws_path)
        if server.log.exists():  # pytest shows captured output only when the test failed
            print(f"--- streamlit log ({server.log}) ---\n{server.log_text()[-20_000:]}")


@pytest.fixture
def page(request, tmp_path):
    """A fresh headless Chromium page; when the test fails, a screenshot is left in tmp_path."""
    failed_before = request.session.testsfailed
    with _app.browser() as browser:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(30_000)
        pg = context.new_page()
        yield pg
        if request.session.testsfailed > failed_before:  # the call phase is reported before teardown
            shot = tmp_path / "failure.png"
            pg.screenshot(path=str(shot), full_page=True)
            print(f"screenshot of the failed page: {shot}")


@pytest.mark.skipif(not Path("/proc/self/fdinfo").exists(), reason="counts inotify watches through Linux's /proc")
def test_the_served_app_watches_no_files(app, page):
    """A file watcher on the checkout (its .venv included) floods inotify and keeps a core busy,
    which slowed the demo's job 2-4x; the app as users run it must watch nothing."""
    start, _ = app
    page.goto(f"{start()}/")
    expect(page.get_by_test_id("stSidebar").get_by_text("Workspace:")).to_be_visible(timeout=60_000)
    _settled(page)  # watchers are set up per session, when a page's script first runs
    assert _app.inotify_watches(start.server.proc.pid) == 0


def _open(page, url: str, title: str) -> None:
    """Load the app at its root and click a page in the sidebar, as a user would."""
    page.goto(f"{url}/")
    expect(page.get_by_test_id("stSidebar").get_by_text("Workspace:")).to_be_visible(timeout=60_000)
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()
    expect(page.get_by_role("heading", name=title, exact=True, level=1)).to_be_visible(timeout=60_000)


def _lasso(page, reach: float) -> None:
    _app.lasso(page, reach)


def _settled(page) -> None:
    """Wait until the script has finished."""
    _app.settled(page, 120_000)


def test_train_from_the_models_page(app, page):
    start, ws_path = app
    _open(page, start(), "Models")
    expect(page.get_by_text("No models yet")).to_be_visible(timeout=60_000)

    epochs = page.get_by_role("spinbutton", name="Epochs")
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
    from explorer import training
    from explorer.data import DatasetSpec
    from explorer.pipeline import checkpoints
    from explorer.runtime import devices

    start, ws_path = app
    checkpoints.train(Workspace(ws_path), DatasetSpec(), "mlp", training.Recipe(epochs=3), devices.resolve("cpu"))
    _open(page, start(), "Explore")
    expect(page.get_by_text("Nothing selected yet")).to_be_visible(timeout=60_000)
    _settled(page)

    _lasso(page, 0.25)
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


OUTPUT = ROOT / "test-output" / "journey"
PAGES = {"Home": "/", "Models": "/models", "Memorization": "/memorization", "Explore": "/explore",
         "Unlearn": "/unlearn", "Compare": "/compare", "Jobs": "/jobs"}


@pytest.fixture(scope="module")
def demo_workspace(tmp_path_factory) -> Path:
    """A workspace the demo has filled (fewer subset models than the default, to keep tests quick)."""
    from explorer.pipeline import demo
    from explorer.runtime import devices

    ws_path = tmp_path_factory.mktemp("demo") / "ws"
    demo.run(Workspace(ws_path), devices.resolve("cpu"), models=8, map_method="pca")
    return ws_path


def _shoot(page, name: str) -> None:
    """A screenshot of the whole page: Streamlit scrolls inside its main block, so the window is
    made as tall as that block first."""
    height = page.evaluate("() => (document.querySelector('[data-testid=stMain]') || document.body).scrollHeight")
    page.set_viewport_size({"width": 1400, "height": min(max(1000, int(height) + 20), 6000)})
    page.wait_for_timeout(1500)  # charts re-lay themselves out
    page.screenshot(path=str(OUTPUT / name), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 1000})


def test_journey_demo_explore_unlearn_compare(app, page, demo_workspace):
    """The main path a new user takes, in a real browser, with a screenshot of each page in
    test-output/journey/."""
    start, ws_path = app
    shutil.copytree(demo_workspace, ws_path)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    url = start()

    page.goto(f"{url}/")
    page.get_by_role("button", name="Open the demo").click()  # everything exists: the job reuses it
    ended = page.get_by_text(re.compile(r"^demo(: done| failed)"))
    expect(ended).to_be_visible(timeout=240_000)
    assert "done" in ended.inner_text(), ended.inner_text()
    _shoot(page, "1-home.png")

    _open(page, url, "Explore")
    _settled(page)
    _lasso(page, 0.4)
    heading = page.get_by_role("heading", name=re.compile(r"^\d+ samples selected"))
    expect(heading).to_be_visible(timeout=30_000)
    page.get_by_label("Name", exact=True).fill("journey selection")
    page.get_by_role("button", name="Save as forget set").click()
    expect(page.get_by_text("Saved forget set")).to_be_visible(timeout=30_000)
    _shoot(page, "2-explore.png")

    _open(page, url, "Unlearn")
    _settled(page)
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.get_by_text(re.compile(r"finetune on journey selection: done"))).to_be_visible(timeout=180_000)
    _shoot(page, "3-unlearn.png")

    _open(page, url, "Compare")
    _settled(page)
    expect(page.get_by_text("One run in detail")).to_be_visible()
    _shoot(page, "4-compare.png")
    saved = Workspace(ws_path).find("forget_set", name="journey selection")
    assert len(saved) == 1 and Workspace(ws_path).find("run", forget_set_id=saved[0]["id"])


def test_every_page_fits_a_laptop_window(app, page, demo_workspace):
    """No page scrolls sideways at 1024 px."""
    start, ws_path = app
    shutil.copytree(demo_workspace, ws_path)
    url = start()
    page.set_viewport_size({"width": 1024, "height": 768})
    for title, path in PAGES.items():
        page.goto(f"{url}{path}")
        expect(page.get_by_role("heading", name=title if title != "Home" else re.compile("explorer"), level=1)
               ).to_be_visible(timeout=60_000)
        _settled(page)
        overflow = page.evaluate("() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{title} scrolls sideways by {overflow} px at 1024 px"
