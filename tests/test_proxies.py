from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from explorer import data, training
from explorer.memorization import proxies, scores
from explorer.pipeline import checkpoints, memorize
from explorer.store import artifacts
from explorer.data import DatasetSpec
from explorer.errors import UserError

CPU = torch.device("cpu")


def test_forgetting_events_count_transitions_and_punish_never_learned():
    correct = np.array([[0, 1, 1, 1], [1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]])
    assert proxies.forgetting_events(correct).tolist() == [0, 2, 4, 0]


def test_el2n_is_the_distance_to_the_one_hot_label():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    y = np.array([0, 1])
    direct = np.linalg.norm(p - np.eye(3)[y], axis=1)
    dyn = {"confidence": p[np.arange(2), y][:, None], "sq_norm": (p ** 2).sum(1)[:, None]}
    assert proxies.el2n(dyn) == pytest.approx(direct)


def test_symmetric_kl_is_zero_for_equal_and_positive_otherwise():
    p = torch.tensor([[0.5, 0.5, 0.0]])
    q = torch.tensor([[0.9, 0.1, 0.0]])
    assert proxies.symmetric_kl(p, p).item() == pytest.approx(0.0, abs=1e-9)
    assert proxies.symmetric_kl(p, q).item() > 0


def test_all_proxies_score_flipped_labels_as_memorized(populated):
    ws, model = populated["ws"], populated["model"]
    records, skipped = memorize.compute_proxies(ws, model, None, CPU)
    assert [r["name"] for r in records] == list(proxies.ALL) and skipped == {}
    flipped = np.zeros(artifacts.dataset_of(ws, model).n_train, bool)
    flipped[artifacts.dataset_of(ws, model).flipped] = True
    for rec in records:
        s = artifacts.load_scores(ws, rec)
        assert np.isfinite(s.values).all() and rec["seconds"] >= 0 and rec["device"] == "cpu"
        # Whatever the raw direction, oriented scores rank mislabeled samples as more memorized.
        assert s.oriented[flipped].mean() > s.oriented[~flipped].mean(), rec["name"]


def test_imported_model_gets_the_proxies_it_can(ws, populated, tmp_path):
    state = artifacts.load_model(populated["ws"], populated["model"]).state_dict()
    save_file(state, tmp_path / "w.safetensors")
    imported = checkpoints.import_model(ws, tmp_path / "w.safetensors", "mlp", DatasetSpec(label_noise=0.05))
    records, skipped = memorize.compute_proxies(ws, imported, ["confidence", "curvature"], CPU)
    assert [r["name"] for r in records] == ["curvature"]
    assert "training dynamics" in skipped["confidence"]
    with pytest.raises(UserError, match="bi_acc needs training dynamics"):
        memorize.compute_proxies(ws, imported, ["bi_acc"], CPU)


def test_unknown_proxy_is_refused(populated):
    with pytest.raises(UserError, match="unknown proxy"):
        memorize.compute_proxies(populated["ws"], populated["model"], ["vibes"], CPU)


def test_orientation_is_explicit_for_every_score():
    for name in [*proxies.ALL, "exact"]:
        assert scores.orientation(name) in (-1, 1)
    assert scores.oriented("confidence", np.array([0.9, 0.25])) == pytest.approx([0.1, 0.75])
    assert scores.oriented("entropy", np.array([-0.5])).tolist() == [0.5]  # stored as negative entropy
    assert scores.oriented("exact", np.array([0.3])).tolist() == [0.3]
    assert scores.oriented_name("confidence") == "1 − confidence"


def test_a_cancel_before_publishing_leaves_no_score_set(populated):
    from explorer.store import jobs

    ws, model = populated["ws"], populated["model"]
    before = len(ws.find("scores"))

    def cancel_at_the_end(fraction, message):
        if fraction >= 1:
            raise jobs.Cancelled()

    with pytest.raises(jobs.Cancelled):
        memorize.compute_proxies(ws, model, ["confidence", "curvature"], CPU, progress=cancel_at_the_end)
    assert len(ws.find("scores")) == before  # all or nothing


# -- loss curvature averaged over training (the RUM code's variant) ---------------------------------------


