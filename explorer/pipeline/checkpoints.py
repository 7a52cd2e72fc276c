"""Model records: training a model and publishing it, importing a user's weights (explorer.store.
artifacts loads them back).

A user's weights are read only through safetensors or `torch.load(weights_only=True)`, so a
model file can never run code. A user's architecture (`--arch MODULE:CALLABLE`) is code the user
named, and runs as `python` would run it (explorer.models).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as st_save
from torch import nn

from .. import data as data_mod
from .. import models, training
from ..errors import UserError, first_line, json_object
from ..runtime.progress import Progress, no_progress
from ..store import artifacts, block_file
from ..store.workspace import Workspace, WorkspaceError, npz_bytes
from ..training import curvature


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
    if spec.name == "imagefolder":  # the side its images were loaded at (their own, or the one named)
        meta["image_size"] = ds.shape[1]
    try:
        return ws.put("dataset", meta, rec_id=rec_id)
    except sqlite3.IntegrityError:  # another process made it a moment ago
        return ws.get(rec_id, "dataset")


def evaluate(model: nn.Module, ds: data_mod.Dataset) -> dict:
    """Train and test accuracy, test accuracy per class, and the share of flipped training labels
    the model predicts as labelled (None without label noise): one pass over each split."""
    def right(x, y):
        return models.predict_proba(model, x).argmax(1) == y.cpu() if len(y) else torch.zeros(0, dtype=torch.bool)

    train_right, test_right = right(ds.x_train, ds.y_train), right(ds.x_test, ds.y_test)
    y_test = ds.y_test.cpu()
    return {
        "train_acc": train_right.float().mean().item() if len(train_right) else float("nan"),
        "test_acc": test_right.float().mean().item() if len(test_right) else float("nan"),
        "per_class_acc": [test_right[y_test == c].float().mean().item() if (y_test == c).any() else float("nan")
                          for c in range(ds.num_classes)],
        "flipped_fit": train_right[torch.as_tensor(ds.flipped)].float().mean().item() if len(ds.flipped) else None,
    }


def publish(ws: Workspace, model: nn.Module, ds: data_mod.Dataset, dataset_id: str, *, name: str, source: str,
            arch: str | models.Arch, recipe: training.Recipe | None = None,
            result: training.TrainResult | None = None, device: torch.device | None = None,
            init: bytes | None = None, evaluation: dict | None = None, **extra) -> dict:
    """A model record: its weights, its evaluation, and whatever its training left (recipe, log,
    initial weights, per-sample dynamics). Trained, imported and oracle models all go through here.
    `arch` may carry more than a name (models.Arch: a user's architecture, its input convention,
    its head); the record keeps all of it, so every later load builds the same model."""
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
        "name": name, "source": source, **models.arch_meta(arch), "dataset": ds.spec.name, "dataset_id": dataset_id,
        "recipe": recipe.as_meta() if recipe else None, "epochs": recipe.epochs if recipe else None,
        "log": result.log if result else [], "seconds": result.seconds if result else None,
        "device": device.type if device else None, "has_dynamics": artifacts.DYNAMICS in files,
        "has_codes": artifacts.CODES in files,
    }
    return ws.put("model", {**meta, **block_meta, **extra, **(evaluation or evaluate(model, ds))}, files=files)


def train(
    ws: Workspace,
    spec: data_mod.DatasetSpec,
    arch: str,
    recipe: training.Recipe,
    device: torch.device,
    progress: Progress = no_progress,
    name: str | None = None,
    curvature_every: int = 0,
) -> dict:
    """Train a model from scratch, record its dynamics, and publish it as one record. With
    `curvature_every` = k > 0 the dynamics also hold each sample's loss curvature at epochs k, 2k, …
    (explorer/training/curvature.py), which the `curvature_avg` proxy averages; the record's
    `curvature_recorded` says at which epochs, with which h, and what it cost. It is not part of
    the recipe: the weights are the same with or without it."""
    ds = data_mod.load(spec)
    model = training.init_model(arch, ds, recipe.seed)
    init = training.state_bytes(model)
    result = training.fit(
        model, ds.x_train, ds.y_train, recipe, device, x_test=ds.x_test, y_test=ds.y_test, progress=progress,
        curvature_every=curvature_every,
    )
    extra = {}
    if result.curvature_seconds is not None:
        extra["curvature_recorded"] = {"epochs": result.dynamics["curvature_epochs"].tolist(), "every": curvature_every,
                                       "h": curvature.H, "seconds": result.curvature_seconds}
    return publish(ws, model, ds, dataset_record(ws, spec, ds)["id"], name=name or f"{spec.name} {arch}",
                   source="trained", arch=arch, recipe=recipe, result=result, device=device, init=init, **extra)


def read_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a safetensors or torch file (plain, or under 'state_dict' as RUM and SalUn
    save it, 'net' as pytorch-cifar does, 'model' or 'model_state_dict')."""
    return read_checkpoint(path)[0]


