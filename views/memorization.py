import secrets
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from explorer.evaluation import metrics
from explorer.memorization import estimator, proxies, scores
from explorer import commands
from explorer.pipeline import score_files
from explorer.present import plots
from explorer.store import artifacts, jobs
from explorer.runtime import devices, progress
from views import ui

ws = ui.workspace()
ws_path = str(ws.path.resolve())
st.title("Memorization")
st.caption(
    "How strongly did the model memorize each training sample? **Exact** memorization (Feldman & Zhang) "
    "trains many models on random 70% subsets and compares accuracy on a sample when it was in the subset "
    "against when it was not ([Feldman & Zhang 2020](https://arxiv.org/abs/2008.03703)). **Proxies** estimate the "
    "same thing far more cheaply ([Zhao & Triantafillou 2024](https://arxiv.org/abs/2410.16516)), which is what makes "
    "memorization-aware unlearning practical."
)
ui.last_job_message()

rec = ui.pick_model(ws, "mem_pick")
if rec is None:
    st.stop()
ui.regime_warning(rec)
ds = ui.dataset(ws, rec)
labels, ids = ds.y_train.numpy(), np.arange(ds.n_train)
flipped = np.zeros(ds.n_train, bool)
flipped[ds.flipped] = True

# -- compute ------------------------------------------------------------------------------------
exact_col, proxy_col = st.columns(2)
with exact_col.form("exact"):
    st.markdown("**Exact memorization**")
    c1, c2, c3 = st.columns(3)
    k = c1.number_input("Models K", 2, 10_000, 128, help="256–512 is plenty for digits.")
    ratio = c2.number_input("Subset ratio", 0.05, 0.95, 0.7, 0.05)
    epochs = c3.number_input("Epochs", 1, 500, int(rec.get("epochs") or 30))
    passes = estimator.sample_passes(int(k), float(ratio), int(epochs), ds.n_train)
    cost = (f"{int(k)} models × {int(epochs)} epochs × {int(ratio * ds.n_train):,} samples = "
            f"{passes / 1e6:,.1f} M sample-passes")
    speed = estimator.measured_speed(ws.find("scores", model_id=rec["id"], name="exact"))
    throughput, device_kind, propose_fast = ui.measured_throughput(), devices.resolve("auto").type, False
    if speed:
        cost += (f". The last exact run of this model trained {speed:,.0f} sample-passes/s, so about "
                 f"{progress.clock(passes / speed)} at that pace.")
    elif benched := estimator.benched_speed(throughput, device_kind, rec["arch"]):
        speed, engine = benched
        cost += (f". At the pace `python -m bench scale` measured for {rec['arch']} on a {device_kind} "
                 f"({engine} engine, {speed:,.0f}/s) that is about {progress.clock(passes / speed)}.")
    elif rec.get("seconds") and rec.get("epochs"):
        speed = rec["epochs"] * ds.n_train / rec["seconds"]  # its own training, with per-epoch evaluation: slower
        cost += (f". At this model's own training pace ({speed:,.0f}/s) that is at most "
                 f"{progress.clock(passes / speed)}; the batched engine trains many models as one computation "
                 "and is often faster.")
    st.caption(cost)
    fast = estimator.benched_speed(throughput, device_kind, "fast_cnn")
    if (fast and ds.shape == (3, 32, 32) and rec["arch"] != "fast_cnn" and speed
            and fast[0] > estimator.FAST_PROPOSAL_RATIO * speed):
        propose_fast = True
        st.caption(f"Too slow? On CIFAR-shaped data **fast_cnn** (a small batch-norm conv net after airbench, "
                   f"with its fast recipe) would take about {progress.clock(passes / fast[0])}. Memorization is "
                   f"then measured on fast_cnn models, not on {rec['arch']}: what a fast_cnn memorizes of this "
                   "data, which tracks but is not what your model memorized.")
    backend, address = "local", None
    if ui.ray_installed():
        on_ray = st.toggle("Run on a Ray cluster", help="Each chunk of models becomes a Ray task (with a GPU each "
                           "when the cluster has them); finished chunks are saved here as they arrive.")
        where = st.text_input("Ray address", placeholder="blank: RAY_ADDRESS, else a local Ray",
                              help="auto, host:port of the head node, or ray://host:10001")
        backend, address = ("ray", where.strip() or None) if on_ray else ("local", None)
    if propose_fast and st.form_submit_button("Train a fast_cnn on this dataset"):
        spec = ds.spec
        ui.launch(ws, commands.train(spec.name, "fast_cnn", {}, label_noise=spec.label_noise, data_root=spec.root,
                                     split_seed=spec.split_seed, image_size=spec.image_size),
                  f"train {spec.name} fast_cnn (for exact memorization)", "exact_job")
    if st.form_submit_button("Compute exact", type="primary"):
        cfg = estimator.ExactConfig(models=int(k), ratio=float(ratio), epochs=int(epochs))
        ui.launch(ws, commands.memorize(rec["id"], cfg, backend, address), f"exact memorization of {rec['name']}",
                  "exact_job")
