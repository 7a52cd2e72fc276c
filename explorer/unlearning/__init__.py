"""Unlearning methods by name. Each base method is a `Method` subclass: defaults plus a per-batch
loss on one shared loop, or its own procedure, with the method's math beside its class. `rum`
and `shuffle` are sequences of base methods over parts of the forget set. What a method needs of
the model it unlearns (its recipe, initial weights, codes, blocks or a score) it declares in
`needs` and is given by `bind`; nothing here sees a workspace."""

from __future__ import annotations

import inspect

from . import presets
from .base import NEEDS, Method, ParamError
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
    if name not in REGISTRY:
        raise ParamError(f"unknown method {name!r}; choose one of {', '.join(NAMES)}")
    method = REGISTRY[name](**{**preset_params, **params})
    method.given = frozenset(params)  # what the user asked for, above the preset
    return method


__all__ = ["NAMES", "NEEDS", "REGISTRY", "SEQUENCES", "Method", "ParamError", "Sequence", "make"]
