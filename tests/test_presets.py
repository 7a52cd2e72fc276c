"""The presets: the published settings per dataset (and their sources), the digits calibration,
and what a RUM or shuffle step gets from them."""

from __future__ import annotations

import pytest

from explorer import unlearning
from explorer.pipeline import runs
from explorer.unlearning import presets

PAPER = ["paper", "paper-cifar10", "paper-cifar100", "paper-mnist", "paper-svhn"]
LOOPS = ["finetune", "neggrad", "neggrad_plus", "l1_sparse", "random_label", "salun"]


def test_every_preset_names_its_source_and_datasets_get_theirs():
    assert set(presets.PRESETS) == {*PAPER, "digits"} and set(presets.SOURCES) == set(presets.PRESETS)
    assert all(presets.SOURCES[p] for p in presets.PRESETS)
    for dataset, preset in [("cifar10", "paper-cifar10"), ("cifar100", "paper-cifar100"), ("svhn", "paper-svhn"),
                            ("mnist", "paper-mnist"), ("digits", "digits"), ("folder", "paper")]:
        assert presets.default_for(dataset) == preset
        assert runs.preset_of({"dataset": dataset}) == preset
    assert runs.preset_of({"dataset": "cifar10"}, "digits") == "digits"  # a named preset wins


@pytest.mark.parametrize("preset", PAPER)
def test_paper_presets_are_the_published_settings(preset):
    made = {name: unlearning.make(name, {}, preset).params for name in [*LOOPS, "scrub", "mnemonic"]}
    assert {made[name]["batch_size"] for name in LOOPS} == {256}
    s = made["scrub"]
    assert (s["epochs"], s["lr"], s["msteps"], s["batch_size"], s["forget_batch_size"]) == (3, 5e-4, 2, 128, 32)
    m = made["mnemonic"]
    lam = (1e-3, 10.0) if preset == "paper-mnist" else (1e-5, 1e4)
    assert (m["lam1"], m["lam2"], m["grid"], m["rule"]) == (*lam, 0, "hard")
    assert presets.settings(preset, "ho_ret") == {"batch_size": 256}


def test_digits_keeps_batch_64_and_the_strict_grid():
    for name in [*LOOPS, "scrub"]:
        assert unlearning.make(name, {}, "digits").params["batch_size"] == 64
    m = unlearning.make("mnemonic", {}, "digits").params
    assert (m["grid"], m["rule"]) == (1, "strict")
    assert presets.settings("digits", "ho_ret") == {"batch_size": 64}


def _steps(method, preset):
    return [(s.name, s.params) if s else None for s in method.steps]


def test_full_rum_steps_get_the_published_fine_tune_and_salun():
    rum = unlearning.make("rum", {}, "paper")
    (none, (ft, ft_p), (sal, sal_p)) = _steps(rum, "paper")
    assert none is None and (ft, sal) == ("finetune", "salun")
    assert (ft_p["lr"], ft_p["epochs"], ft_p["batch_size"]) == (0.1, 10, 256)
    assert (sal_p["lr"], sal_p["epochs"], sal_p["batch_size"]) == (0.1, 5, 256)
    # On its own (vanilla), fine-tuning keeps its own published setting.
    assert (unlearning.make("finetune", {}, "paper").params["lr"], unlearning.make("finetune").params["epochs"]) == (
        0.01, 10)
    # A step's user settings win over the preset's.
    mine = unlearning.make("rum", {"steps": ["none", {"method": "finetune", "params": {"lr": 0.3}}, "salun"]}, "paper")
    assert mine.steps[1].params["lr"] == 0.3 and mine.steps[1].params["epochs"] == 10


def test_rum_f_neggrad_plus_gets_one_setting_per_group():
    for name in ("rum", "shuffle"):  # the control runs the same steps on random parts
        method = unlearning.make(name, {"steps": "neggrad_plus"}, "paper-cifar100")
        got = [(p["alpha"], p["epochs"], p["lr"]) for _, p in _steps(method, "paper-cifar100")]
        assert got == [(0.99, 5, 0.01), (0.97, 5, 0.01), (0.97, 10, 0.001)]
    # Another number of groups has no published per-group setting: the method's own.
    two = unlearning.make("shuffle", {"steps": "neggrad_plus", "parts": 2}, "paper")
    assert [(p["alpha"], p["lr"]) for _, p in _steps(two, "paper")] == [(0.99, 0.01)] * 2
    # The digits preset has no sequence settings: steps get its calibrated base settings.
    digits = unlearning.make("rum", {"steps": "neggrad_plus"}, "digits")
    assert {p["lr"] for _, p in _steps(digits, "digits")} == {0.25}


def test_a_preset_never_counts_as_asked_for():
    method = unlearning.make("rum", {}, "paper").steps[1]
    assert method.given == frozenset()
    assert unlearning.make("finetune", {"lr": 0.2}, "paper").given == {"lr"}
