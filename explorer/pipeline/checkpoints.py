"""Model records: training a model and publishing it, importing a user's weights (explorer.store.
artifacts loads them back).

A user's weights are read only through safetensors or `torch.load(weights_only=True)`, so a
model file can never run code.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as st_save
from torch import nn

from .. import data as data_mod
from .. import models, training
from ..errors import UserError
from ..runtime.progress import Progress, no_progress
from ..store import artifacts, block_file
from ..store.workspace import Workspace, WorkspaceError, npz_bytes


class CheckpointError(UserError):
    """A weights file that cannot become a model of the asked architecture; one-line message."""


def dataset_record(ws: Workspace, spec: data_mod.DatasetSpec, ds: data_mod.Dataset) -> dict:
    """The catalog's record of this exact dataset (splits, noise, flipped ids), made once. Its id
    is a hash of the spec, so two jobs publishing the first model on it at once agree on it."""
    key = json.dumps(spec.as_meta(), sort_keys=True)
    rec_id = f"ds-{hashlib.sha1(key.encode()).hexdigest()[:8]}"
    try:
        return ws.get(rec_id, "dataset")
    except WorkspaceError:
        pass
    meta = {**spec.as_meta(), "classes": ds.classes, "n_train": ds.n_train, "n_test": len(ds.y_test),
            "shape": list(ds.shape), "flipped": ds.flipped.tolist()}
    try:
        return ws.put("dataset", meta, rec_id=rec_id)
    except sqlite3.IntegrityError:  # another process made it a moment ago
        return ws.get(rec_id, "dataset")


def evaluate(model: nn.Module, ds: data_mod.Dataset) -> dict:
    return {
        "train_acc": training.accuracy(model, ds.x_train, ds.y_train),
        "test_acc": training.accuracy(model, ds.x_test, ds.y_test),
        "per_class_acc": training.per_class_accuracy(model, ds.x_test, ds.y_test, ds.num_classes),
    }


def publish(ws: Workspace, model: nn.Module, ds: data_mod.Dataset, dataset_id: str, *, name: str, source: str,
            arch: str, recipe: training.Recipe | None = None, result: training.TrainResult | None = None,
            device: torch.device | None = None, init: bytes | None = None, **extra) -> dict:
    """A model record: its weights, its evaluation, and whatever its training left (recipe, log,
    initial weights, per-sample dynamics). Trained, imported and oracle models all go through here."""
    files = {artifacts.WEIGHTS: training.state_bytes(model)}
    if init is not None:
        files[artifacts.INIT] = init
    if result is not None and result.dynamics:
        files[artifacts.DYNAMICS] = npz_bytes(**result.dynamics)
    if result is not None and result.codes is not None:  # mnemonic codes (explorer/training/codes.py)
        files[artifacts.CODES] = st_save({"codes": result.codes.contiguous()})
    block_meta = {}  # DeepObliviate's M_0 … M_B; an oracle's blocks index its retain set: not kept
    if getattr(result, "states", None) and source == "trained":
        files[artifacts.BLOCKS] = block_file.pack(result)
        block_meta = {"blocks": len(result.states) - 1, "block_bytes": len(files[artifacts.BLOCKS])}
    meta = {
        "name": name, "source": source, "arch": arch, "dataset": ds.spec.name, "dataset_id": dataset_id,
        "recipe": recipe.as_meta() if recipe else None, "epochs": recipe.epochs if recipe else None,
        "log": result.log if result else [], "seconds": result.seconds if result else None,
        "device": device.type if device else None, "has_dynamics": artifacts.DYNAMICS in files,
        "has_codes": artifacts.CODES in files,
    }
    return ws.put("model", {**meta, **block_meta, **extra, **evaluate(model, ds)}, files=files)


def train(
    ws: Workspace,
    spec: data_mod.DatasetSpec,
    arch: str,
    recipe: training.Recipe,
    device: torch.device,
    progress: Progress = no_progress,
    name: str | None = None,
) -> dict:
    """Train a model from scratch, record its dynamics, and publish it as one record."""
    ds = data_mod.load(spec)
    model = training.init_model(arch, ds, recipe.seed)
    init = training.state_bytes(model)
    result = training.fit(
        model, ds.x_train, ds.y_train, recipe, device, x_test=ds.x_test, y_test=ds.y_test, progress=progress
    )
    return publish(ws, model, ds, dataset_record(ws, spec, ds)["id"], name=name or f"{spec.name} {arch}",
                   source="trained", arch=arch, recipe=recipe, result=result, device=device, init=init)


def read_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a safetensors or torch file (plain, or under 'state_dict'/'model')."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no such file: {path}")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - unpickling refusals, corrupt zips, bad headers
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CheckpointError(
                f"{path.name} is neither a safetensors file nor a torch weights file that loads "
                f"safely ({reason[:160]})"
            ) from None
    if isinstance(state, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path.name} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def fit_weights(path: Path, arch: str, spec: data_mod.DatasetSpec) -> nn.Module:
    """A model of `arch` for the dataset holding the weights in `path`, or a one-line reason why
    the file cannot be that model. Touches no workspace."""
    state = read_weights_file(path)  # fails before the dataset is even loaded
    ds = data_mod.load(spec)
    model = models.for_dataset(arch, ds)
    expected = model.state_dict()
    head_key = next((k for k in reversed(expected) if k.endswith("weight") and expected[k].ndim == 2), None)
    if head_key in state and head_key in expected and state[head_key].shape[0] != expected[head_key].shape[0]:
        raise CheckpointError(
            f"the file's model has {state[head_key].shape[0]} classes but {spec.name} has {ds.num_classes}"
        )
    missing, unexpected = set(expected) - set(state), set(state) - set(expected)
    wrong_shape = [k for k in set(expected) & set(state) if expected[k].shape != state[k].shape]
    if missing or unexpected or wrong_shape:
        example = sorted(missing or unexpected or wrong_shape)[0]
        raise CheckpointError(
            f"the weights do not fit a {arch} for {spec.name} "
            f"({len(missing)} missing, {len(unexpected)} unexpected, {len(wrong_shape)} mis-shaped keys; "
            f"e.g. {example!r})"
        )
    model.load_state_dict(state)
    return model


def register_import(ws: Workspace, model: nn.Module, arch: str, spec: data_mod.DatasetSpec, name: str) -> dict:
    """Publish checked weights (from `fit_weights`) as a model without training dynamics."""
    ds = data_mod.load(spec)
    return publish(ws, model, ds, dataset_record(ws, spec, ds)["id"], name=name, source="imported", arch=arch)


def import_model(ws: Workspace, path: Path, arch: str, spec: data_mod.DatasetSpec, name: str | None = None) -> dict:
    """Check a user's weights against the architecture and dataset, then register them."""
    return register_import(ws, fit_weights(path, arch, spec), arch, spec, name or Path(path).name)
