"""The app's command lines (explorer/commands.py) are ones the CLI accepts: each builder's output
parses, and a page never spells an option itself."""

from __future__ import annotations

import re

from conftest import ROOT
from typer.testing import CliRunner

from explorer import cli, commands
from explorer.memorization.estimator import ExactConfig


def _parses(argv: list[str]) -> None:
    """Typer accepts every option (a bad id fails later, at the workspace, with exit 2)."""
    result = CliRunner().invoke(cli.app, [*argv, "--help"])
    assert result.exit_code == 0, (argv, result.output)


def test_every_builder_gives_a_command_line_the_cli_parses():
    for argv in (commands.demo(), commands.train("digits", "mlp", {"epochs": 3, "amp": True, "seed": None}),
                 commands.memorize("m-1", ExactConfig(models=8, epochs=2, chunk=4), "ray", "ray://x:1"),
                 commands.proxies("m-1", ["confidence", "ho_ret"]), commands.embed("m-1", "pca", 2),
                 commands.unlearn("m-1", "fs-1", "finetune", {"epochs": 1}, "digits", oracle=False),
                 commands.sweep("m-1", "fs-1", ["finetune", "rum"], "digits", "exact", 2),
                 commands.evaluate("m-1", "fs-1", "none", 8), commands.evaluate("m-1", "fs-1", "salun", 8, {}, "digits"),
                 commands.import_model("w.pt", "mlp", "digits", normalize="none", recipe='{"epochs": 3}'),
                 commands.import_scores("scores.npz", "m-1", "cscore", "Jiang et al.")):
        _parses(argv)
    assert commands.train("digits", "mlp", {"epochs": 3, "amp": True, "seed": None})[5:] == [
        "--epochs", "3", "--amp", "--label-noise", "0.0", "--data-root", "data"]


def test_no_page_spells_a_command_line():
    for page in sorted((ROOT / "views").glob("*.py")):
        text = page.read_text()
        assert not re.search(r'ui\.launch\(ws, \[', text), f"{page.name} builds an argv by hand: use explorer.commands"
