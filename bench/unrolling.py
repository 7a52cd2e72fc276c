"""Unrolling SGD on the embedded digits (Thudi et al. 2022): does the unlearning error rank runs as
the verification error does, and does the SD loss lower the verification error of `sgd_unroll`?

A sweep over sd_lambda × learning rate × epochs trains a digits MLP from one θ_0, forgets the
same 10 random samples with `sgd_unroll`, and measures
- the unlearning error of the trained model (`unrolling.unlearning_error_of`), and
- the verification error ‖θ_u − θ_r‖₂ against θ_r retrained from θ_0 with the *same batch order*
  minus the forgotten points (Thudi et al.'s definition: each batch loses its forgotten samples),
  and against the project's oracle (`training.fit` on the retain set: the same θ_0 and seed, but a
  fresh shuffle of the n − 10 retained samples, which is what `runs` reports).
Reported: Spearman rank correlations between the two errors, the mean verification errors with
and without the SD loss, and those of doing nothing (θ_T itself) for scale. Everything runs at
the recipe's momentum 0.9 and weight decay 5e-4, and again at momentum 0 (plain SGD, the
paper's setting for the single-gradient argument).
"""

import copy
import itertools
import statistics

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

from explorer import data, training, unlearning
from explorer.evaluation import metrics, unlearning_error
from explorer.training import losses
from explorer.runtime import optim

LAMBDAS = (0.0, 0.1, 1.0)
LRS = (0.01, 0.03, 0.1)
EPOCHS = (5, 20)
FORGET = 10


def _same_order_fit(model, x, y, recipe, drop=None, keep_denominator: bool = False) -> None:
    """`training.fit`'s updates (no cosine, no codes) with the full set's batch order; `drop`
    removes those ids from the batches they fall in (a batch left empty takes no step). With
    `keep_denominator` the dropped samples instead weigh 0 in a mean still divided by the full
    batch size: the exact counterfactual the single-gradient argument linearizes."""
    opt = optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    order = torch.Generator().manual_seed(recipe.seed)
    dropped = torch.zeros(len(y), dtype=torch.bool)
    if drop is not None:
        dropped[torch.as_tensor(drop)] = True
    for _ in range(recipe.epochs):
        model.train()
        perm = torch.randperm(len(y), generator=order)
        for i in range(0, len(y), recipe.batch_size):
            ids = perm[i : i + recipe.batch_size]
            size = len(ids)
            if drop is not None:
                ids = ids[~dropped[ids]]
                if len(ids) == 0:
                    continue
            logits = model(x[ids])
            if keep_denominator:
                loss = losses.training_loss(logits, y[ids], recipe.sd_lambda, reduction="sum") / size
            else:
                loss = F.cross_entropy(logits, y[ids], reduction="none").mean()
                if recipe.sd_lambda:
                    loss = loss + recipe.sd_lambda * losses.sd_loss(logits)
            opt.zero_grad()
            loss.backward()
            opt.step()


def _one(ds, recipe, forget, retain, device) -> dict:
    init = training.init_model("mlp", ds, 0)
    theta0 = {k: v.clone() for k, v in init.state_dict().items()}
    trained = training.init_model("mlp", ds, 0)
    training.fit(trained, ds.x_train, ds.y_train, recipe, device, record_dynamics=False)
    same = training.init_model("mlp", ds, 0)
    _same_order_fit(same, ds.x_train, ds.y_train, recipe, drop=forget)
    oracle = training.init_model("mlp", ds, 0)
    training.fit(oracle, ds.x_train[retain], ds.y_train[retain], recipe, device, record_dynamics=False)

    method = unlearning.make("sgd_unroll")
    method.set_origin(theta0, recipe.as_meta())
    unlearned = method.unlearn(copy.deepcopy(trained), ds, retain, forget, device)
    steps = unlearning_error.training_steps(recipe.epochs, ds.n_train, recipe.batch_size)
    ue = unlearning_error.unlearning_error_of(trained, theta0, recipe.lr, steps, ds.x_train, ds.y_train,
                                       sd_lambda=recipe.sd_lambda)
    return {"ue": ue["unlearning_error"], "ue_seconds": ue["seconds"],
            "ve": metrics.verification_error(unlearned, same),
            "ve_oracle": metrics.verification_error(unlearned, oracle),
            "ve_nothing": metrics.verification_error(trained, same),
            "acc_test": training.accuracy(trained, ds.x_test, ds.y_test)}


def _sweep(ds, momentum, forget, retain, device) -> list[dict]:
    rows = []
    for lam, lr, epochs in itertools.product(LAMBDAS, LRS, EPOCHS):
        recipe = training.Recipe(epochs=epochs, lr=lr, momentum=momentum, sd_lambda=lam)
        rows.append({"lam": lam, "lr": lr, "epochs": epochs, **_one(ds, recipe, forget, retain, device)})
    return rows


