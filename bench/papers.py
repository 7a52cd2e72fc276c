"""The seeds' claims on the embedded digits, each figure beside the paper's, in one run.

Every line reads `key: ours (paper: theirs)`; a figure the paper does not give has no
parenthesis. After each section a `claim.<name>: reproduced — why` (or `not reproduced — why`)
line, decided by the `judge_*` functions below from the figures just measured, never written in.

Sections, all through the pipeline the CLI runs (a temporary workspace; `checkpoints.train`,
`memorize.exact`, `forget_sets.create`, `runs.unlearn`, `sweeps.sweep`):
- proxies: every proxy against exact memorization (Spearman, precision@5%), on the digits MLP
  trained with the regime recipe on 5% flipped labels;
- flipped: AUROC of exact memorization for the flipped labels, on that model;
- rum: tuned RUM against tuned vanilla and tuned shuffle on a low/mid/high forget set, ToW with
  95% t-intervals over seeds (each seed its own model, exact estimate and forget set);
- mnemonic: one class forgotten by a model trained with codes, mlp and cnn;
- deepobliviate: single-point requests in late blocks, against the retrained chain (the oracle);
- unrolling: sgd_unroll's verification error against the batch-order-faithful oracle with and
  without the SD loss, and whether the unlearning error ranks the runs as it does.

`BENCH_QUICK=1` is a smoke run (fewer subset models, seeds, requests and settings): its figures
say that the bench runs, not what the claims come to."""

from __future__ import annotations

import itertools
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from bench.deepobliviate import SETTINGS as DO_SETTINGS
from bench.deepobliviate import _row as deepobliviate_row
from bench.unrolling import EPOCHS as UNROLL_EPOCHS
from bench.unrolling import LAMBDAS as UNROLL_LAMBDAS
from bench.unrolling import LRS as UNROLL_LRS
from explorer import training
from explorer.data import DatasetSpec
from explorer.evaluation import metrics
from explorer.memorization import estimator
from explorer.pipeline import checkpoints, demo, forget_sets, memorize, runs, sweeps
from explorer.runtime import devices
from explorer.store import artifacts
from explorer.store.workspace import Workspace

QUICK = bool(os.environ.get("BENCH_QUICK"))
SIZE = {
    "exact_models": 16 if QUICK else 128,  # K = 128: mean standard error 0.013 on digits (README)
    "rum_seeds": 2 if QUICK else 3,  # two is the least an interval needs
    "rum_methods": ["finetune"] if QUICK else ["finetune", "neggrad_plus"],  # salun costs ~20× a finetune trial
    "rum_beam": 1 if QUICK else sweeps.BEAM,
    "mnemonic_epochs": 5 if QUICK else None,  # None: the regime recipe's (the CNN's 60 epochs dominate a quick run)
    "do_requests": 1 if QUICK else 3,
    "unroll_grid": ((0.0, 0.1), (0.1,), (5, 10)) if QUICK else (UNROLL_LAMBDAS, UNROLL_LRS, UNROLL_EPOCHS),
}
NOISE = 0.05  # the flipped share of the proxies', flipped and RUM sections (the demo's)

# -- the papers' figures, each with its source -----------------------------------------------------

# Zhao & Triantafillou 2024 (arXiv 2410.16516), as /work/shared/METHODS.md §2 reports them from a
# secondary source: Spearman with exact memorization on CIFAR, oriented (higher = more memorized;
# the raw confidence and bi_acc correlations are negative).
PAPER_SPEARMAN = {"confidence": "0.80…0.91", "bi_acc": "0.71…0.89", "ho_ret": "0.62…0.67"}
TRACK_BEST, TRACK_LESS = ("confidence", "bi_acc"), "ho_ret"  # the proxies paper's ranking
# Feldman & Zhang 2020: mislabeled samples are the memorized ones. The bar is the issue's; a model
# "fits them" as the regime recipes are defined (docs/memorization.md: ≥ 90% of flipped labels).
PAPER_FLIPPED = "mislabeled samples are the most memorized (Feldman & Zhang 2020)"
FLIPPED_AUROC, FLIPPED_FIT = 0.95, 0.9
# Zhao et al., NeurIPS 2024 (arXiv 2406.01257): RUM improves on the same method run in one go.
PAPER_RUM = "RUM beats vanilla (Zhao et al. 2024)"
# Yamashita et al., ACML 2024 (arXiv 2306.05670), MNIST: E_F = 100% with A_R 95.9%, forgetting in
# ~1 s against 10–8,000 s for the baselines, hence at least 10× faster.
PAPER_MNEMONIC = {"forget": "0.0 on MNIST (E_F = 100%)", "retained": "0.959 on MNIST",
                  "speedup": "~1 s against 10–8,000 s for the baselines"}
