"""The sample map at two sizes: the 1,797 digits and a synthetic CIFAR-size set (50,000 train +
10,000 test images in an ImageFolder). Prints UMAP seconds (the first call includes numba's
compile) and the Explore page's render time in a real Chromium, from navigation until the map
is drawn and the script has finished, for a first and a repeated visit."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from bench import _app
from explorer import data, training
from explorer.evaluation import embeddings
from explorer.pipeline import checkpoints, embed
from explorer.store.workspace import Workspace

def _umap_seconds(feats: np.ndarray) -> float:
    start = time.perf_counter()
    embeddings.project(feats, "umap", seed=0)
    return time.perf_counter() - start


def _synthetic_folder(root: Path, n_train: int, n_test: int, classes: int = 10) -> None:
    """Tiny random images, a class-dependent tint so a model has something to separate."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for c in range(classes):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True)
            for i in range(n // classes):
                pixels = rng.integers(0, 200, size=(4, 4, 3), dtype=np.uint8) + np.uint8(5 * c)
                Image.fromarray(pixels).save(folder / f"{i}.png")


def _workspace_with_map(ws_path: Path, spec: data.DatasetSpec, arch: str) -> None:
    ws = Workspace(ws_path)
    ds = data.load(spec)
    if spec.name == "digits":
        rec = checkpoints.train(ws, spec, arch, training.Recipe(epochs=5), training.torch.device("cpu"))
    else:  # an untrained network is enough to time the page
        rec = checkpoints.register_import(ws, training.init_model(arch, ds, 0), arch, spec, "synthetic")
    embed.compute(ws, rec, "pca")


def _page_seconds(ws_path: Path) -> list[float]:
    """Seconds to a drawn map on the Explore page, for two visits in fresh browser contexts, on
    the app served as `make run` serves it."""
    from playwright.sync_api import expect

    times = []
    with tempfile.TemporaryDirectory() as logs, _app.served(ws_path, Path(logs) / "app.log") as server, \
            _app.browser() as browser:
        for _ in range(2):
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            start = time.perf_counter()
            page.goto(f"{server.url}/explore", timeout=120_000)
            expect(page.locator(".js-plotly-plot .scatterlayer, .js-plotly-plot canvas").first).to_be_attached(
                timeout=300_000)
            _app.settled(page, 300_000)
            times.append(time.perf_counter() - start)
            page.context.close()
    return times


def run() -> dict:
    out = {}
    digits = data.load(data.DatasetSpec())
    pixels = digits.x_train.flatten(1).numpy()
    out["umap_first_call_digits_seconds"] = round(_umap_seconds(pixels), 2)
    out["umap_digits_1797_seconds"] = round(_umap_seconds(pixels), 2)
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 6, size=(10, 64))
    blobs = (centres[rng.integers(0, 10, 50_000)] + rng.normal(size=(50_000, 64))).astype(np.float32)
    out["umap_synthetic_50000_seconds"] = round(_umap_seconds(blobs), 1)
    if not _app.CHROMIUM.exists():
        out["explore_page_seconds"] = f"skipped: no Chromium at {_app.CHROMIUM}"
        return out
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _workspace_with_map(tmp / "digits", data.DatasetSpec(), "mlp")
        first, again = _page_seconds(tmp / "digits")
        out["explore_page_digits_seconds[first,repeat]"] = f"{first:.2f}, {again:.2f}"
        _synthetic_folder(tmp / "images", 50_000, 10_000)
        _workspace_with_map(tmp / "big", data.DatasetSpec(name="imagefolder", root=str(tmp / "images"), image_size=32), "mlp")
        first, again = _page_seconds(tmp / "big")
        out["explore_page_60000_points_seconds[first,repeat]"] = f"{first:.2f}, {again:.2f}"
        out["explore_page_60000_vs_digits_ratio"] = round(again / _page_seconds(tmp / "digits")[1], 2)
    return out
