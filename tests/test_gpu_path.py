"""The GPU path, checked on the CPU: no host round-trips per batch, optional bf16 mixed precision,
and host data streamed from pinned memory. The CUDA-only tests run where a GPU is present."""

from __future__ import annotations

import collections
import contextlib
import copy
import gc

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from explorer import data, models, training, unlearning
from explorer.memorization import proxies
from explorer.pipeline import runs
from explorer.training import ensembles
from explorer.runtime import devices, optim, precision
from explorer.training import Recipe, RecipeError

CPU = torch.device("cpu")
CUDA = pytest.param(torch.device("cuda"), marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU"))
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")

# Every way a tensor's value reaches Python: on a GPU each one waits for the queued work.
HOST_SYNCS = ("item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__")


@contextlib.contextmanager
def count_syncs():
    """Count calls of the tensor methods that read a value back to the host (any device: on the
    CPU they cost nothing, but the same code on a GPU would wait there)."""
    counts: collections.Counter = collections.Counter()
    saved = {name: torch.Tensor.__dict__.get(name) for name in HOST_SYNCS}  # None: inherited from C

    def counting(name, method):
        def call(self, *args, **kwargs):
            counts[name] += 1
            return method(self, *args, **kwargs)
        return call

    for name in HOST_SYNCS:
        setattr(torch.Tensor, name, counting(name, getattr(torch.Tensor, name)))
    try:
        yield counts
    finally:
        for name, method in saved.items():
            if method is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, method)


@pytest.fixture(scope="module")
def digits():
    return data.load(data.DatasetSpec())


def test_the_counter_counts_host_reads_and_restores_the_methods():
    before = {name: getattr(torch.Tensor, name) for name in HOST_SYNCS}
    t = torch.ones(2)
    with count_syncs() as counts:
        t.sum().item(), t.tolist(), bool(t[0]), float(t[0]), t.numpy()
    assert counts == {"item": 1, "tolist": 1, "__bool__": 1, "__float__": 1, "numpy": 1}
    assert {name: getattr(torch.Tensor, name) for name in HOST_SYNCS} == before


# -- host syncs: the same count whatever the number of batches -------------------------------------

FORGET = np.arange(50)


def _unlearn(name, amp=False):
    def job(ds, bs, device):
        model = training.init_model("mlp", ds, 0)
        method = unlearning.make(name, {"epochs": 2, "batch_size": bs})
        method.amp = amp
        method.unlearn(model, ds, np.arange(50, ds.n_train), FORGET, device)
    return job


def _subsets(n: int, k: int = 2) -> torch.Tensor:
    """k random 70% subsets of n sample ids, as the exact estimator draws them."""
    g = torch.Generator().manual_seed(0)
    return torch.stack([torch.randperm(n, generator=g)[: int(0.7 * n)].sort().values for _ in range(k)])


def _correctness(engine, arch="mlp", **recipe):
    def job(ds, bs, device):
        subsets = _subsets(ds.n_train)
        ensembles.train_correctness(arch, ds, subsets, [0, 1], Recipe(epochs=2, batch_size=bs, **recipe), device,
                                    engine)
    return job


def _fit(**recipe):
    def job(ds, bs, device):
        model = training.init_model("mlp", ds, 0)
        training.fit(model, ds.x_train, ds.y_train, Recipe(epochs=2, batch_size=bs, **recipe), device)
    return job


def _eval(ds, bs, device):
    model = training.init_model("mlp", ds, 0).to(device)
    models.predict_proba(model, ds.x_train, bs)
    models.penultimate(model, ds.x_train, bs)


JOBS = {
    "fit": _fit(),
    "fit_amp": _fit(amp=True),
    "fit_mnemonic": _fit(mnemonic_tmix=0.2),
    "ensembles_batched": _correctness("batched"),
    "ensembles_fused": _correctness("fused"),
    "ensembles_sequential": _correctness("sequential"),
    "ensembles_wide_augmented": _correctness("batched", "sigmoid_mlp", augment=True, label_smoothing=0.1),
    "fit_augmented": _fit(augment=True),
    "finetune": _unlearn("finetune"),
    "neggrad_plus": _unlearn("neggrad_plus"),  # a cycled forget set: its order restarts mid-epoch
    "scrub_amp": _unlearn("scrub", amp=True),
    "eval": _eval,
    "curvature": lambda ds, bs, device: proxies.curvature(training.init_model("mlp", ds, 0), ds, device, batch_size=bs),
    "holdout": lambda ds, bs, device: proxies.holdout_retraining(training.init_model("mlp", ds, 0), ds, device,
                                                                 max_epochs=2, batch_size=bs),
}


