"""The seeds' experiments as their papers and reference code ran them, each a procedure that
returns raw figures; `bench/papers.py` judges and prints them beside the figures of our own,
stricter protocols. Everything that unlearns goes through the project's methods; only the
papers' training protocols that the pipeline has no name for (Unrolling SGD's fine-tuning phase)
are written out here.

- `unrolling_reference`: cleverhans-lab/unrolling-sgd, `Unlearning/Correlation_unlearning.py` as
  `misc/submit_corr.py` sweeps it: pretrain (SGD lr 0.01, no momentum, batch 128, 20 epochs,
  shuffled, the SD loss included), then fine-tune 5 epochs from it in the data's fixed order
  (batch 32, lr 0.01, no momentum) while the retrained twin skips the first batch, the forgotten
  one, in every epoch.
- `mnemonic_classes`: Yamashita et al.'s MNIST model and recipe (`sigmoid_mlp`, its default
  recipe: conf/mnist.yaml) with the published λ (preset paper-mnist), one class at a time.
- `rum_seed`: the RUM paper's comparison on one seed: the methods tuned on the forget set
  (vanilla), the reference sequence none → finetune → salun over low → mid → high, the tuned
  sequence, and shuffle with the very same steps over random thirds.
- `deepobliviate_requests`: single-point deletion requests at uniformly random positions.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import torch

from explorer import data, training
from explorer.data import DatasetSpec
from explorer.memorization import estimator
from explorer.pipeline import checkpoints, forget_sets, memorize, runs, sweeps
from explorer.store import artifacts
from explorer.store.workspace import Workspace
from explorer.training.losses import training_loss
from explorer.unlearning import sequence
from explorer.unlearning.unrolling import forget_gradient

# -- Unrolling SGD (Thudi et al. 2022) ----------------------------------------------------------------

UNROLL = {"pretrain_epochs": 20, "pretrain_batch": 128, "finetune_epochs": 5, "finetune_batch": 32, "lr": 0.01}


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).double() for p in model.parameters()])


def unrolling_reference(ds, arch: str, seed: int, lam: float, device: torch.device) -> dict:
    """One run of the reference experiment at SD-loss weight `lam`. Returns the verification
    error ‖θ_u − θ_r‖₂ of both unlearning variants, the distance of doing nothing ‖θ_T − θ_r‖₂ and
    the fine-tuned model's test accuracy:
    - amnesiac (what the reference code computes): θ_T + η·Σ_e ∇L(θ_e; B*), the forgotten batch's
      gradient taken in each epoch right after the step it was used in;
    - θ₀ (the paper's single gradient, our `sgd_unroll`): θ_T + epochs·η·∇L(θ₀; B*) at the
      fine-tuning's starting weights θ₀."""
    c = UNROLL
    model = training.init_model(arch, ds, seed)
    pre = training.Recipe(epochs=c["pretrain_epochs"], lr=c["lr"], momentum=0.0, weight_decay=0.0,
                          batch_size=c["pretrain_batch"], seed=seed, sd_lambda=lam)
    training.fit(model, ds.x_train, ds.y_train, pre, device, record_dynamics=False)
    model.cpu()
    theta0 = copy.deepcopy(model)
    retrained = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=c["lr"])
    opt_r = torch.optim.SGD(retrained.parameters(), lr=c["lr"])
    x, y, b = ds.x_train, ds.y_train, c["finetune_batch"]
    params = list(model.parameters())
    amnesiac = [torch.zeros_like(p) for p in params]
    for _ in range(c["finetune_epochs"]):
        for i in range(0, len(y), b):  # the data's own order, every epoch
            xb, yb = x[i : i + b], y[i : i + b]
            for net, o in ((model, opt), (retrained, opt_r)) if i else ((model, opt),):
                o.zero_grad()
                training_loss(net(xb), yb, lam).backward()
                o.step()
            if i == 0:  # the forgotten batch's gradient where it was just used
                grads = torch.autograd.grad(training_loss(model(xb), yb, lam), params)
                torch._foreach_add_(amnesiac, grads)
    g0 = forget_gradient(theta0, x[:b], y[:b], b, lam)  # Σ ∇ℓ / B: the batch mean, as the reference
    theta_t, theta_r = _flat(model), _flat(retrained)
    unl_a = theta_t + c["lr"] * torch.cat([g.reshape(-1).double() for g in amnesiac])
    unl_0 = theta_t + c["finetune_epochs"] * c["lr"] * torch.cat([g.reshape(-1).double() for g in g0])
    return {"ve_amnesiac": float((unl_a - theta_r).norm()), "ve_theta0": float((unl_0 - theta_r).norm()),
            "nothing": float((theta_t - theta_r).norm()),
            "test_acc": training.accuracy(model, ds.x_test, ds.y_test)}


