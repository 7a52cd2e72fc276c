"""What the README says of the code stays true of it."""

from __future__ import annotations

import re

from conftest import ROOT
from explorer.training import ensembles


def test_the_engine_table_lists_every_engine_and_quotes_the_fused_margin():
    readme = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| .* \| (.*) \|$", readme, re.MULTILINE)
    table = {engine: when for engine, when in rows if engine in ensembles.ENGINES}
    assert list(table) == list(ensembles.ENGINES)
    margin = f"{ensembles.FUSED_MARGIN:g}×"
    assert margin in table["batched"] and margin in table["fused"]
