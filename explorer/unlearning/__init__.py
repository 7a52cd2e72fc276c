"""Unlearning methods by name. Each base method is a `Method` subclass: defaults plus a per-batch
loss on one shared loop, or its own procedure, with the method's math beside its class. `rum`
and `shuffle` are sequences of base methods over parts of the forget set. What a method needs of
the model it unlearns (its recipe, initial weights, codes, blocks or a score) it declares in
`needs` and is given by `bind`; nothing here sees a workspace."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
from pathlib import Path

from ..errors import first_line
from . import presets
from .base import NEEDS, Method, Param, ParamError, hide, with_defaults
from .deepobliviate import DeepObliviate
from .distillation import Scrub
from .finetuning import Finetune, L1Sparse, Retrain
from .mnemonic import Mnemonic
from .negation import NegGrad, NegGradPlus
from .relabeling import RandomLabel, SalUn
from .sequence import Rum, Sequence, Shuffle
from .unrolling import SgdUnroll

REGISTRY: dict[str, type[Method]] = {
    cls.name: cls for cls in (Retrain, Finetune, NegGrad, NegGradPlus, L1Sparse, RandomLabel, SalUn, Scrub,
                              Mnemonic, SgdUnroll, DeepObliviate)
}


SEQUENCES: dict[str, type[Sequence]] = {"rum": Rum, "shuffle": Shuffle}
NAMES = [*REGISTRY, *SEQUENCES]
FIRST = "finetune"  # what a form offers first: the simplest baseline


def resolve(name: str) -> type[Method] | type[Sequence]:
    """The class a method name stands for: a registered method or sequence, or your own method,
    named `MODULE:CLASS` (an import path, e.g. mymethods:GradDiff) or `path/to/file.py:CLASS`:
    a `Method` subclass written against its `spec`. Your module is imported, so its code runs as
    `python` would run it, only here: when you name it."""
    if name in REGISTRY:
        return REGISTRY[name]
    if name in SEQUENCES:
        return SEQUENCES[name]
    if ":" in name:
        where = name.rpartition(":")[0]
        path = Path(where).expanduser()
        # A file is read again once it changes (the app's process lives long); a module once.
        return _user_method(name, path.stat().st_mtime if where.endswith(".py") and path.is_file() else None)
    raise ParamError(f"unknown method {name!r}; choose one of {', '.join(NAMES)}, or MODULE:CLASS for your own")


def is_user_method(name: str) -> bool:
    return name not in REGISTRY and name not in SEQUENCES and ":" in name


@functools.lru_cache(maxsize=32)
def _user_method(name: str, mtime: float | None) -> type[Method]:
    where, _, attr = name.rpartition(":")
    try:
        if where.endswith(".py"):
            path = Path(where).expanduser().resolve()
            if not path.is_file():
                raise ParamError(f"--method {name!r}: no file {path}")
            spec = importlib.util.spec_from_file_location(f"explorer_user_method_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except ParamError:
        raise
    except Exception as err:  # noqa: BLE001 - anything the user's module raises while importing
        raise ParamError(f"--method {name!r}: cannot import {where}: {first_line(err, named=True)}") from None
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise ParamError(f"--method {name!r}: {attr} in {where} is not a subclass of explorer.unlearning.Method")
    return cls


def make(name: str, params: dict | None = None, preset: str = "paper") -> Method | Sequence:
    """A method ready to run, its parameters checked; ParamError (one line) otherwise. Parameters
    not given come from the preset, then from the method's defaults; a step of a sequence gets
    the preset's settings for a step of its method (`presets.step_settings`)."""
    params = params or {}
    if preset not in presets.PRESETS:
        raise ParamError(f"unknown preset {preset!r}; choose one of {', '.join(presets.PRESETS)}")
    if name in SEQUENCES:
        accepted = [p for p in inspect.signature(SEQUENCES[name]).parameters if p != "make"]
        unknown = sorted(set(params) - set(accepted))
        if unknown:
            raise ParamError(f"{name} has no parameter {unknown[0]!r}; it takes {', '.join(accepted)}")
        return SEQUENCES[name](**params, make=lambda step, p, group, groups: _base(
            step, p, presets.step_settings(preset, step, group, groups)))
    return _base(name, params, presets.settings(preset, name))


def _base(name: str, params: dict, preset_params: dict) -> Method:
    cls = resolve(name)
    if not issubclass(cls, Method):
        raise ParamError("a RUM step must be a base method, not another sequence")
    method = cls(**{**preset_params, **params})
    method.given = frozenset(params)  # what the user asked for, above the preset
    return method


__all__ = ["FIRST", "NAMES", "NEEDS", "REGISTRY", "SEQUENCES", "Method", "Param", "ParamError", "Sequence", "hide",
           "is_user_method", "make", "resolve", "with_defaults"]
