"""Unlearning a forget set in parts, one after the other (RUM: Zhao et al., NeurIPS 2024).

`rum` refines the forget set by a memorization score into groups (terciles by default, or
thresholds) and unlearns them in order, low → high by default, each with its own method
(`none` allowed). `shuffle` is the control: the same sequence over random equal parts. Step k
unlearns S_k with the retain set R_k = D \\ (S_1 ∪ … ∪ S_k): parts not yet processed stay in the
retain set, and a part given `none` still leaves the later retain sets.
"""

from __future__ import annotations

import time

import numpy as np

from ..runtime.progress import Progress, no_progress
from .base import Method, ParamError

GROUP_NAMES = {1: ["all"], 2: ["low", "high"], 3: ["low", "mid", "high"]}

# Full RUM as published for CIFAR-10: leave the least memorized alone (the model generalizes
# to them anyway), fine-tune away the middle, relabel the most memorized with SalUn.
FULL_RUM = ["none", "finetune", "salun"]


def group_names(k: int) -> list[str]:
    return GROUP_NAMES.get(k, [f"group {i + 1}" for i in range(k)])


def split(values: np.ndarray, forget_ids: np.ndarray, thresholds: list[float] | None = None,
          parts: int = 3) -> list[np.ndarray]:
    """Forget ids in groups from least to most memorized by `values` (oriented, one per training
    sample): equal parts of the forget set's own ranking (terciles by default), or by thresholds
    t_1 < t_2 < … on the values (group k holds t_{k−1} ≤ v < t_k)."""
    forget_ids = np.asarray(forget_ids, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)[forget_ids]
    if not np.isfinite(v).all():
        raise ParamError(f"{int((~np.isfinite(v)).sum())} forget samples have no score (never held out); "
                         "refine by another score set")
    if thresholds is None:
        order = forget_ids[np.argsort(v, kind="stable")]
        return [np.sort(part) for part in np.array_split(order, parts)]
    if list(thresholds) != sorted(thresholds):
        raise ParamError("RUM thresholds must increase")
    group = np.searchsorted(np.asarray(thresholds, dtype=np.float64), v, side="right")
    return [np.sort(forget_ids[group == k]) for k in range(len(thresholds) + 1)]


def retain_sets(n: int, groups: list[np.ndarray]) -> list[np.ndarray]:
    """R_k = D \\ (S_1 ∪ … ∪ S_k) for the groups in processing order."""
    keep = np.ones(n, dtype=bool)
    out = []
    for group in groups:
        keep[group] = False
        out.append(np.flatnonzero(keep))
    return out


def _step_methods(steps, k: int, make) -> list[Method | None]:
    """Steps as a list of names or {"method", "params"} per group; one name or dict = RUM^F.
    `make(name, params, group, groups)` makes a group's method."""
    if isinstance(steps, (str, dict)):
        steps = [steps] * k
    if not isinstance(steps, list) or len(steps) != k:
        raise ParamError(f"give one step per group: {k} groups, {len(steps) if isinstance(steps, list) else 1} steps")
    out = []
    for group, step in enumerate(steps):
        name, params = (step, {}) if isinstance(step, str) else (step.get("method"), step.get("params", {}))
        if name in (None, "none"):
            out.append(None)
        elif name in ("rum", "shuffle"):
            raise ParamError("a RUM step must be a base method, not another sequence")
        else:
            out.append(make(name, params, group, k))  # the preset may set each group's step apart
    return out


class Sequence:
    """Groups of the forget set unlearned in order, each by its own method (or none)."""

    name = "sequence"
    from_init = False
    needs: tuple[str, ...] = ()  # as a Method's (base.NEEDS); the steps themselves are not bound
    optional: tuple[str, ...] = ()
    amp = False  # mixed precision, passed on to each step (the pipeline sets it from the model's recipe)

    def __init__(self, steps: list[Method | None], order: list[int] | None = None):
        self.steps = steps
        self.order = order or list(range(len(steps)))
        if sorted(self.order) != list(range(len(steps))):
            raise ParamError(f"order must list each of the {len(steps)} groups once, e.g. {list(range(len(steps)))}")
        self.report: dict = {}

    def bind(self, **needed) -> None:
        """Take what `needs` names, loaded from the model by the pipeline."""

    def groups(self, forget_ids: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError

    def unlearn(self, model, ds, retain_ids, forget_ids, device, progress: Progress = no_progress):
        groups = self.groups(np.asarray(forget_ids))
        names = group_names(len(groups))
        ordered = [groups[i] for i in self.order]
        steps = []
        for k, (i, group, retain) in enumerate(zip(self.order, ordered, retain_sets(ds.n_train, ordered))):
            method = self.steps[i]
            step = {"group": names[i], "size": len(group), "method": method.name if method else "none",
                    "ids": group.tolist()}
            if method is not None and len(group) == 0:
                step["skipped"] = "empty group"
            elif method is not None:
                start = time.perf_counter()
                done = k / len(ordered)
                method.amp = self.amp
                method.unlearn(model, ds, retain, group, device,
                               lambda f, msg, done=done: progress(done + f / len(ordered), f"{names[i]}: {msg}"))
                step.update(params=method.params, seconds=time.perf_counter() - start)
            steps.append(step)
        self.report["steps"] = steps
        progress(1.0, "done")
        return model


class Rum(Sequence):
    """RUM: refine by memorization, then unlearn the groups in sequence."""

    name = "rum"
    needs = ("score",)  # the one its `score` parameter names
    summary = ("Split the forget set by memorization and unlearn the groups in sequence, each with the method "
               "that suits it (Zhao et al., NeurIPS 2024).")

    def __init__(self, score: str = "exact", thresholds: list[float] | None = None, steps=None,
                 order: list[int] | str = "low-high", make=None):
        k = len(thresholds) + 1 if thresholds else 3
        order = list(range(k))[::-1] if order == "high-low" else list(range(k)) if order == "low-high" else order
        super().__init__(_step_methods(FULL_RUM if steps is None else steps, k, make), order)
        self.score, self.thresholds, self.values = score, thresholds, None
        self.params = {"score": score, "thresholds": thresholds, "order": self.order,
                       "steps": [{"method": m.name, "params": m.params} if m else "none" for m in self.steps]}

    def bind(self, score: tuple[str, np.ndarray, str | None]) -> None:
        """(name, oriented values, score-set id) of the score to refine by; a score taken straight
        from the model's training dynamics has no id."""
        name, self.values, score_id = score
        self.report["score"] = {"name": name, "id": score_id}

    def groups(self, forget_ids):
        if self.values is None:
            raise ParamError("RUM needs the memorization score of every training sample (set `values`)")
        groups = split(self.values, forget_ids, self.thresholds, len(self.steps))
        self.report["groups"] = {n: len(g) for n, g in zip(group_names(len(groups)), groups)}
        return groups


class Shuffle(Sequence):
    """The control for RUM: the same sequence over random equal parts of the forget set."""

    name = "shuffle"
    summary = "RUM's control: unlearn random equal parts of the forget set one after the other."

    def __init__(self, steps="finetune", parts: int = 3, seed: int = 0, make=None):
        if not isinstance(parts, int) or parts < 1:
            raise ParamError("parts must be a whole number of at least 1")
        super().__init__(_step_methods(steps, parts, make))
        self.seed = seed
        self.params = {"parts": parts, "seed": seed,
                       "steps": [{"method": m.name, "params": m.params} if m else "none" for m in self.steps]}

    def groups(self, forget_ids):
        shuffled = np.random.default_rng(self.seed).permutation(forget_ids)
        return [np.sort(part) for part in np.array_split(shuffled, len(self.steps))]
