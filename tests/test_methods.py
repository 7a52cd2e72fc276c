"""The base unlearning methods (fine-tuning, NegGrad(+), ℓ1-sparse, random labels, SalUn, SCRUB) on a tiny MLP over the embedded digits."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import snapshot
from torch import nn

from explorer import data, training, unlearning
from explorer.evaluation import metrics
from explorer.pipeline import runs
from explorer.unlearning.base import Batch, Step
from explorer.unlearning.distillation import distill_kl
from explorer.unlearning.relabeling import other_labels

CPU = torch.device("cpu")
NAMES = {"retrain", "finetune", "neggrad", "neggrad_plus", "l1_sparse", "random_label", "salun", "scrub"}


@pytest.fixture(scope="module")
def trained():
    """An MLP that memorized 5% flipped labels (60 epochs: fewer leave them unfitted), its
    initial weights, and two forget sets it fits: the flipped samples and all of class 3."""
    torch.set_num_threads(1)
    ds = data.load(data.DatasetSpec(label_noise=0.05))
    model = training.init_model("mlp", ds, 0)
    init = copy.deepcopy(model.state_dict())
    training.fit(model, ds.x_train, ds.y_train, training.Recipe(epochs=60), CPU, record_dynamics=False)
    forget = {"flipped": ds.flipped, "class": np.flatnonzero(ds.y_train.numpy() == 3)}
    return SimpleNamespace(ds=ds, model=model, init=init, forget=forget)


def _unlearn(trained, name, params, which):
    retain, forget = metrics.split_ids(trained.ds.n_train, trained.forget[which])
    method = unlearning.make(name, params)
    model = copy.deepcopy(trained.model)
    if method.from_init:
        model.load_state_dict(trained.init)
    method.unlearn(model, trained.ds, retain, forget, CPU)
    return metrics.accuracies(model, trained.ds, forget), metrics.accuracies(trained.model, trained.ds, forget)


def test_registry_lists_every_method():
    assert set(unlearning.REGISTRY) == NAMES | {"mnemonic", "sgd_unroll", "deepobliviate"}  # each has its own tests
    assert unlearning.NAMES == [*unlearning.REGISTRY, "rum", "shuffle"]
    for name, cls in unlearning.REGISTRY.items():
        method = cls()
        assert cls.summary and (cls.knob is None or cls.knob in method.params), name
        assert cls.from_init == (name == "retrain")
    assert {n for n, c in unlearning.REGISTRY.items() if c.knob} == {"neggrad_plus", "l1_sparse", "salun", "scrub"}


# Flipped labels: the original fits them, a model that never saw them cannot, so every method
# (even those that only train on R) forgets them. A whole class is only forgotten by methods that
# act on S. neggrad's published lr (1e-4) barely moves a model in 5 epochs of 2 batches.
CASES = [(name, {"lr": 3e-3} if name == "neggrad" else {}, "flipped") for name in sorted(NAMES)] + [
    (name, {"lr": 3e-3} if name == "neggrad" else {}, "class")
    for name in ("neggrad", "neggrad_plus", "random_label", "salun", "scrub")
]


@pytest.mark.parametrize("name, params, which", CASES)
def test_method_lowers_forget_accuracy(trained, name, params, which):
    after, before = _unlearn(trained, name, params, which)
    assert before["acc_forget"] > 0.7
    assert after["acc_forget"] < before["acc_forget"] - 0.1
    assert after["acc_retain"] > 0.9 and after["acc_test"] > 0.8


def test_retrain_reproduces_training_on_the_retain_set(trained):
    retain, forget = metrics.split_ids(trained.ds.n_train, trained.forget["flipped"])
    ds = trained.ds
    oracle, ours = training.init_model("mlp", ds, 0), training.init_model("mlp", ds, 0)
    training.fit(oracle, ds.x_train[retain], ds.y_train[retain], training.Recipe(epochs=3), CPU, record_dynamics=False)
    unlearning.make("retrain", {"epochs": 3}).unlearn(ours, ds, retain, forget, CPU)
    for a, b in zip(oracle.parameters(), ours.parameters()):
        assert torch.allclose(a, b, atol=1e-6)  # (torch.testing imports TorchDynamo: 0.7 s)


@pytest.mark.parametrize("num_classes", [2, 3, 10, 100])
def test_random_labels_are_always_another_class(num_classes):
    y = torch.arange(num_classes).repeat(40)
    new = other_labels(y, num_classes, torch.Generator().manual_seed(0))
    assert (new != y).all() and new.min() >= 0 and new.max() < num_classes
    assert len(new.unique()) == num_classes  # every class is used, none favoured away
    # The method trains on S̃ ∪ R: the retain samples as they were, the forget ones relabeled.
    sets = {"retain": Batch(torch.zeros(5, 1), torch.zeros(5, dtype=torch.long)), "forget": Batch(torch.ones(len(y), 1), y)}
    mixed = unlearning.make("random_label").prepare(None, sets, num_classes, torch.Generator().manual_seed(0))["retain"]
    assert len(mixed) == 5 + len(y) and (mixed.y[:5] == 0).all() and (mixed.y[5:] != y).all()


def _linear():
    """Logits W·x + b from zero weights: softmax is uniform, so for one sample (x, y=0) the CE
    gradient is (p − e_0)xᵀ = ±0.5·x per row, and ±0.5 for the bias."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    nn.init.zeros_(model[1].weight), nn.init.zeros_(model[1].bias)
    x, y = torch.tensor([[4.0, 3.0, 1.0, 0.0]]), torch.tensor([0])
    return model, SimpleNamespace(x_train=x.repeat(3, 1), y_train=y.repeat(3), num_classes=2, n_train=3)


