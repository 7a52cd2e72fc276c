"""Mnemonic codes (Yamashita et al. 2024): training with them, saving them, and one-shot class forgetting."""

from __future__ import annotations

import copy
import json
import math
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import run_cli
from torch import nn

from explorer import data, models, training, unlearning
from explorer.pipeline import checkpoints, forget_sets, runs
from explorer.store import artifacts
from explorer.unlearning import mnemonic
from explorer.runtime import optim
from explorer.data import DatasetSpec
from explorer.training import Recipe, RecipeError
from explorer.unlearning import ParamError

CPU = torch.device("cpu")
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits():
    return data.load(DatasetSpec())


def _fit(ds, arch="mlp", **recipe):
    recipe = Recipe(**recipe)
    model = training.init_model(arch, ds, recipe.seed)
    result = training.fit(model, ds.x_train, ds.y_train, recipe, CPU, x_test=ds.x_test, y_test=ds.y_test)
    return model, result


@pytest.fixture(scope="module")
def coded(digits):
    """An MLP trained with t_mix = 0.1 (60 epochs, 1–2 s) and its codes."""
    model, result = _fit(digits, epochs=60, mnemonic_tmix=0.1)
    return SimpleNamespace(model=model, result=result, codes=result.codes)


@pytest.fixture(scope="module")
def plain(digits):
    """The same MLP trained without codes."""
    model, result = _fit(digits, epochs=60)
    return SimpleNamespace(model=model, result=result)


def _class_split(ds, *classes):
    forget = np.flatnonzero(np.isin(ds.y_train.numpy(), classes))
    return np.setdiff1d(np.arange(ds.n_train), forget), forget


def _accuracies(model, ds, cls):
    """(accuracy on the test samples of `cls`, accuracy on the other test samples)."""
    keep = ds.y_test != cls
    return (training.accuracy(model, ds.x_test[~keep], ds.y_test[~keep]),
            training.accuracy(model, ds.x_test[keep], ds.y_test[keep]))


def _unlearn(model, ds, cls, codes, **params):
    """On the digits preset (the λ grid under the strict rule), as a digits model gets it."""
    method = unlearning.make("mnemonic", params, "digits")
    method.codes = codes
    retain, forget = _class_split(ds, cls)
    model = copy.deepcopy(model)
    start = time.perf_counter()
    method.unlearn(model, ds, retain, forget, CPU)
    return model, method, time.perf_counter() - start


# -- training with codes -----------------------------------------------------------------------


def _plain_loop(model, x, y, recipe):
    """The training loop as it was before codes: fit with t_mix = 0 must take exactly these steps."""
    opt = optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    order = torch.Generator().manual_seed(recipe.seed)
    for _ in range(recipe.epochs):
        model.train()
        perm = torch.randperm(len(y), generator=order)
        for i in range(0, len(y), recipe.batch_size):
            ids = perm[i : i + recipe.batch_size]
            loss = F.cross_entropy(model(x[ids]), y[ids], reduction="none").mean()
            opt.zero_grad()
            loss.backward()
            opt.step()


def test_tmix_zero_trains_bit_for_bit_as_before_and_keeps_old_records(digits):
    recipe = Recipe(epochs=3, seed=4)
    ours, result = _fit(digits, epochs=3, seed=4)
    ref = training.init_model("mlp", digits, 4)
    _plain_loop(ref, digits.x_train, digits.y_train, recipe)
    assert training.state_bytes(ours) == training.state_bytes(ref)
    assert result.codes is None and "code_rate" not in result.log[0]
    # Records of models without codes keep exactly their old recipe; old records still load.
    old = {"epochs": 30, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 64, "seed": 0, "cosine": False}
    assert Recipe().as_meta() == old and Recipe(**old).mnemonic_tmix == 0.0
    assert Recipe(mnemonic_tmix=0.1, codes_seed=3).as_meta() == {**old, "mnemonic_tmix": 0.1, "codes_seed": 3}


@pytest.mark.parametrize("tmix", [-0.1, 1.0, float("nan")])
def test_recipe_refuses_tmix_outside_zero_one(tmix):
    with pytest.raises(RecipeError, match="mnemonic_tmix"):
        Recipe(mnemonic_tmix=tmix)