MNEMONIC_FORGET, MNEMONIC_DROP, MNEMONIC_SPEEDUP = 0.05, 0.01, 10.0
# He et al. 2021 (arXiv 2105.06209), MNIST: 66.7× faster than retraining at 99.0% of its accuracy.
DO_SPEEDUP, DO_ACC_PCT = 66.7, 99.0
LATE = 0.9  # "late": a request's point lies in the last tenth of the blocks
# Thudi et al., EuroS&P 2022 (arXiv 2109.13398): the SD loss lowers the verification error, and the
# unlearning error is a proxy of it (no correlation figure recorded in METHODS.md §7).
PAPER_SD = "the SD loss lowers it (Thudi et al. 2022)"
PAPER_RANK = "unlearning error tracks verification error (Thudi et al. 2022)"
RANK_P = 0.05  # "tracks": a positive rank correlation, significant at 5%

# -- format and judgement (pure: tests/test_bench_papers.py) ---------------------------------------


def num(x, digits: int = 3) -> str:
    """A figure at fixed precision; a missing one (None, NaN) as "nan"."""
    return "nan" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def beside(ours: str, paper: str | None = None) -> str:
    """Our figure, and the paper's on the same line when it gives one."""
    return f"{ours} (paper: {paper})" if paper else ours


def claim(ok: bool, why: str) -> str:
    return f"{'reproduced' if ok else 'not reproduced'} — {why}"


def interval(values, digits: int = 3) -> str:
    """mean ± 95% half width over seeds."""
    mean, half = metrics.t_interval(values)
    return f"{num(mean, digits)} ± {num(half, digits)} ({len(values)} seeds)"


def _vs(x: float, bar: float, below: bool = False) -> str:
    ok = x <= bar if below else x >= bar
    return ("≤" if below else "≥") if ok else (">" if below else "<")


def judge_proxies(spearman: dict[str, float]) -> tuple[bool, str]:
    """Confidence and binary accuracy track exact memorization better than holdout retraining."""
    rho = {k: spearman.get(k, float("nan")) for k in (*TRACK_BEST, TRACK_LESS)} | spearman
    best = max(rho, key=lambda k: rho[k] if np.isfinite(rho[k]) else -np.inf)
    ok = all(rho[k] > rho[TRACK_LESS] for k in TRACK_BEST)  # a missing one (NaN) compares False
    order = ", ".join(f"{k} {num(rho[k], 2)}" for k in (*TRACK_BEST, TRACK_LESS))
    return ok, (f"Spearman {order}: " + ("both above" if ok else "not both above") +
                f" {TRACK_LESS}; closest of all: {best} {num(rho[best], 2)}")


def judge_flipped(auroc: float, flipped_fit: float | None) -> tuple[bool, str]:
    """Exact memorization finds the flipped labels (AUROC ≥ 0.95) of a model that fits them."""
    if flipped_fit is None or not flipped_fit >= FLIPPED_FIT:
        return False, (f"the model fits only {num(flipped_fit, 2)} of its flipped labels (< {FLIPPED_FIT}): "
                       "a label it never fitted has memorization ≈ 0")
    return bool(auroc >= FLIPPED_AUROC), (f"AUROC {num(auroc)} {_vs(auroc, FLIPPED_AUROC)} {FLIPPED_AUROC} on a model "
                                          f"fitting {num(flipped_fit, 2)} of its flipped labels")


