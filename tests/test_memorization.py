import shutil

import numpy as np
import pytest
import torch

from explorer import training
from explorer.memorization import estimator
from explorer.pipeline import checkpoints, memorize
from explorer.store import artifacts
from explorer.training import ensembles
from explorer.data import DatasetSpec
from explorer.errors import UserError
from explorer.memorization.estimator import ExactConfig
from explorer.runtime import progress
from explorer.store.workspace import Workspace

CPU = torch.device("cpu")


def test_estimate_matches_the_definition_by_hand():
    masks = np.array([[1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 1, 1]], dtype=bool)
    correct = np.array([[1, 1, 0], [1, 0, 1], [0, 0, 1], [1, 1, 1]], dtype=bool)
    est = estimator.estimate(masks, correct)
    # sample 0: in models 0,1,3 (all right), out in model 2 (wrong) -> 1 - 0
    # sample 1: in 0,2,3 (right, wrong, right) -> 2/3; out in 1 (wrong) -> 0
    # sample 2: in 1,2,3 (all right); out in 0 (wrong) -> 1
    assert est["values"] == pytest.approx([1.0, 2 / 3, 1.0])
    assert est["cscore"] == pytest.approx([0.0, 0.0, 0.0])
    p_in = 2 / 3
    assert est["stderr"][1] == pytest.approx(np.sqrt(p_in * (1 - p_in) / 3))
    never_out = estimator.estimate(np.ones((2, 3), bool), np.ones((2, 3), bool))
    assert np.isnan(never_out["values"]).all()


def test_cost_model_and_measured_speed():
    assert estimator.sample_passes(models=256, ratio=0.7, epochs=30, n=1000) == 256 * 30 * 700
    runs = [{"params": {"models": 10, "ratio": 0.5, "epochs": 4}, "n": 100, "seconds": 2.0},
            {"params": {"models": 20, "ratio": 0.5, "epochs": 4}, "n": 100, "seconds": 8.0}]
    assert estimator.measured_speed(runs) == 20 * 4 * 50 / 8.0  # the latest run
    assert estimator.measured_speed([]) is None
    assert progress.clock(59) == "0m 59s" and progress.clock(3 * 3600 + 5 * 60) == "3h 05m"


def test_subsets_are_seeded_uniform_and_of_the_right_size():
    subs = estimator.subsets(100, 0.7, 50, seed=3)
    assert subs.shape == (50, 70) and all(len(set(row)) == 70 for row in subs)
    assert np.array_equal(subs, estimator.subsets(100, 0.7, 50, seed=3))
    inclusion = estimator.masks_of(subs, 100).mean(0)
    assert abs(inclusion.mean() - 0.7) < 1e-9 and inclusion.min() > 0.4


@pytest.fixture(scope="module")
def noisy_model(tmp_path_factory):
    from explorer.store.workspace import Workspace

    ws = Workspace(tmp_path_factory.mktemp("mem") / "ws")
    rec = checkpoints.train(ws, DatasetSpec(label_noise=0.05), "mlp", training.Recipe(epochs=40), CPU)
    return ws, rec


def test_batched_and_sequential_engines_train_the_same_models():
    from explorer import data

    ds = data.load(DatasetSpec())
    subs = torch.as_tensor(estimator.subsets(ds.n_train, 0.7, 3, seed=0))
    recipe = training.Recipe(epochs=3)
    seq = ensembles.train_correctness("mlp", ds, subs, [1, 2, 3], recipe, CPU, "sequential")
    bat = ensembles.train_correctness("mlp", ds, subs, [1, 2, 3], recipe, CPU, "batched")
    for a, b in zip(seq, bat):
        assert (a == b).float().mean() > 0.995


def test_exact_finds_flipped_labels_memorized(noisy_model):
    ws, rec = noisy_model
    out = memorize.exact(ws, rec, ExactConfig(models=24, epochs=40), CPU)
    assert out["name"] == "exact" and out["model_id"] == rec["id"] and out["models"] == 24
    s = artifacts.load_scores(ws, out)
    flipped = np.zeros(rec_n := len(s.values), bool)
    flipped[artifacts.dataset_of(ws, rec).flipped] = True
    assert s.arrays["masks"].shape == (24, rec_n) and s.arrays["correct"].shape == (24, rec_n)
    assert np.nanmean(s.values[flipped]) > np.nanmean(s.values[~flipped]) + 0.3
    assert out["never_held_out"] == int(np.isnan(s.values).sum())
    assert not list((ws.path / "partial").glob("*"))  # partial chunks are gone once published