# Accuracies other code bases save beside the weights, in percent: pytorch-cifar's main.py its test
# accuracy as `acc`, RUM's and SalUn's save_checkpoint their best validation accuracy as `best_sa`.
RECORDED_ACCURACY = (("acc", "test"), ("best_sa", "validation"), ("best_acc", "test"), ("test_acc", "test"))


def _recorded_accuracy(top) -> dict | None:
    if not isinstance(top, dict):
        return None
    for key, split in RECORDED_ACCURACY:
        value = top.get(key)
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 100:
            return {"key": key, "split": split, "accuracy": value / 100 if value > 1 else float(value)}
    return None


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    """`read_weights_file`'s state dict, and the accuracy the file records beside it (None when it
    records none): {key, split, accuracy on [0, 1]}."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no such file: {path}")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - unpickling refusals, corrupt zips, bad headers
            reason = first_line(err)
            raise CheckpointError(
                f"{path.name} is neither a safetensors file nor a torch weights file that loads "
                f"safely ({reason[:160]})"
            ) from None
    recorded = _recorded_accuracy(state)
    if isinstance(state, dict):
        for key in ("state_dict", "net", "model", "model_state_dict"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path.name} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}, recorded


@dataclass
class Fitted:
    """A user's weights in a model, ready to publish (`register_import`)."""

    model: nn.Module
    arch: str | models.Arch  # a bare name when the model needs nothing more
    layout: str | None = None  # the known layout the file was recognised as (registry architectures)
    mapped: list[str] = field(default_factory=list)  # what was renamed or taken over, one line each
    recorded: dict | None = None  # the accuracy the file records beside the weights (read_checkpoint)


def _fit_report(expected: dict, state: dict) -> tuple[set, set, list]:
    missing, unexpected = set(expected) - set(state), set(state) - set(expected)
    wrong_shape = [k for k in set(expected) & set(state) if expected[k].shape != state[k].shape]
    return missing, unexpected, wrong_shape


def _check_classes(expected: dict, state: dict, spec: data_mod.DatasetSpec, num_classes: int) -> None:
    head_key = next((k for k in reversed(expected) if k.endswith("weight") and expected[k].ndim == 2), None)
    if head_key in state and head_key in expected and state[head_key].shape[0] != expected[head_key].shape[0]:
        raise CheckpointError(
            f"the file's model has {state[head_key].shape[0]} classes but {spec.name} has {num_classes}")


def _misfit(what: str, spec: data_mod.DatasetSpec, report, tried: str = "") -> CheckpointError:
    missing, unexpected, wrong_shape = report
    example = sorted(missing or unexpected or wrong_shape)[0]
    return CheckpointError(
        f"the weights do not fit {what} for {spec.name} "
        f"({len(missing)} missing, {len(unexpected)} unexpected, {len(wrong_shape)} mis-shaped keys; "
        f"e.g. {example!r}){tried}")


def _normalize_buffers(state: dict, channels: int) -> models.Stats | None:
    """RUM/SalUn's `normalize.mean`/`normalize.std`: the stats its model normalizes pixels with."""
    if not all(k in state for k in models.NORMALIZE_KEYS):
        return None
    mean, std = (state[k].flatten().double().tolist() for k in models.NORMALIZE_KEYS)
    if len(mean) != channels or len(std) != channels:
        raise CheckpointError(f"the file's normalize.mean/std have {len(mean)} channels but the images have {channels}")
    return tuple(mean), tuple(std)


def _input_convention(text: str | None, buffers: models.Stats | None, channels: int) -> models.Stats | None:
    """What the model expects, from --normalize and the file's own normalize buffers."""
    if buffers is None:
        return models.parse_normalize(text, channels)
    # The file's model takes [0, 1] pixels and normalizes them itself: "none" says the same,
    # and so do the buffers' own values; anything else contradicts the file.
    asked = None if text in (None, "none") else models.parse_normalize(text, channels)
    if text == "dataset" or (asked is not None and not np.allclose(asked, buffers, atol=1e-6)):
        raise CheckpointError("the file's model normalizes [0, 1] pixels itself (normalize.mean/std); "
                              "leave out --normalize, or give none")
    return buffers


