"""LiRA per sample and influence pairs from the exact-memorization subset models."""

import csv
import io
import json
from dataclasses import asdict

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import last_json
from explorer import models, training
from explorer.cli import app
from explorer.data import DatasetSpec
from explorer.evaluation import influence, lira
from explorer.memorization import estimator
from explorer.memorization.estimator import ExactConfig
from explorer.pipeline import checkpoints, membership, memorize, score_sets
from explorer.store import artifacts
from explorer.store.workspace import Workspace
from explorer.training import ensembles, fit
from explorer.training.loop import init_model

CPU = torch.device("cpu")
runner = CliRunner()


def cli(ws, *args):
    return runner.invoke(app, [*args, "--workspace", str(ws.path)])


@pytest.fixture(scope="module")
def exact_run(tmp_path_factory):
    """A digits mlp fitted to 5% flipped labels, and its exact memorization from 16 subset models."""
    ws = Workspace(tmp_path_factory.mktemp("lira") / "ws")
    model = checkpoints.train(ws, DatasetSpec(label_noise=0.05), "mlp", training.Recipe(epochs=40), CPU)
    rec = memorize.exact(ws, model, ExactConfig(models=16, epochs=40, engine="batched"), CPU)
    return ws, model, rec


def _svc_auc(members, nonmembers, seed=0):
    """The SVC MIA of metrics.mia_efficacy_of (true-label confidence, C=3, rbf), fitted on half of
    each side (balanced) and scored by AUC on the other half."""
    from sklearn.metrics import roc_auc_score
    from sklearn.svm import SVC

    rng = np.random.default_rng(seed)
    a, b = rng.permutation(members), rng.permutation(nonmembers)
    k = min(len(a), len(b)) // 2
    svc = SVC(C=3, kernel="rbf", gamma="auto").fit(np.r_[a[:k], b[:k]][:, None], np.r_[np.ones(k), np.zeros(k)])
    held_a, held_b = a[k:], b[k:]
    return roc_auc_score(np.r_[np.ones(len(held_a)), np.zeros(len(held_b))],
                         svc.decision_function(np.r_[held_a, held_b][:, None]))


def test_lira_of_the_model_on_its_own_train_and_test_samples_beats_the_svc_mia(exact_run):
    ws, model_rec, rec = exact_run
    from explorer.evaluation import metrics

    model, ds = artifacts.load_model(ws, model_rec), artifacts.dataset_of(ws, model_rec)
    svc = _svc_auc(metrics.true_label_confidence(model, ds.x_train, ds.y_train),
                   metrics.true_label_confidence(model, ds.x_test, ds.y_test))
    assert rec["lira_auc"] > svc + 0.03 and rec["lira_auc"] > 0.55, (rec["lira_auc"], svc)
    assert 0 <= rec["lira_tpr_at_0.1fpr"] <= 1
    arrays = artifacts.load_scores(ws, rec).arrays
    assert arrays["phi"].shape == (16, ds.n_train) and arrays["phi"].dtype == np.float16
    assert arrays["test_phi"].shape == (16, len(ds.y_test))
    again = membership.lira_of(model, ds, arrays)  # what was published is what the arrays give
    assert again["auc"] == pytest.approx(rec["lira_auc"])
    assert np.allclose(again["offline"], arrays["lira"], equal_nan=True)
    shown = last_json(cli(ws, "show", rec["id"], "--json").stdout)
    assert shown["lira_auc"] == pytest.approx(rec["lira_auc"]) and "lira_tpr_at_0.1fpr" in shown


def test_diagonal_of_influence_is_memorization(exact_run):
    ws, _, rec = exact_run
    s = artifacts.load_scores(ws, rec)
    diag = np.diag(influence.influence(s.arrays["masks"], s.arrays["correct"]))
    assert np.allclose(diag, s.values, equal_nan=True)
    rows = [3, 10]
    assert np.allclose(influence.influence(s.arrays["masks"], s.arrays["correct"], rows)[[0, 1], rows],
                       s.values[rows], equal_nan=True)
    # By hand: sample 0 is in models 0, 1 (test sample 0 right in model 0: 1/2) and out of model 2 (wrong: 0);
    # sample 1 is in models 1, 2 (test sample 0 never right) and out of model 0 (right). Never out: NaN.
    masks = np.array([[1, 0], [1, 1], [0, 1]], bool)
    test_correct = np.array([[1, 1], [0, 1], [0, 0]], bool)
    assert influence.influence(masks, test_correct) == pytest.approx(np.array([[0.5, 1.0], [-1.0, -0.5]]))
    assert np.isnan(influence.influence(np.ones((2, 1), bool), np.ones((2, 3), bool))).all()


def test_top_pairs_are_the_strongest_helped_and_hurt_test_samples(exact_run):
    ws, _, rec = exact_run
    s = artifacts.load_scores(ws, rec)
    pairs = influence.top_pairs(s.arrays["masks"], s.arrays["test_correct"], k=3, rows=[0, 1, 2])
    full = influence.influence(s.arrays["masks"], s.arrays["test_correct"], [0, 1, 2])
    for p in pairs:
        row = full[p["train_id"]]
        assert p["influence"] == pytest.approx(row[p["test_id"]])
        if p["direction"] == "helps":
            assert p["influence"] > 0 and (row > p["influence"]).sum() < p["rank"]
        else:
            assert p["influence"] < 0 and (row < p["influence"]).sum() < p["rank"]
    assert {p["direction"] for p in pairs} == {"helps", "hurts"}


