"""The base unlearning methods (fine-tuning, NegGrad(+), ℓ1-sparse, random labels, SalUn, SCRUB) on a tiny MLP over the embedded digits."""

from __future__ import annotations

import copy
import dataclasses
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
from explorer.runtime import optim
from explorer.unlearning.base import Batch, Step
from explorer.unlearning.distillation import distill_kl
from explorer.unlearning import relabeling
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
# act on S. neggrad's published lr (1e-4) barely moves a model in 5 epochs of 2 batches. The
# published settings at the digits preset's batch size (64): at 256 the 67 flipped samples make
# one batch, and an epoch one step. SCRUB runs at the RUM code's command (5 epochs, lr 5e-3, 4 max
# steps: the method's defaults), not the `paper` preset's large-scale settings (lr 5e-4 for 3 epochs).
def _case(name):
    changed = {"neggrad": {"lr": 3e-3}, "scrub": unlearning.REGISTRY["scrub"].defaults}.get(name, {})
    return {**changed, "batch_size": 64}


CASES = [(name, _case(name), "flipped") for name in sorted(NAMES)] + [
    (name, _case(name), "class") for name in ("neggrad", "neggrad_plus", "random_label", "salun", "scrub")
]


@pytest.mark.parametrize("name, params, which", CASES)
def test_method_lowers_forget_accuracy(trained, name, params, which):
    after, before = _unlearn(trained, name, params, which)
    assert before["acc_forget"] > 0.7
    assert after["acc_forget"] < before["acc_forget"] - 0.1
    assert after["acc_retain"] > 0.9 and after["acc_test"] > 0.8


def test_fresh_retrain_reproduces_training_on_the_retain_set(trained):
    retain, forget = metrics.split_ids(trained.ds.n_train, trained.forget["flipped"])
    ds = trained.ds
    oracle, ours = training.init_model("mlp", ds, 0), training.init_model("mlp", ds, 0)
    training.fit(oracle, ds.x_train[retain], ds.y_train[retain], training.Recipe(epochs=3), CPU, record_dynamics=False)
    unlearning.make("retrain", {"epochs": 3, "rule": "fresh"}).unlearn(ours, ds, retain, forget, CPU)
    for a, b in zip(oracle.parameters(), ours.parameters()):
        assert torch.equal(a, b)


# A recipe with everything retraining must keep: a cosine schedule, the SD loss, mnemonic codes,
# and a batch size that leaves a short last batch.
RICH = training.Recipe(epochs=3, lr=0.05, batch_size=48, seed=3, cosine=True, sd_lambda=0.5, mnemonic_tmix=0.2)


@pytest.mark.parametrize("recipe", [RICH, dataclasses.replace(RICH, blocks=3)], ids=["one piece", "blocks"])
def test_the_faithful_retrain_with_an_empty_forget_set_is_the_original_run_bit_for_bit(recipe):
    ds = data.load(data.DatasetSpec())
    original = training.init_model("mlp", ds, recipe.seed)
    init = copy.deepcopy(original.state_dict())
    training.fit(original, ds.x_train, ds.y_train, recipe, CPU, record_dynamics=False)
    method = unlearning.make("retrain")
    method.bind(recipe=recipe)  # the whole recipe, not only its lr and epochs
    assert method.params["rule"] == "replay"
    retrained = training.init_model("mlp", ds, 0)
    retrained.load_state_dict(init)
    method.unlearn(retrained, ds, np.arange(ds.n_train), np.array([], dtype=np.int64), CPU)
    assert training.state_bytes(retrained) == training.state_bytes(original)
    fresh = training.init_model("mlp", ds, 0)
    fresh.load_state_dict(init)
    training.fit(fresh, ds.x_train, ds.y_train, dataclasses.replace(recipe, seed=recipe.seed + 1), CPU,
                 record_dynamics=False)
    assert metrics.verification_error(fresh, original) > 0.1  # another order lands elsewhere


