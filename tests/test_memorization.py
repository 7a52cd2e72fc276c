import shutil
from dataclasses import replace

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
    cfg = ExactConfig(models=8, epochs=3, chunk=2, seed=7, engine="batched")  # auto measures per workspace
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


def test_out_of_memory_halves_the_chunk_and_gives_the_same_estimate(noisy_model, monkeypatch, tmp_path):
    """An out-of-memory error with more than two models at once: the chunk is trained in halves
    (the later chunks too), every chunk is kept, and the estimate is the uninterrupted one's."""
    ws, rec = noisy_model
    pristine = Workspace(shutil.copytree(ws.path, tmp_path / "pristine"))
    cfg = ExactConfig(models=8, epochs=3, chunk=4, seed=11, engine="batched")
    real = ensembles.train_correctness
    sizes = []

    def two_at_most(arch, ds, subs, seeds, *args, **kwargs):
        sizes.append(len(seeds))
        if len(seeds) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(arch, ds, subs, seeds, *args, **kwargs)

    monkeypatch.setattr(ensembles, "train_correctness", two_at_most)
    messages = []
    halved = artifacts.load_scores(ws, memorize.exact(ws, rec, cfg, CPU, lambda f, m: messages.append(m)))
    assert sizes == [4, 2, 2, 2, 2]  # the second chunk goes in halves at once
    assert any("out of memory with 4 models at once: 2 at a time" in m for m in messages)
    monkeypatch.setattr(ensembles, "train_correctness", real)
    whole = artifacts.load_scores(pristine, memorize.exact(pristine, rec, cfg, CPU))
    assert np.array_equal(halved.arrays["correct"], whole.arrays["correct"])
    assert np.allclose(halved.values, whole.values, equal_nan=True)


def test_a_chunk_holds_what_half_the_memory_holds():
    from explorer import data

    ds = data.load(DatasetSpec())
    recipe = training.Recipe(batch_size=64)
    small, large = ensembles.footprint("mlp", ds, recipe), ensembles.footprint("cnn", ds, recipe)
    assert 0 < small < large
    assert ensembles.footprint("cnn", ds, replace(recipe, batch_size=128)) > large  # activations grow with the batch
    assert ensembles.models_per_chunk(large, memory=10 * large, most=256) == 4  # 5 fit: a power of two
    assert ensembles.models_per_chunk(large, memory=large, most=256) == 1  # at least one
    assert ensembles.models_per_chunk(small, memory=None, most=32) == 32  # memory unknown


def test_same_run_twice_is_not_duplicated_and_concurrent_start_is_refused(noisy_model, monkeypatch):
    import fcntl

    ws, rec = noisy_model
    first = memorize.exact(ws, rec, ExactConfig(models=4, seed=21), CPU)  # epochs: the model's recipe
    # The same run with the epochs spelled out (as the app does) is found, not trained again.
    again = memorize.exact(ws, rec, ExactConfig(models=4, seed=21, epochs=rec["epochs"]), CPU)
    assert again["id"] == first["id"]

    other = ExactConfig(models=4, epochs=2, seed=22)
    key = memorize._run_key(rec, memorize.resolve(other, rec, CPU, ws))
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


def test_fused_engine_refuses_batch_norm_models_and_names_the_batched_one():
    from explorer import data
    from explorer.models import ArchError

    with pytest.raises(ArchError, match="batch norm.*use the batched engine"):
        ensembles.train_correctness("resnet18", data.load(DatasetSpec()), torch.zeros(2, 5, dtype=torch.long),
                                    [0, 1], training.Recipe(epochs=1), CPU, "fused")


RECIPES = {"plain": {}, "codes": {"mnemonic_tmix": 0.2, "codes_seed": 3}, "sd": {"sd_lambda": 0.5},
           "cosine_codes_sd": {"cosine": True, "mnemonic_tmix": 0.1, "sd_lambda": 0.3}}


@pytest.mark.parametrize("arch, extra", [("mlp", extra) for extra in RECIPES.values()]
                         + [("cnn", RECIPES["cosine_codes_sd"]), ("sigmoid_mlp", RECIPES["cosine_codes_sd"])],
                         ids=[*RECIPES, "cnn", "sigmoid_mlp_wide"])
