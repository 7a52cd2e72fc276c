import json

import numpy as np
import pandas as pd
import streamlit as st

from explorer.evaluation import embeddings, metrics
from explorer.memorization import scores
from explorer.present import comparison, plots, report
from explorer.store import artifacts
from explorer.present.comparison import METRICS
from views import ui

ws = ui.workspace()
ws_path = str(ws.path.resolve())
st.title("Compare")
st.caption("Every run against the original model and the **oracle** retrained without the forget set. A good "
           "unlearning run behaves like the oracle: forget accuracy and membership-inference scores move to the "
           "oracle's while retain and test accuracy hold. Metrics follow [RUM](https://arxiv.org/abs/2406.04496) "
           "and [SCRUB](https://arxiv.org/abs/2302.09880).")



@st.cache_data(show_spinner="Computing the twin maps…", max_entries=8)
def twin_maps(ws_path: str, run_id: str) -> tuple[np.ndarray, np.ndarray]:
    run = ws.get(run_id, "run")
    x = ui.dataset(ws, models_by_id[run["model_id"]]).x_train
    return comparison.twin_projection(embeddings.features(ui.load_model(ws_path, run["model_id"]), x),
                                      embeddings.features(artifacts.unlearned_model(ws, run), x))


all_runs = ws.find("run")[::-1]
if not all_runs:
    st.info("No runs yet: unlearn a forget set on the **Unlearn** page.")
    st.stop()

# -- which runs ---------------------------------------------------------------------------------
models_by_id = {m["id"]: m for m in ws.find("model")}
sets_by_id = {f["id"]: f for f in ws.find("forget_set")}
c1, c2, c3 = st.columns(3)
model_ids = list(dict.fromkeys(r["model_id"] for r in all_runs))
pick_model = c1.selectbox("Model", model_ids, format_func=lambda i: ui.model_label(models_by_id[i]) if i in models_by_id else i)
fs_ids = list(dict.fromkeys(r["forget_set_id"] for r in all_runs if r["model_id"] == pick_model))
pick_fs = c2.selectbox("Forget set", fs_ids, format_func=lambda i: f"{sets_by_id[i]['name']} · {i}" if i in sets_by_id else i)
here = [r for r in all_runs if r["model_id"] == pick_model and r["forget_set_id"] == pick_fs]
methods = c3.multiselect("Methods", list(dict.fromkeys(r["method"] for r in here)))
shown = [r for r in here if not methods or r["method"] in methods]

shown_rows = comparison.rows(ws, shown)
table = pd.DataFrame(shown_rows)
config = {k: st.column_config.NumberColumn(label, help=text, format="%.3f") for k, (label, text) in METRICS.items()}
config["seconds"] = st.column_config.NumberColumn("time", format="%.2f s", help=METRICS["seconds"][1])
config["speedup"] = st.column_config.NumberColumn("speed-up", format="%.1f×", help=METRICS["speedup"][1])
st.dataframe(table.drop(columns=["model", "forget set"]), hide_index=True, column_config=config)
st.caption("Click a column to sort. The last rows are the references: the original model and the oracle.")

c1, c2, c3 = st.columns(3)
c1.download_button("Metrics as CSV", table.to_csv(index=False), "metrics.csv", "text/csv")
c2.download_button("Metrics as JSON", json.dumps(table.replace({np.nan: None}).to_dict("records")), "metrics.json",
                   "application/json")
shown_ids = tuple(r["id"] for r in shown)
if c3.button("Build an HTML report", help="A self-contained page with every figure, to share or archive."):
    st.session_state["report"] = {"ids": shown_ids, "html": report.html(ws, list(shown_ids))}
built = st.session_state.get("report")
if built and built["ids"] == shown_ids:  # never a report of an earlier selection
    c3.download_button("Download the report", built["html"], "unlearning-report.html", "text/html")