def unrolling_sweep(dataset: str, arch: str, seeds, lambdas, device: torch.device) -> dict:
    """{λ: [one `unrolling_reference` dict per seed]}: every λ on the same seeds (paired)."""
    ds = data.load(DatasetSpec(name=dataset))
    return {lam: [unrolling_reference(ds, arch, s, lam, device) for s in seeds] for lam in lambdas}


# -- mnemonic codes (Yamashita et al. 2024) --------------------------------------------------------


def class_accuracy(ws: Workspace, run: dict, ds, forget_class: int) -> dict:
    """Test accuracy on the forgotten class and on the others, before and after."""
    samples, y = artifacts.run_samples(ws, run), ds.y_test.numpy()
    out = {}
    for who in ("original", "unlearned"):
        right = samples[f"{who}_test_pred"] == y
        out[who] = {"forget": float(right[y == forget_class].mean()),
                    "retained": float(right[y != forget_class].mean())}
    return out


def mnemonic_classes(ws: Workspace, dataset: str, seed: int, classes, device: torch.device,
                     arch: str = "sigmoid_mlp", preset: str = "paper-mnist", epochs: int | None = None) -> dict:
    """The paper's model trained once with its recipe (codes included); each class forgotten from
    it in turn with the preset's λ. The first class runs against its oracle (for the speed-up);
    the others without (class by class, the oracle would cost a training each)."""
    recipe = replace(training.default_for(arch, dataset), seed=seed)
    if epochs:
        recipe = replace(recipe, epochs=epochs)
    model = checkpoints.train(ws, DatasetSpec(name=dataset), arch, recipe, device)
    ds = artifacts.dataset_of(ws, model)
    rows = []
    for k, c in enumerate(classes):
        fs = forget_sets.create(ws, model, "class", classes=[c])
        run = runs.unlearn(ws, model, fs, "mnemonic", {}, device, with_oracle=k == 0, preset=preset)
        acc = class_accuracy(ws, run, ds, c)
        rows.append({"class": c, "forget": acc["unlearned"]["forget"], "retained": acc["unlearned"]["retained"],
                     "retained_before": acc["original"]["retained"], "forget_before": acc["original"]["forget"],
                     "speedup": run["metrics"]["speedup"], "seconds": run["metrics"]["seconds"]})
    return {"model": model, "recipe": recipe, "rows": rows}


# -- RUM (Zhao et al. 2024) ------------------------------------------------------------------------

RUM_METHODS = ("finetune", "neggrad_plus", "salun")  # the candidates: SalUn is full RUM's last step
REFERENCE_STEPS = ("none", "finetune", "salun")  # full RUM: low → mid → high


def _group_accuracy(pred: np.ndarray, y: np.ndarray, groups: list[np.ndarray]) -> list[float]:
    return [float((pred[g] == y[g]).mean()) for g in groups]


