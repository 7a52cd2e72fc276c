"""Exact memorization's subset models on a Ray cluster: one Ray task per chunk of models.

Ray is an optional extra (`pip install '.[ray]'`) and is imported here only, only when a user
asks for `--backend ray`. The driver ships the dataset to the cluster's object store once, submits
one task per chunk still missing from the run's partial folder, and hands each chunk back as soon
as it is done, so the caller stores it before waiting for the next: a lost worker costs a retry
of its task (Ray re-runs tasks whose worker died), a killed driver costs only the chunks in flight.
A task asks for one GPU when the cluster has any, and trains its chunk on it.
"""

from __future__ import annotations

import dataclasses
import socket
import time
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from .errors import UserError

RETRIES = 3  # re-runs of a task whose worker process or node died
POLL_SECONDS = 1.0  # how often the driver reports progress (and so notices a cancel) while it waits


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("the ray backend needs Ray: pip install 'memorization-unlearning-explorer[ray]' "
                        "(or pip install 'ray>=2.9')") from None
    return ray


def _train_chunk(ds, arch: str, recipe_meta: dict, engine: str, subsets: np.ndarray, seeds: list[int],
                 on_gpu: bool) -> tuple[np.ndarray, np.ndarray, float]:
    """The body of one Ray task: a chunk's correctness on the training and the test set."""
    from . import ensembles, training  # imported in the worker, from the package shipped with the job

    device = torch.device("cuda" if on_gpu else "cpu")  # Ray has set CUDA_VISIBLE_DEVICES to this task's GPU
    start = time.perf_counter()
    train_c, test_c = ensembles.train_correctness(arch, ds, torch.as_tensor(subsets), seeds,
                                                  training.Recipe(**recipe_meta), device, engine)
    return train_c.numpy(), test_c.numpy(), time.perf_counter() - start


def _check_reachable(address: str | None, seconds: float = 5.0) -> None:
    """Fail fast on a cluster address nothing answers at: Ray itself keeps retrying for minutes."""
    if not address or address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"a Ray address is host:port, ray://host:port or auto; got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=seconds).close()
    except OSError as err:
        raise UserError(f"nothing answers at Ray address {address} ({err.strerror or err})") from None


class RayPool:
    """A connection to a Ray cluster (or a local Ray instance) that trains chunks of subset models."""

    def __init__(self, address: str | None = None):
        ray = self.ray = _import_ray()
        if not ray.is_initialized():
            import explorer

            _check_reachable(address)
            try:
                # The driver's code travels with the job, so workers need only torch and Ray.
                ray.init(address=address, runtime_env={"py_modules": [explorer]}, log_to_driver=False,
                         include_dashboard=False, logging_level="WARNING")
            except (ConnectionError, RuntimeError, ValueError) as err:
                where = f"at {address}" if address else "locally"
                raise UserError(f"could not start or reach Ray {where}: {str(err).strip().splitlines()[0]}") from None
        self.gpus = int(ray.cluster_resources().get("GPU", 0))
        self.cpus = int(ray.cluster_resources().get("CPU", 0))
        self.device = torch.device("cuda" if self.gpus else "cpu")
        resources = {"num_gpus": 1} if self.gpus else {"num_cpus": 1}
        self._task = ray.remote(max_retries=RETRIES, **resources)(_train_chunk)

    def describe(self) -> str:
        return f"{self.gpus} GPUs" if self.gpus else f"{self.cpus} CPUs"

    def run(self, ds, arch: str, recipe_meta: dict, engine: str, chunks: Iterable[tuple[int, np.ndarray, list[int]]],
            waiting: Callable[[int], None]) -> Iterator[tuple[int, np.ndarray, np.ndarray, float]]:
        """Train every (chunk index, subsets, seeds) as a task; yield (index, train correctness,
        test correctness, seconds) in the order they finish. `waiting(running)` is called about
        once a second while none has finished. Leaving early cancels the tasks still pending."""
        ray = self.ray
        slim = dataclasses.replace(ds, thumbs_train=np.zeros(0, np.uint8), thumbs_test=np.zeros(0, np.uint8))
        data_ref = ray.put(slim)  # once per run, not once per task
        pending = {self._task.remote(data_ref, arch, recipe_meta, engine, subs, seeds, bool(self.gpus)): c
                   for c, subs, seeds in chunks}
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_SECONDS)
                if not ready:
                    waiting(len(pending))
                    continue
                c = pending.pop(ready[0])
                try:
                    train_c, test_c, seconds = ray.get(ready[0])
                except ray.exceptions.RayError as err:
                    raise RuntimeError(f"chunk {c} failed on the cluster after {RETRIES} retries: "
                                       f"{str(err).strip().splitlines()[0]}") from err
                yield c, train_c, test_c, seconds
        finally:
            for ref in pending:  # cancelled, failed or interrupted: stop what is queued or running
                ray.cancel(ref, force=True)