def _fit_registry(state: dict, arch: str, ds: data_mod.Dataset, spec) -> tuple[str | None, dict, str, list[str],
                                                                                 models.Stats | None]:
    """(variant, renamed state, layout name, what was mapped, the normalize buffers) of the first
    known layout of `arch` the state fits exactly; a one-line refusal when none does."""
    channels, size, _ = ds.shape
    buffers = _normalize_buffers(state, channels)
    body = {k: v for k, v in state.items() if k not in models.NORMALIZE_KEYS} if buffers else state
    layouts = models.LAYOUTS.get(arch, (("explorer", None, (), None),))
    first_report = None
    for name, variant, renames, with_buffers in layouts:
        if with_buffers is not None and with_buffers != (buffers is not None):
            continue
        with torch.device("meta"):  # shapes only: no memory, no initialization
            expected = models.build(models.Arch(arch, variant=variant), channels, ds.num_classes, size).state_dict()
        mapped, notes = models.rename(body, renames)
        report = _fit_report(expected, mapped)
        first_report = first_report or report
        if report[0] or report[1]:
            continue
        _check_classes(expected, mapped, spec, ds.num_classes)
        if report[2]:
            raise _misfit(f"a {arch}", spec, report)
        if buffers is not None:
            name = name if name.startswith("RUM/SalUn") else f"RUM/SalUn ({name} names)"
            notes = [*notes, "normalize.mean, normalize.std → the model's input normalization (it takes [0, 1] pixels)"]
        return variant, mapped, name, notes, buffers
    tried = f"; tried the {', '.join(dict.fromkeys(n for n, *_ in layouts))} layouts" if len(layouts) > 1 else ""
    raise _misfit(f"a {arch}", spec, first_report or _fit_report({}, body), tried)


def fit(path: Path, arch: str, spec: data_mod.DatasetSpec, *, arch_kwargs: dict | None = None,
        normalize: str | None = None, head: str | None = None) -> Fitted:
    """A model of `arch` for the dataset holding the weights in `path`, or a one-line reason why
    the file cannot be that model. Touches no workspace.

    A registry architecture is tried in each of its known layouts (models.LAYOUTS); a user's
    (`MODULE:CALLABLE`, `timm:NAME`) is built by the user's code and must take the file's names
    as they are. `normalize` is --normalize (None: the dataset's standardization, or the file's
    own normalize buffers); `head` names the layer whose input is the penultimate features."""
    if arch_kwargs and not models.is_user_arch(arch):
        raise CheckpointError(f"--arch-kwargs are for a MODULE:CALLABLE or timm:NAME architecture; {arch} takes none")
    if arch_kwargs is not None and not isinstance(arch_kwargs, dict):
        raise CheckpointError("--arch-kwargs must be a JSON object")
    state, recorded = read_checkpoint(path)  # fails before the dataset is even loaded
    ds = data_mod.load(spec)
    channels, size, _ = ds.shape
    kwargs = json.dumps(arch_kwargs or {}, sort_keys=True)
    if models.is_user_arch(arch):
        bare = models.Arch(arch, kwargs)
        expected = models.build(bare, channels, ds.num_classes, size).state_dict()
        report = _fit_report(expected, state)
        if any(report):
            _check_classes(expected, state, spec, ds.num_classes)
            raise _misfit(arch, spec, report)
        variant, mapped, layout, notes = None, state, None, []
        stats = models.parse_normalize(normalize, channels)
        where = None if arch.startswith("timm:") else models.module_root(arch)
    else:
        variant, mapped, layout, notes, buffers = _fit_registry(state, arch, ds, spec)
        stats, where = _input_convention(normalize, buffers, channels), None
    spec_arch = models.Arch(arch, kwargs, variant, stats, (tuple(ds.mean.tolist()), tuple(ds.std.tolist())) if stats else None,
                            head, where)
    model = models.build(spec_arch, channels, ds.num_classes, size)
    model.load_state_dict(mapped)
    _probe(model, ds, spec)
    return Fitted(model, arch if spec_arch == models.Arch(arch) else spec_arch, layout, notes, recorded)


def _probe(model: nn.Module, ds: data_mod.Dataset, spec: data_mod.DatasetSpec) -> None:
    """The model runs on two of the dataset's images, gives one logit per class, and has a head."""
    models.head(model)  # a model without nn.Linear and without --head is refused here
    try:
        out = torch.cat(list(models.eval_outputs(model, ds.x_train[:2])))
    except Exception as err:  # noqa: BLE001 - the user's model failing on these images
        channels, size, _ = ds.shape
        raise CheckpointError(f"the model fails on {spec.name}'s {channels}×{size}×{size} images: "
                              f"{models.first_line(err)}") from None
    if out.ndim != 2 or out.shape[1] != ds.num_classes:
        raise CheckpointError(f"the model gives outputs of shape {tuple(out.shape[1:])} per sample but "
                              f"{spec.name} has {ds.num_classes} classes")