def test_codes_are_swapped_in_at_the_asked_rate_and_dynamics_stay_real(digits):
    _, result = _fit(digits, epochs=5, mnemonic_tmix=0.3)
    rates = [row["code_rate"] for row in result.log]
    assert abs(np.mean(rates) - 0.3) < 0.03 and len(set(rates)) > 1  # a fresh draw each epoch
    # With a negligible learning rate the model never changes: each recorded confidence must
    # be the model's prediction for that *real* sample, swapped or not.
    model = training.init_model("mlp", digits, 0)
    expected = models.predict_proba(model, digits.x_train).gather(1, digits.y_train[:, None])[:, 0].numpy()
    result = training.fit(model, digits.x_train, digits.y_train,
                          Recipe(epochs=2, lr=1e-12, momentum=0, mnemonic_tmix=0.5), CPU)
    assert np.allclose(result.dynamics["confidence"], expected[:, None], atol=1e-5)


def test_swap_loss_is_the_loss_of_the_batch_with_codes_in_place(digits):
    """One step with codes must equal one plain step on the batch whose swapped samples were
    replaced by their codes (the paper's swap), for a model without batch norm."""
    recipe = Recipe(epochs=1, batch_size=digits.n_train, mnemonic_tmix=0.4, momentum=0, weight_decay=0)
    ours = training.init_model("mlp", digits, 0)
    result = training.fit(ours, digits.x_train, digits.y_train, recipe, CPU, record_dynamics=False)
    perm = torch.randperm(digits.n_train, generator=torch.Generator().manual_seed(0))
    swapped = torch.rand(digits.n_train, generator=torch.Generator().manual_seed(recipe.seed + 7919)) < 0.4
    x = digits.x_train[perm].clone()
    y = digits.y_train[perm]
    x[swapped] = result.codes[y[swapped]]
    ref = training.init_model("mlp", digits, 0)
    opt = optim.SGD(ref.parameters(), lr=recipe.lr)
    F.cross_entropy(ref(x), y).backward()
    opt.step()
    for p, q in zip(ours.parameters(), ref.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


def test_training_with_codes_keeps_test_accuracy(coded, plain):
    assert abs(coded.result.log[-1]["test_acc"] - plain.result.log[-1]["test_acc"]) <= 0.02
    # The model has learned its codes: each is classified as its class.
    assert (models.predict_proba(coded.model, coded.codes).argmax(1) == torch.arange(10)).all()


def test_codes_come_from_their_seed_and_travel_with_the_model(ws):
    a, b = training.make_codes(10, (1, 8, 8), 7), training.make_codes(10, (1, 8, 8), 7)
    assert torch.equal(a, b) and not torch.equal(a, training.make_codes(10, (1, 8, 8), 8))
    assert a.shape == (10, 1, 8, 8) and a.min() >= 0 and a.max() < 1
    state = torch.random.get_rng_state()
    training.make_codes(10, (1, 8, 8), 7)
    assert torch.equal(state, torch.random.get_rng_state())  # the global stream is left alone
    rec = checkpoints.train(ws, DatasetSpec(), "mlp", Recipe(epochs=2, mnemonic_tmix=0.1, codes_seed=7), CPU)
    assert "codes.safetensors" in rec["files"] and rec["has_codes"]
    assert rec["recipe"]["mnemonic_tmix"] == 0.1 and rec["recipe"]["codes_seed"] == 7
    assert torch.equal(artifacts.load_codes(ws, rec), a)
    assert Recipe(**rec["recipe"]) == Recipe(epochs=2, mnemonic_tmix=0.1, codes_seed=7)
    plain = checkpoints.train(ws, DatasetSpec(), "mlp", Recipe(epochs=1), CPU)
    assert artifacts.load_codes(ws, plain) is None and not plain["has_codes"]


def test_cli_train_refuses_a_bad_tmix_and_writes_nothing(tmp_path):
    res = run_cli("train", "--arch", "mlp", "--epochs", "1", "--mnemonic-tmix", "1.5", workspace=tmp_path / "ws")
    assert res.returncode == 2
    assert res.stderr.strip() == "error: mnemonic_tmix must be in [0, 1), got 1.5"
    assert not (tmp_path / "ws").exists()


# -- the pure functions --------------------------------------------------------------------------


def test_amplitude_cleans_nan_and_infinity():
    nan, inf = math.nan, math.inf
    f_forget = torch.tensor([4.0, 0.0, inf, 2.0, 1.0, nan])
    f_retain = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 1.0])
    # 4/1, 0/0 → NaN → 1, inf/1 and 2/0 → +inf → the largest finite (4), 1/1, NaN → 1
    assert mnemonic.amplitude(f_forget, f_retain).tolist() == pytest.approx([4.0, 1.0, 4.0, 4.0, 1.0, 1.0])
    # A ratio that overflows float32 after exp counts as +inf too.
    eta = mnemonic.amplitude(torch.tensor([1e30, 3.0]), torch.tensor([1e-16, 1.0]))
    assert eta.tolist() == pytest.approx([3.0, 3.0])
    assert torch.isfinite(mnemonic.amplitude(torch.tensor([inf]), torch.tensor([1.0]))).all()


