"""`mnemonic`: one-shot class forgetting with the model's mnemonic codes (METHODS.md §5); no loop.

The caller sets `codes` (from `checkpoints.load_codes`) before `unlearn`. Without codes the
"with data" variant (with_data=1) probes a few real training samples per class instead.

`rule` ("strict", the default; "hard", the paper's; "soft") says how the sign and the λ pair are
judged on the probe (`mnemonic` module docstring). It is the one parameter that is not a number,
so it is kept out of `defaults` (whose values the shared checks and the number inputs expect).
"""

from __future__ import annotations

import numpy as np
import torch

from .. import mnemonic
from ..runtime.progress import no_progress
from .base import Method, ParamError


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
    knob = None
    fractions = ("grid", "full_grid", "with_data")  # 0/1 switches
    # The loop's parameters stay accepted (and unused) so every method takes the same form.
    defaults = {**Method.defaults, "lam1": 1e-3, "lam2": 10.0, "grid": 1, "full_grid": 0, "with_data": 0,
                "samples_per_class": 8}
    codes: torch.Tensor | None = None  # set by the caller: the model's codes, or None

    rules = mnemonic.RULES  # the choices of the `rule` parameter, the first the default

    def __init__(self, **params):
        super().__init__(**params)
        if not (self.params["lam1"] > 0 and self.params["lam2"] > 0):
            raise ParamError("mnemonic: lam1 and lam2 must be positive")
        if self.params["samples_per_class"] < 1:
            raise ParamError("mnemonic: samples_per_class must be at least 1")
        self.report: dict = {}

    def _probe(self, ds, device) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(inputs, labels) the Fisher and the choices are made on; labels None means codes."""
        p = self.params
        if p["with_data"]:
            x, y = mnemonic.real_probe(ds.x_train, ds.y_train, ds.num_classes, p["samples_per_class"], p["seed"])
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
        eta = mnemonic.amplitudes(model, inputs, labels, classes)
        table, lam1, lam2 = None, p["lam1"], p["lam2"]
        if p["grid"]:
            progress(0.4, f"mnemonic: grid search over λ1, λ2 ({p['rule']} rule)")
            table, (lam1, lam2) = mnemonic.grid_search(model, inputs, classes, labels=labels, eta=eta,
                                                       full=bool(p["full_grid"]), rule=p["rule"])
        sign = None if table is None else next(r["sign"] for r in table if (r["lam1"], r["lam2"]) == (lam1, lam2))
        state, info = mnemonic.forget(model, inputs, classes, lam1, lam2, labels=labels, eta=eta, rule=p["rule"],
                                      sign=sign)
        model.load_state_dict(state)
        self.report = {"forget_classes": classes, "lam1": lam1, "lam2": lam2, "grid": table, "rule": p["rule"],
                       "sign": info["sign"], "codes_A_R": info["A_R"], "codes_E_F": info["E_F"],
                       "codes_p_F": info["p_F"],
                       "probe": "real samples" if p["with_data"] else "codes",
                       "alpha_min": info["alpha_min"], "alpha_max": info["alpha_max"]}
        progress(1.0, f"mnemonic: forgot classes {', '.join(map(str, classes))} at λ = ({lam1:g}, {lam2:g})")
        return model
