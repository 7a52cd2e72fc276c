"""The demo: the whole pipeline on the embedded digits, reusing what exists on a second run."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from conftest import CPU, ROOT, run_cli, snapshot
from explorer.pipeline import demo
from explorer.store import jobs


def test_demo_builds_everything_once(ws, monkeypatch):
    first = demo.run(ws, CPU, models=6, map_method="pca")  # UMAP itself is tested in test_explore
    assert ws.get(first["model"], "model")["arch"] == "mlp"  # on a CPU: exact memorization stays quick
    assert {ws.get(i)["kind"] for i in first["runs"]} == {"run"}
    methods = {ws.get(i)["method"] for i in first["runs"]}
    assert methods == {*demo.METHODS, "mnemonic"}
    assert ws.find("embedding", model_id=first["model"], method="pca")
    names = {s["name"] for s in ws.find("scores", model_id=first["model"])}
    assert {"exact", "confidence", "ho_ret", "curvature"} <= names
    mix, one_class = (ws.get(i, "forget_set") for i in first["forget_sets"])
    assert mix["size"] == demo.MIX_SIZE and one_class["classes"] == [demo.FORGET_CLASS]
    assert all(ws.get(i)["metrics"]["tow"] is not None for i in first["runs"])
    # Class forgetting as its paper shows it: the paper's model forgets all of class 3 in one shot
    # and keeps what it knew of the others.
    coded = ws.get(first["mnemonic_model"], "model")
    assert coded["arch"] == "sigmoid_mlp" and coded["recipe"]["mnemonic_tmix"] == 0.1 and coded["recipe"]["epochs"] == 200
    [mnemonic] = [ws.get(i) for i in first["runs"] if ws.get(i)["method"] == "mnemonic"]
    assert mnemonic["model_id"] == coded["id"] and mnemonic["forget_set_id"] == one_class["id"]
    assert mnemonic["metrics"]["acc_forget"] == 0.0
    assert mnemonic["metrics"]["acc_retain"] >= coded["train_acc"] - 0.01

    before = snapshot(ws)
    again = demo.run(ws, CPU, models=6)  # a map exists: no UMAP is made
    assert again["runs"] == first["runs"] and again["forget_sets"] == first["forget_sets"]
    assert snapshot(ws) == before  # nothing recomputed

    # Home then shows what the demo found: every run's ToW against its seconds.
    import json

    monkeypatch.setenv("EXPLORER_WORKSPACE", str(ws.path))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.switch_page("views/home.py")
    at.run()
    [chart] = [c for c in at.get("plotly_chart") if c.key == "demo_tow"]
    spec = json.loads(chart.proto.spec)
    assert sorted(y for trace in spec["data"] for y in trace["y"]) == sorted(ws.get(i)["metrics"]["tow"]
                                                                             for i in first["runs"])


def test_demo_refuses_bad_input_without_a_workspace(tmp_path):
    out = run_cli("demo", "--models", "1", workspace=tmp_path / "ws")
    assert out.returncode == 2 and "--models must be at least 2" in out.stderr
    assert not (tmp_path / "ws").exists()


def test_home_offers_the_demo(monkeypatch, ws):
    monkeypatch.setenv("EXPLORER_WORKSPACE", str(ws.path))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.switch_page("views/home.py")
    at.run()
    assert any("**The demo**" in m.value for m in at.markdown)
    at.button(key="demo").click().run()
    [job] = jobs.list_jobs(ws)
    assert job["argv"] == ["demo"] and job["title"] == "demo"
    jobs.cancel(ws, job["id"])
