import math

import numpy as np
import pytest
import torch

from explorer import data, models, training
from explorer.pipeline import checkpoints
from explorer.store import artifacts
from explorer.runtime import optim
from explorer.data import DatasetSpec
from explorer.training import Recipe, RecipeError

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits():
    return data.load(DatasetSpec())


def _train(ds, arch="mlp", **recipe):
    recipe = Recipe(**{"epochs": 3, **recipe})
    model = training.init_model(arch, ds, recipe.seed)
    result = training.fit(model, ds.x_train, ds.y_train, recipe, CPU, x_test=ds.x_test, y_test=ds.y_test)
    return model, result


def test_same_seed_gives_same_weights_and_another_seed_does_not(digits):
    a, _ = _train(digits, "cnn", epochs=2, seed=5)
    b, _ = _train(digits, "cnn", epochs=2, seed=5)
    c, _ = _train(digits, "cnn", epochs=2, seed=6)
    assert training.state_bytes(a) == training.state_bytes(b)
    assert training.state_bytes(a) != training.state_bytes(c)


def test_dynamics_have_one_column_per_epoch_and_sane_values(digits):
    _, result = _train(digits, epochs=4)
    dyn = result.dynamics
    assert set(dyn) == set(training.DYNAMICS)
    for values in dyn.values():
        assert values.shape == (digits.n_train, 4) and np.isfinite(values).all()
    assert set(np.unique(dyn["correct"])) <= {0.0, 1.0}
    assert (dyn["confidence"] <= dyn["max_conf"] + 1e-6).all()
    assert (dyn["neg_entropy"] <= 1e-6).all() and (dyn["neg_entropy"] >= -math.log(10) - 1e-4).all()
    assert np.allclose(dyn["loss"], -np.log(dyn["confidence"]), atol=1e-4)


def test_dynamics_are_recorded_for_the_right_sample(digits):
    """With a negligible learning rate the model never changes, so each sample's recorded
    confidence must equal the initial model's prediction for that very sample."""
    model = training.init_model("mlp", digits, 0)
    expected = models.predict_proba(model, digits.x_train).gather(1, digits.y_train[:, None])[:, 0].numpy()
    result = training.fit(model, digits.x_train, digits.y_train, Recipe(epochs=2, lr=1e-12, momentum=0), CPU)
    assert np.allclose(result.dynamics["confidence"], expected[:, None], atol=1e-5)


def test_progress_reports_each_epoch_and_ends_at_one(digits):
    seen = []
    model = training.init_model("mlp", digits, 0)
    training.fit(model, digits.x_train, digits.y_train, Recipe(epochs=3), CPU, progress=lambda f, m: seen.append(f))
    assert seen == pytest.approx([1 / 3, 2 / 3, 1.0])


def test_training_learns_digits(digits):
    model, result = _train(digits, epochs=10)
    assert result.log[-1]["test_acc"] > 0.9
    assert result.log[-1]["loss"] < result.log[0]["loss"]


def test_cosine_schedule_trains_too(digits):
    _, result = _train(digits, epochs=5, cosine=True)
    assert result.log[-1]["test_acc"] > 0.85


def test_recipe_rejects_impossible_values():
    with pytest.raises(RecipeError):
        Recipe(epochs=0)
    with pytest.raises(RecipeError):
        Recipe(lr=-1)