with proxy_col.form("proxies"):
    st.markdown("**Proxies**")
    possible = list(proxies.ALL if rec.get("has_dynamics") else proxies.FROM_MODEL)
    if rec.get("curvature_recorded"):  # trained with --curvature-every: the RUM code's average over training
        possible += proxies.RECORDED
    chosen = st.multiselect("Proxies", possible, default=possible,
                            help="\n".join(f"- **{n}**: {scores.label(n)}" for n in possible))
    if not rec.get("has_dynamics"):
        st.caption("This model was not trained here, so the learning-event proxies (confidence, bi_acc, …) "
                   "are unavailable: they need its training dynamics.")
    if st.form_submit_button("Compute proxies") and chosen:
        ui.launch(ws, commands.proxies(rec["id"], chosen), f"proxies of {rec['name']}", "proxy_job")
with exact_col:
    ui.job_status(ws, "exact_job")
with proxy_col:
    ui.job_status(ws, "proxy_job")


def safe_name(name: str) -> str:
    """An uploaded file's name reduced to letters, digits and . _ - (it becomes part of a path)."""
    kept = "".join(c if c.isalnum() or c in "._-" else "_" for c in name).strip("._") or "scores"
    return kept[:80]


def import_form() -> None:
    """A score file made elsewhere, imported as a job (`import-scores`)."""
    st.caption("Published memorization estimates (Feldman & Zhang's `tr_mem`), C-scores (Jiang et al.; kept as "
               "1 − C), the RUM code's CIFAR-10 estimate, raw subset-model runs (estimated here), or a table. The "
               "file's labels must be this model's dataset's targets, or nothing is imported. See docs/scores.md.")
    with st.form("import_scores"):
        upload = st.file_uploader("Score file", type=["npz", "csv"])
        score_path = st.text_input("…or a file on this machine", help="For files too large to upload (RUM's "
                                   "influence matrix is 2 GB): a path the app's machine can read.")
        c1, c2 = st.columns(2)
        score_format = c1.selectbox("Format", ["auto", *score_files.FORMATS],
                                    format_func=lambda f: "auto: told by its keys" if f == "auto"
                                    else f"{f}: {score_files.FORMATS[f]}")
        score_title = c2.text_input("Name (optional)", placeholder="the file's name")
        if st.form_submit_button("Import scores") and (upload is not None or score_path.strip()):
            if upload is not None:
                path = ws.path / "uploads" / secrets.token_hex(8) / safe_name(upload.name)
                path.parent.mkdir(parents=True)
                path.write_bytes(upload.getvalue())
            else:
                path = Path(score_path.strip()).expanduser()
            ui.launch(ws, commands.import_scores(str(path), rec["id"], score_format, score_title.strip() or None),
                      f"import scores {path.name} into {rec['name']}", "import_scores_job")


importing = st.expander("Bring in scores computed elsewhere", key="mem_import", on_change="rerun")
if importing.open:  # drawn only when opened
    with importing:
        import_form()
