"""Metrics of an unlearned model against the original and the retrained oracle ."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .. import models


def split_ids(n: int, forget_ids) -> tuple[np.ndarray, np.ndarray]:
    """(retain ids, forget ids) of a training set of n samples."""
    forget = np.unique(np.asarray(forget_ids, dtype=np.int64))
    mask = np.ones(n, dtype=bool)
    mask[forget] = False
    return np.flatnonzero(mask), forget


def _acc(pred: torch.Tensor, y: torch.Tensor) -> float:
    return (pred == y).float().mean().item() if len(y) else float("nan")


def accuracies(model: nn.Module, ds, forget_ids) -> dict[str, float]:
    """Accuracy on the retain set R, the forget set S and the test set T."""
    retain, forget = split_ids(ds.n_train, forget_ids)
    pred = models.predict_proba(model, ds.x_train).argmax(1)
    test_pred = models.predict_proba(model, ds.x_test).argmax(1)
    y = ds.y_train
    return {
        "acc_retain": _acc(pred[retain], y[retain]),
        "acc_forget": _acc(pred[forget], y[forget]),
        "acc_test": _acc(test_pred, ds.y_test),
    }


def true_label_confidence(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    p = models.predict_proba(model, x)
    return p.gather(1, y[:, None].cpu())[:, 0].numpy()


def mia_efficacy_of(conf_train: np.ndarray, conf_test: np.ndarray, forget_ids, seed: int = 0) -> float:
    """Fraction of S an SVC on true-label confidence calls a non-member, the SVC having been
    trained with retain samples as members and test samples as non-members, balanced."""
    from sklearn.svm import SVC

    retain, forget = split_ids(len(conf_train), forget_ids)
    rng = np.random.default_rng(seed)
    k = min(len(retain), len(conf_test))
    members = conf_train[rng.choice(retain, size=k, replace=False)]
    non_members = conf_test[rng.choice(len(conf_test), size=k, replace=False)]
    svc = SVC(C=3, kernel="rbf", gamma="auto")
    svc.fit(np.r_[members, non_members][:, None], np.r_[np.ones(k), np.zeros(k)])
    return float((svc.predict(conf_train[forget][:, None]) == 0).mean())


def tow(unlearned: dict, oracle: dict, first: str = "acc_forget") -> float:
    """Tug of war: 1 = the unlearned model matches the oracle on S, R and T exactly.
    With `first="mia_efficacy"` this is ToW-MIA."""
    factors = [first, "acc_retain", "acc_test"]
    return float(np.prod([1 - abs(unlearned[k] - oracle[k]) for k in factors]))


ES_CENTRES = ("halves", "pooled")  # how μ, the centre of D, is taken (entanglement)


def entanglement(features: torch.Tensor, forget_ids, centre: str = "halves") -> float:
    """RUM's entanglement score of S within D from penultimate features g; higher = harder:

        ES = [mean_R ‖g − μ_R‖² + mean_S ‖g − μ_S‖²] / [½(‖μ_R − μ‖² + ‖μ_S − μ‖²)]

    `centre` "halves" (default) takes μ = ½(μ_R + μ_S), as the RUM code does, so the published
    ES values are comparable and a set's score does not depend on its size relative to D;
    "pooled" takes μ as the mean over all of R ∪ S (our score before following the code: with a
    small S, μ sits near μ_R and the score comes out smaller, 0.56× at |S|/|D| = 0.06)."""
    if centre not in ES_CENTRES:
        raise ValueError(f"centre must be one of {', '.join(ES_CENTRES)}, got {centre!r}")
    g = torch.as_tensor(features).double()
    retain, forget = split_ids(len(g), forget_ids)
    g_r, g_s = g[retain], g[forget]
    mu_r, mu_s = g_r.mean(0), g_s.mean(0)
    mu = 0.5 * (mu_r + mu_s) if centre == "halves" else g.mean(0)
    within = ((g_r - mu_r) ** 2).sum(1).mean() + ((g_s - mu_s) ** 2).sum(1).mean()
    between = 0.5 * (((mu_r - mu) ** 2).sum() + ((mu_s - mu) ** 2).sum())
    return float(within / between)


def rank_agreement(reference: np.ndarray, other: np.ndarray, k: int) -> dict[str, float]:
    """How well `other` (oriented: higher = more memorized) tracks `reference` (e.g. exact
    memorization): Spearman, Pearson and Kendall correlations, and precision@k — the fraction
    of `other`'s top k that are among the reference's top k. Pairs with a NaN are left out."""
    from scipy import stats

    keep = np.isfinite(reference) & np.isfinite(other)
    a, b = np.asarray(reference, float)[keep], np.asarray(other, float)[keep]
    k = max(1, min(k, len(a)))
    top_a = set(np.argsort(-a, kind="stable")[:k])
    top_b = np.argsort(-b, kind="stable")[:k]
    return {
        "spearman": float(stats.spearmanr(a, b).statistic),
        "pearson": float(stats.pearsonr(a, b).statistic),
        "kendall": float(stats.kendalltau(a, b).statistic),
        "precision_at_k": len(top_a.intersection(top_b)) / k,
        "k": k,
        "n": int(keep.sum()),
    }


def auroc(positives: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve of `score` (higher = positive) for a boolean label; NaNs dropped."""
    from sklearn.metrics import roc_auc_score

    keep = np.isfinite(score)
    positives = np.asarray(positives, bool)[keep]
    if positives.all() or not positives.any():
        return float("nan")
    return float(roc_auc_score(positives, np.asarray(score)[keep]))


