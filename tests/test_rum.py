"""RUM and shuffle: partitions, the retain set at each step, and sweeps that tune them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import CPU, last_json, run_cli, snapshot
from explorer import unlearning
from explorer.memorization import scores
from explorer.pipeline import runs, sweeps
from explorer.store import artifacts
from explorer.unlearning import sequence
from explorer.errors import UserError
from explorer.unlearning.base import ParamError


class Recorder:
    """A stand-in method that records what the sequence hands it."""

    def __init__(self, name, calls):
        self.name, self.params, self.calls = name, {}, calls

    def unlearn(self, model, ds, retain_ids, forget_ids, device, progress=None):
        self.calls.append((self.name, np.asarray(retain_ids).tolist(), np.asarray(forget_ids).tolist()))
        return model


class TinyData:
    n_train = 12


def recording_rum(calls, steps=("a", "b", "c"), **kw):
    rum = unlearning.Rum(steps=list(steps), make=lambda name, params, *_: Recorder(name, calls), **kw)
    return rum


def test_split_into_terciles_low_to_high():
    values = np.array([0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6])
    groups = sequence.split(values, np.arange(9))
    assert [g.tolist() for g in groups] == [[1, 3, 5], [0, 7, 8], [2, 4, 6]]
    by_threshold = sequence.split(values, np.arange(9), thresholds=[0.25, 0.65])
    assert [g.tolist() for g in by_threshold] == [[1, 5], [0, 3, 7, 8], [2, 4, 6]]
    with pytest.raises(ParamError, match="no score"):
        sequence.split(np.r_[values[:8], np.nan], np.arange(9))


def test_partitions_respect_orientation():
    # Confidence falls as memorization rises: the "high" group must be the least confident.
    confidence = np.array([0.99, 0.2, 0.95, 0.5, 0.3, 0.97])
    groups = sequence.split(scores.oriented("confidence", confidence), np.arange(6))
    assert groups[-1].tolist() == [1, 4] and groups[0].tolist() == [0, 5]


def test_each_step_retains_everything_not_yet_processed():
    calls = []
    rum = recording_rum(calls)
    rum.values = np.arange(12, dtype=float)  # sample i has score i
    forget = np.array([1, 2, 5, 6, 9, 10])
    rum.unlearn(None, TinyData, None, forget, CPU)
    rest = [0, 3, 4, 7, 8, 11]
    assert calls == [
        ("a", sorted(rest + [5, 6, 9, 10]), [1, 2]),  # R_1 = D \ S_1: later groups still retained
        ("b", sorted(rest + [9, 10]), [5, 6]),
        ("c", rest, [9, 10]),
    ]


def test_none_steps_still_leave_later_retain_sets_and_order_is_honoured():
    calls = []
    rum = recording_rum(calls, steps=("none", "b", "c"), order="high-low")
    rum.values = np.arange(12, dtype=float)
    rum.unlearn(None, TinyData, None, np.array([1, 2, 5, 6, 9, 10]), CPU)
    rest = [0, 3, 4, 7, 8, 11]
    assert calls == [("c", sorted(rest + [1, 2, 5, 6]), [9, 10]), ("b", sorted(rest + [1, 2]), [5, 6])]
    assert [s["method"] for s in rum.report["steps"]] == ["c", "b", "none"]


def test_empty_group_is_skipped_and_said_so():
    calls = []
    rum = recording_rum(calls, thresholds=[0.5, 100.0])  # nothing scores ≥ 100
    rum.values = np.arange(12, dtype=float)
    rum.unlearn(None, TinyData, None, np.array([0, 4, 5]), CPU)
    assert [c[0] for c in calls] == ["a", "b"]
    assert rum.report["steps"][2] == {"group": "high", "size": 0, "method": "c", "ids": [], "skipped": "empty group"}


def test_shuffle_splits_at_random_into_equal_parts():
    calls = []
    shuffle = unlearning.Shuffle(steps="x", parts=3, seed=1, make=lambda n, p, *_: Recorder(n, calls))
    shuffle.unlearn(None, TinyData, None, np.arange(6), CPU)
    parts = [c[2] for c in calls]
    assert sorted(sum(parts, [])) == list(range(6)) and [len(p) for p in parts] == [2, 2, 2]
    assert parts != [[0, 1], [2, 3], [4, 5]]


def test_bad_sequences_are_refused():
    with pytest.raises(ParamError, match="one step per group"):
        unlearning.make("rum", {"steps": ["none", "finetune"]})
    with pytest.raises(ParamError, match="has no parameter 'lr'"):
        unlearning.make("rum", {"lr": 0.1})
    with pytest.raises(ParamError, match="not another sequence"):
        unlearning.make("rum", {"steps": ["rum", "none", "none"]})
    with pytest.raises(ParamError, match="finetune: lr must be"):
        unlearning.make("rum", {"steps": [{"method": "finetune", "params": {"lr": -1}}, "none", "none"]})
    with pytest.raises(ParamError, match="thresholds must increase"):
        m = unlearning.make("rum", {"thresholds": [0.6, 0.2]})
        m.values = np.zeros(4)
        m.groups(np.arange(3))


def test_rum_run_in_the_workspace(populated):
    ws, model, fs = populated["ws"], populated["model"], populated["forget_set"]
    run = runs.unlearn(ws, model, fs, "rum", {"score": "confidence", "steps": [
        "none", {"method": "finetune", "params": {"epochs": 1}}, {"method": "neggrad_plus", "params": {"epochs": 1}}]},
        CPU)
    details = run["details"]
    stored = artifacts.latest_scores(ws, model["id"]).get("confidence")  # other tests may have stored one
    assert details["score"] == {"name": "confidence", "id": stored["id"] if stored else None}
    assert sum(details["groups"].values()) == fs["size"]
    assert [s["method"] for s in details["steps"]] == ["none", "finetune", "neggrad_plus"]
    assert run["metrics"]["tow"] is not None and run["params"]["order"] == [0, 1, 2]


def test_rum_without_the_score_fails_before_any_work(ws):
    from explorer import training
    from explorer.pipeline import checkpoints, forget_sets
    from explorer.data import DatasetSpec

    model = checkpoints.train(ws, DatasetSpec(), "mlp", training.Recipe(epochs=1), CPU)
    fs = forget_sets.create(ws, model, "random", size=20)
    before = snapshot(ws)
    with pytest.raises(UserError, match="no exact scores"):
        runs.unlearn(ws, model, fs, "rum", {}, CPU)
    assert snapshot(ws) == before  # not even the oracle was trained


def test_grid_front_and_best():
    points = sweeps.grid("neggrad_plus")
    assert len(points) == 3 * 2 * 3 and {p["alpha"] for p in points} == {0.9, 0.95, 0.99}
    assert {p["lr"] for p in points} == {0.002, 0.01, 0.05} and {p["epochs"] for p in points} == {2, 5}
    assert len(sweeps.grid("finetune", {"epochs": 1})) == 3  # ½ of one epoch is still one
    pts = [{"tow": 0.9, "seconds": 3.0}, {"tow": 0.8, "seconds": 1.0}, {"tow": 0.7, "seconds": 2.0},
           {"tow": 0.9, "seconds": 2.0}]
    assert sweeps.front(pts) == [pts[1], pts[3]]
    assert sweeps.best(pts) is pts[3]


def test_sweep_tunes_methods_and_rum(populated, monkeypatch):
    monkeypatch.setattr(sweeps, "LR_FACTORS", (1.0, 5.0))
    monkeypatch.setattr(sweeps, "EPOCH_FACTORS", (1.0,))
    monkeypatch.setattr(unlearning.REGISTRY["neggrad_plus"], "knob_values", (0.9,))
    ws, model, fs = populated["ws"], populated["model"], populated["forget_set"]
    rec = sweeps.sweep(ws, model, fs, ["neggrad_plus", "rum"], CPU, score="confidence",
                       base={"neggrad_plus": {"epochs": 1}})
    assert len(rec["points"]) == 2 + 1
    assert set(rec["best_runs"]) == {"neggrad_plus", "rum"}
    best_run = ws.get(rec["best_runs"]["neggrad_plus"], "run")
    assert best_run["metrics"]["tow"] == max(p["tow"] for p in rec["points"] if p["method"] == "neggrad_plus")
    rum = ws.get(rec["best_runs"]["rum"], "run")
    assert len(rum["details"]["tuning"]) == 3 and rum["tuned_by"] == "sweep"
    # Beam search: each group extends every kept partial sequence (one at first, then `beam`) by every candidate.
    trials = [g["trials"] for g in rum["details"]["tuning"]]
    assert rec["beam"] == sweeps.BEAM == 2 and trials == [trials[0], 2 * trials[0], 2 * trials[0]]
    assert all(s == "none" or s["method"] == "neggrad_plus" for s in rum["params"]["steps"])


def test_cli_sweep_and_oracle_free_runs_refuse_bad_input(populated):
    ws, model, fs = populated["ws"], populated["model"], populated["forget_set"]
    before = snapshot(ws)
    for args, reason in [
        (["--method", "mnemonic,rum", "--sweep"], "cannot sweep"),
        (["--method", "rum", "--sweep"], "base methods RUM may choose from"),
        (["--method", "finetune,salun"], "one --method"),
        (["--method", "finetune", "--sweep", "--no-oracle"], "drop --no-oracle"),
        (["--method", "finetune", "--beam", "3"], "use it with --sweep"),
        (["--method", "finetune,rum", "--sweep", "--beam", "0"], "at least 1"),
    ]:
        out = run_cli("unlearn", model["id"], "--forget", fs["id"], *args, workspace=ws.path)
        assert out.returncode == 2 and reason in out.stderr, out.stderr
    assert snapshot(ws) == before
    out = run_cli("unlearn", model["id"], "--forget", fs["id"], "--method", "neggrad", "--params", '{"epochs": 1}',
                  "--no-oracle", "--json", workspace=ws.path)
    assert out.returncode == 0, out.stderr
    run = last_json(out.stdout)
    assert run["oracle"] is None and run["metrics"]["tow"] is None and run["metrics"]["speedup"] is None
    assert run["metrics"]["acc_forget"] is not None


def test_unlearn_page_configures_and_launches_rum_and_a_sweep(populated, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from conftest import ROOT
    from explorer.store import jobs

    ws, model, fs = populated["ws"], populated["model"], populated["forget_set"]
    monkeypatch.setenv("EXPLORER_WORKSPACE", str(ws.path))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.switch_page("views/unlearn.py")
    at.session_state["model_id"] = model["id"]
    at.run()
    next(s for s in at.selectbox if s.label == "Forget set").set_value(fs).run()
    next(m for m in at.multiselect if m.label == "Methods").set_value(["neggrad_plus", "rum"]).run()
    at.selectbox(key="rum-score").set_value("confidence").run()  # other tests may leave a partial exact set
    assert not at.exception and not at.error
    groups = [s for s in at.selectbox if s.key and s.key.startswith("rum-") and s.key != "rum-score"]
    assert [s.value for s in groups] == ["none", "finetune", "salun"]  # full RUM by default
    assert sum(int(s.label.split("(")[1].split()[0]) for s in groups) == fs["size"]
    next(b for b in at.button if b.label == "Sweep").click().run()
    job = next(j for j in jobs.list_jobs(ws) if "--sweep" in j["argv"])
    assert job["argv"][job["argv"].index("--method") + 1] == "neggrad_plus,rum"
    assert job["argv"][job["argv"].index("--beam") + 1] == str(sweeps.BEAM)
    jobs.cancel(ws, job["id"])  # the sweep itself is tested above; here only what the page asks for
    next(b for b in at.button if b.label == "Run").click().run()
    launched = {j["argv"][j["argv"].index("--method") + 1]: j for j in jobs.list_jobs(ws) if "--sweep" not in j["argv"]
                and j["argv"][0] == "unlearn" and j["created"] >= job["created"]}
    params = json.loads(launched["rum"]["argv"][launched["rum"]["argv"].index("--params") + 1])
    assert params["steps"] == ["none", "finetune", "salun"] and params["order"] == "low-high"
    for j in launched.values():
        done = jobs.wait(ws, j["id"], timeout=240)
        assert done["state"] == "succeeded", jobs.log_tail(done)


@pytest.mark.parametrize("name", unlearning.NAMES)
def test_every_method_can_be_picked_on_the_unlearn_page(populated, monkeypatch, name):
    from streamlit.testing.v1 import AppTest

    from conftest import ROOT

    monkeypatch.setenv("EXPLORER_WORKSPACE", str(populated["ws"].path))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.switch_page("views/unlearn.py")
    at.session_state["model_id"] = populated["model"]["id"]
    at.run()
    next(m for m in at.multiselect if m.label == "Methods").set_value([name]).run()
    assert not at.exception, at.exception[0].value