@pytest.mark.parametrize("device", [CPU, CUDA], ids=["cpu", "cuda"])
@pytest.mark.parametrize("job", JOBS)
def test_host_syncs_do_not_grow_with_the_number_of_batches(digits, job, device):
    JOBS[job](digits, 64, device)  # once-per-process work first (the wide model's check of an architecture)
    counts = []
    for batch_size in (64, 16):  # 22 and 85 batches an epoch
        with count_syncs() as c:
            JOBS[job](digits, batch_size, device)
        counts.append(dict(c))
    assert counts[0] == counts[1]
    assert 0 < sum(counts[0].values()) <= 12  # a few per epoch (logging, the NaN check) or one copy at the end


# -- mixed precision ----------------------------------------------------------------------------------


def test_amp_is_kept_out_of_the_record_unless_on():
    assert "amp" not in Recipe().as_meta()
    assert Recipe(amp=True).as_meta()["amp"] is True
    assert Recipe(**Recipe(amp=True).as_meta()) == Recipe(amp=True)
    with pytest.raises(RecipeError):
        Recipe(amp="yes")


def _first_layer_dtypes(model):
    seen = set()
    model[1].register_forward_hook(lambda mod, inp, out: seen.add(out.dtype))
    return seen


@pytest.mark.parametrize("extra", [{}, {"mnemonic_tmix": 0.2}, {"blocks": 2}], ids=["plain", "codes", "blocks"])
def test_amp_trains_in_bf16_to_a_good_accuracy(digits, extra):
    model = training.init_model("mlp", digits, 0)
    seen = _first_layer_dtypes(model)
    result = training.fit(model, digits.x_train, digits.y_train, Recipe(epochs=10, amp=True, **extra), CPU,
                          x_test=digits.x_test, y_test=digits.y_test)
    assert torch.bfloat16 in seen  # the training passes (the per-epoch evaluation is float32)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert result.log[-1]["test_acc"] > 0.9  # 0.96 measured, as float32 gives
    assert all(np.isfinite(v).all() for v in result.dynamics.values())


def test_amp_off_is_the_plain_float32_loop(digits):
    """Without amp, fit is exactly the plain loop written out here: nothing is wrapped or cast."""
    recipe = Recipe(epochs=2)
    model = training.init_model("mlp", digits, 0)
    assert precision.wrap(model, CPU, False) is model
    training.fit(model, digits.x_train, digits.y_train, recipe, CPU, record_dynamics=False)
    plain = training.init_model("mlp", digits, 0)
    opt = optim.SGD(plain.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    order = torch.Generator().manual_seed(recipe.seed)
    for _ in range(recipe.epochs):
        for ids in torch.randperm(digits.n_train, generator=order).split(recipe.batch_size):
            loss = F.cross_entropy(plain(digits.x_train[ids]), digits.y_train[ids], reduction="none").mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert training.state_bytes(model) == training.state_bytes(plain)


@pytest.mark.parametrize("engine", ["batched", "fused", "sequential"])
def test_every_engine_trains_with_amp(digits, engine):
    subsets = _subsets(digits.n_train)
    _, test_c = ensembles.train_correctness("mlp", digits, subsets, [0, 1], Recipe(epochs=5, amp=True), CPU,
                                                  engine)
    assert test_c.float().mean() > 0.9


def test_unlearning_uses_the_precision_the_model_was_trained_with(digits):
    assert runs.bind(None, {"recipe": {**Recipe(amp=True).as_meta()}}, "finetune", None).amp is True
    assert runs.bind(None, {"recipe": Recipe().as_meta()}, "finetune", None).amp is False
    assert runs.bind(None, {"recipe": None}, "finetune", None).amp is False  # an imported model
    model = training.init_model("mlp", digits, 0)
    training.fit(model, digits.x_train, digits.y_train, Recipe(epochs=5), CPU)
    seen = _first_layer_dtypes(model)
    method = unlearning.make("scrub", {"epochs": 2})  # a teacher too, and a KL loss
    method.amp = True
    method.unlearn(model, digits, np.arange(50, digits.n_train), FORGET, CPU)
    assert seen == {torch.bfloat16}
    assert training.accuracy(model, digits.x_test, digits.y_test) > 0.85


def test_a_sequence_passes_its_precision_on_to_each_step(digits):
    seq = runs.bind(None, {"recipe": Recipe(amp=True).as_meta()}, "shuffle", {"steps": "finetune", "parts": 2})
    assert seq.amp is True
    seen = []
    for step in seq.steps:
        step.unlearn = lambda model, *args, step=step, **kw: seen.append(step.amp)
    seq.unlearn(training.init_model("mlp", digits, 0), digits, np.arange(50, digits.n_train), FORGET, CPU)
    assert seen == [True, True]


def test_a_cuda_gpu_without_bf16_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Old GPU")
    precision.check.cache_clear()
    try:
        with pytest.raises(RecipeError, match="Old GPU lacks; train without amp"):
            precision.autocast(torch.device("cuda"), True)
        assert precision.wrap(torch.nn.Linear(1, 1), torch.device("cuda"), False)  # amp off: nothing to check
    finally:
        precision.check.cache_clear()


# -- pinned memory ------------------------------------------------------------------------------------


def test_on_the_cpu_data_is_not_copied(digits):
    x = digits.x_train
    assert devices.to_device(x, CPU) is x
    parts = list(devices.batches(x, CPU, 500))
    assert [len(p) for p in parts] == [500, 500, x.shape[0] - 1000]
    assert all(p.data_ptr() == x[i * 500].data_ptr() for i, p in enumerate(parts))  # views, not copies


def test_a_tensor_is_pinned_once_until_it_changes(monkeypatch):
    """The cache's bookkeeping, with pinning faked (a clone) since it needs CUDA."""
    pins = []
    monkeypatch.setattr(torch.Tensor, "is_pinned", lambda self: any(self is p for p in pins))
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: pins.append(self.clone()) or pins[-1])
    x = torch.arange(6.0)
    first = devices.pinned(x)
    assert devices.pinned(x) is first and devices.pinned(first) is first and len(pins) == 1
    x += 1  # an in-place change: the pinned copy is stale
    again = devices.pinned(x)
    assert again is not first and torch.equal(again, x)
    key = id(x)
    del x
    gc.collect()
    assert key not in devices._pinned  # forgotten with its tensor