def test_alpha_is_per_tensor_and_the_update_is_w_plus_or_minus_alpha_eta():
    eta = {"a": torch.tensor([1.0, 100.0]), "b": torch.tensor([0.5, 2.0])}
    assert mnemonic.alpha(eta["a"], 1.0, 10.0) == pytest.approx(0.1)  # λ2 / max η binds
    assert mnemonic.alpha(eta["b"], 1.0, 10.0) == pytest.approx(1.0)  # λ1 binds
    assert mnemonic.alpha(eta["a"], 1e-3, 10.0) == pytest.approx(1e-3)
    w = {"a": torch.zeros(2), "b": torch.ones(2)}
    cands = mnemonic.candidates(w, eta, 1.0, 10.0)
    assert torch.allclose(cands[1]["a"], torch.tensor([0.1, 10.0]))
    assert torch.allclose(cands[-1]["a"], torch.tensor([-0.1, -10.0]))
    assert torch.allclose(cands[1]["b"], torch.tensor([1.5, 3.0]))
    assert torch.allclose(cands[-1]["b"], torch.tensor([0.5, -1.0]))


def test_fisher_is_the_mean_squared_per_sample_gradient_in_eval_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.9), nn.Linear(4, 2))
    x, y = torch.randn(5, 3), torch.tensor([0, 1, 1, 0, 1])
    model.train()
    fisher = mnemonic.fisher(model, x, y)
    assert model.training  # left as it was
    expected = {n: torch.full_like(p, 1e-16) for n, p in model.named_parameters()}
    model.eval()  # eval mode: no dropout, so this is deterministic
    for xi, yi in zip(x, y):
        model.zero_grad()
        F.cross_entropy(model(xi[None]), yi[None]).backward()
        for n, p in model.named_parameters():
            expected[n] += p.grad**2
    for n, value in expected.items():
        assert torch.allclose(fisher[n], value / 5)


def _fixed_logits(logits):
    """A model whose logits are its inputs: measure(model, logits, ...) judges exactly `logits`."""
    model = nn.Linear(logits.shape[1], logits.shape[1], bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(logits.shape[1]))
    return model


def test_the_rules_judge_the_codes_by_recognition_confident_forgetting_or_probability():
    # Three codes of classes 0, 1, 2; class 2 is forgotten. Code 0 is recognised with p ≈ 0.71,
    # code 1 is taken for class 0, and the forget code is no longer recognised (argmax 0) yet its
    # own class keeps p ≈ 0.26, then, one step further, p ≈ 0.005.
    logits = torch.tensor([[2.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.5]])
    probs = logits.softmax(1)
    model = _fixed_logits(logits)
    assert mnemonic.RULES == ("hard", "strict", "soft") and mnemonic.DEFAULT_RULE == "hard"
    assert mnemonic.measure(model, logits, None, [2], "hard") == pytest.approx((0.5, 1.0))  # the paper's
    assert mnemonic.measure(model, logits, None, [2], "strict") == pytest.approx((0.5, 0.0))  # p = 0.26 ≥ 1%
    assert mnemonic.measure(model, logits, None, [2], "soft") == pytest.approx(
        ((probs[0, 0] + probs[1, 1]).item() / 2, 1 - probs[2, 2].item()))
    deeper = logits.clone()
    deeper[2] = torch.tensor([6.0, 0.0, 0.0])  # own class 2 at p ≈ 0.005 < 1%
    assert mnemonic.measure(_fixed_logits(deeper), deeper, None, [2]) == pytest.approx((0.5, 1.0))
    with pytest.raises(ValueError, match="unknown rule"):
        mnemonic.measure(model, logits, None, [2], "fuzzy")


