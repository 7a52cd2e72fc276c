"""`mnemonic`: one-shot class forgetting with mnemonic codes (Yamashita et al., ACML 2024); no loop.

A model trained with its classes' codes swapped in (`Recipe.mnemonic_tmix`, explorer/training/
codes.py) forgets classes in one step: the diagonal Fisher of the forget classes' codes over that
of the other classes' codes says which weights matter only to the forget classes, and those are
pushed by w ± α·η. The sign and the λ pair are chosen on the codes alone: no training data is read.

By default the method does what the paper publishes: one fixed (λ1, λ2) (the `paper-*` presets
carry its values, MNIST (1e-3, 10) and CIFAR-10 (1e-5, 1e4)) and the sign chosen by its accuracy
rule ("hard"). With `grid` = 1 it searches the λ grid instead, judged on the codes alone (the
`digits` preset does, under "strict": on the embedded digits the published λ do nothing).

How a candidate is judged on the codes is the `rule` (A_R on the remaining classes' codes, E_F on
the forget classes'; the larger A_R + E_F wins, ties going to the smaller update):
- "hard" (default): the paper's rule, A_R = accuracy, E_F = error.
- "strict": A_R = accuracy; E_F = share of forget codes whose own class gets a probability below
  FORGOTTEN_BELOW (1%). A forget code stops being *recognised* (argmax) well before the real
  class is forgotten, so in a grid search the paper's rule stops at too weak an update; asking
  for the code to be forgotten with confidence fixes that without looking at data.
- "soft": A_R = mean probability of the true class, E_F = mean (1 − probability of the own class).
On the embedded digits (3 seeds × MLP 60 epochs t_mix 0.1, CNN 30 epochs t_mix 0.1 and 0.3), with
the grid, the classes forgotten to ≤ 5% test accuracy with the remaining classes within 2 points
were 42/90 with "strict", 39 with "soft" and 28 with "hard", of 52 that any pair of the grid achieves.

The "with data" variant (a model trained without codes) feeds a few real training samples per
class in place of the codes, for the Fisher and for the choice alike: that variant looks at data.

The functions are pure functions of a model and its probe inputs (codes, or real samples with
their labels); `model` is left with the weights it came with. The method (`Mnemonic`) needs the
model's codes (`bind`; a model trained without them gets None, and then only with_data=1 works).
`rule` is the one parameter that is not a number, so it is kept out of `defaults` (whose values
the shared checks and the number inputs expect).
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..runtime.progress import no_progress
from .base import Method, Param, ParamError, hide

LAM1_GRID = tuple(10.0**e for e in range(-6, 1))  # 1e-6 … 1
LAM2_GRID = tuple(10.0**e for e in range(-1, 6))  # 1e-1 … 1e5
FISHER_START = 1e-16  # keeps log f finite where a weight gets no gradient
RULES = ("hard", "strict", "soft")  # how candidates are judged on the codes (module docstring)
DEFAULT_RULE = "hard"  # the paper's
FORGOTTEN_BELOW = 0.01  # "strict": a forget code is forgotten once its own class gets < 1%
SCORE_CHUNK = 4  # grid candidates scored together (one host sync); the search stops after the chunk


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


@contextmanager
def _eval(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _labels(inputs: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """Codes are indexed by class: without labels, input c belongs to class c."""
    return torch.arange(len(inputs)) if labels is None else torch.as_tensor(labels)


def fisher(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Diagonal Fisher per parameter: the mean over the inputs of grad² of CE(f(x), y), one
    eval-mode forward/backward per input (per-sample gradients, not a batch gradient)."""
    params = _params(model)
    device = next(model.parameters()).device
    acc = {n: torch.full_like(p, FISHER_START) for n, p in params.items()}
    with _eval(model):
        for x, y in zip(inputs.to(device), torch.as_tensor(labels).to(device)):
            grads = torch.autograd.grad(F.cross_entropy(model(x[None]), y[None]), list(params.values()),
                                        allow_unused=True)
            got = [(acc[n], g) for n, g in zip(params, grads) if g is not None]
            if got:
                torch._foreach_addcmul_([a for a, _ in got], [g for _, g in got], [g for _, g in got])
    return {n: a / max(len(inputs), 1) for n, a in acc.items()}