def test_a_sample_never_out_has_no_lira_score():
    masks = np.array([[1, 1, 0], [1, 0, 1], [1, 1, 1], [1, 0, 0]], bool)  # sample 0 is never held out
    phi = np.random.default_rng(0).normal(size=masks.shape)
    g = lira.gaussians(phi, masks)
    assert np.isnan(lira.offline(np.zeros(3), g)[0]) and np.isnan(lira.online(np.zeros(3), g)[0])
    assert np.isfinite(lira.offline(np.zeros(3), g)[1:]).all()
    assert np.isnan(lira.still_member(np.array([np.nan]), np.array([0.0, 1.0])))  # nothing of the set scored


def test_gaussians_score_the_likelier_side():
    rng = np.random.default_rng(1)
    masks = rng.random((200, 50)) < 0.5
    phi = np.where(masks, 4.0, 0.0) + rng.normal(size=masks.shape)  # IN around 4, OUT around 0
    g = lira.gaussians(phi, masks, fixed_variance=False)
    assert np.allclose(g.mu_in, 4, atol=0.5) and np.allclose(g.mu_out, 0, atol=0.5)
    assert np.allclose(g.sd_in, 1, atol=0.3)
    assert (lira.online(np.full(50, 4.0), g) > 0).all() and (lira.online(np.zeros(50), g) < 0).all()
    assert (lira.offline(np.full(50, 4.0), g) > lira.offline(np.zeros(50), g)).all()
    r = lira.roc(lira.offline(np.full(50, 4.0), g), lira.offline(np.zeros(50), g))
    assert r["auc"] == 1.0 and r["tpr"] == 1.0
    assert lira.still_member(np.arange(100.0), np.arange(100.0), fpr=0.1) == pytest.approx(0.1)


