import numpy as np
import pytest
import torch
from safetensors.torch import save_file

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