def amplitude(f_forget: torch.Tensor, f_retain: torch.Tensor) -> torch.Tensor:
    """η = f_F / f_R, computed as exp(log f_F − log f_R): NaN → 1, +inf → the tensor's largest
    finite value (the official code's cleaning, so one bad entry cannot blow up the update)."""
    eta = torch.exp(torch.nan_to_num(f_forget.log() - f_retain.log(), nan=0.0, posinf=math.inf))
    finite = eta[torch.isfinite(eta)]
    top = finite.max() if len(finite) else torch.tensor(torch.finfo(eta.dtype).max, device=eta.device)
    return torch.where(torch.isinf(eta), top, eta)


def alpha(eta: torch.Tensor, lam1: float, lam2: float) -> float:
    """Per-tensor step α_l = min(λ1, λ2 / max η_l): λ2 caps the largest single change."""
    return _alpha(eta.max().item(), lam1, lam2)


def _alpha(eta_max: float, lam1: float, lam2: float) -> float:
    return min(lam1, lam2 / eta_max)


def amplitudes(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor | None,
               forget_classes) -> dict[str, torch.Tensor]:
    """η per parameter tensor from the probe inputs: f_F averages the forget classes' inputs,
    f_R the others'. Costs one backward pass per input."""
    labels = _labels(inputs, labels)
    forget = torch.isin(labels, torch.as_tensor(list(forget_classes)))
    on_inputs = forget.to(inputs.device)
    f_forget = fisher(model, inputs[on_inputs], labels[forget])
    f_retain = fisher(model, inputs[~on_inputs], labels[~forget])
    return {n: amplitude(f_forget[n], f_retain[n]) for n in f_forget}


def candidates(weights: dict[str, torch.Tensor], eta: dict[str, torch.Tensor], lam1: float, lam2: float
               ) -> dict[int, dict[str, torch.Tensor]]:
    """The two updates w + α·η and w − α·η (one sign for the whole model), by sign."""
    steps = {n: alpha(e, lam1, lam2) * e for n, e in eta.items()}
    return {s: {n: weights[n] + s * steps[n] for n in eta} for s in (1, -1)}


@contextmanager
def _weights(model: nn.Module, state: dict[str, torch.Tensor]):
    """The model with `state` in place of its parameters; the originals come back bit for bit."""
    params = _params(model)
    saved = {n: params[n].detach().clone() for n in state}
    with torch.no_grad():
        for n, w in state.items():
            params[n].copy_(w)
    try:
        yield model
    finally:
        with torch.no_grad():
            for n, w in saved.items():
                params[n].copy_(w)


def _check_rule(rule: str) -> None:
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose one of {', '.join(RULES)}")


def _scores(logits: torch.Tensor, probe, rule: str) -> list[tuple[float, float, float]]:
    """(A_R, E_F, p_F) of each candidate from its logits on the probe inputs, (candidates, inputs,
    classes): the rule's scores, and the largest probability a forget input gives its own class.
    One host sync for all of them."""
    _, labels, forget = probe
    own = logits.float().log_softmax(2).gather(2, labels.expand(len(logits), -1)[..., None])[..., 0].exp()
    if rule == "soft":
        kept, forgot = own, 1 - own
    else:
        kept = (logits.argmax(2) == labels).float()
        forgot = (own < FORGOTTEN_BELOW).float() if rule == "strict" else 1 - kept
    return [tuple(row) for row in torch.stack([kept[:, ~forget].mean(1), forgot[:, forget].mean(1),
                                               own[:, forget].amax(1)], 1).tolist()]


@torch.no_grad()
def measure(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor | None, forget_classes,
            rule: str = DEFAULT_RULE) -> tuple[float, float]:
    """(A_R, E_F) on the probe inputs under `rule` (module docstring): for "hard", accuracy on
    the remaining classes' inputs and error on the forget classes'."""
    _check_rule(rule)
    probe = _probe(model, inputs, labels, forget_classes)
    with _eval(model):
        return _scores(model(probe[0])[None], probe, rule)[0][:2]


def choose_sign(model: nn.Module, cands: dict[int, dict[str, torch.Tensor]], inputs: torch.Tensor,
                labels: torch.Tensor | None, forget_classes, rule: str = DEFAULT_RULE) -> tuple[int, float, float]:
    """(sign, A_R, E_F) of the candidate with the larger A_R + E_F on the probe inputs; on a tie
    the minus sign, as the official code does."""
    scores = {}
    for s, state in cands.items():
        with _weights(model, state):
            scores[s] = measure(model, inputs, labels, forget_classes, rule)
    sign = 1 if sum(scores[1]) > sum(scores[-1]) else -1
    return (sign, *scores[sign])


