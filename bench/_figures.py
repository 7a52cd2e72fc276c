"""The figures the README and Home quote, as the benches last measured them: `record` merges a
bench's figures into docs/figures.json (with the machine and the date), and the app reads them
from there, so no measured number is typed into prose."""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path

PATH = Path(__file__).resolve().parent.parent / "docs" / "figures.json"


def record(bench: str, figures: dict) -> None:
    """Keep `figures` under the bench's name, replacing what it measured before. A smoke run
    (BENCH_QUICK) measures nothing worth quoting and records nothing."""
    if os.environ.get("BENCH_QUICK"):
        return
    known = json.loads(PATH.read_text()) if PATH.exists() else {}
    known[bench] = {**figures, "measured": datetime.date.today().isoformat(),
                    "machine": f"{os.cpu_count()} cores, {platform.machine()}"}
    tmp = PATH.with_suffix(".tmp")
    tmp.write_text(json.dumps(known, indent=1, sort_keys=True) + "\n")
    tmp.replace(PATH)