repeated = [row for row in comparison.by_setting(shown) if row["seeds"] > 1]
if repeated:
    st.markdown("**Settings run with several seeds** (mean and 95% t-interval)")
    st.dataframe(pd.DataFrame(repeated), hide_index=True,
                 column_config={c: st.column_config.NumberColumn(format="%.3f") for c in repeated[0]
                                if c not in ("method", "setting", "runs", "seeds")})

# -- the sections, in tabs: only the open one is drawn ------------------------------------------
def against_references() -> None:
    runs_rows = [row for row in shown_rows if not row["run"].startswith("(")]
    ref = shown[0]
    ui.chart(st, plots.metric_panels(runs_rows, {k: METRICS[k][0] for k in ("acc_forget", "acc_retain", "acc_test",
                                                                              "mia_efficacy")},
                                        ref["original"], ref["oracle"]), key="bars")
    if ref["oracle"] is not None:
        ui.chart(st, plots.tow_vs_seconds(runs_rows), key="tow_seconds")
        st.caption("Up and to the left is better: as close to the oracle as possible, as fast as possible. "
                   "Use the camera icon on any chart to save it as a PNG.")
    every_row = [row for row in comparison.rows(ws, all_runs) if not row["run"].startswith("(")]
    if len({f"{row['unlearning_error']:.3g}" for row in every_row if row.get("unlearning_error") is not None}) > 1:
        st.markdown("**Unlearning error against verification error**, every run of every model: models trained "
                    "with the SD loss (`--sd-lambda`) should sit lower on both.")
        ui.chart(st, plots.error_vs_verification(every_row), key="error_vs_verification")


def forgetting_quality() -> None:
    """Per forget sample: the competition's ε and F, KLoM, and both by memorization group, from the
    evaluations of this forget set."""
    evaluations = ws.find("evaluation", model_id=pick_model, forget_set_id=pick_fs)[::-1]
    if not evaluations:
        st.caption("No evaluation of this forget set yet: **Evaluate forgetting quality F** on the Unlearn page, or "
                   "`evaluate MODEL --forget FS --method NAME`.")
        return
    st.caption("The NeurIPS 2023 unlearning competition's judgement: N runs of a method against N models retrained "
               "without the forget set; for each forget sample, ε says how well an attacker tells the two apart. "
               "**F** is the mean bucket score (1 = no sample can be told apart) on a simultaneous 95% lower bound "
               "of ε: 0 for a perfect unlearner in ≥ 95% of samples, but it resolves ε only up to what N models "
               "show (1.28 at N = 32; nothing at N ≤ 9, F empty). **F (point)** is the competition's own estimate, "
               "exactly as its code computes it: comparable with its numbers, but a perfect unlearner scores "
               "≈ 0.17 at N = 32. The scores multiply each F by retain and test accuracy relative to retraining. "
               "**KLoM**: KL divergence of the two sides' margin histograms (Attribute-to-Delete, the Easy "
               "Data-Unlearning Bench), 0 = as retrained. ToW (from single runs, against one oracle) beside them.")
    ev_rows = comparison.evaluation_rows(evaluations, here)
    st.dataframe(pd.DataFrame(ev_rows), hide_index=True,
                 column_config={c: st.column_config.NumberColumn(format="%.3f") for c in
                                ("F", "F low", "F high", "F (point)", "score", "score (point)", "KLoM", "test acc",
                                 "retrained test acc", "ToW (runs)")})
    ui.chart(st, plots.forgetting_quality(ev_rows), key="forgetting_quality")
    by_group = comparison.group_rows(ws, evaluations)
    if by_group:
        st.markdown("**By memorization group**: the forget set split in terciles of its memorization, as RUM splits "
                    "it. A random forget set is mostly low-memorization samples, which any method forgets: the "
                    "high group is where methods differ.")
        st.dataframe(pd.DataFrame(by_group), hide_index=True,
                     column_config={c: st.column_config.NumberColumn(format="%.3f") for c in by_group[0]
                                    if c not in ("evaluation", "method", "N", "group", "size")})
        ui.chart(st, plots.forgetting_by_group(by_group), key="forgetting_by_group")
    else:
        st.caption("By memorization group: needs a memorization score of this model (Memorization page).")
    mem = artifacts.memorization_of(ws, models_by_id[pick_model])
    points = comparison.epsilon_points(evaluations, None if mem is None else mem[1])
    if mem is not None:
        ui.chart(st, plots.epsilon_vs_memorization(points, scores.oriented_name(mem[0])), key="eps_vs_mem")
        st.caption("Each forget sample's ε against its memorization, one colour per method: memorized samples are the "
                   "hard ones to forget (the RUM paper), so a method that forgets them well sits low on the right.")
    st.download_button("Per-sample ε and KLoM as CSV", pd.DataFrame(points).to_csv(index=False), "epsilons.csv",
                       "text/csv")


