"""Every page renders without an exception on an empty and on a populated workspace, and the
forms launch the jobs they promise."""

import importlib.util
import json

import pytest
from streamlit.testing.v1 import AppTest

from conftest import CPU, ROOT
from explorer import commands, training
from explorer.memorization import estimator
from explorer.pipeline import checkpoints, forget_sets, memorize, runs
from explorer.store import artifacts, jobs
from explorer.data import DatasetSpec
from explorer.store.workspace import Workspace

PAGES = ["home", "models", "memorization", "explore", "unlearn", "compare", "jobs"]


def open_page(monkeypatch, workspace: Workspace, page: str) -> AppTest:
    monkeypatch.setenv("EXPLORER_WORKSPACE", str(workspace.path))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.switch_page(f"views/{page}.py")
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


@pytest.fixture(scope="module")
def scored(populated):
    """The populated workspace with exact memorization and every proxy computed."""
    ws, model = populated["ws"], populated["model"]
    if "exact" not in artifacts.latest_scores(ws, model["id"]):
        memorize.exact(ws, model, estimator.ExactConfig(models=8, epochs=10), CPU)
        memorize.compute_proxies(ws, model, None, CPU)
    return populated


def charts_by_tab(at: AppTest, key: str, labels: list[str]) -> dict[str, set[str]]:
    """The keys of the charts drawn with each tab of a lazy st.tabs open (only the open tab is)."""
    shown = {}
    for label in labels:
        at.session_state[key] = label
        at.run()
        assert not at.exception
        shown[label] = {el.key for el in at.get("plotly_chart")}
    return shown


MEMORIZATION_TABS = ["Exact vs proxies", "All scores", "Per class and per sample"]


def test_memorization_page_before_any_score_set_uses_the_dynamics(monkeypatch, ws):
    checkpoints.train(ws, DatasetSpec(), "mlp", training.Recipe(epochs=2), CPU)
    at = open_page(monkeypatch, ws, "memorization")
    assert not at.exception
    # Without exact memorization the page opens on the per-class view: only that tab is drawn.
    assert {el.key for el in at.get("plotly_chart")} == {"histogram", "per_class"}
    assert [len(g.proto.imgs) for g in at.get("image")] == [20, 20]  # most and least memorized galleries
    shown = charts_by_tab(at, "mem_tab", MEMORIZATION_TABS)
    assert shown["Exact vs proxies"] == set()  # it says to compute exact memorization first
    assert shown["All scores"] == {"corr"}


def test_memorization_page_compares_proxies_with_exact(monkeypatch, scored):
    at = open_page(monkeypatch, scored["ws"], "memorization")
    assert not at.exception
    assert {el.key for el in at.get("plotly_chart")} == {"scatter"}  # the first tab; its expander is closed
    assert {m.label for m in at.metric} >= {"spearman", "pearson", "kendall", "precision at k"}
    at.session_state["mem_convergence"] = True  # open the expander: its chart is drawn only then
    shown = charts_by_tab(at, "mem_tab", MEMORIZATION_TABS)
    assert shown["Exact vs proxies"] == {"final_conv", "scatter"}
    assert {"corr", "cost", "auroc"} <= shown["All scores"]
    assert shown["Per class and per sample"] == {"histogram", "per_class"}
    # The next run's time, predicted from the last one's measured pace.
    assert any("The last exact run of this model trained" in c.value for c in at.caption)


def test_memorization_form_launches_exact_job(monkeypatch, populated):
    ws = populated["ws"]
    at = open_page(monkeypatch, ws, "memorization")
    at.number_input[0].set_value(4)  # K
    at.number_input[2].set_value(2)  # epochs
    at.button[0].click().run()
    assert not at.exception
    job = next(j for j in jobs.list_jobs(ws) if j["argv"][0] == "memorize")
    assert job["argv"][:6] == ["memorize", populated["model"]["id"], "--exact", "--models", "4", "--ratio"]
    assert jobs.wait(ws, job["id"], timeout=180)["state"] == "succeeded"


def test_compare_page_lists_runs(monkeypatch, populated):
    at = open_page(monkeypatch, populated["ws"], "compare")
    next(s for s in at.selectbox if s.label == "Model").set_value(populated["model"]["id"]).run()
    next(s for s in at.selectbox if s.label == "Forget set").set_value(populated["forget_set"]["id"]).run()
    assert populated["run"]["id"] in at.dataframe[0].value["run"].tolist()
    # The page opens on the metrics as one panel figure and ToW against time; its other sections
    # are drawn when their tab is opened: the run in detail shows its own first tab.
    drawn = {el.key for el in at.get("plotly_chart")}
    assert not at.exception and {"bars", "tow_seconds"} <= drawn and "before_after" not in drawn
    at.session_state["compare_section"] = "One run in detail"
    assert "before_after" in {el.key for el in at.run().get("plotly_chart")} and not at.exception


