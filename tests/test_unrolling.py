"""Unrolling SGD (Thudi et al. 2022): the SD loss, single-gradient unlearning (`sgd_unroll`), the top
Hessian eigenvalue and the unlearning error."""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import run_cli, snapshot
from torch import nn

from explorer import data, training, unlearning
from explorer.evaluation import unlearning_error
from explorer.pipeline import checkpoints, forget_sets, runs
from explorer.store import artifacts
from explorer.training import losses
from explorer.runtime import optim
from explorer.data import DatasetSpec
from explorer.training import Recipe, RecipeError
from explorer.unlearning import ParamError

CPU = torch.device("cpu")
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits():
    return data.load(DatasetSpec())


# -- the SD loss -----------------------------------------------------------------------------------


def test_sd_loss_value_by_hand():
    # unbiased std of (1, 2, 3) is 1, of (0, 0, 0) is 0: mean 0.5, over C = 3 classes
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    assert losses.sd_loss(logits).item() == pytest.approx(0.5 / 3)
    # the per-sample form training and sgd_unroll use agrees with CE + λ·sd_loss
    y = torch.tensor([2, 0])
    expected = F.cross_entropy(logits, y) + 0.7 * losses.sd_loss(logits)
    assert losses.training_loss(logits, y, 0.7).item() == pytest.approx(expected.item())
    assert losses.training_loss(logits, y, 0.7, reduction="sum").item() == pytest.approx(2 * expected.item())


def test_sd_loss_gradient_passes_gradcheck():
    logits = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    assert torch.autograd.gradcheck(losses.sd_loss, (logits,))
    assert torch.autograd.gradgradcheck(losses.sd_loss, (logits,))  # the Hessian uses second derivatives


def test_recipe_sd_lambda_keeps_old_records_and_refuses_bad_values():
    old = {"epochs": 30, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 64, "seed": 0, "cosine": False}
    assert Recipe().as_meta() == old and Recipe(**old).sd_lambda == 0.0
    assert Recipe(sd_lambda=0.1).as_meta() == {**old, "sd_lambda": 0.1}
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(RecipeError, match="sd_lambda"):
            Recipe(sd_lambda=bad)


def _reference_loop(model, x, y, recipe, sd_lambda=0.0):
    """Training as it was before the SD loss, with the SD term written out by hand."""
    opt = optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    order = torch.Generator().manual_seed(recipe.seed)
    for _ in range(recipe.epochs):
        model.train()
        perm = torch.randperm(len(y), generator=order)
        for i in range(0, len(y), recipe.batch_size):
            ids = perm[i : i + recipe.batch_size]
            z = model(x[ids])
            loss = F.cross_entropy(z, y[ids], reduction="none").mean()
            if sd_lambda:
                loss = loss + sd_lambda * z.std(1).mean() / z.shape[1]
            opt.zero_grad()
            loss.backward()
            opt.step()


def test_sd_lambda_zero_trains_bit_for_bit_as_before_and_positive_adds_the_term(digits):
    for lam in (0.0, 1.0):
        recipe = Recipe(epochs=2, seed=3, sd_lambda=lam)
        ours = training.init_model("mlp", digits, 3)
        training.fit(ours, digits.x_train, digits.y_train, recipe, CPU)
        ref = training.init_model("mlp", digits, 3)
        _reference_loop(ref, digits.x_train, digits.y_train, recipe, lam)
        assert training.state_bytes(ours) == training.state_bytes(ref)
    plain = training.init_model("mlp", digits, 3)
    training.fit(plain, digits.x_train, digits.y_train, Recipe(epochs=2, seed=3), CPU)
    assert training.state_bytes(plain) != training.state_bytes(ours)  # λ = 1 did change training


def test_cli_train_refuses_a_negative_sd_lambda_and_writes_nothing(tmp_path):
    res = run_cli("train", "--arch", "mlp", "--epochs", "1", "--sd-lambda", "-1", workspace=tmp_path / "ws")
    assert res.returncode == 2
    assert res.stderr.strip() == "error: sd_lambda must be at least 0, got -1.0"
    assert not (tmp_path / "ws").exists()


# -- sgd_unroll -----------------------------------------------------------------------------------


def _linear_case(seed=0, n=12, d=4, c=3):
    g = torch.Generator().manual_seed(seed)
    ds = SimpleNamespace(x_train=torch.randn(n, d, generator=g), y_train=torch.randint(0, c, (n,), generator=g),
                         num_classes=c)
    model = nn.Sequential(nn.Flatten(), nn.Linear(d, c))
    theta0 = {k: torch.randn(v.shape, generator=g) for k, v in model.state_dict().items()}
    trained = {k: torch.randn(v.shape, generator=g) for k, v in model.state_dict().items()}
    model.load_state_dict(trained)
    return ds, model, theta0, trained