def judge_rum(rum, vanilla, shuffle) -> tuple[bool, str]:
    """RUM beats vanilla: the 95% interval of the per-seed ToW gain lies above 0."""
    gain = np.asarray(rum, float) - np.asarray(vanilla, float)
    mean, half = metrics.t_interval(gain)
    s_mean, s_half = metrics.t_interval(np.asarray(rum, float) - np.asarray(shuffle, float))
    against_shuffle = f"; against shuffle {num(s_mean, 3)} ± {num(s_half, 3)}"
    if not np.isfinite(half):
        return False, f"ToW gain over vanilla {num(mean)} from {len(gain)} seed: no interval{against_shuffle}"
    ok = bool(mean - half > 0)
    where = "above 0" if ok else "below 0: vanilla is better" if mean + half < 0 else "holds 0: within the seeds' noise"
    return ok, f"ToW gain over vanilla {num(mean)} ± {num(half)} over {len(gain)} seeds, {where}{against_shuffle}"


def judge_mnemonic(forget_acc: float, drop: float, speedup: float) -> tuple[bool, str]:
    """The class forgotten (≤ 5% test accuracy), the others kept (≤ 1 point lost), ≥ 10× faster."""
    ok = bool(forget_acc <= MNEMONIC_FORGET and drop <= MNEMONIC_DROP and speedup >= MNEMONIC_SPEEDUP)
    return ok, (f"forget-class test accuracy {num(forget_acc)} {_vs(forget_acc, MNEMONIC_FORGET, True)} "
                f"{MNEMONIC_FORGET}, retained accuracy {'lost' if drop >= 0 else 'gained'} "
                f"{num(100 * abs(drop), 1)} points "
                f"{_vs(drop, MNEMONIC_DROP, True)} {100 * MNEMONIC_DROP:g}, {num(speedup, 1)}× "
                f"{_vs(speedup, MNEMONIC_SPEEDUP)} {MNEMONIC_SPEEDUP:g}× retraining")


def judge_deepobliviate(speedups, acc_pcts, retrained, blocks: int) -> tuple[bool, str]:
    """As fast as published (median speed-up ≥ 66.7×) at the published accuracy (every request
    ≥ 99.0% of the retrained chain's)."""
    speed, acc = statistics.median(speedups), min(acc_pcts)
    ok = bool(speed >= DO_SPEEDUP and acc >= DO_ACC_PCT)
    cap = blocks / statistics.median(retrained)  # retraining k of B blocks saves at most B / k
    return ok, (f"median speed-up {num(speed, 1)}× {_vs(speed, DO_SPEEDUP)} {DO_SPEEDUP}×, lowest accuracy "
                f"{num(acc, 1)}% {_vs(acc, DO_ACC_PCT)} {DO_ACC_PCT}% of the retrained chain's; it retrained "
                f"{'/'.join(map(str, retrained))} of {blocks} blocks (at most ~{num(cap, 0)}× from the blocks alone)")


def judge_sd(pairs) -> tuple[bool, str]:
    """The SD loss lowers the verification error: in most (λ > 0 against λ = 0) pairs of runs that
    share everything else. `pairs` holds (without SD, with SD)."""
    pairs = np.asarray(pairs, float)
    lower = int((pairs[:, 1] < pairs[:, 0]).sum())
    ratio = float(np.median(pairs[:, 1] / pairs[:, 0]))
    ok = lower > len(pairs) / 2
    return ok, (f"lower with the SD loss in {lower} of {len(pairs)} paired settings "
                f"(median ratio {num(ratio, 2)})")


def judge_rank(rho: float, p: float, n: int) -> tuple[bool, str]:
    """The unlearning error ranks runs as the verification error does: ρ > 0 at p < 0.05."""
    ok = bool(rho > 0 and p < RANK_P)
    return ok, f"Spearman {num(rho, 2)} over {n} runs, p = {num(p, 3)} ({'<' if p < RANK_P else '≥'} {RANK_P})"


# -- the sections ----------------------------------------------------------------------------------


def _regime_model(ws: Workspace, seed: int, device) -> tuple[dict, dict]:
    """What a user runs for memorization on the digits: `train` (the regime recipe) on 5% flipped
    labels, then `memorize --exact` (with --seed: each seed its own subsets)."""
    recipe = replace(training.default_for("mlp", "digits"), seed=seed)
    model = checkpoints.train(ws, DatasetSpec(label_noise=NOISE), "mlp", recipe, device)
    return model, memorize.exact(ws, model, estimator.ExactConfig(models=SIZE["exact_models"], seed=seed), device)