def test_the_batched_engine_trains_each_model_as_fit_trains_it(arch, extra):
    """Same seed, batches, code swaps and update as `fit` alone: the same weights, with codes,
    the SD loss and a schedule too. In float64, so that float rounding (which SGD amplifies over
    steps) cannot hide a different algorithm."""
    from explorer import data
    from explorer.training import fused

    ds = data.load(DatasetSpec())
    x = ds.x_train.double()
    subs = torch.as_tensor(estimator.subsets(400, 0.7, 3, seed=0))  # of the first 400 samples
    recipe = training.Recipe(epochs=2, **extra)
    init = lambda seed: training.init_model(arch, ds, seed).double()  # noqa: E731
    ens = fused.train([init(s) for s in (5, 6, 7)], x, ds.y_train, subs, recipe, CPU, [5, 6, 7], "own")
    for k, seed in enumerate((5, 6, 7)):
        alone = init(seed)
        training.fit(alone, x[subs[k]], ds.y_train[subs[k]], replace(recipe, seed=seed), CPU, record_dynamics=False)
        together = ens.module(k, init(0))
        for (name, p), q in zip(alone.named_parameters(), together.parameters()):
            assert torch.allclose(p, q, atol=1e-10, rtol=1e-8), (name, (p - q).abs().max())


def test_by_hand_gradients_are_autograds_of_the_training_loss_and_bf16_with_amp():
    """The batched engine's MLP step (by_hand.py) against autograd on the loss `fit` minimizes."""
    from explorer.training import by_hand, losses

    torch.manual_seed(0)
    K, B, d, h, C, lam = 3, 16, 20, 32, 10, 0.3
    weights = [(torch.randn(K, h, d) / d**0.5, torch.randn(K, h)), (torch.randn(K, C, h) / h**0.5, torch.randn(K, C))]
    x, y = torch.randn(K, B, d), torch.randint(C, (K, B))
    mean = torch.full((K, B), 1 / B)
    grad = lambda z: by_hand.logit_grad(z, y, mean, mean, lam)  # noqa: E731
    params = [t.clone().requires_grad_() for pair in weights for t in pair]
    w0, b0, w1, b1 = params
    total = sum(losses.training_loss(torch.relu(x[k] @ w0[k].t() + b0[k]) @ w1[k].t() + b1[k], y[k], lam)
                for k in range(K))
    reference = torch.autograd.grad(total, params)
    plain = by_hand.gradients(weights, [True, False], x, grad)
    for ours, theirs in zip(plain, reference):
        assert torch.allclose(ours, theirs, atol=1e-6, rtol=1e-4)
    amp = by_hand.gradients(weights, [True, False], x, grad, torch.bfloat16)
    for ours, f32 in zip(amp, plain):
        assert ours.dtype == torch.float32 and not torch.equal(ours, f32)  # computed in bf16, handed back float32
        assert (ours - f32).norm() < 0.05 * f32.norm()


@pytest.mark.parametrize("order", ["shared", "own"])
@pytest.mark.parametrize("extra", [{}, RECIPES["cosine_codes_sd"]], ids=["plain", "codes_sd"])
def test_a_sample_outside_a_models_subset_never_changes_its_weights(order, extra):
    from explorer import data
    from explorer.training import fused

    ds = data.load(DatasetSpec())
    n = 300  # the first 300 samples
    subs = torch.as_tensor(estimator.subsets(n, 0.7, 4, seed=1))
    outside = np.setdiff1d(np.arange(n), subs[0].numpy())[:20]
    x, y = ds.x_train[:n].clone(), ds.y_train[:n].clone()
    x[outside] = torch.randn_like(x[outside]) * 5  # other images, other labels
    y[outside] = (y[outside] + 1) % ds.num_classes
    recipe = training.Recipe(epochs=2, **extra)
    weights = []
    for xs, ys in ((ds.x_train[:n], ds.y_train[:n]), (x, y)):
        nets = [training.init_model("cnn", ds, s) for s in range(4)]
        ens = fused.train(nets, xs, ys, subs, recipe, CPU, [0, 1, 2, 3], order)
        weights.append([p.detach().clone() for p in ens.params])
    assert all(torch.equal(a[0], b[0]) for a, b in zip(*weights))  # model 0: bit for bit
    assert not all(torch.equal(a[1:], b[1:]) for a, b in zip(*weights))  # models that hold them changed


