"""Sample maps, forget-set strategies and the Explore page."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from conftest import CPU, ROOT, last_json, run_cli, snapshot
from explorer import training
from explorer.evaluation import embeddings, influence, metrics
from explorer.memorization import scores
from explorer.pipeline import checkpoints, embed, forget_sets, memorize
from explorer.present import selection
from explorer.store import artifacts
from explorer.data import DatasetSpec
from explorer.evaluation.choice import ForgetSetError, choose
from explorer.store.workspace import Workspace


@pytest.fixture(scope="module")
def explored(tmp_path_factory) -> dict:
    """A model with label noise, its confidence proxy and a PCA map; tests add forget sets."""
    ws = Workspace(tmp_path_factory.mktemp("explore") / "ws")
    model = checkpoints.train(ws, DatasetSpec(label_noise=0.05), "mlp", training.Recipe(epochs=8), CPU)
    (conf,), _ = memorize.compute_proxies(ws, model, ["confidence"], CPU)
    smap = embed.compute(ws, model, "pca")
    return {"ws": ws, "model": model, "confidence": conf, "map": smap}


# -- strategies ---------------------------------------------------------------------------------

def test_score_strategies_pick_by_oriented_score():
    labels = np.zeros(10, dtype=np.int64)
    labels[5:] = 1
    values = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, np.nan])  # sample 9 was never held out
    assert choose("low", labels, values=values, size=3).tolist() == [0, 1, 2]
    assert choose("high", labels, values=values, size=3).tolist() == [6, 7, 8]
    assert choose("mid", labels, values=values, size=1, centre=0.5).tolist() == [5]
    assert choose("mid", labels, values=values, size=2, centre=0.5).tolist() in ([4, 5], [5, 6])  # a seeded tie
    assert choose("high", labels, values=values, size=2, classes=[0]).tolist() == [3, 4]
    mix = choose("mix", labels, values=values, size=6, centre=0.4)
    assert len(mix) == 6 and {0, 1, 7, 8} <= set(mix.tolist()) and 9 not in mix  # 2 low, 2 high, 2 mid
    assert {3, 4, 5} & set(mix.tolist())  # the middle third sits around the centre
    with pytest.raises(ForgetSetError, match="have a score"):
        choose("high", labels, values=values, size=10)  # NaN samples are never picked
    with pytest.raises(ForgetSetError, match="needs a score set"):
        choose("low", labels, size=3)


def test_strategies_refuse_empty_and_whole_sets():
    labels = np.array([0, 0, 1, 1])
    with pytest.raises(ForgetSetError, match="whole training set"):
        choose("class", labels, classes=[0, 1])
    with pytest.raises(ForgetSetError, match="empty"):
        choose("ids", labels, ids=[])
    with pytest.raises(ForgetSetError, match="0–3"):
        choose("ids", labels, ids=[1, 4])
    with pytest.raises(ForgetSetError, match="no class 5"):
        choose("random", labels, size=1, classes=[5])
    assert choose("random", labels, size=1, classes=[1]).tolist() in ([2], [3])


def test_entanglement_by_hand():
    # R at x = ±1 (centre 0), S at x = 9 and 11 (centre 10); everything's centre is 5.
    g = np.array([[-1.0, 0], [1, 0], [9, 0], [11, 0]])
    # within = 1 + 1, between = ½(5² + 5²) = 25
    assert metrics.entanglement(g, [2, 3]) == pytest.approx(2 / 25)


# -- maps ---------------------------------------------------------------------------------------

def test_entanglement_of_a_selection_from_precomputed_sums():
    rng = np.random.default_rng(1)
    features = torch.as_tensor(rng.normal(size=(500, 12)) + rng.integers(0, 3, size=(500, 1)), dtype=torch.float32)
    fast = selection.Entanglement(features)
    for ids in (rng.choice(500, 7, replace=False), np.arange(40), rng.choice(500, 400, replace=False), [3, 3, 9]):
        assert fast(ids) == pytest.approx(metrics.entanglement(features, ids), rel=1e-6)


def test_a_map_is_computed_once_and_holds_train_then_test(explored):
    ws, model, rec = explored["ws"], explored["model"], explored["map"]
    ds = artifacts.dataset_of(ws, model)
    smap = artifacts.load_map(ws, rec)
    assert smap.xy.shape == (ds.n_train + len(ds.y_test), 2) and np.isfinite(smap.xy).all()
    assert smap.train_features.shape[0] == ds.n_train
    assert (smap.pred[: ds.n_train] == ds.y_train.numpy()).mean() > 0.8
    assert embed.compute(ws, model, "pca")["id"] == rec["id"]  # the same map is not made twice


def test_umap_is_seeded():
    feats = np.random.default_rng(0).normal(size=(120, 8)).astype(np.float32)
    a, b = embeddings.project(feats, "umap", seed=3), embeddings.project(feats, "umap", seed=3)
    assert a.shape == (120, 2) and np.array_equal(a, b)
    assert embeddings.project(feats, "tsne", seed=1).shape == (120, 2)


def test_umap_keeps_neighbourhoods():
    """The map is drawn from exact neighbours computed here (not umap-learn's slow small-data
    path): samples that are neighbours in feature space stay neighbours on the map."""
    from sklearn.manifold import trustworthiness

    rng = np.random.default_rng(1)
    centres = rng.normal(scale=6, size=(6, 16))
    feats = (centres[rng.integers(0, 6, 300)] + rng.normal(size=(300, 16))).astype(np.float32)
    assert trustworthiness(feats, embeddings.project(feats, "umap", seed=0), n_neighbors=10) > 0.9


def test_neighbours_are_nearest_first():
    xy = np.array([[0.0, 0], [5, 0], [1, 0], [2, 0], [0.5, 0]])
    assert embeddings.neighbours(xy, 0, 3).tolist() == [4, 2, 3]
    assert embeddings.neighbours(xy, 0, 2, among=np.array([0, 1, 3])).tolist() == [3, 1]


def test_colourings_and_selection_summary():
    labels, pred = np.array([0, 1, 1, 0, 1]), np.array([0, 1, 0, 0, 0])
    flipped = np.array([False, True, False, False, False])
    raw = {"confidence": np.array([0.9, 0.2, 0.5])}
    options = selection.colourings(labels, pred, 3, ["a", "b"], flipped, raw)
    assert options["correct"].values.tolist() == [1, 1, 0, 1, 0]
    assert options["split"].values.tolist() == [0, 0, 0, 1, 1]
    assert options["flipped label"].values.tolist() == [0, 1, 0, 0, 0]
    conf = options["confidence"]
    assert conf.categories is None and conf.name == "1 − confidence"
    assert np.allclose(conf.values[:3], [0.1, 0.8, 0.5]) and np.isnan(conf.values[3:]).all()
    train, n_test = selection.training_only([4, 0, 2], 3)
    assert train.tolist() == [0, 2] and n_test == 1
    (row,) = selection.score_summary(np.array([1]), raw)
    assert row["mean (selected)"] == pytest.approx(0.8) and row["in top 10%"] == 1.0


def test_a_selections_classes_are_counted_against_a_random_pick():
    rows = selection.class_table(np.array([0, 0, 2]), np.array([0, 0, 1, 1, 2, 2]), ["a", "b", "c"])
    assert [r["class"] for r in rows] == ["a", "b", "c"]
    assert [r["selected"] for r in rows] == [2, 0, 1]
    assert [r["a random pick"] for r in rows] == pytest.approx([1, 1, 1])  # 3 of 6 samples, a third in each class
    assert [r["× a random pick"] for r in rows] == pytest.approx([2, 0, 1])


# -- forget sets in the workspace and the CLI -------------------------------------------------------

def test_forget_set_by_score_records_its_provenance(explored):
    ws, model, conf = explored["ws"], explored["model"], explored["confidence"]
    fs = forget_sets.create(ws, model, "high", size=20, seed=1, score_id=conf["id"], name="most memorized")
    values = scores.oriented("confidence", artifacts.load_scores(ws, conf["id"]).values)
    assert fs["size"] == 20 and values[fs["ids"]].min() >= np.sort(values)[-20] and fs["name"] == "most memorized"
    assert fs["how"]["score"] == "confidence" and fs["how"]["score_id"] == conf["id"]
    assert forget_sets.describe(fs) == "high · by confidence · seed 1"
    assert sum(fs["class_counts"].values()) == 20 and fs["es"] > 0


def test_cli_forget_set_strategies(explored, tmp_path):
    ws, model, conf = explored["ws"], explored["model"], explored["confidence"]
    out = run_cli("forget-set", "create", "--model", model["id"], "--strategy", "mix", "--size", "30",
                  "--scores", conf["id"], "--json", workspace=ws.path)
    assert out.returncode == 0, out.stderr
    fs = last_json(out.stdout)
    assert fs["kind"] == "forget_set" and fs["size"] == 30 and fs["how"]["score"] == "confidence"

    other = checkpoints.train(ws, DatasetSpec(label_noise=0.05), "mlp", training.Recipe(epochs=1), CPU)
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("1, 2, 99999")
    before = snapshot(ws)
    for args, reason in [
        (["--strategy", "high", "--size", "5", "--scores", conf["id"], "--model", other["id"]], "belongs to model"),
        (["--strategy", "low", "--size", "5", "--model", model["id"]], "needs --scores"),
        (["--strategy", "ids", "--ids-file", str(ids_file), "--model", model["id"]], "sample ids must be in"),
        (["--strategy", "class", "--class", "42", "--model", model["id"]], "no class 42"),
        (["--strategy", "bogus", "--model", model["id"]], "unknown strategy"),
    ]:
        bad = run_cli("forget-set", "create", *args, workspace=ws.path)
        assert bad.returncode == 2 and reason in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert snapshot(ws) == before

    listed = run_cli("list", "forget-sets", "--json", workspace=ws.path)
    assert fs["id"] in {r["id"] for r in last_json(listed.stdout)}
    assert "mix · by confidence" in run_cli("list", "forget-sets", workspace=ws.path).stdout


def test_cli_embed(explored):
    ws, model = explored["ws"], explored["model"]
    bad = run_cli("embed", model["id"], "--method", "mds", workspace=ws.path)
    assert bad.returncode == 2 and "unknown map method" in bad.stderr
    out = run_cli("embed", model["id"], "--method", "pca", "--json", workspace=ws.path)
    assert out.returncode == 0, out.stderr
    assert last_json(out.stdout)["id"] == explored["map"]["id"]  # already there: reused
    assert explored["map"]["id"] in run_cli("list", "maps", workspace=ws.path).stdout


def test_a_small_map_is_sent_so_that_plotly_draws_it_once():
    """Streamlit calls Plotly.react right after the first draw and after each lasso; plotly redraws
    every point unless the arrays are plain lists under an unchanged datarevision and the layout
    has no template, and again when a legend or colour bar grows the margins."""
    import json

    import plotly.io as pio

    from explorer.present import plots

    rng = np.random.default_rng(0)
    xy, ids, labels = rng.normal(size=(300, 2)), np.arange(300), rng.integers(0, 3, 300)
    score = rng.random(300)
    sent = lambda fig: json.loads(pio.to_json(fig, validate=False))  # noqa: E731
    for fig in (plots.sample_map(xy, ids, labels, score, "score", highlight=np.array([4])),
                plots.sample_map(xy, ids, labels, labels, "class", categories=["a", "b", "c"])):
        spec = sent(fig)
        assert "template" not in spec["layout"] and spec["layout"]["margin"]["autoexpand"] is False
        assert all(isinstance(t[k], list) for t in spec["data"] for k in ("x", "y"))
        assert all(isinstance(t["customdata"], list) for t in spec["data"] if "customdata" in t)
    same, other = (sent(plots.sample_map(xy, ids, labels, v, "score"))["layout"]["datarevision"] for v in (score, score[::-1]))
    assert same == sent(plots.sample_map(xy, ids, labels, score, "score"))["layout"]["datarevision"] != other
    big = sent(plots.sample_map(rng.normal(size=(plots.SVG_POINTS + 1, 2)), np.arange(plots.SVG_POINTS + 1),
                                np.zeros(plots.SVG_POINTS + 1, int), rng.random(plots.SVG_POINTS + 1), "score"))
    assert "bdata" in big["data"][0]["x"]  # a large map stays binary: plain lists would cost the server seconds


def test_every_chart_of_the_pages_is_sent_so_that_plotly_draws_it_once():
    """What the map does, for every other chart (views/ui.chart): plain lists, a datarevision that
    follows the data, no template, and the template's colours kept."""
    import json

    import plotly.io as pio

    from explorer.present import plots

    rng = np.random.default_rng(0)
    x, y = rng.random(400), rng.random(400)
    sent = lambda fig: json.loads(pio.to_json(fig, validate=False))  # noqa: E731
    spec = sent(plots.steady(plots.score_vs_score(x, y, np.arange(400), np.zeros(400, int), "a", "b")))
    assert "template" not in spec["layout"] and spec["layout"]["colorway"][0] == "#636efa"
    assert all(isinstance(t[k], list) for t in spec["data"] for k in ("x", "y", "customdata"))
    revision = lambda a, b: sent(plots.steady(plots.score_vs_score(a, b, np.arange(400), np.zeros(400, int), "a", "b"))  # noqa: E731
                                 )["layout"]["datarevision"]
    assert revision(x, y) == spec["layout"]["datarevision"] != revision(y, x)
    panels = sent(plots.steady(plots.metric_panels([{"method": "m", "run": "r-1234", "acc": 0.5}], {"acc": "acc"},
                                                   {"acc": 1.0}, {"acc": 0.4})))
    assert [a["text"] for a in panels["layout"]["annotations"]][-2:] == ["original 1.000", "oracle 0.400"]