@needs_cuda
def test_a_wide_batch_norm_ensemble_on_cuda_trains_as_on_the_cpu():
    """The batched engine's wide model (channels-last on CUDA) against the same on the CPU, in
    float32: the same models up to rounding, and with amp it trains."""
    from explorer.training import fused

    g = torch.Generator().manual_seed(0)
    y = torch.arange(96) % 4
    x = torch.randn(96, 3, 16, 16, generator=g) + y.view(-1, 1, 1, 1) * 0.3
    subs = torch.stack([torch.randperm(96, generator=g)[:67] for _ in range(3)])
    recipe = Recipe(epochs=1, batch_size=16, lr=0.05, augment=True)
    build = lambda s: (torch.manual_seed(s), models.fast_cnn(3, 4, 16, widths=(8, 12, 12)))[1]  # noqa: E731
    states = []
    for device in (CPU, torch.device("cuda")):
        ens = fused.train([build(s) for s in range(3)], x, y, subs, recipe, device, [0, 1, 2], "own")
        states.append({k: v.float().cpu() for k, v in ens.state(1).items()})
    for key in states[0]:  # cuDNN's convolutions run in TF32 by default (10 mantissa bits): 1e-2, not 1e-5
        assert torch.allclose(states[0][key], states[1][key], atol=1e-2, rtol=1e-2), key
    fused.train([build(s) for s in range(3)], x, y, subs, Recipe(epochs=1, batch_size=16, amp=True),
                torch.device("cuda"), [0, 1, 2], "own")


@needs_cuda
def test_cuda_streams_from_pinned_memory_and_trains_with_amp(digits):
    cuda = torch.device("cuda")
    x = digits.x_train
    assert devices.pinned(x).is_pinned() and devices.pinned(x) is devices.pinned(x)
    assert all(b.device.type == "cuda" for b in devices.batches(x, cuda, 512))
    model = training.init_model("cnn", digits, 0)
    result = training.fit(model, digits.x_train, digits.y_train, Recipe(epochs=30, amp=True), cuda,
                          x_test=digits.x_test, y_test=digits.y_test)
    assert result.log[-1]["test_acc"] > 0.9
    method = unlearning.make("neggrad_plus", {"epochs": 2})
    method.amp = True
    method.unlearn(copy.deepcopy(model), digits, np.arange(50, digits.n_train), FORGET, cuda)