def test_fused_and_independently_ordered_models_estimate_the_same_memorization():
    """Shared batches are a common random factor across models; the estimate must still agree
    with independently ordered models' within their standard errors."""
    from explorer import data

    ds = data.load(DatasetSpec(label_noise=0.05))
    n, k = ds.n_train, 32
    subs = estimator.subsets(n, 0.7, 2 * k, seed=2)
    recipe = training.Recipe(epochs=30, lr=0.1, weight_decay=0.0)  # fits most flipped labels
    est = {}
    for engine, rows in (("fused", slice(0, k)), ("batched", slice(k, 2 * k))):
        correct, _ = ensembles.train_correctness("mlp", ds, torch.as_tensor(subs[rows]), list(range(k)), recipe, CPU,
                                                 engine)
        est[engine] = estimator.estimate(estimator.masks_of(subs[rows], n), correct.numpy())
    a, b = est["fused"], est["batched"]
    ok = np.isfinite(a["values"]) & np.isfinite(b["values"]) & (a["stderr"] + b["stderr"] > 0)
    z = (a["values"] - b["values"])[ok] / np.sqrt(a["stderr"] ** 2 + b["stderr"] ** 2)[ok]
    assert np.mean(np.abs(z) < 2) > 0.9  # ~95% for estimates of the same quantity
    assert abs(np.nanmean(a["values"]) - np.nanmean(b["values"])) < 0.01
    flipped = np.zeros(n, bool)
    flipped[ds.flipped] = True
    assert np.nanmean(a["values"][flipped]) > 0.3 and np.nanmean(b["values"][flipped]) > 0.3