# -- the page -------------------------------------------------------------------------------------

def open_explore(monkeypatch, ws: Workspace, model_id: str, selected: dict | None = None) -> AppTest:
    monkeypatch.setenv("EXPLORER_WORKSPACE", str(ws.path))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.switch_page("views/explore.py")
    at.session_state["model_id"] = model_id
    if selected is not None:  # AppTest cannot lasso: seed what the chart's selection callback stores
        at.session_state["explore_selection"] = selected
    return at.run()


def test_page_shows_a_selection_and_saves_it(monkeypatch, explored):
    ws, model = explored["ws"], explored["model"]
    ds = artifacts.dataset_of(ws, model)
    ids = [3, 7, 11, 20, 42, ds.n_train + 5]  # the last is a test sample
    at = open_explore(monkeypatch, ws, model["id"], {"model": model["id"], "ids": ids})
    assert not at.exception and not at.error
    assert any(h.value == "5 samples selected" for h in at.subheader)
    assert any("1 test samples" in c.value for c in at.caption)
    classes = at.dataframe[0].value  # the selection's classes, the test sample left out
    assert classes["selected"].sum() == 5 and list(classes["class"]) == [str(c) for c in ds.classes]
    es = next(m for m in at.metric if m.label == "entanglement (ES)")
    features = artifacts.load_map(ws, explored["map"]).train_features
    assert float(es.value.replace(",", "")) == pytest.approx(metrics.entanglement(features, ids[:5]), abs=0.05)

    name = next(t for t in at.text_input if t.value.startswith("selection"))
    name.set_value("five digits")
    next(b for b in at.button if b.label == "Save as forget set").click().run()
    assert not at.exception
    saved = ws.find("forget_set", name="five digits")
    assert len(saved) == 1 and saved[0]["ids"] == ids[:5] and saved[0]["strategy"] == "selection"