def test_train_form_launches_a_job(monkeypatch, ws):
    at = open_page(monkeypatch, ws, "models")
    field = {n.label: n for n in at.number_input}
    # One input per recipe field the declarations offer (training.KNOBS), left empty (a switch off) for
    # the defaults: a number field per number, a checkbox per switch.
    import dataclasses

    offered = {f.name: f for f in dataclasses.fields(training.Recipe) if f.metadata["knob"].form}
    numbers = [f.metadata["knob"].label for f in offered.values() if training.recipe.kind(f) != "bool"]
    switches = [f.metadata["knob"].label for f in offered.values() if training.recipe.kind(f) == "bool"]
    assert set(numbers) <= set(field) and all(n.value is None for n in field.values())
    boxes = {c.label: c for c in at.checkbox}
    assert "Augmentation (flip, translate)" in switches
    assert set(switches) <= set(boxes) and not any(boxes[s].value for s in switches)
    field["Epochs"].set_value(2)
    field["SD loss λ"].set_value(0.1)
    at.selectbox[1].set_value("mlp")
    at.button[0].click().run()
    assert not at.exception
    [job] = jobs.list_jobs(ws)
    assert job["argv"][:5] == ["train", "--dataset", "digits", "--arch", "mlp"]
    assert job["argv"][5:9] == ["--epochs", "2", "--sd-lambda", "0.1"]  # only what was filled in
    done = jobs.wait(ws, job["id"], timeout=120)
    assert done["state"] == "succeeded"
    recipe = ws.get(done["result_id"], "model")["recipe"]
    assert recipe == {**training.default_for("mlp", "digits").as_meta(), "epochs": 2, "sd_lambda": 0.1}


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


def test_unlearn_page_says_where_the_forget_set_sits_in_the_block_chain(monkeypatch, ws):
    model = checkpoints.train(ws, DatasetSpec(), "mlp", training.Recipe(epochs=1, blocks=4), CPU)
    ids = artifacts.open_blocks(ws, model).ids
    forget_sets.create(ws, model, "ids", ids=[int(ids[0][0]), int(ids[3][0])], name="blocks 1 and 4")
    at = open_page(monkeypatch, ws, "unlearn")
    next(m for m in at.multiselect if m.label == "Methods").set_value(["deepobliviate"]).run()
    assert not at.exception
    assert any("2 of the 4 blocks" in i.value and "block d = 1" in i.value for i in at.info)
    assert any("retrained from block 1 onward: little speed-up" in w.value for w in at.warning)
    at.radio(key="p-deepobliviate-requests").set_value("points").run()  # two requests, each from its own block
    assert any("As 2 requests" in i.value for i in at.info)
    # after the run, Compare lists each request's figures and draws the residual curve of one
    runs.unlearn(ws, model, ws.find("forget_set")[0], "deepobliviate", {"requests": "points"}, CPU, with_oracle=False)
    at = open_page(monkeypatch, ws, "compare")
    at.session_state["compare_section"] = "One run in detail"
    at.run()
    assert not at.exception and not at.error
    assert any(list(d.value.get("request", [])) == [1, 2] for d in at.dataframe)
    assert "residual" in {el.key for el in at.get("plotly_chart")}


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="the Ray option shows only with Ray installed")
def test_memorization_form_sends_exact_to_a_ray_cluster(monkeypatch, populated):
    ws = populated["ws"]
    at = open_page(monkeypatch, ws, "memorization")
    assert any("M sample-passes" in c.value for c in at.caption)  # the cost model, before anything runs
    at.toggle[0].set_value(True)
    at.text_input[0].set_value("127.0.0.1:1")  # nothing listens there
    at.button[0].click().run()
    job = next(j for j in jobs.list_jobs(ws) if "--backend" in j["argv"])
    assert job["argv"][-4:] == ["--backend", "ray", "--address", "127.0.0.1:1"]
    done = jobs.wait(ws, job["id"], timeout=120)
    assert done["state"] == "failed" and "nothing answers at Ray address 127.0.0.1:1" in done["message"]


def test_interrupted_exact_run_is_shown_and_resumed_from_the_page(monkeypatch, ws):
    from explorer.training import ensembles

    model = checkpoints.train(ws, DatasetSpec(), "mlp", training.Recipe(epochs=2), CPU)
    real, calls = ensembles.train_correctness, []

    def stop_after_first_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(ensembles, "train_correctness", stop_after_first_chunk)
        with pytest.raises(KeyboardInterrupt):
            memorize.exact(ws, model, estimator.ExactConfig(models=6, epochs=2, seed=3, chunk=2,
                                                                   engine="sequential"), CPU)
    at = open_page(monkeypatch, ws, "memorization")
    assert any("interrupted exact run" in m.value for m in at.markdown)
    assert "live_conv-0" in {el.key for el in at.get("plotly_chart")}
    next(b for b in at.button if b.label == "Resume it").click().run()
    job = next(j for j in jobs.list_jobs(ws) if j["argv"][0] == "memorize")
    assert job["argv"] == commands.memorize(model["id"], estimator.ExactConfig(
        models=6, epochs=2, seed=3, chunk=2, engine="sequential"))
    done = jobs.wait(ws, job["id"], timeout=120)
    assert done["state"] == "succeeded", jobs.log_tail(done)
    assert memorize.in_progress(ws, model["id"]) == []


