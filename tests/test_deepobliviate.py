"""DeepObliviate (Xu et al. 2021), as understood: block training, the stored blocks, the stop
rules, stitching, and the method end to end on tiny MLPs over the embedded digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import CPU, run_cli
from safetensors.torch import load_file

from explorer import training, unlearning
from explorer.pipeline import checkpoints, forget_sets, runs
from explorer.present import plots
from explorer.store import artifacts
from explorer.training import blocks
from explorer.unlearning import deepobliviate
from explorer.data import DatasetSpec
from explorer.unlearning.deepobliviate import DeepObliviate
from explorer.store.workspace import Workspace

B = 4
RECIPE = training.Recipe(epochs=2, lr=0.01, blocks=B)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    ws = Workspace(tmp_path_factory.mktemp("deepobliviate") / "ws")
    rec = checkpoints.train(ws, DatasetSpec(), "mlp", RECIPE, CPU)
    ds = artifacts.dataset_of(ws, rec)
    return {"ws": ws, "rec": rec, "ds": ds, "store": artifacts.open_blocks(ws, rec)}


def unlearned(trained, forget, with_method=False, **params):
    method = DeepObliviate(**params)
    method.bind(**runs.needed(trained["ws"], trained["rec"], method))
    model = artifacts.load_model(trained["ws"], trained["rec"])
    retain = np.setdiff1d(np.arange(trained["ds"].n_train), forget)
    method.unlearn(model, trained["ds"], retain, np.asarray(forget), CPU)
    return (model, method.report, method) if with_method else (model, method.report)


def chain(trained, forget, d: int) -> dict:
    """The retrained chain computed independently: M_{d−1} with its momentum, then blocks d … B
    without the forgotten points."""
    store, ds = trained["store"], trained["ds"]
    model = training.init_model("mlp", ds, 0)
    opt = blocks.new_optimizer(model, RECIPE)
    blocks.restore(model, opt, store.state(d - 1), store.momentum(d - 1) if d > 1 else None, CPU)
    for k in range(d, B + 1):
        kept = store.ids[k - 1][~np.isin(store.ids[k - 1], forget)]
        blocks.train_block(model, opt, ds.x_train, ds.y_train, kept, RECIPE, k, CPU)
    return model.state_dict()


# -- block training and what is stored ---------------------------------------------------------------


def test_block_training_is_deterministic_and_stores_every_block(trained, tmp_path):
    ws, rec, store = trained["ws"], trained["rec"], trained["store"]
    assert rec["blocks"] == B and rec["recipe"]["blocks"] == B and rec["has_dynamics"] is False
    assert rec["block_bytes"] == ws.read(rec, artifacts.BLOCKS).stat().st_size
    assert [row["block"] for row in rec["log"]] == list(range(1, B + 1))  # one log row per block
    assert [row["epoch"] for row in rec["log"]] == [2, 4, 6, 8] and "test_acc" in rec["log"][0]
    # M_0 is the initial model, M_B the published one; every block in between is there
    init, final = load_file(ws.read(rec, "init.safetensors")), load_file(ws.read(rec, "weights.safetensors"))
    assert all(torch.equal(store.state(0)[k], init[k]) for k in init)
    assert all(torch.equal(store.state(B)[k], final[k]) for k in final)
    assert all(not torch.equal(store.state(k)["1.weight"], store.state(k - 1)["1.weight"]) for k in range(1, B + 1))
    assert all(v.abs().sum() == 0 for v in store.momentum(0).values())
    assert all(v.abs().sum() > 0 for v in store.momentum(B).values())
    with pytest.raises(IndexError):
        store.state(B + 1)
    # the blocks partition the training set, each class spread evenly over them
    ids = np.concatenate(store.ids)
    assert sorted(ids.tolist()) == list(range(trained["ds"].n_train))
    y = trained["ds"].y_train.numpy()
    counts = np.array([np.bincount(y[b], minlength=10) for b in store.ids])
    assert (counts.max(0) - counts.min(0)).max() <= 1
    # the same recipe gives the same file, byte for byte
    again = checkpoints.train(Workspace(tmp_path / "ws"), DatasetSpec(), "mlp", RECIPE, CPU)
    assert (Workspace(tmp_path / "ws").read(again, artifacts.BLOCKS).read_bytes()
            == ws.read(rec, artifacts.BLOCKS).read_bytes())


def test_recipe_blocks_values_and_meta():
    assert "blocks" not in training.Recipe().as_meta()  # records of unblocked models are unchanged
    assert training.Recipe(blocks=3).as_meta()["blocks"] == 3
    for bad in (1, -2):
        with pytest.raises(training.RecipeError, match="blocks"):
            training.Recipe(blocks=bad)
    with pytest.raises(training.RecipeError, match="blocks"):
        blocks.stratified_blocks(np.zeros(3), 4, 0)


def test_cli_train_refuses_one_block_and_writes_nothing(tmp_path):
    for bad in ("1", "-3"):
        done = run_cli("train", "--arch", "mlp", "--epochs", "1", "--blocks", bad, workspace=tmp_path / "ws")
        assert done.returncode == 2, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "blocks" in done.stderr
        assert not (tmp_path / "ws").exists()


# -- the method --------------------------------------------------------------------------------------


@pytest.mark.parametrize("d", [1, 2])
def test_full_chain_equals_the_retrained_chain_exactly(trained, d):
    forget = trained["store"].ids[d - 1][:5]  # only in block d: later blocks are untouched
    model, report = unlearned(trained, forget, tau=0.0)  # τ = 0 never stops early: t = B
    assert (report["first_block"], report["stop_block"], report["retrained_blocks"]) == (d, B, B - d + 1)
    assert len(report["residual"]) == B - d + 1 and all(r > 0 for r in report["residual"])
    expected = chain(trained, forget, d)
    assert all(torch.equal(model.state_dict()[k], expected[k]) for k in expected)


def test_forgetting_in_the_last_block_retrains_one_block(trained):
    forget = trained["store"].ids[B - 1][:3]
    model, report = unlearned(trained, forget)
    assert report["first_block"] == report["stop_block"] == B and report["retrained_blocks"] == 1
    assert report["blocks"] == B and len(report["residual"]) == 1 and report["rule"] == "ratio"
    expected = chain(trained, forget, B)
    assert all(torch.equal(model.state_dict()[k], expected[k]) for k in expected)


def test_early_stop_stitches_the_rest_of_the_original(trained):
    forget = trained["store"].ids[0][:5]
    model, report = unlearned(trained, forget, tau=1.0)  # any Δ_k < Δ_d stops: here at block 2 at the latest
    t = report["stop_block"]
    assert report["first_block"] == 1 and t < B and report["threshold"] == 1.0
    # recompute M'_t and stitch by hand
    store, ds = trained["store"], trained["ds"]
    m = training.init_model("mlp", ds, 0)
    opt = blocks.new_optimizer(m, RECIPE)
    for k in range(1, t + 1):
        kept = store.ids[k - 1][~np.isin(store.ids[k - 1], forget)]
        blocks.train_block(m, opt, ds.x_train, ds.y_train, kept, RECIPE, k, CPU)
    want = {n: m.state_dict()[n] + (store.state(B)[n] - store.state(t)[n]) for n in m.state_dict()}
    assert all(torch.equal(model.state_dict()[n], want[n]) for n in want)


def test_forget_points_in_a_later_block_keep_the_chain_going(trained):
    store = trained["store"]
    forget = np.concatenate([store.ids[0][:2], store.ids[2][:2]])  # blocks 1 and 3
    _, report = unlearned(trained, forget, tau=1.0)
    assert report["first_block"] == 1 and report["last_block"] == 3 and report["stop_block"] >= 3


def test_powerlaw_on_few_blocks_falls_back_to_the_ratio_rule(trained):
    _, report = unlearned(trained, trained["store"].ids[1][:3], rule="powerlaw")
    assert report["rule"] == "ratio" and report["requested_rule"] == "powerlaw" and "15" in report["note"]


def test_a_model_without_blocks_is_refused(tmp_path):
    ws = Workspace(tmp_path / "ws")
    rec = checkpoints.train(ws, DatasetSpec(), "mlp", training.Recipe(epochs=1), CPU)
    with pytest.raises(unlearning.ParamError, match="--blocks") as err:
        runs.bind(ws, rec, "deepobliviate", {})
    assert "\n" not in str(err.value)
    with pytest.raises(unlearning.ParamError, match="rule"):
        unlearning.make("deepobliviate", {"rule": "sometimes"})
    with pytest.raises(unlearning.ParamError, match="tau"):
        unlearning.make("deepobliviate", {"tau": 2})
    with pytest.raises(unlearning.ParamError, match="requests must be one of set, blocks, points"):
        unlearning.make("deepobliviate", {"requests": "each"})
    assert unlearning.make("deepobliviate").params["requests"] == "set"


def test_a_run_reports_the_chain_and_the_oracle_trains_in_blocks(trained):
    ws, rec = trained["ws"], trained["rec"]
    fs = forget_sets.create(ws, rec, "ids", ids=trained["store"].ids[2][:4].tolist(), name="four of block 3")
    run = runs.unlearn(ws, rec, fs, "deepobliviate", {"tau": 0.5}, CPU)
    details = run["details"]
    assert {"first_block", "stop_block", "rule", "threshold", "residual", "retrained_blocks", "blocks"} <= set(details)
    assert details["first_block"] == 3 and details["blocks"] == B and run["metrics"]["speedup"] > 0
    # the one request's figures join the metrics; the contract's fields stay as they were
    [request] = run["metrics"]["requests"]
    assert request["first_block"] == 3 and request["retrained_blocks"] == details["retrained_blocks"]
    assert request["speedup"] == B / details["retrained_blocks"] and request["acc_test"] == pytest.approx(run["metrics"]["acc_test"])
    assert {"acc_retain", "acc_forget", "tow", "seconds", "retrain_seconds"} <= set(run["metrics"])
    oracle = ws.get(run["oracle_id"], "model")
    assert oracle["recipe"]["blocks"] == B and artifacts.BLOCKS not in oracle["files"]  # its blocks index R: not kept
    assert plots.residual_curve_figure(details).data  # the figure builds from a stored run


# -- requests: a point, a block, one after another -----------------------------------------------------


def test_a_single_point_in_the_last_block_retrains_only_that_block(trained):
    forget = trained["store"].ids[B - 1][:1]
    model, report, method = unlearned(trained, forget, with_method=True, requests="points")
    [request] = method.run_metrics["requests"]
    assert (request["blocks"], request["first_block"], request["stop_block"]) == ([B], B, B)
    assert request["retrained_blocks"] == 1 and request["speedup"] == B  # B blocks to retrain the chain, 1 here
    assert request["points"] == 1 and 0 < request["acc_test"] <= 1 and request["seconds"] > 0
    assert report["requests"][0]["ids"] == forget.tolist() and report["retrained_blocks"] == 1
    expected = chain(trained, forget, B)
    assert all(torch.equal(model.state_dict()[k], expected[k]) for k in expected)


def test_requests_in_turn_give_one_entry_each_and_retrace_the_chain(trained):
    store = trained["store"]
    forget = np.concatenate([store.ids[2][:2], store.ids[3][:1]])  # two points in block 3, one in block 4
    for requests, count in (("points", 3), ("blocks", 2)):
        model, report, method = unlearned(trained, forget, with_method=True, requests=requests, tau=0.0)
        figures = method.run_metrics["requests"]
        assert [f["request"] for f in figures] == list(range(1, count + 1)) and len(report["requests"]) == count
        assert sum(f["points"] for f in figures) == 3 and report["retrained_blocks"] == sum(
            f["retrained_blocks"] for f in figures)
        in_order = [3 if i in store.ids[2] else 4 for i in np.sort(forget)]  # points: in ascending id order
        assert [f["first_block"] for f in figures] == (in_order if requests == "points" else [3, 4])
        assert all(f["stop_block"] == B and f["speedup"] == B / f["retrained_blocks"] for f in figures)
        # what the page said before the run brackets what it did
        said = deepobliviate.plan(store.ids, forget, requests)
        assert said["requests"] == count and said["fewest"] <= report["retrained_blocks"] <= said["most"]
        # τ = 0 retrains to the end: each request restarts from the chain its predecessor left, so the
        # last one lands on the chain retrained once from block 3 without all three points
        expected = chain(trained, forget, 3)
        assert all(torch.equal(model.state_dict()[k], expected[k]) for k in expected), requests


def test_the_chain_after_a_request_is_the_retrained_blocks_then_the_stitch():
    class Store:  # M_k = k·1, momentum k·10
        blocks = 4

        def state(self, k):
            return {"w": torch.full((2,), float(k))}

        def momentum(self, k):
            return {"w": torch.full((2,), 10.0 * k)}

    c = deepobliviate.Chain(Store())
    c.update(2, [{"w": torch.tensor([5.0, 6.0])}], [{"w": torch.tensor([7.0, 7.0])}])  # block 2 retrained, t = 2
    assert c.state(1)["w"].tolist() == [1.0, 1.0] and c.state(2)["w"].tolist() == [5.0, 6.0]
    assert c.state(3)["w"].tolist() == [6.0, 7.0] and c.state(4)["w"].tolist() == [7.0, 8.0]  # M'_2 + (M_k − M_2)
    assert c.momentum(2)["w"].tolist() == [7.0, 7.0] and c.momentum(3)["w"].tolist() == [30.0, 30.0]
    assert c.momentum(0) is None  # M_0: the optimizer has not stepped


def test_the_plan_says_where_the_forget_set_sits_before_the_run(trained):
    ids = trained["store"].ids
    late = deepobliviate.plan(ids, ids[B - 1][:3])
    assert (late["touched"], late["first_block"], late["fewest"], late["most"]) == ([B], B, 1, 1)
    assert "1 of the 4 blocks" in late["text"] and "block d = 4" in late["text"] and late["warnings"] == []
    spread = deepobliviate.plan(ids, np.concatenate([ids[0][:2], ids[3][:2]]))
    assert spread["touched"] == [1, 4] and spread["first_block"] == 1 and spread["fewest"] == spread["most"] == B
    [warning] = spread["warnings"]
    assert "retrained from block 1 onward: little speed-up" in warning and "requests = blocks" in warning
    one_each = deepobliviate.plan(ids, np.concatenate([i[:3] for i in ids]), "points")
    assert one_each["requests"] == 12 and one_each["fewest"] > B
    assert any("more than the 4 of retraining the whole chain" in w for w in one_each["warnings"])
    assert deepobliviate.fewest_blocks(2, 2, 40, "powerlaw") == 15 and deepobliviate.fewest_blocks(30, 30, 40) == 2


# -- pure pieces ---------------------------------------------------------------------------------------


def test_stitch_on_hand_tensors():
    new_t = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(5)}
    old_b = {"w": torch.tensor([10.0, 10.0]), "n": torch.tensor(9)}
    old_t = {"w": torch.tensor([4.0, 6.0]), "n": torch.tensor(5)}
    out = deepobliviate.stitch(new_t, old_b, old_t)
    assert torch.equal(out["w"], torch.tensor([7.0, 6.0])) and out["n"].item() == 9


def test_residual_on_hand_tensors():
    old_prev, old = {"w": torch.tensor([0.0, 0.0])}, {"w": torch.tensor([1.0, 2.0])}
    new_prev, new = {"w": torch.tensor([0.0, 1.0])}, {"w": torch.tensor([0.5, 1.0])}
    assert deepobliviate.residual(old_prev, old, new_prev, new, ["w"]) == pytest.approx(0.5 + 2.0)


def test_ratio_rule_on_constructed_residuals():
    seq = [2.0, 1.6, 0.8, 0.08, 1.0]
    assert deepobliviate.stop_index(seq, "ratio", tau=0.05)["index"] == 3  # 0.08 / 2 = 0.04 < 0.05
    assert deepobliviate.stop_index(seq, "ratio", tau=0.5)["index"] == 2
    assert deepobliviate.stop_index(seq, "ratio", tau=0.0)["index"] == 4  # never: the last block
    assert deepobliviate.stop_index(seq, "ratio", tau=0.5, min_index=4)["index"] == 4
    assert deepobliviate.stop_index([3.0], "ratio", tau=1.0)["index"] == 0
    assert not deepobliviate.should_stop([1.0], "ratio", 1.0, 0)[0]  # never at block d itself


def test_powerlaw_rule_on_constructed_residuals():
    x = np.arange(1, 41)
    seq = (2 * x ** -1.5 + 0.1).tolist()
    fit = deepobliviate.powerlaw_fit(seq)
    assert fit["h"] == pytest.approx(1.5, rel=1e-2) and fit["a"] == pytest.approx(2, rel=1e-2)
    assert fit["b"] == pytest.approx(0.1, abs=1e-3)
    out = deepobliviate.stop_index(seq, "powerlaw", eps=1e-3)
    # relative to Δ_d = 2.1: |dΔ/dx|/Δ_d = 3·x^−2.5 / 2.1 < 1e-3 first at x = 19
    assert out["rule"] == "powerlaw" and out["index"] == 18 and out["note"] is None and out["fit"]["decaying"]
    assert out["fit"]["scale"] == pytest.approx(2.1)
    # the same curve in other units stops at the same block: ε is relative to the first residual
    assert deepobliviate.stop_index([1000 * v for v in seq], "powerlaw", eps=1e-3)["index"] == 18
    assert deepobliviate.stop_index(seq[:14], "powerlaw", eps=1e-3)["index"] == 13  # too short to fit, never stops


def test_powerlaw_refuses_a_growing_residual():
    """A residual that grows (the original's updates and the retrained ones drift apart) must never
    stop the chain, however flat its fitted slope: only a decaying fit stops it."""
    x = np.arange(1, 41)
    growing = (2 - x ** -0.5).tolist()  # rises towards 2, its slope soon tiny
    out = deepobliviate.stop_index(growing, "powerlaw", eps=1e-2)
    assert out["index"] == len(growing) - 1 and not out["fit"]["decaying"]
    stop, fit = deepobliviate.should_stop(growing, "powerlaw", 0.05, 1.0)  # even the loosest ε
    assert not stop and fit["a"] < 0


def test_powerlaw_falls_back_to_ratio_with_too_few_points():
    out = deepobliviate.stop_index([1.0, 0.5, 0.01, 0.3], "powerlaw", tau=0.05)
    assert out["rule"] == "ratio" and out["index"] == 2 and "15" in out["note"]


def test_dfa_exponent_of_white_noise_is_about_a_half():
    noise = np.random.default_rng(0).standard_normal(4000)
    assert deepobliviate.dfa_exponent(noise) == pytest.approx(0.5, abs=0.1)
    assert np.isnan(deepobliviate.dfa_exponent([1.0, 2.0]))


def test_residual_curve_figure():
    report = {"first_block": 3, "stop_block": 5, "blocks": 10, "rule": "ratio", "threshold": 0.5,
              "residual": [4.0, 3.0, 1.5]}
    fig = plots.residual_curve_figure(report)
    assert list(fig.data[0].x) == [3, 4, 5] and list(fig.data[1].x) == [5]
    assert fig.layout.shapes  # the τ·Δ_d line and the stitched band
    fit = {"a": 1.0, "h": 1.0, "b": 0.0, "scale": 1}
    fig = plots.residual_curve_figure({**report, "rule": "powerlaw", "threshold": 1e-5, "fit": fit,
                                        "stop_block": 10, "residual": [1.0] * 8})
    assert len(fig.data) == 3
    nothing = {"first_block": None, "stop_block": None, "blocks": 10, "rule": "ratio", "threshold": 0.05,
               "residual": [], "retrained_blocks": 0}
    assert "nothing" in plots.residual_curve_figure(nothing).layout.title.text