def proxies_and_flipped(ws: Workspace, model: dict, exact: dict, device) -> dict:
    values = artifacts.load_scores(ws, exact).values
    n = len(values)
    out = {"proxies.setting": f"mlp on digits, {NOISE:.0%} flipped labels, regime recipe; exact from "
                              f"K = {SIZE['exact_models']}; precision@k with k = 5% of {n}"}
    records, skipped = memorize.compute_proxies(ws, model, None, device)
    rho = {}
    for rec in records:
        agree = metrics.rank_agreement(values, artifacts.load_scores(ws, rec).oriented, k=n // 20)
        rho[rec["name"]] = agree["spearman"]
        out[f"proxies.{rec['name']}.spearman"] = beside(num(agree["spearman"]), PAPER_SPEARMAN.get(rec["name"]))
        out[f"proxies.{rec['name']}.precision_at_5pct"] = num(agree["precision_at_k"])
    out |= {f"proxies.{name}.skipped": why for name, why in skipped.items()}
    out["claim.proxies"] = claim(*judge_proxies(rho))

    ds = artifacts.dataset_of(ws, model)
    flipped = np.zeros(n, bool)
    flipped[ds.flipped] = True
    auroc = metrics.auroc(flipped, values)
    out["flipped.model_train_acc"] = num(model["train_acc"])
    out["flipped.model_flipped_fit"] = num(model["flipped_fit"])
    out["flipped.auroc_exact"] = beside(num(auroc), PAPER_FLIPPED)
    out["claim.flipped"] = claim(*judge_flipped(auroc, model["flipped_fit"]))
    return out


def rum(ws: Workspace, first: tuple[dict, dict], device) -> dict:
    """Per seed: a model and its exact estimate, a low/mid/high forget set by it, and one sweep that
    tunes the base methods (vanilla: the best of them), RUM and shuffle the same way."""
    methods, beam = SIZE["rum_methods"], SIZE["rum_beam"]
    tow = {"rum": [], "vanilla": [], "shuffle": []}
    per_seed = []
    for seed in range(SIZE["rum_seeds"]):
        model, exact = first if seed == 0 else _regime_model(ws, seed, device)
        fs = forget_sets.create(ws, model, "mix", size=demo.MIX_SIZE, score_id=exact["id"], seed=seed)
        best = {r["method"]: r["tow"] for r in sweeps.summary(
            sweeps.sweep(ws, model, fs, [*methods, "rum", "shuffle"], device, beam=beam))}
        single = max(methods, key=best.get)
        for key, method in (("rum", "rum"), ("vanilla", single), ("shuffle", "shuffle")):
            tow[key].append(best[method])
        per_seed.append(f"{num(best['rum'])}/{num(best[single])} ({single})/{num(best['shuffle'])}")
    third = demo.MIX_SIZE // 3
    out = {"rum.setting": f"mlp on digits, {NOISE:.0%} flipped labels, forget set {third} low + {third} mid + "
                          f"{third} high by exact (K = {SIZE['exact_models']}); RUM refines by exact; each tuned by "
                          f"unlearn --sweep over {', '.join(methods)}, beam {beam}",
           "rum.tow.rum": interval(tow["rum"]),
           "rum.tow.vanilla": interval(tow["vanilla"]),
           "rum.tow.shuffle": interval(tow["shuffle"]),
           "rum.tow_gain_over_vanilla": beside(interval(np.subtract(tow["rum"], tow["vanilla"])), PAPER_RUM),
           "rum.tow_per_seed[rum/vanilla (method)/shuffle]": "; ".join(per_seed),
           "claim.rum": claim(*judge_rum(tow["rum"], tow["vanilla"], tow["shuffle"]))}
    return out


def _class_accuracy(ws: Workspace, run: dict, ds, forget_class: int) -> dict:
    """Test accuracy on the forgotten class and on the others, before and after."""
    samples, y = artifacts.run_samples(ws, run), ds.y_test.numpy()
    out = {}
    for who in ("original", "unlearned"):
        right = samples[f"{who}_test_pred"] == y
        out[who] = {"forget": float(right[y == forget_class].mean()),
                    "retained": float(right[y != forget_class].mean())}
    return out


def mnemonic(ws: Workspace, device) -> dict:
    """`train --mnemonic-tmix 0.1` with the regime recipe (the demo's), one class forgotten with
    the dataset's preset (what `unlearn` runs), and with the paper's MNIST λ beside it."""
    out = {"mnemonic.setting": f"digits (clean), t_mix 0.1, class {demo.FORGET_CLASS} forgotten, "
                               f"preset {runs.preset_of({'dataset': 'digits'})}; paper_lambda: preset paper-mnist"}
    for arch in ("mlp", "cnn"):
        recipe = demo.recipe_for(arch)
        if SIZE["mnemonic_epochs"]:
            recipe = replace(recipe, epochs=SIZE["mnemonic_epochs"])
        model = checkpoints.train(ws, DatasetSpec(), arch, recipe, device)
        fs = forget_sets.create(ws, model, "class", classes=[demo.FORGET_CLASS])
        ds = artifacts.dataset_of(ws, model)
        for label, preset in (("", None), (".paper_lambda", "paper-mnist")):
            run = runs.unlearn(ws, model, fs, "mnemonic", {}, device, preset=preset)
            acc = _class_accuracy(ws, run, ds, demo.FORGET_CLASS)
            drop = acc["original"]["retained"] - acc["unlearned"]["retained"]
            key = f"mnemonic.{arch}{label}"
            out[f"{key}.forget_class_test_acc"] = beside(num(acc["unlearned"]["forget"]), PAPER_MNEMONIC["forget"])
            out[f"{key}.retained_test_acc"] = beside(f"{num(acc['unlearned']['retained'])}, before "
                                                     f"{num(acc['original']['retained'])}", PAPER_MNEMONIC["retained"])
            out[f"{key}.speedup_over_retrain"] = beside(num(run["metrics"]["speedup"], 1), PAPER_MNEMONIC["speedup"])
            if not label:  # the claim is judged on what a user runs; the paper's λ are shown beside it
                out[f"claim.mnemonic.{arch}"] = claim(*judge_mnemonic(acc["unlearned"]["forget"], drop,
                                                                      run["metrics"]["speedup"]))
    return out


def deepobliviate_request(ws: Workspace, model: dict, sample_id: int, device) -> dict:
    """One deletion request: a single point unlearned and measured against the oracle (the block
    chain retrained without it). Kept alone so that it can move to the per-request API."""
    fs = forget_sets.create(ws, model, "ids", ids=[sample_id], name=f"request: sample {sample_id}")
    return deepobliviate_row(runs.unlearn(ws, model, fs, "deepobliviate", {}, device))


def deepobliviate(ws: Workspace, device) -> dict:
    """bench/deepobliviate.py's block training; each request one point of a block in the last tenth."""
    s = DO_SETTINGS
    model = checkpoints.train(ws, DatasetSpec(), s["arch"], training.Recipe(epochs=s["epochs"], lr=s["lr"],
                                                                            blocks=s["blocks"], seed=s["seed"]), device)
    store = artifacts.open_blocks(ws, model)
    rng = np.random.default_rng(s["seed"])
    late = np.arange(int(LATE * s["blocks"]) + 1, s["blocks"] + 1)
    rows = []
    for d in sorted(rng.choice(late, SIZE["do_requests"], replace=False).tolist()):
        rows.append({"block": d, **deepobliviate_request(ws, model, int(rng.choice(store.ids[d - 1])), device)})
    speedups, accs = [r["speedup"] for r in rows], [r["acc_pct"] for r in rows]
    return {
        "deepobliviate.setting": f"{s['arch']} on digits (clean) in {s['blocks']} blocks, {s['epochs']} epochs each, "
                                 f"lr {s['lr']:g}; default stop rule; requests in blocks "
                                 f"{', '.join(str(r['block']) for r in rows)}",
        "deepobliviate.speedup_over_retrained_chain": beside(", ".join(num(v, 1) for v in speedups),
                                                             f"{DO_SPEEDUP}× on MNIST"),
        "deepobliviate.test_acc_pct_of_retrained_chain": beside(", ".join(num(v, 1) for v in accs),
                                                                f"{DO_ACC_PCT}% on MNIST"),
        "deepobliviate.retrained_blocks": ", ".join(str(r["retrained"]) for r in rows),
        "claim.deepobliviate": claim(*judge_deepobliviate(speedups, accs, [r["retrained"] for r in rows],
                                                          s["blocks"])),
    }


def unrolling(ws: Workspace, device, forget: int = 10) -> dict:
    """bench/unrolling.py's grid of recipes (SD-loss weight × lr × epochs, else the regime's), the
    same 10 random samples forgotten by `sgd_unroll` from each, through `runs.unlearn`: its oracle
    replays the original batch order without them, and its record carries the unlearning error."""
    lambdas, lrs, epochs = SIZE["unroll_grid"]
    rows = []
    for lam, lr, ep in itertools.product(lambdas, lrs, epochs):
        recipe = replace(training.default_for("mlp", "digits"), lr=lr, epochs=ep, sd_lambda=lam)
        model = checkpoints.train(ws, DatasetSpec(), "mlp", recipe, device)
        fs = forget_sets.create(ws, model, "random", size=forget, seed=0)  # the same ids for every model
        run = runs.unlearn(ws, model, fs, "sgd_unroll", {}, device)
        oracle = ws.get(run["oracle_id"], "model")
        nothing = metrics.verification_error(artifacts.load_model(ws, model), artifacts.load_model(ws, oracle))
        rows.append({"lam": lam, "lr": lr, "epochs": ep, "ve": run["metrics"]["verification_error"],
                     "ue": run["metrics"]["unlearning_error"], "nothing": nothing, "order": oracle.get("order")})
    plain = {(r["lr"], r["epochs"]): r["ve"] for r in rows if r["lam"] == 0}
    pairs = [(plain[(r["lr"], r["epochs"])], r["ve"]) for r in rows if r["lam"] > 0]
    rho, p = spearmanr([r["ue"] for r in rows], [r["ve"] for r in rows])
    mean = lambda key, sd: statistics.mean(r[key] for r in rows if (r["lam"] > 0) == sd)
    return {
        "unrolling.setting": f"mlp on digits (clean), {forget} random samples forgotten by sgd_unroll; SD weight "
                             f"{list(lambdas)} × lr {list(lrs)} × epochs {list(epochs)}; oracle order: "
                             f"{', '.join(sorted({str(r['order']) for r in rows}))}",
        "unrolling.verification_error.no_sd": num(mean("ve", False), 4),
        "unrolling.verification_error.sd": beside(num(mean("ve", True), 4), PAPER_SD),
        "unrolling.distance_if_nothing_done[no_sd, sd]": f"{num(mean('nothing', False), 4)}, "
                                                          f"{num(mean('nothing', True), 4)}",
        "claim.unrolling.sd": claim(*judge_sd(pairs)),
        "unrolling.spearman(unlearning_error, verification_error)": beside(num(float(rho)), PAPER_RANK),
        "claim.unrolling.rank": claim(*judge_rank(float(rho), float(p), len(rows))),
    }


def run() -> dict:
    device = devices.resolve("auto")
    out = {"papers.run": f"{'QUICK (smoke run: small K, seeds, grids)' if QUICK else 'full'} on {device.type}, "
                         f"{torch.get_num_threads()} threads"}
    clock = time.perf_counter()

    def timed(name: str, figures: dict) -> None:
        nonlocal clock
        out.update(figures)
        out[f"papers.seconds.{name}"] = round(time.perf_counter() - clock, 1)
        clock = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp) / "ws")
        first = _regime_model(ws, 0, device)
        timed("proxies_and_flipped", proxies_and_flipped(ws, *first, device))
        timed("rum", rum(ws, first, device))
        timed("mnemonic", mnemonic(ws, device))
        timed("deepobliviate", deepobliviate(ws, device))
        timed("unrolling", unrolling(ws, device))
    return out