def test_auto_measures_once_and_a_resume_picks_the_same_engine(tmp_path, monkeypatch):
    from explorer.pipeline import checkpoints

    ws = Workspace(tmp_path / "ws")
    rec = checkpoints.train(ws, DatasetSpec(), "mlp", training.Recipe(epochs=1), CPU)
    calls = []
    real = ensembles.calibrate
    monkeypatch.setattr(ensembles, "calibrate", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    first = memorize.resolve(ExactConfig(), rec, CPU, ws)
    assert first.engine in ensembles.ENGINES and len(calls) == 1
    assert memorize.resolve(ExactConfig(), rec, CPU, ws) == first and len(calls) == 1  # read back, not re-measured
    engine, why = memorize.pick_engine(ExactConfig(), rec, CPU, ws)
    assert engine == first.engine and "measured" in why and "sequential" in why


def test_auto_takes_fused_only_when_clearly_faster():
    """Fused trains on shared batches (another algorithm): a near tie goes to batched."""
    assert ensembles.pick({"sequential": 1e-3, "batched": 1.1e-4, "fused": 1e-4})[0] == "batched"
    assert ensembles.pick({"sequential": 1e-3, "batched": 2e-4, "fused": 1e-4})[0] == "fused"
    assert ensembles.pick({"sequential": 1e-4, "batched": 2e-4, "fused": 3e-4})[0] == "sequential"
    assert "within" in ensembles.pick({"batched": 1.1e-4, "fused": 1e-4})[1]


def test_blocks_train_one_model_at_a_time():
    rec = {"arch": "mlp", "recipe": {**training.Recipe(epochs=2).as_meta(), "blocks": 4}}
    assert memorize.resolve(ExactConfig(), rec, CPU).engine == "sequential"
    from explorer import data
    from explorer.models import ArchError

    for engine in ("batched", "fused"):
        with pytest.raises(ArchError, match="blocks"):
            ensembles.train_correctness("mlp", data.load(DatasetSpec()), torch.zeros(2, 5, dtype=torch.long), [0, 1],
                                        training.Recipe(**rec["recipe"]), CPU, engine)


def test_killed_job_resumes_to_the_same_estimate(noisy_model, tmp_path):
    import os
    import signal
    import time

    from explorer.store import jobs

    ws, rec = noisy_model
    pristine = Workspace(shutil.copytree(ws.path, tmp_path / "pristine"))
    argv = ["memorize", rec["id"], "--exact", "--models", "8", "--chunk", "2", "--epochs", "5", "--engine",
            "sequential", "--seed", "11", "--device", "cpu"]
    job_id = jobs.submit(ws, argv, "exact")
    deadline = time.monotonic() + 120
    while not list((ws.path / "partial").glob(f"exact-{rec['id']}-*/chunk-*.npz")):
        assert time.monotonic() < deadline and jobs.get(ws, job_id)["state"] in jobs.ACTIVE
        time.sleep(0.1)
    os.kill(jobs.get(ws, job_id)["pid"], signal.SIGKILL)
    assert jobs.wait(ws, job_id, timeout=30)["state"] == "failed"

    cfg = ExactConfig(models=8, chunk=2, epochs=5, engine="sequential", seed=11)
    [partial] = memorize.in_progress(ws, rec["id"])
    assert 0 < partial["done"] < 8
    resumed = artifacts.load_scores(ws, memorize.exact(ws, rec, cfg, CPU))
    fresh = artifacts.load_scores(pristine, memorize.exact(pristine, rec, cfg, CPU))
    assert np.array_equal(resumed.arrays["correct"], fresh.arrays["correct"])


def test_auto_resumes_an_unfinished_run_with_the_engine_it_began_with(noisy_model, monkeypatch, tmp_path):
    ws, rec = noisy_model
    ws = Workspace(shutil.copytree(ws.path, tmp_path / "copy"))
    cfg = ExactConfig(models=4, epochs=2, chunk=2, seed=31)
    real = ensembles.train_correctness
    calls = []

    def dies_on_second_chunk(*args, **kwargs):
        calls.append(args[6])  # the engine
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(ensembles, "train_correctness", dies_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        memorize.exact(ws, rec, replace(cfg, engine="fused"), CPU)  # begun with fused, as a Ray run might be
    monkeypatch.setattr(ensembles, "calibrate", lambda *a, **k: pytest.fail("a begun run is not re-measured"))
    engine, why = memorize.pick_engine(cfg, rec, CPU, ws)
    assert (engine, why) == ("fused", "the engine this run began with (resuming it)")
    # Asked again without a chunk size (the app's form has none): the saved chunks' size, not a new one.
    resolved = memorize.resolve(replace(cfg, chunk=None), rec, CPU, ws)
    assert (resolved.engine, resolved.chunk) == ("fused", 2)


def test_a_registry_architecture_with_a_variant_is_judged_as_it_is_built():
    from explorer.models import Arch

    assert ensembles.not_batchable(Arch("vgg16_bn", variant="salun")) is None  # batch norm: one wide model
    own_input = Arch("mlp", normalize=((0.5,), (0.5,)), pixels=((0.1,), (0.3,)))
    assert "input normalization" in ensembles.not_batchable(own_input)
    assert "not in the registry" in ensembles.not_batchable(Arch("mymodels:Net"))


def test_an_out_of_memory_retry_runs_after_the_failed_attempt_is_freed(noisy_model, monkeypatch):
    """The halves train once the failed attempt's tensors are gone (they hold the memory needed)."""
    import gc
    import weakref

    ws, rec = noisy_model
    real, alive = ensembles.train_correctness, []

    def big_then_fine(arch, ds, subs, seeds, *args, **kwargs):
        if len(seeds) > 2:
            held = torch.zeros(1000)  # what the failed attempt allocated
            alive.append(weakref.ref(held))
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        gc.collect()
        assert all(ref() is None for ref in alive), "the failed attempt's tensors are still alive"
        return real(arch, ds, subs, seeds, *args, **kwargs)

    monkeypatch.setattr(ensembles, "train_correctness", big_then_fine)
    out = memorize.exact(ws, rec, ExactConfig(models=4, epochs=2, chunk=4, seed=13, engine="batched"), CPU)
    assert out["models"] == 4 and alive