def _update_norm(eta: dict[str, torch.Tensor], lam1: float, lam2: float) -> float:
    """‖α·η‖ over the whole model: how far the update moves the weights."""
    return math.sqrt(sum((alpha(e, lam1, lam2) * e.norm().item()) ** 2 for e in eta.values()))


def forget(model: nn.Module, codes: torch.Tensor, forget_classes, lam1: float, lam2: float, *,
           labels: torch.Tensor | None = None, eta: dict[str, torch.Tensor] | None = None,
           rule: str = DEFAULT_RULE, sign: int | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """The forgetting update at (λ1, λ2): (the model's new state dict, info). `codes` are the
    probe inputs, one per class unless `labels` says otherwise; `eta` skips the Fisher when the
    caller already has it; `sign` skips the choice of sign when the caller already made it (the
    grid search does), else `rule` judges the two candidates. The model itself is left unchanged."""
    start = time.perf_counter()
    _check_rule(rule)
    eta = amplitudes(model, codes, labels, forget_classes) if eta is None else eta
    weights = {n: p.detach() for n, p in _params(model).items()}
    alphas = {n: alpha(e, lam1, lam2) for n, e in eta.items()}
    if sign is None:
        sign = choose_sign(model, candidates(weights, eta, lam1, lam2), codes, labels, forget_classes, rule)[0]
    update = {n: weights[n] + sign * alphas[n] * e for n, e in eta.items()}
    probe = _probe(model, codes, labels, forget_classes)
    with _weights(model, update), torch.no_grad(), _eval(model):
        a_r, e_f, p_f = _scores(model(probe[0])[None], probe, rule)[0]
    state = {**{k: v.detach().clone() for k, v in model.state_dict().items()}, **update}
    info = {"A_R": a_r, "E_F": e_f, "p_F": p_f, "rule": rule, "sign": sign, "lam1": lam1, "lam2": lam2,
            "alpha": alphas, "alpha_min": min(alphas.values()), "alpha_max": max(alphas.values()),
            "update_norm": _update_norm(eta, lam1, lam2), "seconds": time.perf_counter() - start}
    return state, info


def grid_search(model: nn.Module, codes: torch.Tensor, forget_classes, lam1_grid=LAM1_GRID,
                lam2_grid=LAM2_GRID, *, labels: torch.Tensor | None = None,
                eta: dict[str, torch.Tensor] | None = None, full: bool = False, rule: str = DEFAULT_RULE
                ) -> tuple[list[dict], tuple[float, float]]:
    """Every (λ1, λ2) of the grid judged on the probe inputs alone (data-free with codes) under
    `rule`: the table (lam1, lam2, A_R, E_F, p_F, sign, update_norm; grid order; p_F is the
    largest probability a forget input gives its own class) and the best pair, the largest
    A_R + E_F, ties going to the smaller update.

    One Fisher serves the whole grid. Pairs are tried from the smallest update up, so the first
    perfect one (A_R = E_F = 1) is the answer; unless `full`, the larger ones are then left
    unmeasured (A_R, E_F, p_F, sign None): the same choice for a fraction of the forward passes.
    Pairs giving the same per-tensor steps are measured once; the candidates are scored
    SCORE_CHUNK steps at a time, so a few past the first perfect one are computed, not reported."""
    _check_rule(rule)
    eta = amplitudes(model, codes, labels, forget_classes) if eta is None else eta
    names = list(eta)
    etas = [eta[n] for n in names]
    maxes = torch.stack([e.max() for e in etas]).tolist()  # one host sync for all tensors, not one each
    norms = torch.stack([e.norm() for e in etas]).tolist()
    table = []
    for lam1 in lam1_grid:
        for lam2 in lam2_grid:
            alphas = tuple(_alpha(m, lam1, lam2) for m in maxes)
            table.append({"lam1": lam1, "lam2": lam2, "A_R": None, "E_F": None, "p_F": None, "sign": None,
                          "update_norm": math.sqrt(sum((a * n) ** 2 for a, n in zip(alphas, norms))),
                          "_alphas": alphas})
    probe = _probe(model, codes, labels, forget_classes)
    rows = sorted(table, key=lambda r: r["update_norm"])  # stable: grid order among equals
    order = list(dict.fromkeys(r["_alphas"] for r in rows))  # the distinct steps, smallest update first
    seen: dict[tuple, tuple[int, float, float, float]] = {}
    with _trying(model, names) as (params, saved):
        for i in range(0, len(order), SCORE_CHUNK):
            chunk = order[i : i + SCORE_CHUNK]
            logits = []
            for a in chunk:
                steps = torch._foreach_mul(etas, list(a))
                logits += [_try(model, params, saved, steps, s, probe[0]) for s in (-1, 1)]
            scores = _scores(torch.stack(logits), probe, rule)
            perfect = False
            for a, minus, plus in zip(chunk, scores[::2], scores[1::2]):
                sign, got = (1, plus) if sum(plus[:2]) > sum(minus[:2]) else (-1, minus)  # as choose_sign
                seen[a] = (sign, *got)
                perfect = not full and sum(got[:2]) >= 2
                if perfect:
                    break
            if perfect:
                break
    for row in table:
        if row["_alphas"] in seen:
            row["sign"], row["A_R"], row["E_F"], row["p_F"] = seen[row["_alphas"]]
        del row["_alphas"]
    best = min((r for r in table if r["A_R"] is not None), key=lambda r: (-(r["A_R"] + r["E_F"]), r["update_norm"]))
    return table, (best["lam1"], best["lam2"])


def _probe(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor | None, forget_classes):
    """(inputs, labels, forget mask), all on the model's device, for `_scores`."""
    labels = _labels(inputs, labels)
    forget = torch.isin(labels, torch.as_tensor(list(forget_classes)))
    device = next(model.parameters()).device
    return inputs.to(device), labels.to(device), forget.to(device)


@contextmanager
def _trying(model: nn.Module, names: list[str]):
    """Eval mode, no autograd, for trying many weights in place; the named parameters come back
    bit for bit."""
    params = [_params(model)[n] for n in names]
    saved = [p.detach().clone() for p in params]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield params, saved
    finally:
        with torch.no_grad():
            torch._foreach_copy_(params, saved)
        model.train(was_training)


def _try(model: nn.Module, params, saved, steps, sign: int, inputs: torch.Tensor) -> torch.Tensor:
    """The logits on `inputs` of w + sign·steps, written into the parameters in place (inside
    `_trying`: no autograd)."""
    torch._foreach_copy_(params, saved)
    torch._foreach_add_(params, steps, alpha=sign)
    return model(inputs)


def real_probe(x: torch.Tensor, y: torch.Tensor, num_classes: int, samples_per_class: int = 8, seed: int = 0
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """The "with data" variant's probe: up to `samples_per_class` training samples of each class,
    drawn by seed, with their labels. This reads real data."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(y)
    picked = [rng.permutation(np.flatnonzero(labels == c))[:samples_per_class] for c in range(num_classes)]
    ids = torch.from_numpy(np.sort(np.concatenate(picked)))
    return x[ids], torch.as_tensor(y)[ids]


# -- the method ------------------------------------------------------------------------------------


def forget_classes(labels: torch.Tensor, forget_ids: np.ndarray, num_classes: int) -> list[int]:
    """The classes `forget_ids` consist of, refusing a set that is not exactly whole classes."""
    labels = np.asarray(labels)
    ids = np.unique(np.asarray(forget_ids, dtype=np.int64))
    touched = sorted(int(c) for c in np.unique(labels[ids]))
    size = np.bincount(labels, minlength=num_classes)
    taken = np.bincount(labels[ids], minlength=num_classes)
    partial = [c for c in touched if taken[c] < size[c]]
    if partial:
        flags = " ".join(f"--class {c}" for c in touched)
        raise ParamError(f"mnemonic forgets whole classes; this forget set covers part of classes "
                         f"{', '.join(map(str, partial))} — make a class forget set "
                         f"(forget-set create --strategy class {flags})")
    if len(touched) >= num_classes:
        raise ParamError("mnemonic needs at least one class left to keep; the forget set covers every class")
    return touched


class Mnemonic(Method):
    name = "mnemonic"
    summary = ("One-shot class forgetting: perturb the weights the forget classes' mnemonic codes rely on "
               "(no training loop, no data); needs a model trained with --mnemonic-tmix, or with_data=1.")
    sweepable = False
    whole_classes = True
    # The loop's parameters stay accepted (and unused: no training loop) so every method takes the
    # same form. The paper's MNIST λ; the `paper-*` presets set each dataset's. grid 0: the fixed λ,
    # as published.
    spec = {**hide(Method.spec, "epochs", "lr", "seed"),
            "lam1": Param(1e-3, "λ1", "Cap on each tensor's step α_l = min(λ1, λ2 / max η_l).", positive=True),
            "lam2": Param(10.0, "λ2", "Scale of each tensor's step against its largest amplitude η.", positive=True),
            "grid": Param(0, "λ grid search", "1: search the λ grid, judged on the codes, instead of the fixed λ.",
                          high=1, switch=True),
            "full_grid": Param(0, "whole grid", "1: measure every pair of the grid (a table), not only until the "
                               "best is found.", high=1, switch=True),
            "with_data": Param(0, "with data", "1: probe a few real samples per class instead of the codes (a "
                               "model trained without codes).", high=1, switch=True),
            "samples_per_class": Param(8, "samples per class", "With data: real samples probed per class.", low=1),
            "rule": Param(RULES[0], "How the codes judge a step",
                          "hard (default): the paper's accuracy rule; strict: a forget code counts as forgotten only "
                          f"when its own-class probability falls below {FORGOTTEN_BELOW:g} — with the λ grid on digits "
                          "this forgets the real class far more often than hard; soft: mean probabilities.",
                          choices=RULES)}
    needs = optional = ("codes",)
    codes: torch.Tensor | None = None  # the model's codes (`bind`), or None

    def bind(self, codes: torch.Tensor | None = None) -> None:
        self.codes = codes

    def _probe(self, ds, device) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(inputs, labels) the Fisher and the choices are made on; labels None means codes."""
        p = self.params
        if p["with_data"]:
            x, y = real_probe(ds.x_train, ds.y_train, ds.num_classes, p["samples_per_class"], p["seed"])
            return x.to(device), y
        if self.codes is None:
            raise ParamError("this model has no mnemonic codes: pass with_data=1 (uses a few real training "
                             "samples per class) or train it with --mnemonic-tmix 0.1")
        if tuple(self.codes.shape) != (ds.num_classes, *ds.shape):
            raise ParamError(f"the model's codes have shape {tuple(self.codes.shape)}, not "
                             f"{(ds.num_classes, *ds.shape)} as the dataset needs")
        return self.codes.to(device), None

    def unlearn(self, model, ds, retain_ids, forget_ids, device, progress=no_progress):
        p = self.params
        classes = forget_classes(ds.y_train, forget_ids, ds.num_classes)
        model.to(device)
        inputs, labels = self._probe(ds, device)
        progress(0.1, "mnemonic: Fisher of the forget and remaining classes")
        eta = amplitudes(model, inputs, labels, classes)
        table, lam1, lam2 = None, p["lam1"], p["lam2"]
        if p["grid"]:
            progress(0.4, f"mnemonic: grid search over λ1, λ2 ({p['rule']} rule)")
            table, (lam1, lam2) = grid_search(model, inputs, classes, labels=labels, eta=eta,
                                                       full=bool(p["full_grid"]), rule=p["rule"])
        sign = None if table is None else next(r["sign"] for r in table if (r["lam1"], r["lam2"]) == (lam1, lam2))
        state, info = forget(model, inputs, classes, lam1, lam2, labels=labels, eta=eta, rule=p["rule"],
                                      sign=sign)
        model.load_state_dict(state)
        self.report = {"forget_classes": classes, "lam1": lam1, "lam2": lam2, "grid": table, "rule": p["rule"],
                       "sign": info["sign"], "codes_A_R": info["A_R"], "codes_E_F": info["E_F"],
                       "codes_p_F": info["p_F"],
                       "probe": "real samples" if p["with_data"] else "codes",
                       "alpha_min": info["alpha_min"], "alpha_max": info["alpha_max"]}
        progress(1.0, f"mnemonic: forgot classes {', '.join(map(str, classes))} at λ = ({lam1:g}, {lam2:g})")
        return model