def test_choose_sign_keeps_the_better_candidate_judged_on_the_codes_only(coded, monkeypatch):
    seen = []

    def fake_measure(model, inputs, labels, forget_classes, rule):
        assert rule == "hard"
        seen.append(inputs)
        # the "+" candidate keeps the remaining codes but not the forget one; "−" keeps neither
        plus = torch.equal(model[1].weight, cands[1]["1.weight"])
        return (1.0, 1.0) if plus else (0.5, 1.0)

    eta = mnemonic.amplitudes(coded.model, coded.codes, None, [3])
    weights = {n: p.detach() for n, p in coded.model.named_parameters()}
    cands = mnemonic.candidates(weights, eta, 0.1, 10.0)
    before = training.state_bytes(coded.model)
    monkeypatch.setattr(mnemonic, "measure", fake_measure)
    assert mnemonic.choose_sign(coded.model, cands, coded.codes, None, [3], "hard") == (1, 1.0, 1.0)
    assert all(inputs is coded.codes for inputs in seen) and len(seen) == 2
    assert training.state_bytes(coded.model) == before  # weights restored bit for bit


class _LabelsOnly:
    """A dataset whose images cannot be read: proof that a data-free run never looks at them."""

    def __init__(self, ds):
        self.y_train, self.num_classes, self.shape, self.n_train = ds.y_train, ds.num_classes, ds.shape, ds.n_train

    @property
    def x_train(self):
        raise AssertionError("the data-free path read training images")

    @property
    def x_test(self):
        raise AssertionError("the data-free path read test images")


def test_forgets_a_digit_class_from_the_codes_alone_in_well_under_a_second(coded, digits):
    """On digits the codes pick a good λ for some classes and not others (see the report of
    this change); class 6 of this seeded model is one where the data-free choice works."""
    before_forget, before_retain = _accuracies(coded.model, digits, 6)
    model, method, seconds = _unlearn(coded.model, _LabelsOnly(digits), 6, coded.codes)
    after_forget, after_retain = _accuracies(model, digits, 6)
    assert before_forget > 0.9 and after_forget <= 0.05
    assert after_retain >= before_retain - 0.02
    assert seconds < 0.5
    r = method.report
    assert r["forget_classes"] == [6] and r["probe"] == "codes" and r["sign"] in (1, -1) and r["rule"] == "strict"
    assert (r["codes_A_R"], r["codes_E_F"]) == (1.0, 1.0) and r["codes_p_F"] < mnemonic.FORGOTTEN_BELOW
    best = next(row for row in r["grid"] if (row["lam1"], row["lam2"]) == (r["lam1"], r["lam2"]))
    assert (best["A_R"], best["E_F"], best["sign"], best["p_F"]) == (1.0, 1.0, r["sign"], r["codes_p_F"])
    assert len(r["grid"]) == len(mnemonic.LAM1_GRID) * len(mnemonic.LAM2_GRID)
    # Every measured pair with a smaller update scored worse: the tie rule picks the smallest.
    measured = [row for row in r["grid"] if row["A_R"] is not None]
    assert all(row["A_R"] + row["E_F"] < 2 for row in measured if row["update_norm"] < best["update_norm"])


def test_the_strict_rule_forgets_a_class_the_papers_rule_leaves_recognised(coded, digits):
    """Class 3: the forget code stops being recognised (the paper's E_F = 1) at an update too
    weak to forget the real digits; asking for its own class under 1% finds the one that does,
    still from the codes alone."""
    before_forget, before_retain = _accuracies(coded.model, digits, 3)
    hard, method, _ = _unlearn(coded.model, _LabelsOnly(digits), 3, coded.codes, rule="hard")
    assert method.report["rule"] == "hard" and method.report["codes_E_F"] == 1.0
    assert method.report["codes_p_F"] >= mnemonic.FORGOTTEN_BELOW
    assert _accuracies(hard, digits, 3)[0] > 0.5  # most of the real 3s are still recognised
    strict, method, _ = _unlearn(coded.model, _LabelsOnly(digits), 3, coded.codes)
    after_forget, after_retain = _accuracies(strict, digits, 3)
    assert before_forget > 0.9 and after_forget <= 0.05 and after_retain >= before_retain - 0.02
    assert method.report["codes_p_F"] < mnemonic.FORGOTTEN_BELOW


