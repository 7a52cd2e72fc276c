"""The Compare page, the comparison tables, the HTML report and `compare` on the command line."""

from __future__ import annotations

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from conftest import CPU, ROOT, last_json, run_cli
from explorer.evaluation import metrics
from explorer.pipeline import runs
from explorer.present import comparison, report
from explorer.store import artifacts


@pytest.fixture(scope="module")
def two_runs(populated) -> dict:
    """Two more runs on the populated forget set: neggrad_plus with seeds 0 and 1."""
    ws, model, fs = populated["ws"], populated["model"], populated["forget_set"]
    made = [runs.unlearn(ws, model, fs, "neggrad_plus", {"epochs": 1, "seed": seed}, CPU) for seed in (0, 1)]
    return {**populated, "runs": [populated["run"], *made]}


def test_a_run_keeps_every_samples_outputs_and_the_new_metrics(two_runs):
    ws, run = two_runs["ws"], two_runs["runs"][1]
    s = artifacts.run_samples(ws, run)
    n_train = len(s["original_train_loss"])
    for who in ("original", "unlearned", "oracle"):
        assert s[f"{who}_train_pred"].shape == (n_train,) and len(s[f"{who}_test_loss"]) == len(s["original_test_loss"])
    # The stored metrics are those of the stored outputs.
    y = artifacts.dataset_of(ws, two_runs["model"]).y_train.numpy()
    forget = np.asarray(ws.get(run["forget_set_id"])["ids"])
    assert run["metrics"]["acc_forget"] == pytest.approx((s["unlearned_train_pred"][forget] == y[forget]).mean())
    assert run["original"]["acc_forget"] == pytest.approx((s["original_train_pred"][forget] == y[forget]).mean())
    m = run["metrics"]
    assert 0 <= m["mia_auc"] <= 1 and m["verification_error"] > 0
    assert set(run["analysis"]) == {"cka_original", "cka_oracle", "unlearning_error"}
    assert m["unlearning_error"] == run["analysis"]["unlearning_error"]["unlearning_error"] > 0
    assert all(0 <= v <= 1.0001 for v in run["analysis"]["cka_original"].values())


def test_rows_put_the_references_last_and_by_setting_pools_seeds(two_runs):
    ws, all_runs = two_runs["ws"], two_runs["runs"]
    rows = comparison.rows(ws, all_runs)
    assert [r["run"] for r in rows] == [r["id"] for r in all_runs] + ["(original)", "(oracle)"]
    assert rows[-1]["acc_forget"] == all_runs[0]["oracle"]["acc_forget"]
    assert rows[-1]["seconds"] == all_runs[0]["metrics"]["retrain_seconds"]
    pooled = next(r for r in comparison.by_setting(all_runs) if r["method"] == "neggrad_plus")
    values = [r["metrics"]["tow"] for r in all_runs[1:]]
    mean, half = metrics.t_interval(values)
    assert pooled["seeds"] == 2 and pooled["tow"] == pytest.approx(mean) and pooled["tow ±"] == pytest.approx(half)


def test_report_holds_every_run_and_its_figures(two_runs):
    ws, all_runs = two_runs["ws"], two_runs["runs"]
    page = report.html(ws, [r["id"] for r in all_runs])
    assert page.startswith("<!doctype html>") and "</html>" in page
    for r in all_runs:
        assert r["id"] in page
    assert page.count("Plotly.newPlot") >= 4 + 5 * len(all_runs)  # metric bars, ToW, and each run's figures
    assert "<script src=" not in page  # self-contained: plotly.js is inlined


def test_cli_compare(two_runs, tmp_path):
    ws, all_runs = two_runs["ws"], two_runs["runs"]
    ids = [r["id"] for r in all_runs]
    out = tmp_path / "report.html"
    done = run_cli("compare", *ids, "--out", str(out), workspace=ws.path)
    assert done.returncode == 0, done.stderr
    assert all(i in out.read_text() for i in ids)
    table = run_cli("compare", *ids, "--format", "json", workspace=ws.path)
    rows = last_json(table.stdout)
    assert [r["run"] for r in rows][:3] == ids and rows[-1]["method"] == "oracle"
    csv = run_cli("compare", ids[0], "--format", "csv", workspace=ws.path).stdout.splitlines()
    assert csv[0].startswith("run,method,") and len(csv) == 1 + 3
    bad = tmp_path / "bad.html"
    failed = run_cli("compare", ids[0], "m-nope", "--out", str(bad), workspace=ws.path)
    assert failed.returncode == 2 and "no run with id 'm-nope'" in failed.stderr and not bad.exists()


def test_compare_page_views(monkeypatch, two_runs):
    ws = two_runs["ws"]
    monkeypatch.setenv("EXPLORER_WORKSPACE", str(ws.path))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.switch_page("views/compare.py")
    at.run()
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert {"(original)", "(oracle)"} <= set(table["run"]) and len(table) >= 5
    assert any(row["seeds"] == 2 for row in at.dataframe[1].value.to_dict("records"))  # the two seeds pooled
    # One section at a time, and in the run in detail one tab at a time (the open one is the only one drawn).
    assert {el.key for el in at.get("plotly_chart")} >= {"bars", "tow_seconds"}
    at.session_state["compare_section"] = "One run in detail"
    assert "before_after" in {el.key for el in at.run().get("plotly_chart")}
    assert "bars" not in {el.key for el in at.get("plotly_chart")}
    drawn = set()
    for tab in ("Classes", "Maps and layers", "Membership inference"):
        at.session_state["compare_tab"] = tab
        drawn |= {el.key for el in at.run().get("plotly_chart")}
    assert not at.exception and {"loss_hist", "class_acc", "cka"} <= drawn
    shown = at.selectbox[-1].value  # the run shown in detail
    groups = comparison.loss_groups(artifacts.run_samples(ws, shown), ws.get(shown["forget_set_id"])["ids"],
                                    len(artifacts.run_samples(ws, shown)["original_train_loss"]), "unlearned")
    at.slider[0].set_value(-1.0).run()  # threshold 10⁻¹: the page's attack accuracy is the library's
    expected = metrics.threshold_attack(groups["forget"], groups["test"], 0.1)
    assert next(m for m in at.metric if m.label == "attack accuracy · unlearned").value == f"{expected:.3f}"
    next(b for b in at.button if b.label == "Build an HTML report").click().run()
    assert not at.exception and at.session_state["report"]["html"].count("<h2>") >= 3