ui.job_status(ws, "import_scores_job")


def partial_runs(active: bool):
    """Exact runs with saved chunks: converging live while a job works on them, else resumable."""
    for i, run in enumerate(ui.partial_exact_runs(ws, rec["id"])):
        if active:
            st.markdown(f"**Exact estimate converging** — {run['done']} of {run['models']} models so far")
        else:
            st.markdown(f"**An interrupted exact run** stopped after {run['done']} of {run['models']} models; "
                        "its saved models are kept.")
            if st.button("Resume it", key=f"resume-{i}"):
                ui.launch(ws, commands.memorize(rec["id"], run["cfg"]), f"exact memorization of {rec['name']}",
                          "exact_job")
                st.rerun(scope="app")
        step = max(1, run["done"] // 12)
        ui.chart(st, plots.convergence(estimator.convergence(run["masks"], run["correct"], step)),
                        key=f"live_conv-{i}")


if any(j["argv"][:2] == ["memorize", rec["id"]] for j in jobs.list_jobs(ws, active_only=True)):
    st.fragment(lambda: partial_runs(active=True), run_every=ui.SLOW_POLL_SECONDS)()
else:
    partial_runs(active=False)

available = ui.available_scores(ws, rec)
stored = artifacts.latest_scores(ws, rec["id"])
if not available:
    st.info("No scores yet for this model: compute exact memorization or the proxies above, or bring in a file.")
    st.stop()
for score_name, srec in stored.items():
    if srec.get("imported"):  # say where it came from: it was not computed on this model
        src = srec["source"]
        st.caption(f"**{score_name}** is imported: {srec['title']} ({src['format']}, sha256 {src['sha256'][:12]}…), "
                   f"{srec['n'] - srec['n_missing']:,} of {srec['n']:,} samples matched by "
                   f"{srec['params']['aligned_by']}; {srec['labels_checked']}"
                   + (f"; estimated here from its {srec['models']} runs" if srec.get("models") else "") + ".")

# -- what the scores say, in tabs: only the open one is drawn ----------------------------------------
def exact_vs_proxies() -> None:
    if "exact" not in stored:
        st.info("Compute exact memorization to compare each proxy against it.")
        return
    exact = available["exact"]
    never = stored["exact"].get("never_held_out")
    runs_kept = stored["exact"].get("models") is not None  # an imported estimate may come without its runs
    converged = st.expander(f"How the exact estimate converged ({stored['exact'].get('models')} models; "
                            + (f"{never} samples never held out, so undefined)" if never
                               else "every sample held out at least once)"), key="mem_convergence",
                            on_change="rerun") if runs_kept else None
    if converged is not None and converged.open:  # drawn only when opened
        with converged:
            st.caption("While few models have been trained, most samples are held out by only one or two of them, "
                       "so the first points are noisy; the error then falls roughly as 1/√K.")
            _, arrays = ui.score_set(ws_path, stored["exact"]["id"])
            step = max(1, stored["exact"]["models"] // 16)
            ui.chart(st, plots.convergence(estimator.convergence(arrays["masks"], arrays["correct"], step)),
                            key="final_conv")
    others = [n for n in available if n != "exact"]
    if not others:
        st.info("Compute the proxies to compare them with exact memorization.")
        return
    c1, c2 = st.columns([2, 1])
    name = c1.selectbox("Proxy", others, format_func=lambda n: f"{n} · {scores.label(n)}")
    top_k = c2.number_input("k for precision@k", 1, ds.n_train, max(10, ds.n_train // 20))
    proxy = scores.oriented(name, available[name])
    agree = metrics.rank_agreement(exact, proxy, int(top_k))
    cols = st.columns(4)
    for col, key in zip(cols, ("spearman", "pearson", "kendall", "precision_at_k")):
        col.metric(key.replace("_", " "), f"{agree[key]:.3f}")
    st.caption(f"Plotted as {scores.oriented_name(name)}, so that higher = more memorized for every score; "
               f"{agree['n']} samples with a defined exact score. Precision@k: the share of the proxy's "
               f"top {agree['k']} that are in the exact score's top {agree['k']}.")
    ui.chart(st, plots.score_vs_score(exact, proxy, ids, labels, "exact memorization",
                                         scores.oriented_name(name), flipped if flipped.any() else None),
                    key="scatter")


def all_scores() -> None:
    if len(available) > 1:
        st.markdown("**Rank correlations between all scores**")
        names = list(available)
        oriented = np.array([scores.oriented(n, available[n]) for n in names])
        matrix = pd.DataFrame(oriented.T, columns=names).corr(method="spearman").to_numpy()
        ui.chart(st, plots.correlation_heatmap(names, matrix), key="corr")
    # An imported set's seconds are its import's, not what it cost to compute: left out.
    costs = {n: r["seconds"] for n, r in stored.items() if n not in proxies.FROM_DYNAMICS and not r.get("imported")}
    learning_events = [n for n in stored if n in proxies.FROM_DYNAMICS]
    if learning_events:  # one computation from the recorded dynamics serves them all
        costs["learning-event proxies"] = sum(stored[n]["seconds"] for n in learning_events)
    if costs:
        st.markdown("**Cost**")
        st.caption("Compute seconds of each stored score set. The learning-event proxies "
                   f"({', '.join(learning_events) or 'none stored'}) are read off the dynamics recorded during "
                   "training, which made training about 6% slower (`python -m bench training`).")
        ui.chart(st, plots.cost_chart(costs), key="cost")
    if flipped.any():
        st.markdown("**Finding the mislabeled samples**")
        st.caption(f"{flipped.sum()} training labels were flipped. AUROC of each score for telling them apart.")
        ui.chart(st, plots.auroc_bars({n: metrics.auroc(flipped, scores.oriented(n, v))
                                          for n, v in available.items()}), key="auroc")


def one_score() -> None:
    c1, c2 = st.columns([3, 1])
    shown = c1.selectbox("Score", list(available), format_func=lambda n: f"{n} · {scores.label(n)}", key="detail")
    log_y = c2.checkbox("log count axis", help="Most samples are barely memorized; a log axis shows the tail.")
    values = available[shown]
    left, right = st.columns(2)
    ui.chart(left, plots.histogram(values, labels, xlabel=shown, class_names=ds.classes, log_y=log_y),
                      key="histogram")
    ui.chart(right, plots.per_class_box(values, labels, ds.classes, shown), key="per_class")

    count = st.slider("Images", 10, 60, 20, 10)
    # Rank by the score, ties (exact memorization is often exactly 0 or 1) broken by another score.
    tie_breaker = next((n for n in ("confidence", "exact", "loss") if n in available and n != shown), shown)
    order = np.lexsort((-scores.oriented(tie_breaker, available[tie_breaker]), -scores.oriented(shown, values)))
    order = order[np.isfinite(values[order])]
    st.markdown("**Most memorized**")
    ui.gallery(ds, order[:count], [ui.caption_for(i, ds, values[i]) for i in order[:count]])
    st.markdown("**Least memorized**")
    ui.gallery(ds, order[::-1][:count], [ui.caption_for(i, ds, values[i]) for i in order[::-1][:count]])
    st.caption(f"Captions: sample id · training label (9←5: flipped by label noise from 5) · {shown}. "
               + (f"Ties are broken by {tie_breaker}." if tie_breaker != shown else ""))


TABS = {"Exact vs proxies": exact_vs_proxies, "All scores": all_scores, "Per class and per sample": one_score}


@st.fragment
def what_the_scores_say() -> None:
    """The views of the scores, one tab each. Only the open tab is drawn (a Plotly chart costs the
    browser a few hundred milliseconds), and a tab or a setting in one reruns only this."""
    default = "Exact vs proxies" if "exact" in stored else "Per class and per sample"
    ui.lazy_tabs(TABS, "mem_tab", default)


what_the_scores_say()