def test_the_soft_rule_judges_every_pair_by_probability(coded):
    eta = mnemonic.amplitudes(coded.model, coded.codes, None, [6])
    table, (lam1, lam2) = mnemonic.grid_search(coded.model, coded.codes, [6], eta=eta, rule="soft")
    best = next(row for row in table if (row["lam1"], row["lam2"]) == (lam1, lam2))
    # probabilities, not counts: no pair is perfect, so every one is measured
    assert all(0 < row["A_R"] < 1 and 0 <= row["E_F"] <= 1 for row in table)
    assert any(0.1 < row["E_F"] < 0.9 for row in table)
    assert all(row["A_R"] + row["E_F"] <= best["A_R"] + best["E_F"] for row in table)
    assert best["E_F"] == pytest.approx(1 - best["p_F"], abs=1e-6)  # one forget code: E_F = 1 − p_F
    _, info = mnemonic.forget(coded.model, coded.codes, [6], lam1, lam2, eta=eta, rule="soft")
    assert (info["A_R"], info["E_F"], info["sign"]) == pytest.approx((best["A_R"], best["E_F"], best["sign"]))


@pytest.mark.parametrize("rule", ["strict", "hard"])
def test_full_grid_measures_every_pair_and_agrees_on_the_best(coded, rule):
    eta = mnemonic.amplitudes(coded.model, coded.codes, None, [6])
    quick, best = mnemonic.grid_search(coded.model, coded.codes, [6], eta=eta, rule=rule)
    full, best_full = mnemonic.grid_search(coded.model, coded.codes, [6], eta=eta, full=True, rule=rule)
    assert best == best_full and all(row["A_R"] is not None for row in full)
    assert any(row["A_R"] is None for row in quick)
    # what the quick search reports, it measured as the full one did
    assert all(q == f for q, f in zip(quick, full) if q["A_R"] is not None)
    assert [(r["lam1"], r["lam2"]) for r in full] == [(a, b) for a in mnemonic.LAM1_GRID for b in mnemonic.LAM2_GRID]


def test_fixed_lambdas_without_the_grid(coded, digits):
    model, method, _ = _unlearn(coded.model, _LabelsOnly(digits), 6, coded.codes, grid=0, lam1=1e-3, lam2=10)
    assert method.report["grid"] is None and (method.report["lam1"], method.report["lam2"]) == (1e-3, 10.0)
    assert training.state_bytes(model) != training.state_bytes(coded.model)


@pytest.mark.parametrize("preset, lam", [("paper-mnist", (1e-3, 10.0)), ("paper-cifar10", (1e-5, 1e4))])
def test_the_paper_presets_take_the_published_lambdas_and_the_accuracy_rule(coded, digits, preset, lam):
    method = unlearning.make("mnemonic", {}, preset)
    method.codes = coded.codes
    retain, forget = _class_split(digits, 6)
    model = copy.deepcopy(coded.model)
    method.unlearn(model, _LabelsOnly(digits), retain, forget, CPU)
    r = method.report
    assert r["grid"] is None and (r["lam1"], r["lam2"]) == lam and r["rule"] == "hard"
    eta = mnemonic.amplitudes(coded.model, coded.codes, None, [6])
    state, _ = mnemonic.forget(coded.model, coded.codes, [6], *lam, eta=eta, rule="hard")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_partial_classes_are_refused_with_the_way_to_a_class_forget_set(coded, digits):
    y = digits.y_train.numpy()
    forget = np.r_[np.flatnonzero(y == 3)[:10], np.flatnonzero(y == 5)[:10]]
    method = unlearning.make("mnemonic")
    method.codes = coded.codes
    with pytest.raises(ParamError) as err:
        method.unlearn(copy.deepcopy(coded.model), digits, np.setdiff1d(np.arange(len(y)), forget), forget, CPU)
    assert str(err.value) == ("mnemonic forgets whole classes; this forget set covers part of classes 3, 5 — "
                              "make a class forget set (forget-set create --strategy class --class 3 --class 5)")
    with pytest.raises(ParamError, match="at least one class left"):
        method.unlearn(copy.deepcopy(coded.model), digits, np.array([], dtype=int), np.arange(len(y)), CPU)


def test_a_model_without_codes_needs_with_data(plain, digits):
    with pytest.raises(ParamError, match=r"with_data=1.*--mnemonic-tmix"):
        _unlearn(plain.model, digits, 4, None)


def test_with_data_forgets_a_model_trained_without_codes(plain, digits):
    """The "with data" variant: Fisher and choices from 8 real training samples per class."""
    before_forget, before_retain = _accuracies(plain.model, digits, 4)
    model, method, _ = _unlearn(plain.model, digits, 4, None, with_data=1)
    after_forget, after_retain = _accuracies(model, digits, 4)
    assert method.report["probe"] == "real samples"
    assert before_forget > 0.9 and after_forget <= 0.05 and after_retain >= before_retain - 0.03


