"""A newcomer's first ten minutes, timed in a real Chromium against the app served as `make run`
serves it (bench/_app.py), on fresh workspaces:

- the first load of Home; the demo started from Home until it says done, and the CLI demo
  (`python -m explorer demo`) in the same run, with their ratio;
- the seconds from clicking a job's button to the first progress line the job wrote;
- each page opened from the sidebar, once the previous one is drawn, until its script has finished
  and until it is drawn too (the browser idle), on the demo's workspace; and the pages opened
  back to back, each clicked as soon as the previous script ends (its drawing then spills over);
- a lasso on the demo's map until the selection panel is complete (median of three lassos);
- saving that selection as a forget set; one Unlearn run from the page until its result shows;
- the same lasso on a 60,000-point map (the synthetic set of bench/explore.py).

Targets (issue 15): app demo ≤ 1.15× the CLI demo; every page ≤ 1 s; lasso ≤ 0.5 s on the
digits and ≤ 1.5 s on 60,000 points; a job's first progress line ≤ 2 s after the click.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import _app, _figures

PAGES = ["Models", "Memorization", "Explore", "Unlearn", "Compare", "Jobs", "Home"]
SETTLE_MS = int(os.environ.get("JOURNEY_TIMEOUT_MS", 600_000))  # a lower one fails fast while debugging


def _settled(page) -> None:
    _app.settled(page, SETTLE_MS)


def _selection_seconds(page, reaches=(0.2, 0.3, 0.4)) -> list[float]:
    """Mouse-up to a complete selection panel, for lassos of growing size."""
    times, previous = [], None
    for reach in reaches:
        _app.lasso(page, reach, SETTLE_MS)
        start = time.perf_counter()
        previous = _app.heading(page, r"^\d+ samples selected", other_than=previous, timeout_ms=SETTLE_MS)
        _settled(page)
        times.append(time.perf_counter() - start)
    return times


def _open_from_sidebar(page, title: str) -> float:
    start = time.perf_counter()
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()
    _app.heading(page, "explorer" if title == "Home" else f"^{re.escape(title)}$", level=1, timeout_ms=SETTLE_MS)
    _settled(page)
    return time.perf_counter() - start


def _pages(page) -> dict[str, tuple[float, float]]:
    """Each page opened from the sidebar as a user does, once the previous one is drawn (the
    browser idle): (seconds until its script has finished, seconds until it is drawn too)."""
    opened = {}
    _app.idle(page)
    for title in PAGES:
        start = time.perf_counter()
        ready = _open_from_sidebar(page, title)
        _app.idle(page)
        opened[title] = ready, time.perf_counter() - start
    return opened


def _cli_demo(ws_path: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "explorer", "demo", "--workspace", str(ws_path)], cwd=_app.ROOT,
                   check=True, capture_output=True)
    return time.perf_counter() - start


def _warm_up() -> float:
    """UMAP's numba functions compile once into an on-disk cache: pay that before either demo.
    Its seconds are what a fresh install adds to its first demo."""
    start = time.perf_counter()
    code = ("import numpy as np; from explorer.evaluation import embeddings; "
            "embeddings.project(np.random.default_rng(0).random((300, 16), dtype=np.float32), 'umap', seed=0)")
    subprocess.run([sys.executable, "-c", code], cwd=_app.ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def _app_journey(browser, tmp: Path, out: dict) -> None:
    from playwright.sync_api import expect

    ws_path = tmp / "app"
    with _app.served(ws_path, tmp / "app.log") as server:
        page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        start = time.perf_counter()
        page.goto(f"{server.url}/")
        expect(page.get_by_role("button", name="Run the demo")).to_be_visible(timeout=SETTLE_MS)
        _settled(page)
        out["home_first_load_seconds"] = round(time.perf_counter() - start, 2)

        page.get_by_role("button", name="Run the demo").click()
        start = time.perf_counter()
        # The bar reads "demo: starting" until the job's own process writes its first line.
        expect(page.get_by_text(re.compile(r"^demo: (?!starting)"))).to_be_visible(timeout=SETTLE_MS)
        out["job_first_progress_seconds"] = round(time.perf_counter() - start, 2)
        ended = page.get_by_text(re.compile(r"^demo(: done| failed)"))
        expect(ended).to_be_visible(timeout=1_800_000)
        out["demo_app_seconds"] = round(time.perf_counter() - start, 1)
        if "done" not in ended.inner_text():
            raise RuntimeError(f"the demo failed in the app: {ended.inner_text()}")
        _settled(page)

        opened = _pages(page)
        for title, (ready, drawn) in opened.items():
            out[f"page_{title.lower()}_seconds"] = round(ready, 2)
            out[f"page_{title.lower()}_drawn_seconds"] = round(drawn, 2)
        out["page_slowest_seconds"] = round(max(ready for ready, _ in opened.values()), 2)
        back_to_back = [_open_from_sidebar(page, title) for title in PAGES]  # clicked as soon as each script ends
        out["pages_back_to_back_seconds[" + ",".join(PAGES) + "]"] = " ".join(f"{t:.2f}" for t in back_to_back)

        _open_from_sidebar(page, "Explore")
        lassos = _selection_seconds(page)
        out["lasso_to_panel_digits_seconds[median,each]"] = (
            f"{statistics.median(lassos):.2f}, " + " ".join(f"{t:.2f}" for t in lassos))
        page.get_by_label("Name", exact=True).fill("journey selection")
        start = time.perf_counter()
        page.get_by_role("button", name="Save as forget set").click()
        expect(page.get_by_text("Saved forget set")).to_be_visible(timeout=SETTLE_MS)
        _settled(page)
        out["save_forget_set_seconds"] = round(time.perf_counter() - start, 2)

        _open_from_sidebar(page, "Unlearn")
        start = time.perf_counter()
        page.get_by_role("button", name="Run", exact=True).click()
        expect(page.get_by_text(re.compile(r"finetune on journey selection: done"))).to_be_visible(timeout=SETTLE_MS)
        _settled(page)
        out["unlearn_run_from_page_seconds"] = round(time.perf_counter() - start, 1)
        page.context.close()


def _big_map_lasso(browser, tmp: Path) -> list[float]:
    from bench.explore import _synthetic_folder, _workspace_with_map
    from explorer import data

    _synthetic_folder(tmp / "images", 50_000, 10_000)
    _workspace_with_map(tmp / "big", data.DatasetSpec(name="imagefolder", root=str(tmp / "images"), image_size=32), "mlp")
    with _app.served(tmp / "big", tmp / "big.log") as server:
        page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        page.goto(f"{server.url}/explore")
        page.get_by_text("Nothing selected yet").wait_for(timeout=SETTLE_MS)
        _settled(page)
        times = _selection_seconds(page)
        page.context.close()
    return times


def run() -> dict:
    if not _app.CHROMIUM.exists():
        return {"journey": f"skipped: no Chromium at {_app.CHROMIUM}"}
    numba_cache = os.environ.get("NUMBA_CACHE_DIR")
    try:
        return _journey()
    finally:  # the benches after this one in `python -m bench` keep the usual cache
        if numba_cache is None:
            os.environ.pop("NUMBA_CACHE_DIR", None)
        else:
            os.environ["NUMBA_CACHE_DIR"] = numba_cache


def _journey() -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as tmp, _app.browser() as browser:
        tmp = Path(tmp)
        # An empty numba cache, as on a fresh install: the warm-up pays UMAP's compile once, and
        # both demos (the CLI's, and the app's jobs, which inherit this) then find it compiled.
        os.environ["NUMBA_CACHE_DIR"] = str(tmp / "numba")
        out["umap_compile_and_imports_seconds"] = round(_warm_up(), 1)
        cli = _cli_demo(tmp / "cli")
        out["demo_cli_seconds"] = round(cli, 1)
        _app_journey(browser, tmp, out)
        out["demo_app_vs_cli_ratio"] = round(out["demo_app_seconds"] / cli, 2)
        start = time.perf_counter()
        _cli_demo(tmp / "cli")
        out["demo_cli_again_seconds"] = round(time.perf_counter() - start, 1)
        _figures.record("journey", {"demo_cli_seconds": out["demo_cli_seconds"],
                                    "demo_app_seconds": out["demo_app_seconds"],
                                    "demo_again_seconds": out["demo_cli_again_seconds"],
                                    "first_install_extra_seconds": out["umap_compile_and_imports_seconds"]})
        big = _big_map_lasso(browser, tmp)
        out["lasso_to_panel_60000_seconds[median,each]"] = (
            f"{statistics.median(big):.2f}, " + " ".join(f"{t:.2f}" for t in big))
    return out
