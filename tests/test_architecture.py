"""The architecture's rules (docs/architecture.md) and the lint rules hold: import-linter's contracts
and ruff's rule set, both configured in pyproject.toml, so `make test` fails on a broken one."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def _tool(name: str) -> str:
    """The tool installed beside this Python (the venv's), else the one on PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    assert found, f"{name} is not installed: pip install -r requirements-dev.txt"
    return found


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_the_import_contracts_are_kept():
    done = _run(_tool("lint-imports"), "--no-cache")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_ruff_finds_nothing():
    done = _run(_tool("ruff"), "check", "--no-cache", ".")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_no_page_names_a_method():
    """Pages dispatch on what a method declares (its spec, needs, whole_classes, preview, whether it
    is a sequence), never on its name: a user's own method gets the same page as ours."""
    from explorer import unlearning

    names = {*unlearning.NAMES}
    for page in sorted((ROOT / "views").glob("*.py")):
        text = page.read_text()
        for name in names:
            assert f'"{name}"' not in text and f"'{name}'" not in text, f"{page.name} names the method {name!r}"