# -- Compare page: per-sample values, attacks, per-class views, weight and representation distances --


def _np(a) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def per_sample(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-sample true-label confidence, cross-entropy loss and predicted class, from one eval pass.

    The loss is −log of the float32 softmax, so it is capped at −log(float32 tiny) ≈ 87.3 where
    the probability underflows to 0."""
    p = models.predict_proba(model, x)
    conf = p.gather(1, torch.as_tensor(y).long()[:, None].cpu())[:, 0].double()
    loss = -conf.clamp_min(torch.finfo(torch.float32).tiny).log()
    return {"confidence": conf.numpy(), "loss": loss.numpy(), "pred": p.argmax(1).numpy()}


def _balanced(members, nonmembers, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Both sides cut to the smaller one's size by a seeded subsample (non-finite values dropped)."""
    a, b = np.asarray(members, float).ravel(), np.asarray(nonmembers, float).ravel()
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    k = min(len(a), len(b))
    rng = np.random.default_rng(seed)
    if len(a) > k:
        a = a[np.sort(rng.choice(len(a), size=k, replace=False))]
    if len(b) > k:
        b = b[np.sort(rng.choice(len(b), size=k, replace=False))]
    return a, b


def mia_attack(loss_members, loss_nonmembers, folds: int = 5, seed: int = 0) -> dict[str, float]:
    """SCRUB-style membership inference: how well a logistic regression on per-sample loss tells
    members (the forget set S) from non-members (the test set T); 0.5 = indistinguishable.

    Both sides are balanced by a seeded subsample of the larger one; accuracy and AUC are means
    over a stratified k-fold cross-validation (folds cut to the per-side count, at least 2).
    NaN when a side has fewer than 2 finite values."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    a, b = _balanced(loss_members, loss_nonmembers, seed)
    k = len(a)
    folds = min(int(folds), k)
    if k < 2 or folds < 2:
        return {"mia_acc": float("nan"), "mia_auc": float("nan"), "n_per_side": k, "folds": 0}
    x = np.r_[a, b][:, None]
    y = np.r_[np.ones(k), np.zeros(k)]
    # The loss is standardized on each training fold, so the default L2 penalty is scale-free.
    accs, aucs = [], []
    for tr, te in StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(x, y):
        mu_sd = x[tr].mean(), x[tr].std() or 1.0
        clf = LogisticRegression().fit((x[tr] - mu_sd[0]) / mu_sd[1], y[tr])
        xt = (x[te] - mu_sd[0]) / mu_sd[1]
        accs.append(float((clf.predict(xt) == y[te]).mean()))
        aucs.append(float(roc_auc_score(y[te], clf.decision_function(xt))))
    return {"mia_acc": float(np.mean(accs)), "mia_auc": float(np.mean(aucs)), "n_per_side": k, "folds": folds}


def threshold_attack(loss_members, loss_nonmembers, threshold: float) -> float:
    """Balanced accuracy of the attack "member iff loss < threshold": the mean of the fraction of
    members called members and the fraction of non-members called non-members (= its accuracy on
    a balanced set). NaN when a side is empty."""
    a, b = np.asarray(loss_members, float).ravel(), np.asarray(loss_nonmembers, float).ravel()
    if not len(a) or not len(b):
        return float("nan")
    return float(0.5 * ((a < threshold).mean() + (b >= threshold).mean()))


def best_threshold(loss_members, loss_nonmembers) -> tuple[float, float]:
    """(threshold, balanced accuracy) of the best "member iff loss < threshold" attack: the
    threshold is a midpoint between neighbouring observed losses (or just past the ends)."""
    a = np.sort(np.asarray(loss_members, float).ravel())
    b = np.sort(np.asarray(loss_nonmembers, float).ravel())
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if not len(a) or not len(b):
        return float("nan"), float("nan")
    v = np.unique(np.r_[a, b])
    cands = np.r_[v[0] - 1.0, (v[:-1] + v[1:]) / 2, v[-1] + 1.0]
    acc = 0.5 * (np.searchsorted(a, cands, side="left") / len(a)
                 + 1 - np.searchsorted(b, cands, side="left") / len(b))
    i = int(np.argmax(acc))
    return float(cands[i]), float(acc[i])


def class_accuracy(pred, y, num_classes: int) -> np.ndarray:
    """Accuracy within each true class (length num_classes; NaN for a class with no samples)."""
    pred, y = _np(pred).astype(np.int64).ravel(), _np(y).astype(np.int64).ravel()
    total = np.bincount(y, minlength=num_classes).astype(float)
    right = np.bincount(y[pred == y], minlength=num_classes).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, right / np.maximum(total, 1), np.nan)


def confusion(pred, y, num_classes: int) -> np.ndarray:
    """Confusion counts: entry [i, j] is the number of samples of true class i predicted as j."""
    pred, y = _np(pred).astype(np.int64).ravel(), _np(y).astype(np.int64).ravel()
    return np.bincount(y * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def _paired_parameters(model_a: nn.Module, model_b: nn.Module):
    pa, pb = dict(model_a.named_parameters()), dict(model_b.named_parameters())
    if pa.keys() != pb.keys() or any(pa[k].shape != pb[k].shape for k in pa):
        raise ValueError("the two models do not have the same parameters (different architectures?)")
    for name, a in pa.items():
        yield name, a.detach().cpu().double(), pb[name].detach().cpu().double()


@torch.no_grad()
def verification_error(model_a: nn.Module, model_b: nn.Module) -> float:
    """Verification error (Thudi et al.): the L2 distance ‖θ_a − θ_b‖₂ over all parameters."""
    return float(sum(((a - b) ** 2).sum() for _, a, b in _paired_parameters(model_a, model_b)) ** 0.5)


@torch.no_grad()
def weight_distance_by_layer(model_a: nn.Module, model_b: nn.Module) -> dict[str, float]:
    """L2 distance of the parameters of each module (e.g. "fc" for fc.weight and fc.bias), in
    model order; the squares sum to verification_error²."""
    sq: dict[str, float] = {}
    for name, a, b in _paired_parameters(model_a, model_b):
        layer = name.rsplit(".", 1)[0] if "." in name else name
        sq[layer] = sq.get(layer, 0.0) + float(((a - b) ** 2).sum())
    return {k: v**0.5 for k, v in sq.items()}


def _cka_from_grams(k: torch.Tensor, l: torch.Tensor) -> float:
    """Linear CKA from the Gram matrices of column-centred features."""
    k, l = k.double(), l.double()
    den = float(((k * k).sum() * (l * l).sum()).sqrt())
    return float((k * l).sum()) / den if den > 0 else float("nan")


def linear_cka(x, y) -> float:
    """Linear CKA (Kornblith et al. 2019) of two representations of the same n samples (rows):
    1 for identical features; invariant to orthogonal transforms and isotropic scaling."""
    x = torch.as_tensor(_np(x), dtype=torch.float64).reshape(len(x), -1)
    y = torch.as_tensor(_np(y), dtype=torch.float64).reshape(len(y), -1)
    if len(x) != len(y):
        raise ValueError(f"x and y must describe the same samples ({len(x)} vs {len(y)} rows)")
    x, y = x - x.mean(0), y - y.mean(0)
    if x.shape[1] + y.shape[1] < len(x):  # feature space: ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F)
        den = float(torch.linalg.norm(x.T @ x) * torch.linalg.norm(y.T @ y))
        return float(torch.linalg.norm(y.T @ x) ** 2) / den if den > 0 else float("nan")
    return _cka_from_grams(x @ x.T, y @ y.T)


_BLOCKS = ("BasicBlock", "Bottleneck")


def cka_layers(model: nn.Module) -> list[str]:
    """The module names cka_by_layer compares, in model order: every nn.Conv2d and nn.Linear,
    except that a ResNet residual block (BasicBlock / Bottleneck) counts as one layer (its output,
    after the skip connection) instead of its inner convolutions."""
    names, skip = [], ()
    for name, mod in model.named_modules():
        if skip and name.startswith(skip):
            continue
        if type(mod).__name__ in _BLOCKS:
            names.append(name)
            skip = (name + ".",)
        elif isinstance(mod, (nn.Conv2d, nn.Linear)):
            names.append(name)
    return names


@torch.no_grad()
def _layer_grams(model: nn.Module, x: torch.Tensor, layers: list[str], batch_size: int) -> dict[str, torch.Tensor]:
    """Eval-mode Gram matrices (n × n, CPU) of the column-centred, per-sample-flattened outputs of
    `layers` over x, from one batched pass."""
    mods = dict(model.named_modules())
    captured: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    hooks = [mods[n].register_forward_hook(lambda m, i, o, n=n: captured[n].append(o.detach().flatten(1).clone()))
             for n in layers]
    try:
        for _ in models.eval_outputs(model, x, batch_size):
            pass
    finally:
        for h in hooks:
            h.remove()
    grams = {}
    for n in layers:
        f = torch.cat(captured.pop(n)).float()
        f -= f.mean(0)
        grams[n] = (f @ f.T).cpu()
        del f
    return grams


@torch.no_grad()
def cka_by_layer(model_a: nn.Module, model_b: nn.Module, x: torch.Tensor, max_samples: int = 1000,
                 seed: int = 0, batch_size: int = 256, budget_bytes: int = 256 * 2**20) -> dict[str, float]:
    """Linear CKA between the two models' representations at each layer of cka_layers (same
    architecture), over the same seeded subsample of at most max_samples rows of x.

    Eval mode, no grad, batched. Activations are held (float32, on each model's device) for a
    group of layers at a time, at most about budget_bytes per model, so big convolutional maps
    cost extra forward passes instead of memory."""
    layers = cka_layers(model_a)
    if layers != cka_layers(model_b):
        raise ValueError("the two models do not have the same layers (different architectures?)")
    if len(x) > max_samples:
        x = x[torch.from_numpy(np.sort(np.random.default_rng(seed).choice(len(x), max_samples, replace=False)))]
    n = len(x)
    # Output size of each layer from a one-sample probe.
    mods, dims = dict(model_a.named_modules()), {}
    hooks = [mods[l].register_forward_hook(lambda m, i, o, l=l: dims.__setitem__(l, o[0].numel())) for l in layers]
    was_training = model_a.training
    model_a.eval()
    try:
        model_a(x[:1].to(next(model_a.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
        model_a.train(was_training)
    groups, group, used = [], [], 0
    for l in layers:
        size = 4 * n * dims[l]
        if group and used + size > budget_bytes:
            groups.append(group)
            group, used = [], 0
        group.append(l)
        used += size
    if group:
        groups.append(group)
    out = {}
    for group in groups:
        ga = _layer_grams(model_a, x, group, batch_size)
        gb = _layer_grams(model_b, x, group, batch_size)
        out.update({l: _cka_from_grams(ga[l], gb[l]) for l in group})
    return {l: out[l] for l in layers}


def t_interval(values, confidence: float = 0.95) -> tuple[float, float]:
    """(mean, half width) of the two-sided Student-t confidence interval of the mean of values
    (e.g. a metric over seeds); the half width is NaN for fewer than two values."""
    from scipy import stats

    v = np.asarray(values, float).ravel()
    if not len(v):
        return float("nan"), float("nan")
    mean = float(v.mean())
    if len(v) < 2:
        return mean, float("nan")
    half = stats.t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return mean, float(half)
