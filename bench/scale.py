"""The seeds' scale on this machine: models per second for ResNet-18 and fast_cnn on CIFAR-shaped
data (random 3×32×32 images), trained one after another (`sequential`), as one wide model
(`batched`, wide.py), and by the peer, the loop a researcher writes over tensors in memory
(bench/_peers.py); each as a fraction of the matmul peak measured in the same run; and each
model's measured memory footprint with the chunk size it gives on this device.

On a CPU the sizes are small (K models on a few hundred samples, one epoch) so it runs in about
five minutes; the keys carry the sizes and the device. `python -m bench gpu` measures the same
on CUDA at realistic sizes."""

import time
from dataclasses import replace

import torch

from explorer import training
from explorer.memorization import estimator
from explorer.runtime import devices
from explorer.training import ensembles

from bench._figures import record
from bench._peers import QUICK, matmul_peak, tensor_loop, training_flops_per_sample
from bench.gpu import cifar_shaped

# arch -> (samples n, batched K, sequential and peer models, epochs, batch size)
SIZES = {"fast_cnn": (256, 4, 2, 1, 64), "resnet18": (128, 4, 2, 1, 64)}


def _rate(fn, k: int, device) -> float:
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return k / (time.perf_counter() - start)


def run() -> dict:
    device = devices.resolve("auto")
    out, throughput = {}, {}
    peak = matmul_peak(device)
    out[f"matmul_peak_gflops[{device.type}]"] = round(peak, 1)
    for arch, (n, k, k_one, epochs, batch) in SIZES.items():
        if QUICK:
            n, k, k_one = 64, 2, 1
        ds = cifar_shaped(n)
        # Augmentation off: the peer's loop has none, and the comparison is of training itself.
        recipe = replace(training.default_for(arch, "cifar10"), epochs=epochs, batch_size=batch, augment=False)
        subs = torch.as_tensor(estimator.subsets(n, 0.7, k, seed=0))
        tag = f"{arch}_cifar_shaped_n{n}_{epochs}ep[{device.type}]"
        # Warm-up, one model each way: imports (torch.optim's), allocations, kernel choices.
        ensembles.train_correctness(arch, ds, subs[:2], [0, 1], recipe, device, "batched")
        tensor_loop(arch, ds, subs[0], recipe, device)
        rates = {
            "tensor_loop": _rate(lambda: [tensor_loop(arch, ds, subs[j], recipe, device, j) for j in range(k_one)],
                                 k_one, device),
            "sequential": _rate(lambda: ensembles.train_correctness(arch, ds, subs[:k_one], list(range(k_one)), recipe,
                                                                    device, "sequential"), k_one, device),
            f"batched_K{k}": _rate(lambda: ensembles.train_correctness(arch, ds, subs, list(range(k)), recipe, device,
                                                                       "batched"), k, device),
        }
        # Each model trains on its subset and is evaluated on the whole training and test sets.
        flops = training_flops_per_sample(arch, ds)
        work = epochs * subs.shape[1] * flops + (n + len(ds.y_test)) * flops / 3  # evaluation: forward only
        for engine, rate in rates.items():
            out[f"{tag}_models_per_s {engine}"] = round(rate, 3)
            out[f"{tag}_fraction_of_matmul_peak {engine}"] = round(rate * work / 1e9 / peak, 3)
        # Sample-passes per second, the Memorization page's cost model's unit (estimator.sample_passes).
        throughput[arch] = {e.split("_K")[0]: round(r * epochs * subs.shape[1], 1) for e, r in rates.items()
                            if e != "tensor_loop"}
        out[f"{tag}_batched_over_sequential"] = round(rates[f"batched_K{k}"] / rates["sequential"], 2)
        out[f"{tag}_batched_over_tensor_loop"] = round(rates[f"batched_K{k}"] / rates["tensor_loop"], 2)
        out[f"{tag}_sequential_over_tensor_loop"] = round(rates["sequential"] / rates["tensor_loop"], 2)
        full = training.default_for(arch, "cifar10")
        per_model = ensembles.footprint(arch, ds, full)
        out[f"{arch}_footprint_mb_per_model (batch {full.batch_size})"] = round(per_model / 2**20, 1)
        out[f"{arch}_models_per_chunk[{device.type}] (half the device's memory)"] = ensembles.models_per_chunk(
            per_model, devices.total_bytes(device), 256)
    record(f"scale_{device.type}", {"sample_passes_per_s": {device.type: throughput}})
    return out
