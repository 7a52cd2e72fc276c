"""Every page renders without an exception on an empty and on a populated workspace, and the
forms launch the jobs they promise."""

import pytest
from streamlit.testing.v1 import AppTest

from conftest import ROOT
from explorer import jobs
from explorer.workspace import Workspace

PAGES = ["home", "models", "memorization", "explore", "unlearn", "compare", "jobs"]


def open_page(monkeypatch, workspace: Workspace, page: str) -> AppTest:
    monkeypatch.setenv("EXPLORER_WORKSPACE", str(workspace.path))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.switch_page(f"pages/{page}.py")
    return at.run()


@pytest.mark.parametrize("page", PAGES)
def test_page_on_empty_workspace_explains_what_comes(monkeypatch, ws, page):
    at = open_page(monkeypatch, ws, page)
    assert not at.exception
    if page not in ("home",):
        assert at.info, "an empty page should say what to do next"


@pytest.mark.parametrize("page", PAGES)
def test_page_on_populated_workspace(monkeypatch, populated, page):
    at = open_page(monkeypatch, populated["ws"], page)
    assert not at.exception
    assert not at.error


def test_models_page_shows_curves_and_per_class_accuracy(monkeypatch, populated):
    at = open_page(monkeypatch, populated["ws"], "models")
    assert len(at.get("plotly_chart")) == 2
    assert populated["model"]["id"] in at.dataframe[0].value["id"].tolist()


def test_memorization_page_shows_histogram_and_galleries(monkeypatch, populated):
    at = open_page(monkeypatch, populated["ws"], "memorization")
    assert len(at.get("plotly_chart")) == 1
    assert len(at.get("image")) == 2 * 20  # least and most confident, 20 each by default


def test_compare_page_lists_runs(monkeypatch, populated):
    at = open_page(monkeypatch, populated["ws"], "compare")
    assert populated["run"]["id"] in at.dataframe[0].value["id"].tolist()
    assert len(at.get("plotly_chart")) == 1


def test_train_form_launches_a_job(monkeypatch, ws):
    at = open_page(monkeypatch, ws, "models")
    at.number_input[0].set_value(2)  # epochs
    at.selectbox[1].set_value("mlp")
    at.button[0].click().run()
    assert not at.exception
    [job] = jobs.list_jobs(ws)
    assert job["argv"][:5] == ["train", "--dataset", "digits", "--arch", "mlp"]
    assert jobs.wait(ws, job["id"], timeout=120)["state"] == "succeeded"


def test_unlearn_form_launches_a_job(monkeypatch, populated):
    ws = populated["ws"]
    at = open_page(monkeypatch, ws, "unlearn")
    at.number_input[0].set_value(1)  # epochs
    at.button[0].click().run()
    assert not at.exception
    job = next(j for j in jobs.list_jobs(ws) if j["argv"][0] == "unlearn")
    done = jobs.wait(ws, job["id"], timeout=180)
    assert done["state"] == "succeeded", jobs.log_tail(done)
    assert ws.get(done["result_id"], "run")["params"]["epochs"] == 1