def test_sgd_unroll_adds_back_epochs_lr_and_the_hand_gradient_over_the_batch_size():
    ds, model, theta0, trained = _linear_case()
    forget = np.array([1, 4, 7])
    recipe = Recipe(epochs=7, lr=0.3, batch_size=5).as_meta()
    method = unlearning.make("sgd_unroll")
    method.set_origin(theta0, recipe)
    method.unlearn(model, ds, np.setdiff1d(np.arange(12), forget), forget, CPU)
    # softmax cross-entropy of a linear model: ∇_W = (p − e_y) xᵀ, ∇_b = p − e_y, at θ_0
    w0, b0 = theta0["1.weight"].double(), theta0["1.bias"].double()
    x, y = ds.x_train[forget].double(), ds.y_train[forget]
    r = torch.softmax(x @ w0.T + b0, 1) - F.one_hot(y, 3).double()
    grad_w, grad_b = r.T @ x / 5, r.sum(0) / 5  # summed over S, divided by the training batch size
    assert torch.allclose(model[1].weight.double(), trained["1.weight"].double() + 7 * 0.3 * grad_w, atol=1e-5)
    assert torch.allclose(model[1].bias.double(), trained["1.bias"].double() + 7 * 0.3 * grad_b, atol=1e-5)
    norm = math.sqrt(float((grad_w**2).sum() + (grad_b**2).sum()))
    assert set(method.report) == {"epochs_seen", "lr", "grad_norm"}
    assert method.report["epochs_seen"] == 7 and method.report["lr"] == 0.3
    assert method.report["grad_norm"] == pytest.approx(norm, rel=1e-5)
    assert method.params["batch_size"] == 5


def test_sgd_unroll_uses_the_sd_term_and_always_the_recipes_lr_epochs_and_batch_size():
    ds, model, theta0, trained = _linear_case(seed=1)
    forget = np.array([0, 2])
    method = unlearning.make("sgd_unroll", {"lr": 0.5, "epochs": 9})  # what a form sends; the recipe wins
    method.set_origin(theta0, Recipe(epochs=3, lr=0.01, batch_size=4, sd_lambda=2.0).as_meta())
    assert (method.params["lr"], method.params["epochs"], method.params["batch_size"]) == (0.01, 3, 4)
    method.unlearn(model, ds, np.array([1, 3]), forget, CPU)
    ref = copy.deepcopy(model)
    ref.load_state_dict(theta0)
    total = [torch.zeros_like(p) for p in ref.parameters()]
    for i in forget:  # per-sample gradients of CE + λ·std(z)/C, summed, over B
        z = ref(ds.x_train[i : i + 1])
        loss = F.cross_entropy(z, ds.y_train[i : i + 1]) + 2.0 * z.std(1).mean() / 3
        for t, g in zip(total, torch.autograd.grad(loss, list(ref.parameters()))):
            t += g / 4
    for p, t0, g in zip(model.parameters(), trained.values(), total):
        assert torch.allclose(p, t0 + 3 * 0.01 * g, atol=1e-6)


def test_sgd_unroll_needs_initial_weights(digits):
    ds, model, _, _ = _linear_case()
    with pytest.raises(ParamError, match="initial weights"):
        unlearning.make("sgd_unroll").unlearn(model, ds, np.arange(10), np.array([10, 11]), CPU)


def test_sgd_unroll_on_records_refuses_imported_models_and_runs_on_trained_ones(ws, digits):
    imported = checkpoints.register_import(ws, training.init_model("mlp", digits, 0), "mlp", DatasetSpec(), "imp")
    before = snapshot(ws)
    with pytest.raises(ParamError) as err:
        runs.bind(ws, imported, "sgd_unroll", {})
    assert "\n" not in str(err.value) and "initial weights" in str(err.value)
    assert snapshot(ws) == before
    assert runs.unlearning_error_of_record(ws, imported) is None

    rec = checkpoints.train(ws, DatasetSpec(), "mlp", Recipe(epochs=2, lr=0.07, batch_size=32, sd_lambda=0.1), CPU)
    assert rec["recipe"]["sd_lambda"] == 0.1
    assert unlearning.make("sgd_unroll").params["epochs"] == Recipe().epochs  # a form shows the default recipe
    method = runs.bind(ws, rec, "sgd_unroll", {})
    init = artifacts.load_model(ws, rec, which="init").state_dict()
    assert all(torch.equal(method.theta0[k], v) for k, v in init.items())
    assert (method.params["epochs"], method.params["lr"], method.params["batch_size"]) == (2, 0.07, 32)
    assert method.sd_lambda == 0.1
    fs = forget_sets.create(ws, rec, "ids", ids=list(range(10)), name="ten")
    run = runs.unlearn(ws, rec, fs, "sgd_unroll", {}, CPU)
    assert set(run["details"]) == {"epochs_seen", "lr", "grad_norm"} and run["details"]["epochs_seen"] == 2
    assert run["metrics"]["verification_error"] > 0

    err = runs.unlearning_error_of_record(ws, rec)
    steps = unlearning_error.training_steps(2, digits.n_train, 32)
    assert err["steps"] == steps == 2 * math.ceil(digits.n_train / 32) and err["lr"] == 0.07
    assert err["unlearning_error"] == pytest.approx(0.07**2 * steps * 0.5 * err["weight_shift"] * err["sigma"])