def test_replay_takes_the_dropped_samples_out_of_the_original_batches():
    """A hand loop: the original's permutations, each batch without the dropped samples (its mean
    over those left), an emptied batch skipped while the cosine schedule still counts it."""
    torch.manual_seed(0)
    n, bs, epochs = 10, 3, 2
    x, y = torch.randn(n, 4), torch.randint(0, 3, (n,))
    recipe = training.Recipe(epochs=epochs, lr=0.1, batch_size=bs, seed=5, cosine=True)
    first = torch.randperm(n, generator=torch.Generator().manual_seed(recipe.seed))
    drop = first[:3].numpy()  # the whole first batch of epoch 1, and scattered samples in epoch 2
    model = nn.Sequential(nn.Linear(4, 3))
    by_hand = copy.deepcopy(model)
    training.fit(model, x, y, recipe, CPU, record_dynamics=False, drop=drop)

    opt = optim.SGD(by_hand.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    order, step, total, gone = torch.Generator().manual_seed(recipe.seed), 0, epochs * 4, set(drop.tolist())
    steps_taken = 0
    for _ in range(epochs):
        perm = torch.randperm(n, generator=order)
        for i in range(0, n, bs):
            ids = [int(j) for j in perm[i : i + bs] if int(j) not in gone]
            opt.lr = optim.cosine_lr(recipe.lr, step, total)
            step += 1
            if not ids:
                continue
            loss = F.cross_entropy(by_hand(x[ids]), y[ids])
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps_taken += 1
    assert steps_taken < step  # the constructed case does empty a batch
    for a, b in zip(model.parameters(), by_hand.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_retrain_in_the_workspace_is_the_oracle(populated):
    """`retrain` follows the model's whole recipe and replays its batches, as the oracle does: the
    two land on the same weights."""
    ws = populated["ws"]
    run = runs.unlearn(ws, populated["model"], populated["forget_set"], "retrain", {}, CPU)
    oracle = ws.get(run["oracle_id"], "model")
    assert oracle["order"] == "replay" and run["params"]["rule"] == "replay"
    assert run["metrics"]["verification_error"] == 0.0


# -- random labels ------------------------------------------------------------------------------


@pytest.mark.parametrize("num_classes", [2, 3, 10, 100])
def test_other_once_labels_are_always_another_class(num_classes):
    y = torch.arange(num_classes).repeat(40)
    new = other_labels(y, num_classes, torch.Generator().manual_seed(0))
    assert (new != y).all() and new.min() >= 0 and new.max() < num_classes
    assert len(new.unique()) == num_classes  # every class is used, none favoured away
    # The method trains on S̃ ∪ R: the retain samples as they were, the forget ones relabeled, once.
    sets = {"retain": Batch(torch.zeros(5, 1), torch.zeros(5, dtype=torch.long)), "forget": Batch(torch.ones(len(y), 1), y)}
    method = unlearning.make("random_label", {"rule": "other_once"})
    g = torch.Generator().manual_seed(0)
    mixed = method.prepare(None, sets, num_classes, g)
    assert len(mixed["retain"]) == 5 + len(y) and (mixed["retain"].y[:5] == 0).all()
    assert (mixed["retain"].y[5:] != y).all()
    assert method.epoch_sets(1, mixed, num_classes, g) is mixed  # never redrawn


@pytest.mark.parametrize("num_classes", [2, 10, 100])
def test_random_labels_hit_the_true_class_one_in_c_times_and_change_every_epoch(num_classes):
    y = torch.arange(num_classes).repeat(4000 // num_classes)
    sets = {"retain": Batch(torch.zeros(5, 1), torch.zeros(5, dtype=torch.long)), "forget": Batch(torch.ones(len(y), 1), y)}
    method = unlearning.make("random_label")
    assert method.params["rule"] == "epoch"  # the RUM code's
    g = torch.Generator().manual_seed(0)
    sets = method.prepare(None, sets, num_classes, g)
    epochs = [method.epoch_sets(e, sets, num_classes, g)["retain"].y for e in range(3)]
    for labels in epochs:
        assert (labels[:5] == 0).all() and labels.min() >= 0 and labels.max() < num_classes
        hit = (labels[5:] == y).float().mean().item()
        assert hit == pytest.approx(1 / num_classes, abs=3 * (1 / num_classes / len(y)) ** 0.5 + 1e-3)
    changed = (epochs[0][5:] != epochs[1][5:]).float().mean().item()
    assert changed == pytest.approx(1 - 1 / num_classes, abs=0.05)  # independent draws


def _recording_loss(monkeypatch, name, seen):
    original = unlearning.REGISTRY[name].loss

    def recording(self, model, retain, forget, step):
        batch = forget if forget is not None else retain
        seen.append((step.epoch, "forget" if forget is not None else "retain", batch.x[:, 0].clone(), batch.y.clone()))
        return original(self, model, retain, forget, step)

    monkeypatch.setattr(unlearning.REGISTRY[name], "loss", recording)


def _numbered(n, num_classes=10):
    """Samples whose first feature is their id, so a batch says which samples it holds."""
    x = torch.zeros(n, 4)
    x[:, 0] = torch.arange(n, dtype=torch.float32)
    return SimpleNamespace(x_train=x, y_train=torch.arange(n) % num_classes, num_classes=num_classes, n_train=n)


def test_a_run_trains_on_forget_labels_redrawn_each_epoch(monkeypatch):
    ds, seen = _numbered(200), []
    _recording_loss(monkeypatch, "random_label", seen)
    forget = np.arange(100, 200)
    model = nn.Sequential(nn.Linear(4, 10))
    unlearning.make("random_label", {"epochs": 2, "batch_size": 32}).unlearn(model, ds, np.arange(100), forget, CPU)
    labels = {}
    for epoch, _, ids, y in seen:
        for i, label in zip(ids.long().tolist(), y.tolist()):
            labels[epoch, i] = label
    assert len(labels) == 2 * 200  # every sample once per epoch, S̃ and R shuffled together
    assert all(labels[e, i] == i % 10 for e in range(2) for i in range(100))  # R keeps its labels
    assert sum(labels[0, i] != labels[1, i] for i in forget) > 60  # S's are drawn again


def test_batch_relabeling_passes_over_the_forget_set_first_with_fresh_labels(monkeypatch):
    ds, seen, drawn = _numbered(200), [], []
    _recording_loss(monkeypatch, "salun", seen)
    draw = relabeling.any_labels
    monkeypatch.setattr(relabeling, "any_labels", lambda y, c, g: drawn.append(draw(y, c, g)) or drawn[-1])
    forget = np.arange(100, 200)
    model = nn.Sequential(nn.Linear(4, 10))
    unlearning.make("salun", {"epochs": 2, "batch_size": 32, "rule": "batch"}).unlearn(
        model, ds, np.arange(100), forget, CPU)
    phases = [(e, who) for e, who, *_ in seen]
    assert phases == [(e, who) for e in range(2) for who, k in (("forget", 4), ("retain", 4)) for _ in range(k)]
    # The loss is handed the true labels and draws its own for each forget batch, from all classes.
    assert all(set(ids.long().tolist()) <= set(forget.tolist()) for _, who, ids, _ in seen if who == "forget")
    assert [len(d) for d in drawn] == [32, 32, 32, 4] * 2
    labels = torch.cat(drawn)
    assert len(labels.unique()) == 10 and 0 < (labels == torch.cat([y for _, who, _, y in seen if who == "forget"])).sum() < 60


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


def test_salun_masked_out_weights_stay_bit_identical_under_weight_decay_and_momentum(trained):
    """The mask keeps half the weights; the others must not move at all, although weight decay
    and momentum act on every weight (SalUn's fix): only gradient masking lets them shrink."""
    retain, forget = metrics.split_ids(trained.ds.n_train, trained.forget["flipped"])
    settings = {"epochs": 3, "batch_size": 64, "weight_decay": 5e-2}  # a strong decay, to see it act
    runs_ = {}
    for fix in (1, 0):
        method = unlearning.make("salun", {**settings, "fix_masked": fix})
        model = copy.deepcopy(trained.model)
        method.unlearn(model, trained.ds, retain, forget, CPU)
        runs_[fix] = (method.mask, [q.detach() for q in model.parameters()])
    start = [q.detach() for q in trained.model.parameters()]
    mask, fixed = runs_[1]
    for m, w0, w in zip(mask, start, fixed):
        out = m == 0
        assert torch.equal(w[out], w0[out])  # bit for bit
        assert not torch.equal(w[~out], w0[~out])  # the salient ones did train
    mask, loose = runs_[0]
    out = mask[0] == 0
    shrink = (loose[0][out].abs().sum() / start[0][out].abs().sum()).item()
    assert shrink < 0.999  # weight decay pulled the masked-out weights towards 0


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
    assert s["forget_batch_size"] == 0  # the min steps' batch size
    # RUM and SalUn run every method at batch 256; retrain and sgd_unroll follow the recipe's.
    loops = {"finetune", "neggrad", "neggrad_plus", "l1_sparse", "random_label", "salun", "scrub"}
    assert {p[name]["batch_size"] for name in loops} == {256}
    assert p["retrain"]["batch_size"] == p["sgd_unroll"]["batch_size"] == training.Recipe.batch_size
    assert (p["random_label"]["rule"], p["salun"]["rule"], p["salun"]["fix_masked"]) == ("epoch", "epoch", 1)
    assert p["retrain"]["rule"] == "replay"


def test_every_preset_fits_every_methods_spec():
    """A preset's settings are checked against each method's declared parameters, sequence steps
    included: a preset cannot set a parameter a method does not take, or a value out of its range."""
    for preset, table in unlearning.presets.PRESETS.items():
        for name, cls in unlearning.REGISTRY.items():
            cls.check(unlearning.presets.settings(preset, name))
            for groups in (1, 3):
                for group in range(groups):
                    cls.check(unlearning.presets.step_settings(preset, name, group, groups))
        assert set(table) - {"sequence", "ho_ret"} <= set(unlearning.REGISTRY), preset


def test_a_methods_spec_is_its_one_declaration():
    for name, cls in unlearning.REGISTRY.items():
        method = cls()
        assert set(method.params) == set(cls.spec), name  # every parameter declared, nothing else taken
        for key, p in cls.spec.items():
            assert (p.choices and p.default in p.choices) or not p.choices, (name, key)
            assert method.params[key] == p.default or key in ("epochs", "lr", "momentum", "weight_decay",
                                                               "batch_size"), (name, key)
        assert cls.knob is None or cls.spec[cls.knob].sweep == cls.knob_values


def _docs_example() -> str:
    """The example method of docs/methods.md ("Your own method"), as a user would copy it."""
    from conftest import ROOT

    text = (ROOT / "docs" / "methods.md").read_text()
    section = text[text.index("## Your own method"):]
    return section[section.index("```python") + len("```python"): section.index("```", section.index("```python") + 9)]


def test_your_own_method_runs_from_the_cli_sweeps_and_shows_on_compare(populated, tmp_path, monkeypatch):
    """The docs' example method in a file of the user's own, named by its path: checked against its
    spec, run on the shared loop, swept by its knob, and shown on Compare, with no edit to the project."""
    import json

    from conftest import ROOT, last_json, run_cli
    from streamlit.testing.v1 import AppTest

    path = tmp_path / "mine.py"
    code = _docs_example()
    assert len([line for line in code.splitlines() if line.strip()]) <= 10  # "ten lines"
    path.write_text(code)
    name = f"{path}:GradDiff"
    ws, model, fs = populated["ws"], populated["model"], populated["forget_set"]
    bad = run_cli("unlearn", model["id"], "--forget", fs["id"], "--method", name, "--params", '{"beta": 2}',
                  workspace=ws.path)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1] == \
        "error: graddiff: beta must be between 0 and 1, got 2.0"
    assert "running your own method" in bad.stderr
    done = run_cli("unlearn", model["id"], "--forget", fs["id"], "--method", name, "--json", workspace=ws.path)
    assert done.returncode == 0, done.stderr
    run = last_json(done.stdout)
    assert run["method"] == name and run["params"]["beta"] == 0.5 and run["metrics"]["tow"] is not None
    swept = run_cli("unlearn", model["id"], "--forget", fs["id"], "--method", name, "--sweep", "--json",
                    workspace=ws.path)
    assert swept.returncode == 0, swept.stderr
    points = last_json(swept.stdout)["points"]
    assert {p["params"]["beta"] for p in points} == {0.25, 0.5}  # its declared knob
    missing = run_cli("unlearn", model["id"], "--forget", fs["id"], "--method", f"{tmp_path}/nope.py:X",
                      workspace=ws.path)
    assert missing.returncode == 2 and "no file" in missing.stderr

    monkeypatch.setenv("EXPLORER_WORKSPACE", str(ws.path))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.switch_page("views/compare.py")
    at.run()
    assert not at.exception
    shown = json.dumps([df.value.to_dict() for df in at.dataframe], default=str)
    assert name in shown