def test_salun_keeps_the_largest_gradients_across_the_whole_model():
    model, ds = _linear()
    sets = {"forget": Batch(ds.x_train[:1], ds.y_train[:1]), "retain": Batch(ds.x_train[1:], ds.y_train[1:])}
    # |grad| = [2, 1.5, .5, 0] in both weight rows and .5 for both biases: 10 entries.
    method = unlearning.make("salun", {"gamma": 0.4})
    method.prepare(model, sets, 2, torch.Generator())
    weight_mask, bias_mask = method.mask
    assert weight_mask.tolist() == [[1, 1, 0, 0], [1, 1, 0, 0]] and bias_mask.tolist() == [0, 0]
    method = unlearning.make("salun", {"gamma": 0.2})
    method.prepare(model, sets, 2, torch.Generator())
    assert method.mask[0].tolist() == [[1, 0, 0, 0], [1, 0, 0, 0]]
    assert all(q.grad is None for q in model.parameters())


def test_salun_moves_only_masked_weights():
    model, ds = _linear()
    before = model[1].weight.detach().clone()
    unlearning.make("salun", {"gamma": 0.2, "weight_decay": 0, "epochs": 2}).unlearn(model, ds, np.array([1, 2]), np.array([0]), CPU)
    moved = model[1].weight.detach() != before
    assert moved[:, 0].all() and not moved[:, 1:].any()


def test_scrub_kl_vanishes_when_student_is_teacher(trained):
    x, y = trained.ds.x_train[:32], trained.ds.y_train[:32]
    logits = trained.model(x)
    assert distill_kl(logits, logits.detach(), 4.0).item() == pytest.approx(0, abs=1e-6)
    scrub = unlearning.make("scrub")
    scrub.prepare(trained.model, {}, 10, torch.Generator())
    step = Step(0, 5, 10)
    min_step = scrub.loss(trained.model, Batch(x, y), None, step)
    assert min_step.item() == pytest.approx(0.99 * F.cross_entropy(logits, y).item(), rel=1e-6)
    assert scrub.loss(trained.model, None, Batch(x, y), step).item() == pytest.approx(0, abs=1e-6)


