"""`deepobliviate`: DeepObliviate (He et al. 2021) as understood (METHODS.md §6); no shared loop.

The model must have been trained with `--blocks B`: `attach` (called by `runs.bind`) opens its
stored M_0 … M_B and block ids. Unlearning restarts from M_{d−1} (weights and momentum) at the
first block d holding a forgotten point, retrains blocks d, d+1, … without the forgotten points
with the model's own recipe, measures each retrained block's residual memory
Δ_k = ‖(M_k − M_{k−1}) − (M'_k − M'_{k−1})‖₁, stops at block t once Δ has decayed, and stitches
M_unlearned = M'_t + (M_B − M_t).

The chain never stops before the last block holding a forgotten point: a point left in a block
after t would stay learned (its update is inside M_B − M_t). So the speed-up is large when the
forgotten points sit in few, late blocks (recent data), and small for points spread over the set.

Stop rules (`rule`): "ratio" (default), Δ_k / Δ_d < `tau`; "powerlaw", the reading's fit
Δ/W ≈ a·x^(−h) + b (W the number of weights: the mean residual per weight) with ≥ 15 residuals,
stopping when the fitted |dΔ/dx|/W < `eps`. With fewer blocks left to retrain than the fit needs,
the ratio rule is used and the report says so.

On digits (bench/deepobliviate.py) Δ_k/Δ_d falls to a floor of about 0.1–0.5 and stays there
(with lr 0.05 and momentum 0.9 it does not fall at all), so the default τ = 0.05 rarely stops
early: the result is then the exact chain from block d, and the saving comes from d alone. τ = 0.5
stops after ~5 blocks (≥ 10× on B = 100) but its stitched weights are no closer to the full chain
than the original's: the per-block Δ stays at the floor, and the blocks left to stitch add it up.

The loop's parameters (epochs, lr, …) stay accepted but are unused: the blocks are retrained with
the recipe the model was trained with, so an unchanged block reproduces its stored update.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import blocks, training
from ..runtime.progress import no_progress
from .base import Method, ParamError


class DeepObliviate(Method):
    name = "deepobliviate"
    summary = ("DeepObliviate, as understood (He et al. 2021): retrain the stored training blocks from the first "
               "one holding a forgotten point until the residual memory Δ decays, then stitch the rest of the "
               "original's updates back on. Needs a model trained with --blocks; uses that model's recipe "
               "(epochs, lr here are unused).")
    knob = None
    fractions = ("tau",)
    defaults = {**Method.defaults, "tau": 0.05, "eps": 1e-5}
    rules = blocks.RULES  # the choices of the `rule` parameter, the first the default

    def __init__(self, **params):
        super().__init__(**params)
        self.store: blocks.Store | None = None
        self.recipe: training.Recipe | None = None
        self.report: dict = {}

    def attach(self, ws, model_rec: dict) -> None:
        """Open the model's stored blocks; refuse a model trained without them."""
        if blocks.FILE not in model_rec.get("files", []) or not model_rec.get("recipe"):
            raise ParamError(f"deepobliviate needs a model trained in blocks; {model_rec['id']} was not: "
                             f"train one with --blocks 10")
        self.store = blocks.Store(ws.read(model_rec, blocks.FILE))
        self.recipe = training.Recipe(**model_rec["recipe"])

    def unlearn(self, model, ds, retain_ids, forget_ids, device, progress=no_progress):
        if self.store is None or self.recipe is None:
            raise ParamError("deepobliviate needs a model trained in blocks: train one with --blocks 10")
        p, store, recipe = self.params, self.store, self.recipe
        B = store.blocks
        forget = np.unique(np.asarray(forget_ids, dtype=np.int64))
        owner = np.repeat(np.arange(1, B + 1), [len(ids) for ids in store.ids])  # each stored id's block
        hit = np.unique(owner[np.isin(np.concatenate(store.ids), forget)]).tolist()
        if not hit:  # no stored block holds a forgotten point: the model never saw them
            self.report = {"first_block": None, "stop_block": None, "rule": p["rule"], "threshold": None,
                           "residual": [], "retrained_blocks": 0, "blocks": B}
            return model
        d, last = hit[0], hit[-1]
        rule, note = blocks.effective_rule(p["rule"], B - d + 1)
        threshold = p["tau"] if rule == "ratio" else p["eps"]
        names = blocks.param_names(model)
        weights = sum(q.numel() for n, q in model.named_parameters() if n in names)

        old_prev = store.state(d - 1)
        new_prev = old_prev
        opt = blocks.new_optimizer(model.to(device), recipe)
        blocks.restore(model, opt, old_prev, store.momentum(d - 1) if d > 1 else None, device)
        x, y = ds.x_train, ds.y_train
        residuals, fit, t = [], None, B
        for k in range(d, B + 1):
            kept = store.ids[k - 1][~np.isin(store.ids[k - 1], forget)]
            blocks.train_block(model, opt, x, y, kept, recipe, k, device)
            new = {n: v.detach().cpu().clone() for n, v in model.state_dict().items()}
            old = store.state(k)
            residuals.append(blocks.residual(old_prev, old, new_prev, new, names))
            progress((k - d + 1) / (B - d + 1), f"deepobliviate: retrained block {k}/{B}, Δ = {residuals[-1]:.4g}")
            stop = False
            if k >= last:  # every forgotten point is out of the chain: the residual may end it
                stop, fit_k = blocks.should_stop(residuals, rule, p["tau"], p["eps"], weights)
                fit = fit_k or fit
            old_prev, new_prev = old, new
            if stop:
                t = k
                break
        new_t, old_t = new_prev, old_prev
        if t < B:
            state = blocks.stitch(new_t, store.state(B), old_t)
            model.load_state_dict(state)
        else:  # t = B: the fully retrained chain, as it is
            model.load_state_dict(new_t)
        model.to(device)
        total = torch.stack([v.float().abs().sum() for v in model.state_dict().values()]).sum()
        if not torch.isfinite(total):
            raise ParamError("deepobliviate: retraining diverged (weights became NaN or infinite)")
        self.report = {"first_block": d, "stop_block": t, "last_block": last, "rule": rule, "threshold": threshold,
                       "residual": residuals, "retrained_blocks": t - d + 1, "blocks": B,
                       "block_sizes": [len(ids) for ids in store.ids],
                       **({"requested_rule": p["rule"], "note": note} if note else {}),
                       **({"fit": fit} if fit else {})}
        progress(1.0, f"deepobliviate: retrained blocks {d}–{t} of {B}" + (f", stitched {t + 1}–{B}" if t < B else ""))
        return model