def _summary(rows, tag) -> dict:
    ue = [r["ue"] for r in rows]
    rho = spearmanr(ue, [r["ve"] for r in rows]).statistic
    rho_oracle = spearmanr(ue, [r["ve_oracle"] for r in rows]).statistic
    mean = lambda key, sd: statistics.mean(r[key] for r in rows if (r["lam"] > 0) == sd)
    per_lam = lambda key: ", ".join(f"{statistics.mean(r[key] for r in rows if r['lam'] == lam):.4f}"
                                    for lam in LAMBDAS)
    return {
        f"{tag}_spearman(unlearning_error,verification_error_same_order)": round(float(rho), 3),
        f"{tag}_spearman(unlearning_error,verification_error_vs_oracle)": round(float(rho_oracle), 3),
        f"{tag}_mean_verification_error_same_order[no_sd,sd]": f"{mean('ve', False):.4f}, {mean('ve', True):.4f}",
        f"{tag}_mean_verification_error_vs_oracle[no_sd,sd]": f"{mean('ve_oracle', False):.4f}, "
                                                               f"{mean('ve_oracle', True):.4f}",
        f"{tag}_mean_distance_if_nothing_done[no_sd,sd]": f"{mean('ve_nothing', False):.4f}, "
                                                          f"{mean('ve_nothing', True):.4f}",
        f"{tag}_mean_verification_error_same_order_by_lambda{list(LAMBDAS)}": per_lam("ve"),
        f"{tag}_mean_unlearning_error_by_lambda{list(LAMBDAS)}": per_lam("ue"),
        f"{tag}_runs(lambda,lr,epochs:ue/ve/ve_oracle/test_acc)": "; ".join(
            f"{r['lam']:g},{r['lr']:g},{r['epochs']}:{r['ue']:.3g}/{r['ve']:.3g}/{r['ve_oracle']:.3g}/"
            f"{r['acc_test']:.2f}" for r in rows),
    }


def run() -> dict:
    torch.set_num_threads(1)
    device = torch.device("cpu")
    ds = data.load(data.DatasetSpec())
    forget = np.sort(np.random.default_rng(0).choice(ds.n_train, FORGET, replace=False))
    retain, forget = metrics.split_ids(ds.n_train, forget)
    # self-check: the same-order loop with nothing dropped is training.fit, bit for bit
    check = training.Recipe(epochs=2, sd_lambda=0.1)
    a, b = training.init_model("mlp", ds, 0), training.init_model("mlp", ds, 0)
    training.fit(a, ds.x_train, ds.y_train, check, device, record_dynamics=False)
    _same_order_fit(b, ds.x_train, ds.y_train, check)
    assert training.state_bytes(a) == training.state_bytes(b), "the same-order loop drifted from training.fit"
    out = {}
    rows = _sweep(ds, 0.9, forget, retain, device)
    out.update(_summary(rows, "momentum0.9"))
    out.update(_summary(_sweep(ds, 0.0, forget, retain, device), "momentum0"))
    out["unlearning_error_seconds_per_run[digits mlp, cpu 1 thread, median]"] = round(
        statistics.median(r["ue_seconds"] for r in rows), 4)
    out.update(_sanity(ds, forget, retain, device))
    out.update(_cnn_cost(ds, device))
    return out


def _sanity(ds, forget, retain, device) -> dict:
    """Where the first-order argument holds (1 epoch, tiny lr, plain SGD), sgd_unroll must beat
    doing nothing, most clearly against the zero-weight counterfactual."""
    recipe = training.Recipe(epochs=1, lr=0.001, momentum=0.0, weight_decay=0.0)
    theta0 = {k: v.clone() for k, v in training.init_model("mlp", ds, 0).state_dict().items()}
    trained = training.init_model("mlp", ds, 0)
    training.fit(trained, ds.x_train, ds.y_train, recipe, device, record_dynamics=False)
    method = unlearning.make("sgd_unroll")
    method.set_origin(theta0, recipe.as_meta())
    unlearned = method.unlearn(copy.deepcopy(trained), ds, retain, forget, device)
    out = {}
    for name, keep in (("retrain", False), ("zero_weight", True)):
        ref = training.init_model("mlp", ds, 0)
        _same_order_fit(ref, ds.x_train, ds.y_train, recipe, drop=forget, keep_denominator=keep)
        out[f"sanity_1epoch_lr0.001_sgd_vs_{name}[nothing,sgd_unroll]"] = (
            f"{metrics.verification_error(trained, ref):.2e}, {metrics.verification_error(unlearned, ref):.2e}")
    return out


def _cnn_cost(ds, device) -> dict:
    """The per-run cost the lead pays: unlearning_error_of on the default digits CNN (30 epochs)."""
    recipe = training.Recipe()
    model = training.init_model("cnn", ds, recipe.seed)
    theta0 = {k: v.clone() for k, v in model.state_dict().items()}
    result = training.fit(model, ds.x_train, ds.y_train, recipe, device, record_dynamics=False)
    steps = unlearning_error.training_steps(recipe.epochs, ds.n_train, recipe.batch_size)
    unlearning_error.unlearning_error_of(model, theta0, recipe.lr, steps, ds.x_train, ds.y_train, iters=1)  # warm-up
    runs_ = [unlearning_error.unlearning_error_of(model, theta0, recipe.lr, steps, ds.x_train, ds.y_train) for _ in range(3)]
    best = min(runs_, key=lambda r: r["seconds"])
    return {"cnn_unlearning_error_seconds[digits cnn, cpu 1 thread, best of 3]": round(best["seconds"], 3),
            "cnn_unlearning_error_hvps": best["hvps"],
            "cnn_training_seconds": round(result.seconds, 2),
            "cnn_unlearning_error[value,sigma,weight_shift]": f"{best['unlearning_error']:.3f}, {best['sigma']:.3f}, "
                                                              f"{best['weight_shift']:.3f}"}