# -- two runs side by side ------------------------------------------------------------------------


@st.cache_data(show_spinner="Computing the twin maps…", max_entries=8)
def ab_maps(ws_path: str, run_a: str, run_b: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = ws.get(run_a, "run"), ws.get(run_b, "run")
    x = ui.dataset(ws, models_by_id[a["model_id"]]).x_train
    return comparison.twin_projection(embeddings.features(artifacts.unlearned_model(ws, a), x),
                                      embeddings.features(artifacts.unlearned_model(ws, b), x))


def a_against_b() -> None:
    """Two runs on this forget set, A against B: metrics, per sample, classes, twin maps."""
    if len(here) < 2:
        st.caption("Run a second method on this forget set to set two runs side by side.")
        return
    label = lambda r: f"{r['method']} · {r['id']} · {comparison.settings_text(r['params'])}"  # noqa: E731
    ca, cb = st.columns(2)
    a = ca.selectbox("A", here, format_func=label, key="ab_a")
    b = cb.selectbox("B", here, index=1, format_func=label, key="ab_b")
    st.dataframe(pd.DataFrame(comparison.side_by_side(a, b)), hide_index=True,
                 column_config={c: st.column_config.NumberColumn(format="%.3f") for c in ("A", "B", "B − A", "oracle")})
    sa, sb = artifacts.run_samples(ws, a), artifacts.run_samples(ws, b)
    model_rec = models_by_id.get(a["model_id"])
    if sa is None or sb is None or model_rec is None:
        st.caption("One of the runs predates per-sample outputs: rerun it for the per-sample views.")
        return
    ds = ui.dataset(ws, model_rec)
    forget = np.asarray(sets_by_id[pick_fs]["ids"])
    flipped = np.isin(forget, ds.flipped) if len(ds.flipped) else None
    ui.chart(st, plots.score_vs_score(sa["unlearned_train_confidence"][forget], sb["unlearned_train_confidence"][forget],
                                         forget, ds.y_train.numpy()[forget], f"A ({a['method']}) confidence",
                                         f"B ({b['method']}) confidence", flipped), key="ab_samples")
    st.caption("Each forget sample's true-label confidence after A (x) and after B (y): off the diagonal, the two "
               "methods disagree about the sample.")
    y_test = ds.y_test.numpy()
    acc = {f"A: {a['method']}": comparison.class_accuracies(sa, y_test, ds.num_classes)["unlearned"],
           f"B: {b['method']}": comparison.class_accuracies(sb, y_test, ds.num_classes)["unlearned"]}
    if "oracle_test_pred" in sa:
        acc["oracle"] = comparison.class_accuracies(sa, y_test, ds.num_classes)["oracle"]
    ui.chart(st, plots.class_accuracy_bars(acc, ds.classes), key="ab_classes")
    if st.toggle("Show A's and B's maps", help="Penultimate features of the two unlearned models, through one PCA "
                 "fitted on A's: where did each put the forget set?", key="ab_maps_on"):
        xy_a, xy_b = ab_maps(ws_path, a["id"], b["id"])
        ui.chart(st, plots.twin_maps(xy_a, xy_b, ds.y_train.numpy(), forget, ds.classes,
                                        (f"A: {a['method']}", f"B: {b['method']}")), key="ab_twin")


def run_detail() -> None:
    """One run: its figures in tabs, only the open one drawn."""
    run = st.selectbox("Run", shown, format_func=lambda r: f"{r['method']} · {r['id']} · {comparison.settings_text(r['params'])}")
    m = run["metrics"]
    if run["oracle"] is None:
        st.info("This run skipped the oracle, so ToW, ToW-MIA, verification error and speed-up were not measured "
                "(never guessed).")
    else:
        c1, c2, c3, c4 = st.columns(4)
        c1.metric("ToW", f"{m['tow']:.3f}", help=METRICS["tow"][1])
        c2.metric("ToW-MIA", f"{m['tow_mia']:.3f}", help=METRICS["tow_mia"][1])
        if m.get("verification_error") is not None:
            c3.metric("verification error", f"{m['verification_error']:.3f}", help=METRICS["verification_error"][1])
        c4.metric("speed-up", f"{m['speedup']:.1f}×", help=f"{m['seconds']:.2f} s vs {m['retrain_seconds']:.2f} s to "
                  f"retrain, on {run['device']}")
    details = run.get("details") or {}
    if details.get("steps"):
        st.markdown("**Steps**")
        st.dataframe(pd.DataFrame([{k: v for k, v in step.items() if k != "ids"} for step in details["steps"]]),
                     hide_index=True)
    if details.get("residual") is not None:  # a run that retrained a chain of blocks (DeepObliviate)
        st.markdown("**Residual memory per retrained block**")
        ui.chart(st, plots.residual_curve_figure(details), key="residual")
    if m.get("requests"):  # a run of requests, one after another
        st.markdown("**Per request** (speed-up: B / blocks retrained; accuracy right after the request)")
        st.dataframe(pd.DataFrame(m["requests"]), hide_index=True)
        each = details.get("requests") or []
        if len(each) > 1:
            r = st.number_input("Residual memory of request", 1, len(each), 1, key="residual_request")
            ui.chart(st, plots.residual_curve_figure(each[r - 1]), key="residual")
    if details.get("grid"):
        st.markdown("**λ grid on the codes** (data-free)")
        st.dataframe(pd.DataFrame(details["grid"]), hide_index=True)

    samples = artifacts.run_samples(ws, run)
    model_rec = models_by_id.get(run["model_id"])
    if samples is None or model_rec is None:
        st.caption("This run predates per-sample outputs: rerun it for the per-sample, MIA and class views.")
        return
    ds = ui.dataset(ws, model_rec)
    forget = np.asarray(sets_by_id[run["forget_set_id"]]["ids"]) if run["forget_set_id"] in sets_by_id else np.array([], int)
    available = ui.available_scores(ws, model_rec)
    score_name = "exact" if "exact" in available else next(iter(available), None)
    memo = scores.oriented(score_name, available[score_name]) if score_name else None

    ui.lazy_tabs(TABS, "compare_tab", None, run, samples, ds, forget, score_name, memo)


def per_sample_tab(run, samples, ds, forget, score_name, memo) -> None:
    colour = "" if memo is None else scores.oriented_name(score_name)
    panels = [{"title": "the forget set", "before": samples["original_train_confidence"][forget],
               "after": samples["unlearned_train_confidence"][forget], "ids": forget,
               "colour": None if memo is None else memo[forget]}]
    text = ("Left: each forget-set sample's true-label confidence before (x) and after (y) unlearning; points left "
            "high on the diagonal were not forgotten.")
    if memo is not None:
        retain = np.setdiff1d(np.arange(ds.n_train), forget)
        top = retain[np.argsort(-np.nan_to_num(memo[retain], nan=-np.inf))[:100]]
        panels.append({"title": "the retain set's 100 most memorized", "before": samples["original_train_confidence"][top],
                       "after": samples["unlearned_train_confidence"][top], "ids": top, "colour": memo[top]})
        text += (" Right: the retain set's 100 most memorized samples: unlearning should leave them where they were "
                 "(on the diagonal); collateral forgetting shows as points below it.")
    st.caption(text + (f" Colour: {colour}." if colour else ""))
    ui.chart(st, plots.before_after_panels(panels, colour), key="before_after")


def mia_tab(run, samples, ds, forget, score_name, memo) -> None:
    who = [w for w in ("original", "unlearned", "oracle") if f"{w}_train_loss" in samples]
    groups = {w: comparison.loss_groups(samples, forget, ds.n_train, w) for w in who}
    best_t, _ = metrics.best_threshold(groups["unlearned"]["forget"], groups["unlearned"]["test"])
    largest = max(float(np.max(v)) for parts in groups.values() for v in parts.values() if len(v))
    lo, hi = -6.0, float(np.log10(max(largest, 10.0)))
    start = float(np.clip(np.log10(best_t), lo, hi)) if np.isfinite(best_t) and best_t > 0 else lo
    log_t = st.slider("Attack threshold (log₁₀ loss)", lo, hi, start, 0.05,
                      help="The attacker calls a sample a member (trained on) when its loss is below the threshold.")
    ui.chart(st, plots.loss_distributions(groups, 10 ** log_t), key="loss_hist")
    cols = st.columns(len(who))
    for col, w in zip(cols, who):
        acc = metrics.threshold_attack(groups[w]["forget"], groups[w]["test"], 10 ** log_t)
        col.metric(f"attack accuracy · {w}", f"{acc:.3f}", help="Forget vs test samples, balanced: 0.5 = the "
                   "attacker cannot tell the forget set from data never trained on.")
    st.caption(f"Cross-validated logistic regression on the loss (S vs T): AUC {run['metrics'].get('mia_auc', float('nan')):.3f} "
               f"after, {run['original'].get('mia_auc', float('nan')):.3f} before" +
               (f", {run['oracle'].get('mia_auc', float('nan')):.3f} for the oracle." if run["oracle"] else "."))


def classes_tab(run, samples, ds, forget, score_name, memo) -> None:
    y_test = ds.y_test.numpy()
    ui.chart(st, plots.class_accuracy_bars(comparison.class_accuracies(samples, y_test, ds.num_classes), ds.classes),
                    key="class_acc")
    c1, c2 = st.columns(2)
    for col, w in ((c1, "original"), (c2, "unlearned")):
        ui.chart(col, plots.prediction_matrix(metrics.confusion(samples[f"{w}_test_pred"], y_test, ds.num_classes),
                                                 ds.classes, f"test predictions · {w}"), key=f"confusion-{w}")


def maps_tab(run, samples, ds, forget, score_name, memo) -> None:
    if st.toggle("Show the twin maps", help="Penultimate features of the original and the unlearned model, through one "
                 "PCA fitted on the original's: did the forget set move?"):
        xy_before, xy_after = twin_maps(ws_path, run["id"])
        ui.chart(st, plots.twin_maps(xy_before, xy_after, ds.y_train.numpy(), forget, ds.classes), key="twin")
    if run.get("analysis"):
        ui.chart(st, plots.cka_lines(run["analysis"]), key="cka")
        st.caption("Linear CKA per layer on test samples: how similar each layer's representation is to the "
                   "original's (what the method changed) and to the oracle's (whether it changed it the right way).")


TABS = {"Per sample": per_sample_tab, "Membership inference": mia_tab, "Classes": classes_tab,
        "Maps and layers": maps_tab}
SECTIONS = {"Against the references": against_references, "Forgetting quality": forgetting_quality,
            "Two runs side by side": a_against_b, "One run in detail": run_detail}


@st.fragment
def sections() -> None:
    """The page's sections, one tab each. Only the open tab is drawn (each chart costs the browser a
    few hundred milliseconds), and a tab or a setting in one reruns only this."""
    ui.lazy_tabs(SECTIONS, "compare_section")


sections()