def test_page_opens_one_clicked_sample(monkeypatch, explored):
    ws, model = explored["ws"], explored["model"]
    at = open_explore(monkeypatch, ws, model["id"], {"model": model["id"], "ids": [12]})
    assert not at.exception and not at.error
    assert any(h.value == "Sample #12" for h in at.subheader)
    assert any(c.value == "Nearest on the map" for c in at.caption)


def test_page_colours_by_anything_and_builds_by_rule(monkeypatch, explored):
    ws, model = explored["ws"], explored["model"]
    at = open_explore(monkeypatch, ws, model["id"])
    colour = next(s for s in at.selectbox if s.label == "Colour by")
    for option in ("predicted class", "correct", "split", "flipped label", "confidence"):
        assert option in colour.options or any(option in o for o in colour.options)
    assert at.get("plotly_chart")[0].proto.theme == ""  # the map brings its own look: no template to redraw for
    colour.set_value("correct").run()
    assert not at.exception

    assert not any(s.label == "Strategy" for s in at.selectbox)  # the by-rule form is drawn only when opened
    at.session_state["explore_by_rule"] = True
    at.run()
    next(s for s in at.selectbox if s.label == "Strategy").set_value("low")
    next(n for n in at.number_input if n.label == "Size").set_value(12)
    next(b for b in at.button if b.label == "Create forget set").click().run()
    assert not at.exception and not at.error
    made = [f for f in ws.find("forget_set", model_id=model["id"]) if f["strategy"] == "low"]
    assert made and made[-1]["size"] == 12 and made[-1]["how"]["score"] == "confidence"
    assert made[-1]["id"] in at.dataframe[-1].value["id"].tolist()