def rum_seed(ws: Workspace, seed: int, device: torch.device, noise: float, exact_models: int, size: int,
             beam: int) -> dict:
    """One seed: the regime model on `noise` flipped labels, its exact memorization, a low/mid/high
    forget set of `size`, then ToW of each tuned method (vanilla), of RUM (the reference sequence
    with each step at its method's tuned setting, and the sequence the sweep tunes per group), and
    of shuffle with exactly those steps; with the forget accuracy of each memorization group."""
    recipe = replace(training.default_for("mlp", "digits"), seed=seed)
    model = checkpoints.train(ws, DatasetSpec(label_noise=noise), "mlp", recipe, device)
    exact = memorize.exact(ws, model, estimator.ExactConfig(models=exact_models, seed=seed), device)
    fs = forget_sets.create(ws, model, "mix", size=size, score_id=exact["id"], seed=seed)
    sweep = sweeps.sweep(ws, model, fs, [*RUM_METHODS, "rum"], device, beam=beam)
    tuned = {r["method"]: r for r in sweeps.summary(sweep)}
    s = runs.setup(ws, model, fs, device)
    values = artifacts.load_scores(ws, exact).oriented
    groups = sequence.split(values, s.forget)  # low, mid, high: RUM's own terciles
    y = s.ds.y_train.numpy()

    def step(name: str):
        return name if name == "none" else {"method": name, "params": tuned[name]["params"]}

    def run(kind: str, params: dict) -> dict:
        method = runs.bind(ws, model, kind, params)
        _, result, out = runs.apply(ws, s, method, device)
        return {"tow": result["tow"], "groups": _group_accuracy(out["train_pred"], y, groups)}

    reference = [step(n) for n in REFERENCE_STEPS]
    tuned_steps = tuned["rum"]["params"]["steps"]
    rows = {m: run(m, tuned[m]["params"]) for m in RUM_METHODS}
    rows["rum_reference"] = run("rum", {"score": exact["id"], "steps": reference})
    rows["shuffle_reference"] = run("shuffle", {"steps": reference, "seed": seed})
    rows["rum_tuned"] = run("rum", {"score": exact["id"], "steps": tuned_steps})
    rows["shuffle_tuned"] = run("shuffle", {"steps": tuned_steps, "seed": seed})
    rows["original"] = {"tow": None, "groups": _group_accuracy(s.seen["original"]["train_pred"], y, groups)}
    rows["oracle"] = {"tow": None, "groups": _group_accuracy(s.seen["oracle"]["train_pred"], y, groups)}
    vanilla = max(RUM_METHODS, key=lambda m: rows[m]["tow"])
    return {"rows": rows, "vanilla": vanilla, "tuned_steps": [st if isinstance(st, str) else st["method"]
                                                              for st in tuned_steps]}


# -- DeepObliviate (He et al. 2021) ----------------------------------------------------------------


def deepobliviate_requests(ws: Workspace, settings: dict, requests: int, rules: dict[str, dict],
                           device: torch.device, late: float | None = None) -> dict:
    """A model trained in blocks; `requests` single points, each unlearned (from the stored chain)
    with every stop rule in `rules` against its oracle (the chain retrained without it). Points
    are drawn uniformly from the training set, so their blocks are uniform over 1 … B; with
    `late`, only from the blocks after that share of the chain (our earlier protocol)."""
    s = settings
    model = checkpoints.train(ws, DatasetSpec(), s["arch"], training.Recipe(epochs=s["epochs"], lr=s["lr"],
                                                                            blocks=s["blocks"], seed=s["seed"]),
                              device)
    store = artifacts.open_blocks(ws, model)
    rng = np.random.default_rng(s["seed"])
    first = int(late * s["blocks"]) + 1 if late else 1
    pool = np.concatenate(store.ids[first - 1 :])
    owner = {int(i): k for k, ids in enumerate(store.ids, start=1) for i in ids}
    rows = []
    for point in sorted(rng.choice(pool, requests, replace=False).tolist(), key=owner.get):
        fs = forget_sets.create(ws, model, "ids", ids=[int(point)], name=f"request: sample {point}")
        for label, params in rules.items():
            run = runs.unlearn(ws, model, fs, "deepobliviate", params, device)
            m, det = run["metrics"], run["details"]
            rows.append({"rule": label, "block": owner[int(point)], "retrained": det["retrained_blocks"],
                         "used_rule": det["rule"], "seconds": m["seconds"],
                         "seconds_speedup": m["speedup"],
                         "acc_pct": 100 * m["acc_test"] / run["oracle"]["acc_test"]})
    return {"model": model, "blocks": s["blocks"], "rows": rows}