# -- the Hessian and the unlearning error ----------------------------------------------------------


def _exact_top_eigenvalue(model, x, y, sd_lambda):
    names = [k for k, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(theta):
        params = {k: t.reshape(s) for k, t, s in zip(names, theta.split(sizes), shapes)}
        return losses.training_loss(torch.func.functional_call(model, params, (x,)), y, sd_lambda)

    eig = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss, flat))
    return eig[eig.abs().argmax()].item()


@pytest.mark.parametrize("sd_lambda", [0.0, 0.5])
def test_power_iteration_finds_the_exact_top_eigenvalue(sd_lambda):
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    x, y = torch.randn(40, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (40,), generator=g)
    exact = _exact_top_eigenvalue(model, x, y, sd_lambda)
    found = unlearning_error.top_hessian_eigenvalue(model, x, y, iters=2000, tol=1e-12, sd_lambda=sd_lambda)
    assert found == pytest.approx(exact, rel=1e-6)
    # the default (20 products, 1e-3 tolerance) is already close
    assert unlearning_error.top_hessian_eigenvalue(model, x, y, sd_lambda=sd_lambda) == pytest.approx(exact, rel=0.05)


def test_hessian_batch_is_fixed_and_at_most_512():
    x, y = torch.arange(2000.0)[:, None], torch.arange(2000)
    a, b = unlearning_error.hessian_batch(x, y), unlearning_error.hessian_batch(x, y)
    assert len(a[1]) == 512 and torch.equal(a[1], b[1]) and torch.equal(a[1], a[1].sort().values)
    assert len(unlearning_error.hessian_batch(x[:300], y[:300])[1]) == 300


def test_unlearning_error_formula_on_hand_values():
    # η² · t · ½ · ‖θ_t − θ_0‖ · σ = 0.01 · 10 · 0.5 · 5 · 2
    error = unlearning_error.unlearning_error(torch.tensor([3.0, 4.0]), torch.zeros(2), 0.1, 10, 2.0)
    assert error == pytest.approx(0.5)
    a = {"w": torch.tensor([[1.0, 2.0]]), "b": torch.tensor([2.0])}
    b = {"b": torch.tensor([0.0]), "w": torch.tensor([[1.0, 0.0]])}  # same keys, another order
    assert unlearning_error.unlearning_error(a, b, 0.5, 4, 3.0) == pytest.approx(0.25 * 4 * 0.5 * math.sqrt(8) * 3)
    assert unlearning_error.training_steps(3, 100, 32) == 12


def test_unlearning_error_of_a_model_uses_sigma_as_root_of_the_top_eigenvalue(digits):
    model = training.init_model("mlp", digits, 0)
    theta0 = copy.deepcopy(model.state_dict())
    training.fit(model, digits.x_train, digits.y_train, Recipe(epochs=2), CPU, record_dynamics=False)
    out = unlearning_error.unlearning_error_of(model, theta0, 0.05, 42, digits.x_train, digits.y_train)
    lam = unlearning_error.top_hessian_eigenvalue(model, digits.x_train, digits.y_train, tol=1e-2)
    assert out["lambda_max"] == pytest.approx(lam) and out["sigma"] == pytest.approx(math.sqrt(abs(lam)))
    shift = math.sqrt(sum(float(((p.detach() - theta0[k]) ** 2).sum()) for k, p in model.named_parameters()))
    assert out["weight_shift"] == pytest.approx(shift, rel=1e-6)
    assert out["unlearning_error"] == pytest.approx(0.05**2 * 42 * 0.5 * shift * out["sigma"], rel=1e-6)
    assert 1 <= out["hvps"] <= 20 and out["seconds"] > 0
    with pytest.raises(ValueError, match="initial"):
        unlearning_error.unlearning_error_of(model, {}, 0.05, 42, digits.x_train, digits.y_train)