# -- influence on the sample panel ----------------------------------------------------------------

@pytest.fixture(scope="module")
def exact_explored(tmp_path_factory) -> dict:
    """A model with an exact memorization (8 subset models, so their test correctness) and a map."""
    from explorer.memorization.estimator import ExactConfig

    ws = Workspace(tmp_path_factory.mktemp("explore-exact") / "ws")
    model = checkpoints.train(ws, DatasetSpec(label_noise=0.05), "mlp", training.Recipe(epochs=8), CPU)
    exact = memorize.exact(ws, model, ExactConfig(models=8, epochs=8, engine="batched"), CPU)
    embed.compute(ws, model, "pca")
    return {"ws": ws, "model": model, "exact": exact}


def test_influence_pairs_of_one_sample_are_top_pairs_with_their_shares():
    rng = np.random.default_rng(0)
    masks, test_correct = rng.random((16, 30)) < 0.5, rng.random((16, 12)) < 0.7
    rows = selection.influence_pairs(masks, test_correct, 3, k=3)
    assert [{k: r[k] for k in ("train_id", "test_id", "influence", "direction", "rank")} for r in rows] == \
        influence.top_pairs(masks, test_correct, 3, rows=[3])
    for r in rows:  # influence = P[right | trained with 3] − P[right | without it]
        assert r["right_with"] == pytest.approx(test_correct[masks[:, 3], r["test_id"]].mean())
        assert r["right_with"] - r["right_without"] == pytest.approx(r["influence"])
    said = selection.influence_sentence(3, rows, 16)
    helped = [f"#{r['test_id']}" for r in rows if r["direction"] == "helps"]
    assert said.startswith("Without training image #3, test images") and all(h in said for h in helped)
    assert "changes no test sample" in selection.influence_sentence(3, [], 16)


