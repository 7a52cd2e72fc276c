"""The app's background jobs as command lines: a page asks for a command by its parameters and
never spells an option. Recipe options come from the same declarations the `train` command's
options are made from (training.Recipe's fields), so a new recipe field needs no edit here.
Importing it is cheap: Home builds the demo's command line before torch is loaded."""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the pages import this module before anything heavy: torch only when a recipe is read
    from .memorization.estimator import ExactConfig


def option(name: str) -> str:
    """The command-line option of a parameter: `batch_size` → `--batch-size`."""
    return "--" + name.replace("_", "-")


def recipe_args(recipe: dict, recipe_cls: type | None = None) -> list[str]:
    """Options for the recipe fields given; a field left out or None keeps the default recipe's
    value (training.default_for), and a false switch is not sent for the same reason."""
    if not recipe:
        return []
    from . import training

    known = [f.name for f in dataclasses.fields(recipe_cls or training.Recipe)]
    out: list[str] = []
    for name, value in recipe.items():
        if name not in known:
            raise ValueError(f"{name!r} is not a recipe field; the fields are {', '.join(known)}")
        if value is None or value is False:
            continue
        out += [option(name)] if value is True else [option(name), str(value)]
    return out


def train(dataset: str, arch: str, recipe: dict, *, label_noise: float = 0.0, data_root: str = "data",
          curvature_every: int = 0, split_seed: int = 0, image_size: int = 0) -> list[str]:
    return ["train", "--dataset", dataset, "--arch", arch, *recipe_args(recipe), "--label-noise", str(label_noise),
            "--data-root", data_root, *(["--curvature-every", str(curvature_every)] if curvature_every else []),
            *(["--split-seed", str(split_seed)] if split_seed else []),
            *(["--image-size", str(image_size)] if image_size else [])]


def demo() -> list[str]:
    return ["demo"]


def memorize(model_id: str, cfg: ExactConfig, backend: str = "local", address: str | None = None) -> list[str]:
    """The `memorize` command line that runs (or resumes) this configuration."""
    argv = ["memorize", model_id, "--exact", "--models", str(cfg.models), "--ratio", str(cfg.ratio),
            "--seed", str(cfg.seed), "--engine", cfg.engine]
    argv += ["--epochs", str(cfg.epochs)] if cfg.epochs is not None else []
    argv += ["--chunk", str(cfg.chunk)] if cfg.chunk is not None else []
    argv += ["--backend", backend] if backend != "local" else []
    return argv + (["--address", address] if address else [])


def proxies(model_id: str, names: list[str]) -> list[str]:
    return ["proxies", model_id, "--only", ",".join(names)]


def embed(model_id: str, method: str, seed: int = 0) -> list[str]:
    return ["embed", model_id, "--method", method, "--seed", str(seed)]


def unlearn(model_id: str, forget_id: str, method: str, params: dict, preset: str, oracle: bool = True) -> list[str]:
    return ["unlearn", model_id, "--forget", forget_id, "--method", method, "--preset", preset,
            "--params", json.dumps(params), *([] if oracle else ["--no-oracle"])]


def sweep(model_id: str, forget_id: str, methods: list[str], preset: str, score: str, beam: int) -> list[str]:
    return ["unlearn", model_id, "--forget", forget_id, "--method", ",".join(methods), "--sweep", "--preset", preset,
            "--score", score, "--beam", str(beam)]


def evaluate(model_id: str, forget_id: str, method: str, models: int, params: dict | None = None,
             preset: str | None = None) -> list[str]:
    """`evaluate`; the original model unchanged (method `none`) takes no parameters or preset."""
    return ["evaluate", model_id, "--forget", forget_id, "--method", method, "--models", str(models),
            *(["--preset", preset, "--params", json.dumps(params or {})] if preset is not None else [])]


def import_model(path: str, arch: str, dataset: str, *, data_root: str = "data", split_seed: int = 0,
                 name: str | None = None, arch_kwargs: str | None = None, normalize: str | None = None,
                 head: str | None = None, recipe: str | None = None) -> list[str]:
    """`import-model`; an option left None is not sent (the command's default)."""
    argv = ["import-model", path, "--arch", arch, "--dataset", dataset, "--data-root", data_root,
            "--split-seed", str(split_seed)]
    for flag, value in (("--name", name), ("--arch-kwargs", arch_kwargs), ("--normalize", normalize),
                        ("--head", head), ("--recipe", recipe)):
        argv += [flag, value] if value else []
    return argv


def import_scores(path: str, model_id: str, fmt: str = "auto", name: str | None = None) -> list[str]:
    """`import-scores`: a score file made elsewhere as a score set of the model."""
    return ["import-scores", path, "--model", model_id, "--format", fmt, *(["--name", name] if name else [])]