def test_curvature_averaged_over_training_is_the_mean_over_its_checkpoints():
    ds = data.load(DatasetSpec())
    # One step per epoch, so the model each sample is scored on in epoch e (before that epoch's
    # step, as the RUM code scores it) is the checkpoint after e − 1 epochs.
    recipe = training.Recipe(epochs=4, lr=0.5, weight_decay=0.0, batch_size=ds.n_train)
    model = training.init_model("mlp", ds, 0)
    result = training.fit(model, ds.x_train, ds.y_train, recipe, CPU, curvature_every=2)
    assert result.dynamics["curvature_epochs"].tolist() == [2, 4] and result.curvature_seconds > 0
    by_hand = []
    for e in (2, 4):
        checkpoint = training.init_model("mlp", ds, 0)
        training.fit(checkpoint, ds.x_train, ds.y_train, replace(recipe, epochs=e - 1), CPU, record_dynamics=False)
        by_hand.append(proxies.curvature(checkpoint, ds, CPU))
    assert not np.allclose(by_hand[0], by_hand[1], rtol=0.1)  # the epochs differ: which ones matters
    assert result.dynamics["curvature"] == pytest.approx(np.stack(by_hand, 1), rel=1e-6)
    assert proxies.from_dynamics(result.dynamics)["curvature_avg"] == pytest.approx(np.mean(by_hand, 0), rel=1e-6)


def test_curvature_recording_is_off_by_default_costs_nothing_and_moves_no_weight(monkeypatch, ws):
    from explorer.training import curvature as kernel

    calls = []
    real = kernel.sample_curvature
    monkeypatch.setattr(kernel, "sample_curvature", lambda *a, **k: calls.append(1) or real(*a, **k))
    ds = data.load(DatasetSpec())
    recipe = training.Recipe(epochs=2, batch_size=256)
    plain = checkpoints.train(ws, DatasetSpec(), "mlp", recipe, CPU)
    assert calls == [] and "curvature_recorded" not in plain
    assert "curvature" not in artifacts.load_dynamics(ws, plain)
    assert memorize.default_proxies(plain) == list(proxies.ALL)
    recorded = checkpoints.train(ws, DatasetSpec(), "mlp", recipe, CPU, curvature_every=1)
    assert len(calls) == 2 * -(-ds.n_train // 256)  # every batch of every epoch
    assert recorded["curvature_recorded"]["epochs"] == [1, 2] and recorded["curvature_recorded"]["h"] == 0.01
    # the weights are those the model has without recording (no weight gradient, no random draw)
    same, other = artifacts.load_model(ws, plain).state_dict(), artifacts.load_model(ws, recorded).state_dict()
    assert all(torch.equal(same[k], other[k]) for k in same)
    # the proxy: by default for the model that recorded it, refused in one line for the other
    records, skipped = memorize.compute_proxies(ws, recorded, None, CPU)
    rec = next(r for r in records if r["name"] == "curvature_avg")
    assert skipped == {} and rec["params"]["epochs"] == [1, 2] and rec["seconds"] >= recorded["curvature_recorded"]["seconds"]
    dyn = artifacts.load_dynamics(ws, recorded)
    assert artifacts.load_scores(ws, rec).values == pytest.approx(dyn["curvature"].mean(1))
    with pytest.raises(UserError, match="--curvature-every 1"):
        memorize.compute_proxies(ws, plain, ["curvature_avg"], CPU)
    assert scores.orientation("curvature_avg") == 1 and "curvature_avg" in memorize.default_proxies(recorded)


def test_curvature_recording_refuses_what_it_cannot_record():
    from explorer.training import curvature as kernel

    assert kernel.recorded_epochs(6, 0) == [] and kernel.recorded_epochs(6, 4) == [4]
    with pytest.raises(training.RecipeError, match="between 1 and the 3 epochs"):
        kernel.recorded_epochs(3, 4)
    ds = data.load(DatasetSpec())
    with pytest.raises(training.RecipeError, match="block training"):
        training.fit(training.init_model("mlp", ds, 0), ds.x_train, ds.y_train, training.Recipe(epochs=1, blocks=2),
                     CPU, curvature_every=1)
