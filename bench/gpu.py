"""Exact-memorization throughput (models trained and evaluated per second, via
ensembles.train_correctness) in float32 and with mixed precision (bf16), per engine.

`cnn` on the embedded digits, `resnet18` and `fast_cnn` (batch norm: sequential and batched as one
wide model, not fused) on a synthetic CIFAR-shaped set of random 3×32×32 images. On a GPU the
sizes are realistic, and fast_cnn's rate is projected to the issue's target (K = 256 models, each
on 35,000 samples, its recipe's 10 epochs); on a CPU they are shrunk to run in about a minute, and
the keys say both the sizes and the device.
On a CPU without native bf16 (AVX2) amp is emulated and much slower: that figure is for reference,
the setting is meant for GPUs.
"""

import time
from dataclasses import replace

import numpy as np
import torch

from explorer import data, training
from explorer.memorization import estimator
from explorer.training import ensembles
from explorer.runtime import devices

from bench import _figures

# per device type: (models K, epochs, training samples n) for each benchmark
SIZES = {
    "cuda": {"cnn": (64, 10, None), "resnet18": (8, 2, 10_000), "fast_cnn": (32, 2, 50_000)},
    "cpu": {"cnn": (2, 1, None), "resnet18": (1, 1, 64), "fast_cnn": (2, 1, 64)},
}
TARGET = {"models": 256, "samples": 35_000, "epochs": 10}  # fast_cnn on one H100 in ≤ 15 minutes


def cifar_shaped(n: int, seed: int = 0) -> data.Dataset:
    """Random standardized 3×32×32 images with random labels over 10 classes (a fifth as many test
    images): what the training loop costs on CIFAR-10, without the download."""
    g = torch.Generator().manual_seed(seed)
    n_test = max(n // 5, 1)
    x, y = torch.randn(n + n_test, 3, 32, 32, generator=g), torch.randint(0, 10, (n + n_test,), generator=g)
    empty = np.zeros((0, 32, 32, 3), dtype=np.uint8)
    return data.Dataset(spec=data.DatasetSpec(name="synthetic"), classes=[str(c) for c in range(10)],
                        x_train=x[:n], y_train=y[:n], x_test=x[n:], y_test=y[n:], y_train_clean=y[:n],
                        thumbs_train=empty, thumbs_test=empty)


def _models_per_second(arch, ds, k, epochs, device, engine, amp) -> float:
    subs = torch.as_tensor(estimator.subsets(ds.n_train, 0.7, k, seed=0))
    recipe = replace(training.default_for(arch, "cifar10"), epochs=epochs, amp=amp)
    start = time.perf_counter()
    ensembles.train_correctness(arch, ds, subs, list(range(k)), recipe, device, engine)  # ends with a copy to host
    return k / (time.perf_counter() - start)


def run() -> dict:
    device = devices.resolve("auto")
    sizes = SIZES["cuda" if device.type == "cuda" else "cpu"]
    out = {}
    throughput = {}
    for arch, ds in (("cnn", data.load(data.DatasetSpec())), ("resnet18", None), ("fast_cnn", None)):
        k, epochs, n = sizes[arch]
        ds = ds or cifar_shaped(n)
        # No more models at once than half the device's memory holds (fast_cnn at batch 1024: ~3.9 GB each).
        k = ensembles.models_per_chunk(ensembles.footprint(arch, ds, training.default_for(arch, "cifar10")),
                                       devices.total_bytes(device), k)
        name = f"{arch}_{'digits' if arch == 'cnn' else f'cifar_shaped_n{n}'}_K{k}_{epochs}ep"
        engines = [e for e in ensembles.ENGINES if not ensembles.refused(e, arch)]
        # Warm-up, one model for one epoch: imports, the CUDA context and cuDNN plans (bf16 ones too on a
        # GPU; on a CPU an amp warm-up would cost as much as the measurement).
        for engine in engines:
            for amp in (False, True) if device.type == "cuda" else (False,):
                _models_per_second(arch, ds, 1, 1, device, engine, amp)
        rates = {}
        for engine in engines:
            kk = min(k, 2) if engine == "sequential" else k
            rate = {amp: _models_per_second(arch, ds, kk, epochs, device, engine, amp) for amp in (False, True)}
            rates[engine] = max(rate.values())
            out[f"{name}_models_per_s[{device.type}] {engine} fp32"] = round(rate[False], 3)
            out[f"{name}_models_per_s[{device.type}] {engine} amp"] = round(rate[True], 3)
            out[f"{name}_amp_speedup[{device.type}] {engine}"] = round(rate[True] / rate[False], 2)
        if "batched" in rates:
            out[f"{name}_batched_over_sequential[{device.type}]"] = round(rates["batched"] / rates["sequential"], 2)
        passes = epochs * int(0.7 * ds.n_train)
        throughput[arch] = {e: round(r * passes, 1) for e, r in rates.items()}
        if arch == "fast_cnn":
            best = max(throughput[arch].values())
            target = TARGET["models"] * TARGET["epochs"] * TARGET["samples"]
            out[f"fast_cnn_K{TARGET['models']}_on_{TARGET['samples']}_samples_minutes[{device.type}] (projected)"] = (
                round(target / best / 60, 1))
    _figures.record(f"gpu_{device.type}", {"sample_passes_per_s": {device.type: throughput}})
    return out
