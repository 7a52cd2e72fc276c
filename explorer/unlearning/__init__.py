"""Unlearning methods by name. Each is a `Method` subclass: defaults plus a per-batch loss."""

from __future__ import annotations

from .base import Method, ParamError
from .finetuning import Finetune

REGISTRY: dict[str, type[Method]] = {cls.name: cls for cls in (Finetune,)}


def make(name: str, params: dict | None = None) -> Method:
    if name not in REGISTRY:
        raise ParamError(f"unknown method {name!r}; choose one of {', '.join(REGISTRY)}")
    return REGISTRY[name](**(params or {}))


__all__ = ["REGISTRY", "Method", "ParamError", "make"]