def test_the_sidebar_lists_a_running_job_only_where_the_page_does_not_show_it(monkeypatch, ws):
    """Home shows the job it launched, live; its sidebar would repeat it, and poll the server for it again."""
    job_id = jobs.submit(ws, ["train", "--arch", "cnn", "--epochs", "500", "--device", "cpu"], "long train")
    try:
        monkeypatch.setenv("EXPLORER_WORKSPACE", str(ws.path))
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
        at.session_state["home_job"] = job_id  # as Home's button leaves it
        at.run().run()  # the second run is the one a running job's poll brings
        assert not at.exception
        assert "**Running jobs**" not in [m.value for m in at.sidebar.markdown]
        assert any("long train" in p.proto.text for p in at.get("progress"))  # on the page itself
        at.switch_page("views/models.py").run()
        assert "**Running jobs**" in [m.value for m in at.sidebar.markdown]
    finally:
        jobs.cancel(ws, job_id)
        jobs.wait(ws, job_id, timeout=60)


def test_your_own_method_by_path_gets_a_form_from_its_spec_and_runs(monkeypatch, populated, tmp_path):
    """Naming a file's Method subclass on the Unlearn page draws its parameters from its spec and
    launches it as any method: no edit to the project."""
    ws = populated["ws"]
    (tmp_path / "mine.py").write_text(
        "import torch.nn.functional as F\n"
        "from explorer.unlearning import Method, Param, with_defaults\n\n"
        "class Damp(Method):\n"
        "    name, summary = 'damp', 'Fine-tune with a smaller step.'\n"
        "    spec = {**with_defaults(Method.spec, epochs=1, batch_size=64),\n"
        "            'shrink': Param(0.5, 'shrink', 'Step scale.', high=1)}\n\n"
        "    def loss(self, model, retain, forget, step):\n"
        "        return self.params['shrink'] * F.cross_entropy(model(retain.x), retain.y)\n")
    at = open_page(monkeypatch, ws, "unlearn")
    at.multiselect[0].set_value([])
    at.text_input[0].set_value(f"{tmp_path / 'mine.py'}:Damp").run()
    assert not at.exception
    shrink = next(n for n in at.number_input if n.label == "shrink")
    assert shrink.value == 0.5 and shrink.max == 1.0
    shrink.set_value(0.25)
    next(b for b in at.button if b.label == "Run").click().run()
    job = next(j for j in jobs.list_jobs(ws) if j["argv"][0] == "unlearn" and "Damp" in " ".join(j["argv"]))
    assert json.loads(job["argv"][job["argv"].index("--params") + 1])["shrink"] == 0.25
    done = jobs.wait(ws, job["id"], timeout=180)
    assert done["state"] == "succeeded", jobs.log_tail(done)


def test_memorization_page_offers_fast_cnn_when_the_model_is_too_slow_on_cifar_shaped_data(monkeypatch, ws, tmp_path):
    """A CNN on CIFAR-10 (files in torchvision's layout), with benched throughputs saying fast_cnn
    is far faster: the page says how long each would take, that memorization would then be
    fast_cnn's, and its button trains a fast_cnn on the same data."""
    from test_data import _write_cifar
    from views import ui

    _write_cifar(tmp_path / "data", "cifar10", n_train=12, n_test=20)
    spec = DatasetSpec(name="cifar10", root=str(tmp_path / "data"))
    checkpoints.train(ws, spec, "cnn", training.Recipe(epochs=1), CPU)
    monkeypatch.setattr(ui, "measured_throughput",
                        lambda: {"cpu": {"cnn": {"batched": 50.0}, "fast_cnn": {"batched": 5000.0}}})
    at = open_page(monkeypatch, ws, "memorization")
    assert not at.exception
    said = " ".join(c.value for c in at.caption)
    assert "pace `python -m bench scale` measured for cnn" in said
    assert "Too slow?" in said and "measured on fast_cnn models, not on cnn" in said
    next(b for b in at.button if b.label == "Train a fast_cnn on this dataset").click().run()
    job = next(j for j in jobs.list_jobs(ws) if j["argv"][0] == "train")
    assert job["argv"][:5] == ["train", "--dataset", "cifar10", "--arch", "fast_cnn"]
    assert job["argv"][job["argv"].index("--data-root") + 1] == str(tmp_path / "data")
    jobs.cancel(ws, job["id"])


def test_the_memorization_of_a_model_trained_with_augmentation_says_so(monkeypatch, ws):
    rec = checkpoints.train(ws, DatasetSpec(), "mlp", training.Recipe(epochs=2, augment=True), CPU)
    [scores], _ = memorize.compute_proxies(ws, rec, ["confidence"], CPU)
    assert scores["augmented"] is True  # the score set itself says so, for scripts reading --json
    for page in ("memorization", "explore"):
        at = open_page(monkeypatch, ws, page)
        assert not at.exception
        assert any("trained with augmentation" in c.value for c in at.caption), page