def test_scrub_max_steps_come_first_and_only_while_epoch_below_msteps(trained, monkeypatch):
    seen = []
    original = unlearning.REGISTRY["scrub"].loss

    def recording(self, model, retain, forget, step):
        seen.append((step.epoch, "forget" if forget is not None else "retain"))
        return original(self, model, retain, forget, step)

    monkeypatch.setattr(unlearning.REGISTRY["scrub"], "loss", recording)
    _unlearn(trained, "scrub", {"epochs": 3, "msteps": 1}, "flipped")
    order = [s for i, s in enumerate(seen) if i == 0 or s != seen[i - 1]]
    assert order == [(0, "forget"), (0, "retain"), (1, "retain"), (2, "retain")]


def test_diverging_loss_raises_at_the_end_of_its_epoch(trained, monkeypatch):
    with pytest.raises(unlearning.ParamError, match=r"finetune diverged .*lower lr"):
        _unlearn(trained, "finetune", {"lr": 1e30}, "flipped")
    nan = lambda self, model, retain, forget, step: F.cross_entropy(model(retain.x), retain.y) * float("nan")
    monkeypatch.setattr(unlearning.REGISTRY["l1_sparse"], "loss", nan)
    reports = []
    retain, forget = metrics.split_ids(trained.ds.n_train, trained.forget["flipped"])
    with pytest.raises(unlearning.ParamError, match="l1_sparse diverged in epoch 1"):
        unlearning.make("l1_sparse").unlearn(copy.deepcopy(trained.model), trained.ds, retain, forget, CPU,
                                             lambda f, msg: reports.append(f))
    assert reports == []  # the bad epoch is never reported as done


def test_diverging_run_publishes_nothing(populated):
    ws = populated["ws"]
    before = snapshot(ws)
    with pytest.raises(unlearning.ParamError, match="neggrad diverged"):
        runs.unlearn(ws, populated["model"], populated["forget_set"], "neggrad", {"lr": 1e30}, CPU)
    assert snapshot(ws) == before


@pytest.mark.parametrize("name, params, message", [
    ("finetune", {"alpha": 0.5}, "no parameter 'alpha'"),
    ("neggrad_plus", {"alpha": 1.5}, "alpha must be between 0 and 1"),
    ("neggrad_plus", {"alpha": -0.1}, "alpha must be between 0 and 1"),
    ("neggrad_plus", {"alpha": float("nan")}, "alpha must be between 0 and 1"),
    ("salun", {"gamma": 2}, "gamma must be between 0 and 1"),
    ("scrub", {"gamma": 1.01}, "gamma must be between 0 and 1"),
    ("scrub", {"msteps": -1}, "msteps must be a finite number, at least 0"),
    ("scrub", {"msteps": 1.5}, "msteps must be a whole number"),
    ("scrub", {"temperature": 0}, "temperature must be above 0"),
    ("l1_sparse", {"alpha": -1e-4}, "alpha must be a finite number, at least 0"),
    ("l1_sparse", {"alpha": float("inf")}, "alpha must be a finite number"),
    ("retrain", {"weight_decay": float("nan")}, "weight_decay must be a finite number"),
])
def test_bad_parameters_are_refused(name, params, message):
    with pytest.raises(unlearning.ParamError, match=message):
        unlearning.make(name, params)


def test_published_defaults():
    p = {name: cls().params for name, cls in unlearning.REGISTRY.items()}
    assert (p["retrain"]["epochs"], p["retrain"]["lr"]) == (training.Recipe.epochs, training.Recipe.lr)
    assert (p["neggrad"]["epochs"], p["neggrad"]["lr"]) == (5, 1e-4)
    assert (p["neggrad_plus"]["lr"], p["neggrad_plus"]["alpha"]) == (0.01, 0.99)
    assert (p["l1_sparse"]["epochs"], p["l1_sparse"]["alpha"]) == (10, 5e-4)
    assert (p["random_label"]["epochs"], p["random_label"]["lr"], p["salun"]["gamma"]) == (10, 0.1, 0.5)
    s = p["scrub"]
    assert (s["epochs"], s["lr"], s["msteps"], s["gamma"], s["alpha"], s["temperature"]) == (5, 5e-3, 4, 0.99, 0.001, 4.0)
