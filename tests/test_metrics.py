"""Compare-page metrics against hand computations on tiny cases."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from explorer import data, models
from explorer.evaluation import metrics

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits():
    return data.load(data.DatasetSpec())


def test_tow_of_a_model_against_itself_is_one():
    acc = {"acc_forget": 0.3, "acc_retain": 0.9, "acc_test": 0.8, "mia_efficacy": 0.4}
    assert metrics.tow(acc, acc) == 1.0
    assert metrics.tow(acc, acc, first="mia_efficacy") == 1.0


def test_per_sample_matches_hand_softmax():
    model = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
    x = torch.tensor([[2.0, 0.0], [0.0, 0.0], [0.0, 3.0]])
    y = torch.tensor([0, 2, 0])
    out = metrics.per_sample(model, x, y)
    e = np.e
    # logits [2, 0, 0], [0, 0, 0], [0, 3, 0]; true labels 0, 2, 0
    expected_conf = np.array([e**2 / (e**2 + 2), 1 / 3, 1 / (e**3 + 2)])
    np.testing.assert_allclose(out["confidence"], expected_conf, rtol=1e-6)
    np.testing.assert_allclose(out["loss"], -np.log(expected_conf), rtol=1e-6)
    assert out["confidence"][1] == pytest.approx(1 / 3)
    np.testing.assert_array_equal(out["pred"], [0, 0, 1])  # the tie [0, 0, 0] goes to class 0
    assert {k: v.shape for k, v in out.items()} == {"confidence": (3,), "loss": (3,), "pred": (3,)}


def test_mia_attack_identical_distributions_is_chance():
    rng = np.random.default_rng(1)
    res = metrics.mia_attack(rng.exponential(size=400), rng.exponential(size=600))
    assert res["n_per_side"] == 400 and res["folds"] == 5
    assert res["mia_acc"] == pytest.approx(0.5, abs=0.1)
    assert res["mia_auc"] == pytest.approx(0.5, abs=0.1)


def test_mia_attack_separated_distributions_is_perfect():
    rng = np.random.default_rng(2)
    members = rng.uniform(0.0, 0.1, size=300)  # low loss: memorized
    res = metrics.mia_attack(members, rng.uniform(2.0, 3.0, size=200), seed=3)
    assert res["n_per_side"] == 200
    assert res["mia_acc"] > 0.99 and res["mia_auc"] > 0.99


def test_mia_attack_small_sides():
    res = metrics.mia_attack([0.1, 0.2, 0.3], [1.0, 2.0])
    assert res["folds"] == 2 and res["n_per_side"] == 2
    assert np.isnan(metrics.mia_attack([0.1], [1.0, 2.0])["mia_acc"])


def test_threshold_attack_hand_case():
    members = [0.1, 0.2, 0.3, 2.0]  # 3 of 4 below 1
    nonmembers = [0.5, 1.5, 2.5, 3.5]  # 3 of 4 at or above 1
    assert metrics.threshold_attack(members, nonmembers, 1.0) == pytest.approx(0.75)
    assert metrics.threshold_attack(members, nonmembers, 0.0) == pytest.approx(0.5)  # nobody a member
    assert metrics.threshold_attack(members, nonmembers, 0.4) == pytest.approx(0.5 * (3 / 4 + 1))
    # Unbalanced sides count equally.
    assert metrics.threshold_attack([0.1], [0.5, 1.5, 2.5, 3.5], 1.0) == pytest.approx(0.5 * (1 + 3 / 4))
    thr, acc = metrics.best_threshold(members, nonmembers)
    assert acc == pytest.approx(0.875) and 0.3 < thr <= 0.5
    assert metrics.threshold_attack(members, nonmembers, thr) == pytest.approx(acc)
    thr, acc = metrics.best_threshold([0.0, 0.1], [5.0, 6.0])
    assert acc == 1.0 and 0.1 < thr <= 5.0


def test_class_accuracy_and_confusion_hand_case():
    y = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 1, 0, 1, 2, 2])
    np.testing.assert_allclose(metrics.class_accuracy(pred, y, 3), [2 / 3, 1 / 2, 1.0])
    np.testing.assert_array_equal(metrics.confusion(pred, y, 3), [[2, 1, 0], [0, 1, 1], [0, 0, 1]])
    acc = metrics.class_accuracy(torch.tensor([0, 1]), torch.tensor([0, 0]), 3)  # tensors work too
    assert acc[0] == 0.5 and np.isnan(acc[1]) and np.isnan(acc[2])
    assert metrics.confusion(torch.tensor([0, 1]), torch.tensor([0, 0]), 3).sum() == 2


def test_verification_error(digits):
    torch.manual_seed(0)
    a = models.for_dataset("mlp", digits)
    assert metrics.verification_error(a, a) == 0.0
    b = copy.deepcopy(a)
    with torch.no_grad():
        b[1].weight[3, 5] += 0.25
    assert metrics.verification_error(a, b) == pytest.approx(0.25, rel=1e-6)
    by_layer = metrics.weight_distance_by_layer(a, b)
    assert list(by_layer) == ["1", "3"]
    assert by_layer["1"] == pytest.approx(0.25, rel=1e-6) and by_layer["3"] == 0.0
    with pytest.raises(ValueError):
        metrics.verification_error(a, models.for_dataset("cnn", digits))


def test_linear_cka_invariances():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 10))
    q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    assert metrics.linear_cka(x, x) == pytest.approx(1.0)
    assert metrics.linear_cka(x, x @ q) == pytest.approx(1.0)
    assert metrics.linear_cka(x, 3 * x) == pytest.approx(1.0)
    assert metrics.linear_cka(x, x + 5) == pytest.approx(1.0)  # centred
    assert metrics.linear_cka(x, rng.normal(size=(200, 10))) < 0.15
    # The Gram-matrix branch (more features than samples) agrees with the feature-space one.
    wide = rng.normal(size=(20, 50))
    wq, _ = np.linalg.qr(rng.normal(size=(50, 50)))
    assert metrics.linear_cka(wide, wide @ wq) == pytest.approx(1.0)
    y = rng.normal(size=(200, 4))
    gram = metrics._cka_from_grams(*(torch.from_numpy(f - f.mean(0)) @ torch.from_numpy(f - f.mean(0)).T for f in (x, y)))
    assert metrics.linear_cka(x, y) == pytest.approx(gram)
    # Images are flattened per sample; tensors work.
    img = torch.randn(30, 2, 3, 3)
    assert metrics.linear_cka(img, img.reshape(30, -1) * 2) == pytest.approx(1.0)


@pytest.mark.parametrize("arch, expected", [
    ("mlp", ["1", "3"]),
    ("cnn", ["0", "2", "5", "9"]),
])
def test_cka_by_layer_of_a_model_with_itself_is_one(digits, arch, expected):
    torch.manual_seed(0)
    model = models.for_dataset(arch, digits)
    model.train()
    assert metrics.cka_layers(model) == expected
    same = metrics.cka_by_layer(model, copy.deepcopy(model), digits.x_train, max_samples=300)
    assert list(same) == expected
    assert all(v == pytest.approx(1.0, abs=1e-5) for v in same.values())
    assert model.training  # mode restored
    # A tiny memory budget puts each layer in its own pass: same values.
    split = metrics.cka_by_layer(model, model, digits.x_train, max_samples=300, budget_bytes=1)
    assert split == pytest.approx(same, abs=1e-6)
    torch.manual_seed(1)
    other = metrics.cka_by_layer(model, models.for_dataset(arch, digits), digits.x_train, max_samples=300)
    assert list(other) == expected
    assert all(0 <= v <= 1 + 1e-6 for v in other.values())
    assert min(other.values()) < 0.999


def test_cka_layers_of_resnet_are_its_blocks():
    import torchvision

    model = torchvision.models.resnet18(num_classes=10)
    layers = metrics.cka_layers(model)
    assert layers == ["conv1"] + [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)] + ["fc"]


def test_t_interval_hand_value():
    mean, half = metrics.t_interval([1, 2, 3])
    assert mean == 2.0
    assert half == pytest.approx(4.302653 * 1 / np.sqrt(3), rel=1e-5)  # ≈ 2.484
    mean, half = metrics.t_interval([5.0])
    assert mean == 5.0 and np.isnan(half)
    assert metrics.t_interval([2, 2, 2]) == (2.0, 0.0)


def test_entanglement_takes_the_centre_as_the_rum_code_does():
    # R: four points at x = ±1 (μ_R = 0); S: two at 9 and 11 (μ_S = 10). Within = 1 + 1 = 2.
    g = np.array([[-1.0, 0], [1, 0], [-1, 0], [1, 0], [9, 0], [11, 0]])
    # The code: μ = ½(μ_R + μ_S) = 5, between = ½(5² + 5²) = 25.
    assert metrics.entanglement(g, [4, 5]) == pytest.approx(2 / 25)
    # Pooled over R ∪ S: μ = 20/6, between = ½((10/3)² + (20/3)²) = 250/9.
    assert metrics.entanglement(g, [4, 5], centre="pooled") == pytest.approx(2 / (250 / 9))
    # The code's score does not change when R is repeated (more of the same retain set).
    assert metrics.entanglement(np.r_[g[:4], g[:4], g[4:]], [8, 9]) == pytest.approx(2 / 25)
    with pytest.raises(ValueError, match="centre"):
        metrics.entanglement(g, [4, 5], centre="median")