def parse_recipe(text: str | None) -> training.Recipe | None:
    """--recipe: the JSON object of Recipe settings an imported model's oracle retrains with."""
    settings = json_object(text, "--recipe", training.RecipeError, ", e.g. '{\"epochs\": 30, \"lr\": 0.05}'")
    if settings is None:
        return None
    known = training.Recipe.__dataclass_fields__
    if unknown := [k for k in settings if k not in known]:
        raise training.RecipeError(f"--recipe has no setting {unknown[0]!r}; known: {', '.join(known)}")
    try:
        return training.Recipe(**settings)
    except TypeError as err:
        raise training.RecipeError(f"--recipe: {err}") from None


def chance_warning(evaluation: dict, ds: data_mod.Dataset) -> str | None:
    """A warning when train or test accuracy is near chance (the majority class's share): the
    usual sign of the wrong input convention or of weights trained on another split."""
    counts = np.bincount(ds.y_test.numpy(), minlength=ds.num_classes)
    chance = counts.max() / max(counts.sum(), 1)
    near = chance + 0.1 * (1 - chance)
    low = [f"{which} accuracy {evaluation[key]:.3f}" for which, key in (("train", "train_acc"), ("test", "test_acc"))
           if evaluation[key] <= near]
    if not low:
        return None
    return (f"{' and '.join(low)} near chance ({chance:.2f}): check --normalize and the dataset's split "
            "(--dataset, --split-seed)")


FAR_BELOW = 0.15  # test accuracy this far under what the file records is not the model it saved


def mismatch_warning(evaluation: dict, recorded: dict | None, classes: list[str]) -> str | None:
    """A warning when the accuracy looks like a mismatch of the data rather than a model: far
    below what the file records, or some classes at exactly 0 and others at exactly 1 (a model that
    answers alike whatever the image: images blown up or shrunk, another normalization)."""
    said = []
    if recorded is not None and evaluation["test_acc"] < recorded["accuracy"] - FAR_BELOW:
        said.append(f"test accuracy {evaluation['test_acc']:.3f} is far below the {recorded['accuracy']:.3f} its file "
                    f"records ({recorded['key']}, {recorded['split']} accuracy)")
    per_class = evaluation.get("per_class_acc") or []
    zero = [classes[c] for c, a in enumerate(per_class) if a == 0.0]
    one = [classes[c] for c, a in enumerate(per_class) if a == 1.0]
    if zero and one:
        said.append(f"classes {', '.join(zero[:5])} are at exactly 0 test accuracy and {', '.join(one[:5])} at "
                    "exactly 1")
    if not said:
        return None
    return ("; ".join(said) + ": that looks like the wrong input rather than the model: check the images' size "
            "(an image folder keeps its own unless --image-size), --normalize and the split")


def register_import(ws: Workspace, model: nn.Module, arch: str | models.Arch, spec: data_mod.DatasetSpec, name: str,
                    *, recipe: training.Recipe | None = None, layout: str | None = None,
                    mapped: list[str] | None = None, recorded: dict | None = None) -> dict:
    """Publish checked weights (from `fit`) as a model without training dynamics. A given recipe is
    kept: its oracle and the from-scratch methods retrain with it. The accuracy the file records
    (`recorded`) is kept too, and a measured one far below it is warned of."""
    ds = data_mod.load(spec)
    evaluation = evaluate(model, ds)
    warnings = [w for w in (chance_warning(evaluation, ds), mismatch_warning(evaluation, recorded, ds.classes)) if w]
    return publish(ws, model, ds, dataset_record(ws, spec, ds)["id"], name=name, source="imported", arch=arch,
                   recipe=recipe, evaluation=evaluation, epochs=None, layout=layout, mapped=mapped or [],
                   recorded_accuracy=recorded, warning="; ".join(warnings) or None)


def import_model(ws: Workspace, path: Path, arch: str, spec: data_mod.DatasetSpec, name: str | None = None,
                 recipe: training.Recipe | None = None, fitted: Fitted | None = None, **options) -> dict:
    """Check a user's weights against the architecture and dataset (`fit`, with `options`), then
    register them under `name` (default: the file's name). `fitted`: the file already checked by
    `fit`, as the CLI does before it opens the workspace, so bad input writes nothing."""
    fitted = fitted or fit(path, arch, spec, **options)
    return register_import(ws, fitted.model, fitted.arch, spec, name or Path(path).name, recipe=recipe,
                           layout=fitted.layout, mapped=fitted.mapped, recorded=fitted.recorded)