@pytest.mark.parametrize("bias_grad_from", [0, 2], ids=["every_step", "bias_grad_late"])
def test_sgd_matches_torch_sgd(bias_grad_from):
    # bias_grad_late: a parameter without a gradient is skipped; its momentum buffer starts at its
    # own first gradient while the others' already carry momentum (the fused step's two groups).
    torch.manual_seed(0)
    ours, ref = torch.nn.Linear(5, 3), torch.nn.Linear(5, 3)
    ref.load_state_dict(ours.state_dict())
    opt_ours = optim.SGD(ours.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for step in range(5):
        x = torch.randn(8, 5)
        for model, opt in ((ours, opt_ours), (ref, opt_ref)):
            opt.zero_grad()
            model(x).pow(2).sum().backward()
            if step < bias_grad_from:
                model.bias.grad = None
            opt.step()
        for p, q in zip(ours.parameters(), ref.parameters()):
            assert torch.allclose(p, q, atol=1e-6)


def test_cosine_lr_goes_from_base_to_zero():
    assert optim.cosine_lr(0.1, 0, 100) == pytest.approx(0.1)
    assert optim.cosine_lr(0.1, 50, 100) == pytest.approx(0.05)
    assert optim.cosine_lr(0.1, 100, 100) == pytest.approx(0.0)


def test_train_publishes_model_with_weights_init_and_dynamics(ws):
    rec = checkpoints.train(ws, DatasetSpec(label_noise=0.05), "mlp", Recipe(epochs=3), CPU)
    assert set(rec["files"]) == {"weights.safetensors", "init.safetensors", "dynamics.npz"}
    assert rec["epochs"] == 3 and len(rec["log"]) == 3 and len(rec["per_class_acc"]) == 10
    ds_rec = ws.get(rec["dataset_id"], "dataset")
    assert len(ds_rec["flipped"]) == round(0.05 * ds_rec["n_train"])
    loaded = artifacts.load_model(ws, rec)
    ds = artifacts.dataset_of(ws, rec)
    assert training.accuracy(loaded, ds.x_test, ds.y_test) == pytest.approx(rec["test_acc"])
    init = artifacts.load_model(ws, rec, which="init")
    assert training.state_bytes(init) == training.state_bytes(training.init_model("mlp", ds, 0))
    # A second model on the same data reuses the dataset record.
    again = checkpoints.train(ws, DatasetSpec(label_noise=0.05), "mlp", Recipe(epochs=1), CPU)
    assert again["dataset_id"] == rec["dataset_id"]


def test_a_recipe_field_declared_once_reaches_validation_the_record_the_cli_and_the_form():
    """Adding a recipe field is one declaration: `as_meta`, validation, the `train` options, the
    app's command line and the Models form all come from it, with no other edit."""
    import dataclasses

    import typer
    from streamlit.testing.v1 import AppTest
    from typer.testing import CliRunner

    from explorer import cli, commands

    @dataclasses.dataclass
    class Extended(Recipe):
        label_smoothing: float = training.knob(0.0, "Label smoothing", "Soft targets.", low=0, high=1, off=0.0)

    assert Extended().as_meta() == Recipe().as_meta()  # off: old records and cache keys unchanged
    assert Extended(label_smoothing=0.2).as_meta()["label_smoothing"] == 0.2
    with pytest.raises(RecipeError, match="label_smoothing must be in"):
        Extended(label_smoothing=1.5)

    got = {}
    app = typer.Typer()

    def fake(dataset: str = "digits", arch: str = "mlp", *, recipe: dict):
        got.update(recipe)

    app.command()(cli.recipe_options(fake, Extended))
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert "--label-smoothing" in result.output and "Soft targets." in result.output
    argv = commands.recipe_args({"label_smoothing": 0.1, "epochs": None}, Extended)
    assert argv == ["--label-smoothing", "0.1"]
    assert CliRunner().invoke(app, argv).exit_code == 0
    assert got["label_smoothing"] == 0.1 and got["epochs"] is None

    def form():
        import streamlit as st

        from views import ui
        from tests_extended_recipe import Extended  # noqa: F401 - put there by the test below

        st.session_state["values"] = ui.recipe_inputs(st.columns(3), Extended)

    import sys
    import types

    sys.modules["tests_extended_recipe"] = types.SimpleNamespace(Extended=Extended)
    try:
        at = AppTest.from_function(form).run()
    finally:
        del sys.modules["tests_extended_recipe"]
    assert not at.exception
    smoothing = next(n for n in at.number_input if n.label == "Label smoothing")
    assert smoothing.value is None and smoothing.max == 0.99


def test_sgd_gives_the_same_update_whatever_the_memory_layout_of_weights_gradients_and_momentum():
    """The fused update walks tensors in memory order: a channels-last gradient or momentum beside
    a contiguous weight must still be added element by element (the foreach update does it)."""
    from explorer.runtime import optim

    torch.manual_seed(0)
    reference = None
    for grad_layout, param_layout in ((torch.contiguous_format,) * 2, (torch.channels_last, torch.contiguous_format),
                                      (torch.contiguous_format, torch.channels_last)):
        w = torch.nn.Parameter(torch.arange(8 * 4 * 9, dtype=torch.float32).view(8, 4, 3, 3)
                               .contiguous(memory_format=param_layout) / 100)
        opt = optim.SGD([w], lr=0.1, momentum=0.9, weight_decay=0.01)
        for step in range(3):
            g = torch.sin(torch.arange(8 * 4 * 9, dtype=torch.float32) + step).view(8, 4, 3, 3)
            w.grad = g.contiguous(memory_format=grad_layout if step != 1 else param_layout)
            opt.step()
        if reference is None:
            reference = w.detach().clone()
        assert torch.allclose(w.detach(), reference, atol=1e-6)


def test_a_users_conv_net_that_views_its_activations_trains_in_its_own_layout(digits):
    """Channels-last is for the registry's nets only: a user's forward may `.view` an activation,
    which a channels-last tensor cannot do."""
    from torch import nn

    from explorer.runtime import devices

    class LeNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(1, 4, 3), nn.Linear(4 * 6 * 6, 10)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).view(-1, 4 * 6 * 6))

    model = LeNet()
    assert not devices.channels_last_helps(model, CPU)
    assert devices.channels_last_helps(training.init_model("cnn", digits, 0), CPU)
    training.fit(model, digits.x_train[:200], digits.y_train[:200], training.Recipe(epochs=1), CPU,
                 record_dynamics=False)
    assert model.conv.weight.is_contiguous()
