"""The demo end to end on a fresh workspace (target: under 3 minutes on 2 CPU cores), and a
second run that reuses everything."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench import _figures
from explorer.pipeline import demo
from explorer.runtime import devices
from explorer.store.workspace import Workspace


def run() -> dict:
    device = devices.resolve("auto")
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp) / "ws")
        start = time.perf_counter()
        first = demo.run(ws, device)
        cold = time.perf_counter() - start
        start = time.perf_counter()
        demo.run(ws, device)
        warm = time.perf_counter() - start
    _figures.record("demo", {"cli_seconds": round(cold, 1), "again_seconds": round(warm, 1), "device": device.type})
    return {f"demo_seconds[{device.type},{demo.arch_for(device)}]": round(cold, 1),
            "demo_again_seconds": round(warm, 1),
            "demo_tow": ", ".join(f"{m} {t:.3f}" for m, t in first["tow"].items())}
