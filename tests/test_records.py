"""Old workspaces open and upgrade: tests/fixtures/old_workspace was written by the explorer's own
commands (tests/fixtures/make_old_workspace.py) with its records as they were before records had a
version; store.records brings each up to date as it is read, and nothing in it is lost."""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import ROOT, last_json
from explorer.cli import LIST_KINDS, app
from explorer.evaluation import forgetting
from explorer.present import comparison
from explorer.store import records
from explorer.store.workspace import Workspace

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "old_workspace"
runner = CliRunner()


@pytest.fixture
def old(tmp_path) -> Path:
    """A copy of the fixture (opening a workspace may migrate its catalog)."""
    return Path(shutil.copytree(FIXTURE, tmp_path / "old"))


def raw_records(path: Path) -> dict[str, dict]:
    """Every record as the catalog holds it, by id, without going through the explorer."""
    con = sqlite3.connect(path / "catalog.sqlite")
    try:
        return {i: {"id": i, "kind": k, **json.loads(m)} for i, k, m in con.execute("SELECT id, kind, meta FROM records")}
    finally:
        con.close()


def rewrite(path: Path, rec_id: str, change) -> None:
    """Change one record's stored meta in place, as an older explorer would have written it."""
    con = sqlite3.connect(path / "catalog.sqlite")
    try:
        meta = json.loads(con.execute("SELECT meta FROM records WHERE id = ?", (rec_id,)).fetchone()[0])
        change(meta)
        con.execute("UPDATE records SET meta = ? WHERE id = ?", (json.dumps(meta), rec_id))
        con.commit()
    finally:
        con.close()


def finite(value):
    """As --json prints a value: NaN as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def cli(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return last_json(result.stdout)


def one(raw: dict, kind: str, **where) -> dict:
    found = [r for r in raw.values() if r["kind"] == kind and all(r.get(k) == v for k, v in where.items())]
    assert len(found) == 1, (kind, where)
    return found[0]


def test_the_fixture_is_small_and_holds_every_kind_of_record_unversioned():
    raw = raw_records(FIXTURE)
    kinds = {r["kind"] for r in raw.values()}
    assert {"dataset", "model", "scores", "embedding", "forget_set", "run", "evaluation"} <= kinds
    assert not any("version" in r for r in raw.values())
    assert sum(p.stat().st_size for p in FIXTURE.rglob("*") if p.is_file()) < 2_000_000


def test_an_old_workspace_opens_from_the_command_line_with_nothing_lost(old):
    before = raw_records(old)
    listed = subprocess.run([sys.executable, "-m", "explorer", "list", "models", "--workspace", str(old), "--json"],
                            cwd=ROOT, capture_output=True, text=True, check=True)
    assert {r["id"] for r in last_json(listed.stdout)} == {i for i, r in before.items() if r["kind"] == "model"}
    for name, kind in LIST_KINDS.items():
        rows = cli("list", name, "--workspace", str(old), "--json")
        assert sorted(r["id"] for r in rows) == sorted(i for i, r in before.items() if r["kind"] == kind)
        assert all(r["version"] == records.VERSIONS[kind] for r in rows)
    for rec_id, raw in before.items():
        shown = cli("show", rec_id, "--workspace", str(old), "--json")
        assert shown["version"] == records.VERSIONS[raw["kind"]]
        assert {k: shown[k] for k in raw} == finite(raw), rec_id  # every field kept, with its value
    assert raw_records(old) == before  # reading wrote nothing back


def test_records_from_older_explorers_are_upgraded_where_they_are_read(old):
    raw = raw_records(old)
    model, oracle = one(raw, "model", source="trained"), one(raw, "model", source="oracle")
    fs, run, ev = one(raw, "forget_set"), one(raw, "run"), one(raw, "evaluation")
    # Take out what later explorers added to each kind, as the first records of each were written.
    drop = {model["id"]: ("has_codes", "flipped_fit"), oracle["id"]: ("order", "recipe_from"),
            fs["id"]: ("es_centre",), run["id"]: ("preset",),
            ev["id"]: ("epsilon_bound", "confidence", "score_point", "epsilon_cap_point", "klom", "kloms")}
    for rec_id, keys in drop.items():
        rewrite(old, rec_id, lambda meta, keys=keys: [meta.pop(k) for k in keys])

    ws = Workspace(old, create=False)
    got = {rec_id: ws.get(rec_id) for rec_id in drop}
    assert got[model["id"]]["has_codes"] is False and got[model["id"]]["flipped_fit"] is None
    assert got[oracle["id"]]["order"] == "shuffle" and got[oracle["id"]]["recipe_from"] == "trained"
    assert got[fs["id"]]["es_centre"] == "pooled"
    assert got[run["id"]]["preset"] is None
    upgraded = got[ev["id"]]
    assert upgraded["epsilon_bound"] == "per rule" and upgraded["klom"] is None and upgraded["kloms"] is None
    assert upgraded["score_point"] is None
    assert upgraded["epsilon_cap_point"] == ev["epsilon_cap_point"] == forgetting.cap(ev["models"], ev["models"],
                                                                                      confidence=None)
    assert all(r["version"] == records.VERSIONS[r["kind"]] for r in got.values())

    # The pages and commands read the upgraded records: the older evaluation says so, the old
    # oracle is kept for its run but not reused, and the evaluation's samples still export.
    [row] = comparison.evaluation_rows([upgraded], [ws.get(run["id"])])
    assert row["bound"] == "per rule (older)" and row["KLoM"] is None
    assert all(p["klom"] is None for p in comparison.epsilon_points([upgraded], None))
    assert comparison.oracle_recipe(got[oracle["id"]]).endswith("(its training recipe)")
    assert not ws.find("model", source="oracle", order="replay")
    exported = runner.invoke(app, ["export", ev["id"], "--workspace", str(old)])
    assert exported.exit_code == 0, exported.output
    assert len(exported.stdout.strip().splitlines()) == 1 + len(ev["forget_ids"])


def test_each_upgrade_runs_once_from_the_version_a_record_has(ws):
    old = records.read("forget_set", {"id": "fs-1", "kind": "forget_set", "es": 2.0})
    assert old["es_centre"] == "pooled" and old["how"] == {} and old["version"] == records.VERSIONS["forget_set"]
    current = {"id": "fs-2", "kind": "forget_set", "es": 2.0, "version": records.VERSIONS["forget_set"]}
    assert records.read("forget_set", current) == current  # no step runs on a record already up to date
    newer = {**current, "version": records.VERSIONS["forget_set"] + 1}
    assert records.read("forget_set", newer) == newer  # from a newer explorer: read as it is
    assert records.read("dataset", {"name": "imagefolder"})["image_size"] == records.LEGACY_IMAGE_SIZE
    assert ws.put("sweep", {"name": "s"})["version"] == records.VERSIONS["sweep"]  # put stamps the current one