def test_sample_panel_shows_the_test_samples_a_training_sample_helps_and_hurts(monkeypatch, exact_explored):
    ws, model, exact = exact_explored["ws"], exact_explored["model"], exact_explored["exact"]
    arrays = artifacts.load_scores(ws, exact).arrays
    expected = {}
    for i in range(40):  # a sample whose influence picks out test samples both ways
        pairs = influence.top_pairs(arrays["masks"], arrays["test_correct"], 5, rows=[i])
        if {p["direction"] for p in pairs} == {"helps", "hurts"}:
            expected = {d: [p["test_id"] for p in pairs if p["direction"] == d] for d in ("helps", "hurts")}
            break
    assert expected, "no training sample with both helped and hurt test samples"
    at = open_explore(monkeypatch, ws, model["id"], {"model": model["id"], "ids": [i]})
    assert not at.exception and not at.error
    table = next(d.value for d in at.dataframe if "test id" in d.value.columns)
    for direction, ids in expected.items():
        assert table[table["direction"] == direction]["test id"].tolist() == ids
    assert (table["train id"] == i).all()
    said = next(m.value for m in at.markdown if m.value.startswith(f"Without training image #{i},"))
    assert all(f"#{j}" in said for j in expected["helps"])
    assert at.get("download_button"), "the table is offered as a CSV download"


def test_sample_panel_says_which_command_makes_influence(monkeypatch, explored):
    ws, model = explored["ws"], explored["model"]
    at = open_explore(monkeypatch, ws, model["id"], {"model": model["id"], "ids": [12]})
    assert not at.exception
    assert any(f"memorize {model['id']} --exact" in c.value for c in at.caption)