def test_interrupted_run_resumes_to_the_same_estimate(noisy_model, monkeypatch, tmp_path):
    ws, rec = noisy_model
    pristine = Workspace(shutil.copytree(ws.path, tmp_path / "pristine"))  # for an uninterrupted run
    cfg = ExactConfig(models=8, epochs=3, chunk=2, seed=7)
    real = ensembles.train_correctness
    calls = []

    def dies_on_third_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # as if the process were stopped mid-run
        return real(*args, **kwargs)

    monkeypatch.setattr(ensembles, "train_correctness", dies_on_third_chunk)
    before = len(ws.find("scores"))
    with pytest.raises(KeyboardInterrupt):
        memorize.exact(ws, rec, cfg, CPU)
    assert len(ws.find("scores")) == before  # nothing published
    [partial] = memorize.in_progress(ws, rec["id"])
    assert partial["done"] == 4 and partial["masks"].shape == (4, partial["n"])

    calls.clear()
    monkeypatch.setattr(ensembles, "train_correctness", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    resumed = artifacts.load_scores(ws, memorize.exact(ws, rec, cfg, CPU))
    assert len(calls) == 2  # only the two chunks that were missing

    fresh = artifacts.load_scores(pristine, memorize.exact(pristine, rec, cfg, CPU))
    assert np.array_equal(resumed.arrays["correct"], fresh.arrays["correct"])
    assert np.allclose(resumed.values, fresh.values, equal_nan=True)


def test_same_run_twice_is_not_duplicated_and_concurrent_start_is_refused(noisy_model, monkeypatch):
    import fcntl

    ws, rec = noisy_model
    first = memorize.exact(ws, rec, ExactConfig(models=4, seed=21), CPU)  # epochs: the model's recipe
    # The same run with the epochs spelled out (as the app does) is found, not trained again.
    again = memorize.exact(ws, rec, ExactConfig(models=4, seed=21, epochs=rec["epochs"]), CPU)
    assert again["id"] == first["id"]

    other = ExactConfig(models=4, epochs=2, seed=22)
    key = memorize._run_key(rec, memorize.resolve(other, rec, CPU))
    folder = ws.path / "partial" / f"exact-{rec['id']}-{key}"
    folder.mkdir(parents=True)
    monkeypatch.setattr(memorize, "LOCK_WAIT_SECONDS", 0.5)
    with open(folder / "lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as if another job were running this very configuration
        with pytest.raises(UserError, match="already going"):
            memorize.exact(ws, rec, other, CPU)


def test_impossible_subset_size_is_refused_before_anything_is_written(noisy_model):
    ws, rec = noisy_model
    with pytest.raises(UserError, match="hold out at least one"):
        memorize.exact(ws, rec, ExactConfig(models=4, ratio=0.0001), CPU)
    assert not any((ws.path / "partial").glob("*0001*"))


def test_convergence_reports_shrinking_error():
    rng = np.random.default_rng(0)
    masks = rng.random((64, 200)) < 0.7
    correct = rng.random((64, 200)) < np.where(masks, 0.9, 0.6)
    rows = estimator.convergence(masks, correct, step=16)
    assert [r["models"] for r in rows] == [16, 32, 48, 64]
    assert rows[-1]["mean_stderr"] < rows[0]["mean_stderr"]
    assert rows[0]["mean_abs_change"] is None and rows[-1]["mean_abs_change"] < rows[1]["mean_abs_change"]


@pytest.mark.parametrize("cfg", [ExactConfig(models=1), ExactConfig(ratio=1.0), ExactConfig(epochs=0),
                                 ExactConfig(engine="warp")])
def test_bad_configs_are_refused(cfg):
    with pytest.raises(UserError):
        cfg.check()


def test_batched_engine_refuses_batch_norm_models():
    from explorer import data
    from explorer.models import ArchError

    with pytest.raises(ArchError, match="batch-norm"):
        ensembles.train_correctness("resnet18", data.load(DatasetSpec()), torch.zeros(2, 5, dtype=torch.long),
                                    [0, 1], training.Recipe(epochs=1), CPU, "batched")


@pytest.mark.parametrize("extra, named", [({"mnemonic_tmix": 0.1, "codes_seed": 0}, "mnemonic codes"),
                                          ({"sd_lambda": 0.1}, "SD loss"), ({"blocks": 4}, "blocks")])
def test_subset_models_train_with_the_models_own_recipe(extra, named):
    """The batched engine is plain SGD: a recipe with codes, the SD loss or blocks trains one model
    at a time (so the estimate is of the model's own training algorithm), and batched is refused."""
    rec = {"arch": "mlp", "recipe": {**training.Recipe(epochs=2).as_meta(), **extra}}
    assert memorize.resolve(ExactConfig(), rec, CPU).engine == "sequential"
    assert memorize.resolve(ExactConfig(), {**rec, "recipe": training.Recipe().as_meta()}, CPU).engine == "batched"
    from explorer import data
    from explorer.models import ArchError

    with pytest.raises(ArchError, match=named):
        ensembles.train_correctness("mlp", data.load(DatasetSpec()), torch.zeros(2, 5, dtype=torch.long), [0, 1],
                                    training.Recipe(**rec["recipe"]), CPU, "batched")


def test_killed_job_resumes_to_the_same_estimate(noisy_model, tmp_path):
    import os
    import signal
    import time

    from explorer.store import jobs

    ws, rec = noisy_model
    pristine = Workspace(shutil.copytree(ws.path, tmp_path / "pristine"))
    argv = ["memorize", rec["id"], "--exact", "--models", "16", "--epochs", "20", "--engine", "sequential",
            "--seed", "11", "--device", "cpu"]
    job_id = jobs.submit(ws, argv, "exact")
    deadline = time.monotonic() + 120
    while not list((ws.path / "partial").glob(f"exact-{rec['id']}-*/chunk-*.npz")):
        assert time.monotonic() < deadline and jobs.get(ws, job_id)["state"] in jobs.ACTIVE
        time.sleep(0.1)
    os.kill(jobs.get(ws, job_id)["pid"], signal.SIGKILL)
    assert jobs.wait(ws, job_id, timeout=30)["state"] == "failed"

    cfg = ExactConfig(models=16, epochs=20, engine="sequential", seed=11)
    [partial] = memorize.in_progress(ws, rec["id"])
    assert 0 < partial["done"] < 16
    resumed = artifacts.load_scores(ws, memorize.exact(ws, rec, cfg, CPU))
    fresh = artifacts.load_scores(pristine, memorize.exact(pristine, rec, cfg, CPU))
    assert np.array_equal(resumed.arrays["correct"], fresh.arrays["correct"])
