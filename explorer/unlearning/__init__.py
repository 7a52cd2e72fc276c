"""Unlearning methods by name. Each is a `Method` subclass: defaults plus a per-batch loss."""

from __future__ import annotations

from .base import Method, ParamError
from .distillation import Scrub
from .finetuning import Finetune, L1Sparse, Retrain
from .negation import NegGrad, NegGradPlus
from .relabeling import RandomLabel, SalUn

REGISTRY: dict[str, type[Method]] = {
    cls.name: cls for cls in (Retrain, Finetune, NegGrad, NegGradPlus, L1Sparse, RandomLabel, SalUn, Scrub)
}


def make(name: str, params: dict | None = None) -> Method:
    if name not in REGISTRY:
        raise ParamError(f"unknown method {name!r}; choose one of {', '.join(REGISTRY)}")
    return REGISTRY[name](**(params or {}))


__all__ = ["REGISTRY", "Method", "ParamError", "make"]