def test_method_parameters_are_checked():
    method = unlearning.REGISTRY["mnemonic"]()  # the published MNIST setting: fixed λ, the accuracy rule
    assert method.knob is None and method.summary and method.codes is None
    assert (method.params["lam1"], method.params["lam2"], method.params["grid"]) == (1e-3, 10.0, 0)
    assert method.params["rule"] == "hard" and method.spec["rule"].choices == mnemonic.RULES
    assert "rule" not in method.defaults  # the defaults stay numbers, as the shared checks expect
    assert unlearning.make("mnemonic", {"rule": "strict"}).params["rule"] == "strict"
    for bad in ({"lam1": 0}, {"lam2": -1}, {"grid": 2}, {"with_data": 0.5}, {"samples_per_class": 0}, {"nope": 1},
                {"rule": "fuzzy"}, {"rule": 1}):
        with pytest.raises(ParamError):
            unlearning.make("mnemonic", bad)
    with pytest.raises(ParamError, match="rule must be one of hard, strict, soft, got 'fuzzy'"):
        unlearning.make("mnemonic", {"rule": "fuzzy"})
    with pytest.raises(ParamError, match="no parameter 'nope'.*samples_per_class, rule"):
        unlearning.make("mnemonic", {"nope": 1})


def test_a_run_binds_the_codes_and_keeps_the_report(ws, digits):
    rec = checkpoints.train(ws, DatasetSpec(), "mlp", Recipe(epochs=60, mnemonic_tmix=0.1), CPU)
    fs = forget_sets.create(ws, rec, "class", classes=[6])
    run = runs.unlearn(ws, rec, fs, "mnemonic", {}, CPU, with_oracle=False)
    details = run["details"]
    assert details["forget_classes"] == [6] and details["probe"] == "codes" and details["grid"]
    assert details["rule"] == "strict" and run["params"]["rule"] == "strict"
    assert run["metrics"]["acc_forget"] <= 0.05


def test_the_papers_mnist_model_and_recipe_forget_a_digit_class_at_the_published_lambdas(ws):
    """Yamashita et al.'s MNIST setting as a user gets it by naming the model: 1,000 sigmoid units,
    SGD lr 0.01 (momentum 0.9, weight decay 5e-4, batch 128, 200 epochs), codes at t_mix 0.1; with
    the published λ (preset paper-mnist) it forgets a digits class and keeps the others, where the
    regime's ReLU MLP keeps the class recognised (bench papers)."""
    net = models.build("sigmoid_mlp", 1, 10, 8)
    assert [type(m) for m in net] == [nn.Flatten, nn.Linear, nn.Sigmoid, nn.Linear] and net[1].out_features == 1000
    recipe = training.default_for("sigmoid_mlp", "digits")
    assert (recipe.epochs, recipe.lr, recipe.momentum, recipe.weight_decay, recipe.batch_size, recipe.mnemonic_tmix) \
        == (200, 0.01, 0.9, 5e-4, 128, 0.1)
    model = checkpoints.train(ws, DatasetSpec(), "sigmoid_mlp", recipe, CPU)
    fs = forget_sets.create(ws, model, "class", classes=[3])
    run = runs.unlearn(ws, model, fs, "mnemonic", {}, CPU, with_oracle=False, preset="paper-mnist")
    assert (run["params"]["lam1"], run["params"]["lam2"], run["params"]["rule"]) == (1e-3, 10.0, "hard")
    samples, y = artifacts.run_samples(ws, run), artifacts.dataset_of(ws, model).y_test.numpy()
    before, after = (samples[f"{who}_test_pred"] == y for who in ("original", "unlearned"))
    assert after[y == 3].mean() <= 0.05 < before[y == 3].mean()
    assert after[y != 3].mean() >= before[y != 3].mean() - 0.01


def test_cli_train_takes_the_papers_recipe_for_its_model_unless_told_otherwise(tmp_path):
    out = run_cli("train", "--arch", "sigmoid_mlp", "--epochs", "2", "--json", workspace=tmp_path / "ws")
    assert out.returncode == 0, out.stderr
    recipe = json.loads(out.stdout.strip().splitlines()[-1])["recipe"]
    assert (recipe["epochs"], recipe["lr"], recipe["batch_size"], recipe["mnemonic_tmix"]) == (2, 0.01, 128, 0.1)
