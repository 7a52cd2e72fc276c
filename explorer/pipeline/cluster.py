"""Exact memorization's subset models on a Ray cluster: one Ray task per chunk of models.

Ray is an optional extra (`pip install '.[ray]'`) and is imported here only, only when a user
asks for `--backend ray`. The driver ships the dataset to the cluster's object store once, submits
one task per chunk still missing from the run's partial folder, and hands each chunk back as soon
as it is done, so the caller stores it before waiting for the next: a lost worker costs a retry
of its task (Ray re-runs tasks whose worker died), a killed driver costs only the chunks in flight.
A task asks for one GPU when the cluster has any, and trains its chunk on it. The nodes need
torch, numpy and safetensors (and torchvision for the ResNets and VGG); the code travels with the job.
"""

from __future__ import annotations

import dataclasses
import signal
import socket
import threading
import time
import warnings
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from ..errors import UserError, first_line
from ..training import Recipe, ensembles  # in a worker: from the package shipped with the job

RETRIES = 3  # re-runs of a task whose worker process or node died
POLL_SECONDS = 1.0  # how often the driver reports progress (and so notices a cancel) while it waits


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("the ray backend needs Ray: pip install 'memorization-unlearning-explorer[ray]' "
                        "(or pip install 'ray>=2.9')") from None
    return ray


def _train_chunk(arrays: dict, ds, arch: str, recipe_meta: dict, engine: str, subsets: np.ndarray,
                 seeds: list[int], on_gpu: bool) -> tuple[dict[str, np.ndarray], float]:
    """The body of one Ray task: a chunk's correctness and φ on the training and the test set
    (named as memorize.CHUNK_ARRAYS), and the seconds it took."""
    with warnings.catch_warnings():  # read-only views of the object store: never written, only copied to the device
        warnings.filterwarnings("ignore", message=".*not writable.*")
        ds = dataclasses.replace(ds, **{k: torch.from_numpy(v) for k, v in arrays.items()})
    device = torch.device("cuda" if on_gpu else "cpu")  # Ray has set CUDA_VISIBLE_DEVICES to this task's GPU
    start = time.perf_counter()
    out = ensembles.train_correctness(arch, ds, torch.tensor(subsets), seeds, Recipe.from_meta(recipe_meta), device,
                                      engine, phi=True)
    return dict(zip(("train", "test", "train_phi", "test_phi"), (t.numpy() for t in out))), time.perf_counter() - start


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


def _connect(ray, address: str | None) -> None:
    import explorer

    _check_reachable(address)
    on_sigterm = signal.getsignal(signal.SIGTERM)
    try:
        # The driver's code travels with the job, so the nodes need no copy of it.
        ray.init(address=address, runtime_env={"py_modules": [explorer]}, log_to_driver=False,
                 include_dashboard=False, logging_level="WARNING")
    except (ConnectionError, RuntimeError, ValueError) as err:
        where = f"at {address}" if address else "locally"
        raise UserError(f"could not start or reach Ray {where}: {first_line(err)}") from None
    finally:
        # Ray's driver exits on SIGTERM; a job's SIGTERM is a cancel request, taken at the next progress report.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_sigterm)


def _failure(ray, err: Exception, chunk: int) -> Exception:
    """What a failed chunk becomes for the user: a user error as itself (one line, exit 2), a lost
    worker or node as the retries it used up, a crash in the task as its cause."""
    if isinstance(err, ray.exceptions.RayTaskError):
        cause = err.cause
        if isinstance(cause, UserError):
            return cause
        return RuntimeError(f"chunk {chunk} failed on the cluster: {cause!r}")
    return RuntimeError(f"chunk {chunk} was lost {RETRIES + 1} times on the cluster: {type(err).__name__}")


class RayPool:
    """A connection to a Ray cluster (or a local Ray instance) that trains chunks of subset models."""

    def __init__(self, address: str | None = None):
        ray = self.ray = _import_ray()
        if not ray.is_initialized():
            _connect(ray, address)
        self.gpus = int(ray.cluster_resources().get("GPU", 0))
        self.cpus = int(ray.cluster_resources().get("CPU", 0))
        self.device = torch.device("cuda" if self.gpus else "cpu")
        # A GPU task's worker is kept for the next chunk (Ray's default starts a fresh one, paying
        # torch's import and CUDA's start-up per chunk); its cached GPU memory serves the next chunk.
        resources = {"num_gpus": 1, "max_calls": 0} if self.gpus else {"num_cpus": 1}
        self._task = ray.remote(max_retries=RETRIES, **resources)(_train_chunk)

    def describe(self) -> str:
        return f"{self.gpus} GPUs" if self.gpus else f"{self.cpus} CPUs"

    def run(self, ds, arch: str, recipe_meta: dict, engine: str, chunks: Iterable[tuple[int, np.ndarray, list[int]]],
            waiting: Callable[[int], None]) -> Iterator[tuple[int, dict[str, np.ndarray], float]]:
        """Train every (chunk index, subsets, seeds) as a task; yield (index, the chunk's arrays:
        train and test correctness and φ, seconds) in the order they finish. `waiting(running)` is called about
        once a second while none has finished. Leaving early cancels the tasks still pending."""
        ray = self.ray
        tensors = ("x_train", "y_train", "x_test", "y_test")
        # Put once, as numpy: tasks on a node then share one read-only copy instead of unpickling their own.
        arrays = ray.put({k: getattr(ds, k).numpy() for k in tensors})
        rest = ray.put(dataclasses.replace(ds, thumbs_train=np.zeros(0, np.uint8), thumbs_test=np.zeros(0, np.uint8),
                                           **{k: torch.zeros(0) for k in tensors}))
        pending = {self._task.remote(arrays, rest, arch, recipe_meta, engine, subs, seeds, bool(self.gpus)): c
                   for c, subs, seeds in chunks}
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=POLL_SECONDS, fetch_local=True)
                if not ready:
                    waiting(len(pending))
                    continue
                failed = None
                for ref in ready:  # every finished chunk is handed over, even when one of them failed
                    c = pending.pop(ref)
                    try:
                        out, seconds = ray.get(ref)
                    except ray.exceptions.RayError as err:
                        failed = failed or _failure(ray, err, c)
                        continue
                    yield c, out, seconds
                if failed is not None:
                    raise failed
        finally:
            for ref in pending:  # cancelled, failed or interrupted: stop what is queued or running
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - already finished or gone; the original error matters
                    pass
