"""How the app is served: `make run` and the browser tests start the same command, and the
settings it gets from .streamlit/config.toml are the safe, fast ones."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib

from bench import _app

CONFIG = _app.ROOT / ".streamlit" / "config.toml"


def test_make_run_serves_the_command_the_browser_tests_use():
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}  # under make test
    dry = subprocess.run(["make", "--no-print-directory", "-n", "run"], cwd=_app.ROOT, capture_output=True, text=True,
                         check=True, env=env).stdout
    served = [line for line in dry.splitlines() if " streamlit " in line][-1].split()
    assert served[0].endswith("python") and served[1:] == _app.RUN_ARGS, dry
    assert _app.command(8502)[1:] == [*_app.RUN_ARGS, "--server.port", "8502"]  # only the port is added


def test_the_served_configuration_watches_no_files_and_binds_to_localhost():
    server = tomllib.loads(CONFIG.read_text())["server"]
    assert server["fileWatcherType"] == "none"  # watching the checkout floods inotify and slows every job
    assert server["runOnSave"] is False
    assert server["address"] == "localhost"
    assert server["headless"] is True


def test_streamlit_reads_the_configuration_from_the_checkout():
    """What Streamlit itself resolves from the file (not just what the file says)."""
    code = ("from streamlit import config; config.get_config_options(force_reparse=True); "
            "print(config.get_option('server.fileWatcherType'), config.get_option('server.address'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=_app.ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split()[-2:] == ["none", "localhost"]