def test_roc_and_offline_score_as_scikit_learn_and_scipy_do_ties_and_tails_included():
    from scipy.stats import norm
    from sklearn.metrics import roc_auc_score, roc_curve

    rng = np.random.default_rng(2)
    for members, nonmembers in ((rng.normal(1, 1, 300), rng.normal(0, 1, 2000)),
                                (rng.integers(0, 5, 300).astype(float), rng.integers(0, 4, 400).astype(float))):
        y, s = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))], np.r_[members, nonmembers]
        f, t, _ = roc_curve(y, s)
        for fpr in (1e-3, 0.01, 0.3):
            r = lira.roc(np.r_[members, np.nan], nonmembers, fpr)  # a NaN score is dropped
            assert r["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
            assert r["tpr"] == t[f <= fpr].max()
    g = lira.Gaussians(mu_in=np.zeros(4), sd_in=np.ones(4), n_in=np.ones(4), mu_out=np.zeros(4), sd_out=np.full(4, 2.0),
                       n_out=np.ones(4))
    phi = np.array([-3.0, 0.0, 20.0, 90.0])  # far in the upper tail the survival function underflows
    assert np.allclose(lira.offline(phi, g), -norm.logsf(phi / 2.0), rtol=1e-10)


def test_a_model_that_never_saw_the_flipped_samples_no_longer_holds_them_members(exact_run):
    ws, model_rec, rec = exact_run
    ds = artifacts.dataset_of(ws, model_rec)
    flipped = np.asarray(ds.flipped)
    original = artifacts.load_model(ws, model_rec)
    assert membership.still_member(ws, rec, original, flipped) > 0.5  # memorized: far above their OUT models
    keep = torch.as_tensor(np.setdiff1d(np.arange(ds.n_train), flipped))
    retrained = init_model("mlp", ds, 1)
    fit(retrained, ds.x_train[keep], ds.y_train[keep], training.Recipe(epochs=40, seed=1), CPU, record_dynamics=False)
    assert membership.still_member(ws, rec, retrained, flipped) < 0.2


def test_engines_give_the_same_phi_and_phi_is_the_log_odds():
    from explorer import data

    ds = data.load(DatasetSpec())
    subs = torch.as_tensor(estimator.subsets(ds.n_train, 0.7, 2, seed=0))
    recipe = training.Recipe(epochs=2)
    seq = ensembles.train_correctness("mlp", ds, subs, [1, 2], recipe, CPU, "sequential", phi=True)
    bat = ensembles.train_correctness("mlp", ds, subs, [1, 2], recipe, CPU, "batched", phi=True)
    fus = ensembles.train_correctness("mlp", ds, subs, [1, 2], recipe, CPU, "fused", phi=True)
    assert len(seq) == len(bat) == len(fus) == 4 and seq[2].dtype == torch.float16 and seq[3].shape == (2, len(ds.y_test))
    assert len(ensembles.train_correctness("mlp", ds, subs, [1, 2], recipe, CPU, "batched")) == 2
    assert (seq[2].float() - bat[2].float()).abs().mean() < 0.05
    assert fus[2].shape == seq[2].shape and torch.isfinite(fus[2].float()).all()  # fused: other models, same outputs
    logits = torch.randn(64, 10)
    y = torch.randint(0, 10, (64,))
    p = torch.softmax(logits.double(), 1).gather(1, y[:, None])[:, 0]
    assert torch.allclose(models.logit_confidence(logits, y).double(), torch.log(p / (1 - p)), atol=1e-4)
    assert torch.isfinite(models.logit_confidence(torch.tensor([[200.0, 0.0]]), torch.tensor([0]))).all()


def _rows(text):
    return list(csv.DictReader(io.StringIO(text)))


def test_export_writes_lira_scores_and_influence_pairs_as_csv(exact_run):
    ws, model_rec, rec = exact_run
    ds = artifacts.dataset_of(ws, model_rec)
    res = cli(ws, "export", rec["id"], "--table", "lira")
    assert res.exit_code == 0, res.output
    rows = _rows(res.stdout)
    assert len(rows) == ds.n_train + len(ds.y_test)
    assert {"split", "sample_id", "label", "phi", "mu_in", "mu_out", "lira_online", "lira",
            "member_at_1pct_fpr"} <= set(rows[0])
    test_flags = [int(r["member_at_1pct_fpr"]) for r in rows if r["split"] == "test"]
    assert np.mean(test_flags) <= 0.02  # the threshold flags 1% of the test samples
    res = cli(ws, "export", rec["id"], "--table", "influence", "--top", "2", "--format", "json")
    assert res.exit_code == 0, res.output
    pairs = json.loads(res.stdout)
    assert pairs and set(pairs[0]) == {"train_id", "test_id", "influence", "direction", "rank"}
    assert max(p["rank"] for p in pairs) <= 2
    assert cli(ws, "export", rec["id"], "--top", "0").exit_code == 2
    res = cli(ws, "export", model_rec["id"], "--table", "lira")
    assert res.exit_code == 2 and "takes an exact score set" in res.output


def test_a_score_set_from_before_the_confidences_says_it_needs_a_rerun(ws):
    model = checkpoints.train(ws, DatasetSpec(), "mlp", training.Recipe(epochs=2), CPU)
    cfg = memorize.resolve(ExactConfig(models=4, epochs=2, engine="batched"), model, CPU, ws)
    ids = estimator.subsets(1347, cfg.ratio, cfg.models, cfg.seed)
    masks = estimator.masks_of(ids, 1347)
    old = score_sets.publish(ws, model, "exact", np.zeros(1347), 1.0, "cpu",
                             params={**asdict(cfg), "run_key": memorize._run_key(model, cfg)},
                             arrays={"masks": masks, "correct": masks, "test_correct": np.random.default_rng(0).random((4, 450)) < 0.9})
    res = cli(ws, "export", old["id"], "--table", "lira")
    assert res.exit_code == 2 and "needs a rerun" in res.output and len(res.output.strip().splitlines()) == 1
    assert f"memorize {model['id']} --exact --models 4" in res.output
    assert cli(ws, "export", old["id"], "--table", "influence").exit_code == 0  # needs only the correctness
    new = memorize.exact(ws, model, cfg, CPU)  # the same configuration trains again, now keeping φ
    assert new["id"] != old["id"] and "lira_auc" in new
    assert memorize.exact(ws, model, cfg, CPU)["id"] == new["id"]


def test_a_ray_task_returns_the_chunk_with_its_phi():
    """The Ray backend's task body (run here without Ray): the same arrays a local chunk saves."""
    from explorer import data
    from explorer.pipeline import cluster

    ds = data.load(DatasetSpec())
    tensors = {k: getattr(ds, k).numpy() for k in ("x_train", "y_train", "x_test", "y_test")}
    subs = estimator.subsets(ds.n_train, 0.7, 2, seed=0)
    out, seconds = cluster._train_chunk(tensors, ds, "mlp", training.Recipe(epochs=1).as_meta(), "batched", subs,
                                        [0, 1], False)
    assert set(out) == set(memorize.CHUNK_ARRAYS) and seconds > 0
    assert out["train_phi"].shape == (2, ds.n_train) and out["test"].shape == (2, len(ds.y_test))


def test_a_run_reports_how_much_of_its_forget_set_lira_still_holds_members(exact_run):
    """`forget_still_member` in a run's metrics, beside the original's and the oracle's: high for
    the original (it memorized the flipped labels), low for the oracle that never saw them."""
    from explorer.pipeline import forget_sets, runs

    ws, model_rec, rec = exact_run
    flipped = ws.get(model_rec["dataset_id"], "dataset")["flipped"]
    fs = forget_sets.create(ws, model_rec, "ids", ids=flipped, name="flipped")
    run = runs.unlearn(ws, model_rec, fs, "finetune", {"epochs": 2}, CPU)
    assert run["original"]["forget_still_member"] > 0.5 > 0.2 > run["oracle"]["forget_still_member"]
    assert 0.0 <= run["metrics"]["forget_still_member"] <= 1.0
