import numpy as np
import pandas as pd
import streamlit as st

from explorer.evaluation import choice, embeddings, influence
from explorer.memorization import scores
from explorer import commands
from explorer.pipeline import embed, forget_sets
from explorer.present import plots, selection
from explorer.store import artifacts
from explorer.errors import UserError
from views import ui

PREVIEW_LIMIT = 10_000  # up to this many samples a PCA map is made on the spot; larger sets use a job

ws = ui.workspace()
ws_path = str(ws.path.resolve())
st.title("Explore")
st.caption("Each point is a sample, placed by the model's penultimate features: samples close on the map look "
           "alike to the model. Colour it by a memorization score to find what the model memorized, then lasso "
           "or box a group (or lasso a single sample to open it) and save it as a forget set. "
           "[UMAP](https://arxiv.org/abs/1802.03426) keeps neighbourhoods; PCA is instant.")
ui.last_job_message()

rec = ui.pick_model(ws, "explore_pick")
if rec is None:
    st.stop()
ui.regime_warning(rec)
ds = ui.dataset(ws, rec)
n_train = ds.n_train
labels = np.r_[ds.y_train.numpy(), ds.y_test.numpy()]
maps = artifacts.find_maps(ws, rec["id"])
if not maps and len(labels) <= PREVIEW_LIMIT:
    with st.spinner("Computing a PCA map…"):
        embed.compute(ws, rec, "pca")
    maps = artifacts.find_maps(ws, rec["id"])

# -- which map --------------------------------------------------------------------------------
c_map, c_new = st.columns([3, 1], vertical_alignment="bottom")
chosen = c_map.selectbox("Map", maps, format_func=lambda m: f"{m['method'].upper()} · seed {m['seed']} · {m['id']}",
                         key=f"map_pick-{rec['id']}") if maps else None
# Drawn only when opened (as the by-rule form below): a page's first visit renders fewer widgets.
compute_map = c_new.popover("Compute a map", use_container_width=True, key="explore_compute_map", on_change="rerun")
if compute_map.open:
    with compute_map:
        method = st.selectbox("Method", list(embeddings.METHODS), format_func=str.upper,
                              help=" · ".join(embeddings.METHODS.values()))
        seed = st.number_input("Seed", 0, 2**31 - 1, 0)
        st.caption(f"Runs as a job: UMAP takes about half a minute for {len(labels):,} samples here (longer the "
                   "first time, while it compiles).")
        if st.button("Compute", type="primary"):
            ui.launch(ws, commands.embed(rec["id"], method, seed),
                      f"{method.upper()} map of {rec['name']}", "embed_job")
ui.job_status(ws, "embed_job")
if chosen is None:
    st.info(f"No map of this model yet ({len(labels):,} samples): compute one with **Compute a map**.")
    st.stop()
smap = ui.stored_map(ws_path, chosen["id"])

# -- how it looks -------------------------------------------------------------------------------
available = ui.available_scores(ws, rec)
exact_rec = artifacts.latest_scores(ws, rec["id"]).get("exact")  # its subset models give influence
flipped = np.zeros(len(labels), bool)
flipped[ds.flipped] = True
options = selection.colourings(labels, smap.pred, n_train, ds.classes, flipped, available)
c1, c2, c3 = st.columns([2, 2, 1], vertical_alignment="bottom")
colour_by = c1.selectbox("Colour by", list(options), index=list(options).index("exact") if "exact" in options else 0,
                         format_func=lambda k: f"{scores.oriented_name(k)} · {scores.label(k)}" if k in available else k,
                         help="Scores are turned so that darker = more memorized; test samples have no score.")
sets = [f for f in ws.find("forget_set") if f["dataset_id"] == rec["dataset_id"]][::-1]
outlined = c2.selectbox("Outline a forget set", [None, *sets],
                        format_func=lambda f: "none" if f is None else f"{f['name']} · {f['size']} samples")
with c3.popover("Display", use_container_width=True):
    size = st.slider("Point size", 1, 14, 6 if len(labels) < 5000 else 3)
    opacity = st.slider("Opacity", 0.1, 1.0, 0.8)
    show_test = st.toggle("Show test samples", False, help="Test samples can be looked at but not forgotten.")
    keep_classes = st.multiselect("Classes", list(range(ds.num_classes)), list(range(ds.num_classes)),
                                  format_func=lambda c: ds.classes[c])

rows = np.flatnonzero(np.isin(labels, keep_classes) & (show_test | (np.arange(len(labels)) < n_train)))
position = np.full(len(labels), -1)
position[rows] = np.arange(len(rows))
highlight = None
if outlined is not None:
    highlight = position[outlined["ids"]]
    highlight = highlight[highlight >= 0]
colouring = options[colour_by]
chart_key = f"map-{chosen['id']}"


@st.cache_resource(show_spinner=False, max_entries=8)
def map_figure(xy: np.ndarray, rows: np.ndarray, labels: np.ndarray, values: np.ndarray, name: str,
               categories: tuple[str, ...] | None, size: int, opacity: float, highlight: np.ndarray | None,
               method: str):
    """The map's figure, built once per map and look (the arguments are its key)."""
    return plots.sample_map(xy[rows], rows, labels[rows], values[rows], name, categories, size=size,
                            opacity=opacity, highlight=highlight, axes=(f"{method} 1", f"{method} 2"))


figure = map_figure(smap.xy, rows, labels, colouring.values, colouring.name,
                    None if colouring.categories is None else tuple(colouring.categories), size, opacity, highlight,
                    chosen["method"].upper())


def remember_selection():
    """The map's selection callback: keep the selected ids, then rerun only the selection panel.
    The map itself is not drawn again: on 60,000 points re-sending and redrawing it would cost
    more than the panel."""
    event = st.session_state.get(chart_key) or {}
    st.session_state["explore_selection"] = {"model": rec["id"], "ids": plots.selected_ids(event.get("selection"))}
    st.rerun(scope="selection")


@st.cache_resource(show_spinner=False, max_entries=8)
def entangler(ws_path: str, map_id: str) -> selection.Entanglement:
    """The map's features summed once, so each selection's ES is quick."""
    return selection.Entanglement(ui.stored_map(ws_path, map_id).train_features)


@st.cache_data(show_spinner=False, max_entries=64)
def entanglement(ws_path: str, map_id: str, ids: bytes) -> float:
    """ES of a selection (its int64 ids as bytes: a cheap cache key), from the map's stored features."""
    return entangler(ws_path, map_id)(np.frombuffer(ids, np.int64))


@st.cache_data(show_spinner=False, max_entries=64)
def random_entanglement(ws_path: str, map_id: str, n_train: int, size: int) -> float:
    """ES of a random training subset of `size`: what a selection's ES is compared with."""
    ids = np.random.default_rng(0).choice(n_train, size, replace=False).astype(np.int64)
    return entanglement(ws_path, map_id, ids.tobytes())


def image_of(i: int, width: int = 88) -> str:
    """Map row i's image: rows are the training samples, then the test samples."""
    split, j = ("train", i) if i < n_train else ("test", i - n_train)
    return ui.thumbnail_uris(ds, [j], split, width)[0]


def caption(i: int, value: float | None = None) -> str:
    if i >= n_train:
        return f"test #{i - n_train} · {ds.classes[labels[i]]}"
    return ui.caption_for(i, ds, value)


def sample_panel(i: int) -> None:
    """One sample: the image, its label and prediction, every score, its neighbours on the map."""
    st.subheader(f"Sample #{i}" if i < n_train else f"Test sample #{i - n_train}")
    left, right = st.columns([1, 3])
    left.image(image_of(i, 192), width=192)
    with right:
        true = int(ds.y_train_clean[i]) if i < n_train else int(labels[i])
        facts = {"label": ds.classes[labels[i]], "predicted": ds.classes[int(smap.pred[i])]}
        if true != labels[i]:
            facts["true class (before the label flip)"] = ds.classes[true]
        st.markdown(" · ".join(f"**{k}** {v}" for k, v in facts.items()))
        if i < n_train and available:
            table = [{"score": scores.oriented_name(n), "raw value": float(v[i]),
                      "percentile (oriented)": selection.percentile(scores.oriented(n, v), i)}
                     for n, v in available.items()]
            st.dataframe(pd.DataFrame(table), hide_index=True,
                         column_config={"raw value": st.column_config.NumberColumn(format="%.3f"),
                                        "percentile (oriented)": st.column_config.ProgressColumn(
                                            min_value=0, max_value=100, format="%.0f%%",
                                            help="100% = more memorized than every other sample")})
    near = embeddings.neighbours(smap.xy, i, 8, among=rows)
    st.caption("Nearest on the map")
    st.image([image_of(j) for j in near], caption=[caption(j) for j in near], width=88)
    if i < n_train:
        influence_panel(i)


@st.cache_data(show_spinner=False, max_entries=256)
def influence_of(ws_path: str, score_id: str, i: int, k: int) -> tuple[list[dict], int] | None:
    """Training sample i's most helped and hurt test samples and the number of subset models, from
    the exact score set's masks and test correctness (None without the latter); one row's worth
    of work, cached per score set and sample."""
    arrays = ui.score_set(ws_path, score_id)[1]
    if "test_correct" not in arrays:
        return None
    return selection.influence_pairs(arrays["masks"], arrays["test_correct"], i, k), len(arrays["masks"])


def influence_panel(i: int) -> None:
    """The test samples training sample i helps and hurts most (Feldman & Zhang's influence),
    with their images, from the subset models of the model's exact memorization."""
    st.markdown("**Influence on test samples**")
    if exact_rec is None:
        st.caption(f"Influence needs the subset models of an exact memorization: `python -m explorer memorize "
                   f"{rec['id']} --exact` (or **Compute exact** on the Memorization page) makes them.")
        return
    c_k, _ = st.columns([1, 3])
    k = int(c_k.number_input("Test samples per side", 1, 50, 5, key="influence_k"))
    found = influence_of(ws_path, exact_rec["id"], i, k)
    matrix = artifacts.open_influence(ws, exact_rec) if found is None else None
    if found is None and matrix is None:
        st.caption(f"Score set {exact_rec['id']} was imported without its subset runs or an influence matrix."
                   if exact_rec.get("imported") else
                   f"Score set {exact_rec['id']} predates the subset models' test correctness: rerun "
                   f"`python -m explorer memorize {rec['id']} --exact` to see influence.")
        return
    if found is not None:
        pairs, n_models = found
        st.markdown(selection.influence_sentence(i, pairs, n_models))
    else:  # the matrix published with an imported estimate: one column of it, read from disk
        pairs = influence.pairs_of(i, matrix.of_train(i), k)
        st.markdown(f"From the influence matrix imported with {exact_rec['title']}: training sample #{i} "
                    + ("helps or hurts no test sample." if not pairs else "helps and hurts these test samples most."))
    if not pairs:
        return
    for column, direction, title in zip(st.columns(2), ("helps", "hurts"), ("Helped most", "Hurt most")):
        side = [p for p in pairs if p["direction"] == direction]
        column.caption(f"{title} (influence = right with it − right without it)" if found is not None
                       else f"{title} (influence, as the imported matrix gives it)")
        if side:
            with column:
                ui.gallery(ds, [p["test_id"] for p in side], [
                    f"#{p['test_id']} · {ds.classes[labels[n_train + p['test_id']]]} · {p['influence']:+.2f}"
                    for p in side], split="test")
    table = pd.DataFrame([{
        "direction": p["direction"], "rank": p["rank"], "train id": i, "test id": p["test_id"],
        "test label": ds.classes[labels[n_train + p["test_id"]]],
        "predicted": ds.classes[int(smap.pred[n_train + p["test_id"]])],
        "influence": p["influence"], "right with it": p.get("right_with"), "right without it": p.get("right_without")}
        for p in pairs])
    st.dataframe(table, hide_index=True, column_config={
        "predicted": st.column_config.TextColumn(help="by this model"),
        "influence": st.column_config.NumberColumn(format="%+.3f"),
        "right with it": st.column_config.NumberColumn(format="percent", help="share of the subset models trained "
                                                       "with this training sample that get the test sample right"),
        "right without it": st.column_config.NumberColumn(format="percent")})
    st.download_button("Download as CSV", table.to_csv(index=False), f"influence-{exact_rec['id']}-train{i}.csv",
                       "text/csv", key="influence_csv")


def selection_panel(sel: np.ndarray, n_test: int) -> None:
    """A group of samples: who they are, how memorized, how entangled, what they look like."""
    st.subheader(f"{len(sel)} samples selected")
    if n_test:
        st.caption(f"{n_test} test samples in the selection are left out: only training samples can be forgotten.")
    score = colouring.values[:n_train] if colouring.categories is None else None
    c1, c2, c3 = st.columns(3)
    c1.metric("classes", len(np.unique(labels[sel])))
    if score is not None and np.isfinite(score[sel]).any():
        c2.metric(f"mean {colouring.name}", f"{np.nanmean(score[sel]):.3f}",
                  delta=f"{np.nanmean(score[sel]) - np.nanmean(score):+.3f} vs all samples", delta_color="off")
    if len(sel) < n_train:
        es = entanglement(ws_path, chosen["id"], sel.astype(np.int64).tobytes())
        baseline = random_entanglement(ws_path, chosen["id"], n_train, len(sel))
        c3.metric("entanglement (ES)", f"{es:,.1f}",
                  help="RUM's entanglement score: spread within the selection and within the rest, over the "
                       "distance between their centres. Higher = more mixed with the rest = harder to unlearn. "
                       f"A random set of this size scores {baseline:,.0f}: it sits right on top of the rest.")
    left, right = st.columns(2)
    # A table with bars, not a chart: a Plotly chart drawn again after every lasso took ~0.1 s of
    # the browser's 0.5 s; this shows the same counts, sorts, and downloads as CSV.
    classes = selection.class_table(labels[sel], labels[:n_train], ds.classes)
    left.dataframe(pd.DataFrame(classes), hide_index=True, height=min(36 + 35 * len(classes), 400), column_config={
        "selected": st.column_config.ProgressColumn(min_value=0, max_value=max(r["selected"] for r in classes),
                                                    format="%d", help="samples of the selection in this class"),
        "a random pick": st.column_config.NumberColumn(format="%.1f", help="on average, in a random set of "
                                                       "training samples of the same size"),
        "× a random pick": st.column_config.NumberColumn(format="%.2f×", help="over 1: the class is "
                                                         "over-represented in the selection")})
    summary = selection.score_summary(sel, available)
    if summary:
        right.dataframe(pd.DataFrame(summary), hide_index=True,
                        column_config={c: st.column_config.NumberColumn(format="%.3f")
                                       for c in ("mean (selected)", "mean (all)", "median (selected)")}
                        | {"in top 10%": st.column_config.NumberColumn(format="percent")})
    order = sel if score is None else sel[np.argsort(-np.nan_to_num(score[sel], nan=-np.inf), kind="stable")]
    count = min(48, len(order))
    st.caption(f"{count} of {len(sel)} selected samples" + ("" if score is None else ", most memorized first"))
    ui.gallery(ds, order[:count], [ui.caption_for(i, ds, None if score is None else score[i]) for i in order[:count]])
    with st.form("save_forget"):
        name = st.text_input("Name", f"selection · {len(sel)} samples")
        if st.form_submit_button("Save as forget set", type="primary"):
            save(lambda: forget_sets.create(ws, rec, "selection", name=name, ids=sel.tolist(),
                                            features=smap.train_features))


def save(build) -> None:
    """Make a forget set; on success rerun the whole page, so the list below shows it."""
    try:
        fs = build()
    except UserError as err:
        st.error(str(err))
    else:
        st.session_state["explore_saved"] = fs
        st.rerun(scope="app")


def saved_message() -> None:
    fs = st.session_state.pop("explore_saved", None)
    if fs is not None:
        st.success(f"Saved forget set “{fs['name']}” ({fs['size']} samples, entanglement {fs['es']:.1f}).")
        st.page_link("views/unlearn.py", label="Unlearn it", icon=":material/arrow_forward:")


@st.fragment(key="selection")
def selection_shown() -> None:
    """What is selected on the map. A lasso or click reruns only this (remember_selection): the
    map stays as drawn, and nothing below is recomputed."""
    saved_message()
    stored = st.session_state.get("explore_selection") or {}
    picked = [i for i in stored.get("ids", []) if 0 <= i < len(labels)] if stored.get("model") == rec["id"] else []
    if len(picked) == 1:
        sample_panel(picked[0])
        picked_train, _ = selection.training_only(picked, n_train)
        if len(picked_train):
            with st.form("save_one"):
                name = st.text_input("Name", f"sample #{picked[0]}")
                if st.form_submit_button("Save this sample as a forget set"):
                    save(lambda: forget_sets.create(ws, rec, "selection", name=name, ids=picked_train.tolist(),
                                                    features=smap.train_features))
    elif picked:
        train_sel, n_test = selection.training_only(picked, n_train)
        if len(train_sel):
            selection_panel(train_sel, n_test)
        else:
            st.info("Only test samples are selected: select training samples to build a forget set.")
    else:
        # Streamlit turns point clicks off while the drag mode is lasso or box (its PlotlyChart sets
        # clickmode "event"), so a click selects nothing here: one sample is opened by a lasso.
        st.info("Nothing selected yet: drag a lasso or a box on the map; lasso a single point to open that "
                "sample.")


# theme=None: the map carries its own look and no template, so Streamlit's re-render right after
# the first draw, and after each lasso, does not make plotly draw every point again (plots.sample_map).
st.plotly_chart(figure, key=chart_key, on_select=remember_selection, selection_mode=("points", "box", "lasso"),
                theme=None, config={"scrollZoom": True, "displaylogo": False})
selection_shown()

# -- forget sets by rule, and the list ------------------------------------------------------------
st.divider()
st.subheader("Forget sets")
by_rule = st.expander("Build a forget set by rule", key="explore_by_rule", on_change="rerun")
if by_rule.open:  # drawn only when opened
    with by_rule, st.form("by_rule"):
        c1, c2, c3 = st.columns(3)
        strategy = c1.selectbox("Strategy", ["random", "class", *choice.BY_SCORE],
                                help="low / mid / high: the N least memorized, the N closest to the middle, the N "
                                     "most memorized by the score; mix: a third of each (RUM's construction).")
        size = c2.number_input("Size", 1, n_train - 1, min(75, n_train - 1),
                               help="For class: leave at the class size or lower to take a random part.")
        seed_fs = c3.number_input("Seed", 0, 2**31 - 1, 0, key="fs_seed")
        c1, c2 = st.columns(2)
        classes = c1.multiselect("Classes", list(range(ds.num_classes)), format_func=lambda c: ds.classes[c],
                                 help="class: the classes to forget; other strategies: draw only from these.")
        by = c2.selectbox("Score (low / mid / high / mix)", list(available) or [None],
                          format_func=lambda n: "no score yet" if n is None else f"{scores.oriented_name(n)} · {scores.label(n)}")
        name = st.text_input("Name (optional)")
        if st.form_submit_button("Create forget set"):
            class_size = int(np.isin(labels[:n_train], classes).sum()) if classes else 0
            save(lambda: forget_sets.create(
                ws, rec, strategy, name=name or None, seed=int(seed_fs), classes=classes or None,
                size=None if strategy == "class" and size >= class_size else int(size),
                score=(by, available[by]) if strategy in choice.BY_SCORE and by else None,
                features=smap.train_features))

mine = ws.find("forget_set", model_id=rec["id"])[::-1]  # read again: a form above may just have added one
if mine:
    exact = available.get("exact")
    table = pd.DataFrame([{
        "name": f["name"], "id": f["id"], "made": forget_sets.describe(f), "size": f["size"],
        "classes": " ".join(f"{ds.classes[int(c)]}:{n}" for c, n in f["class_counts"].items()),
        "mean exact memorization": float(np.nanmean(exact[f["ids"]])) if exact is not None else None,
        "ES": f["es"]} for f in mine])
    st.dataframe(table, hide_index=True, column_config={
        "classes": st.column_config.TextColumn(help="class:count"),
        "mean exact memorization": st.column_config.NumberColumn(format="%.3f"),
        "ES": st.column_config.NumberColumn(format="%.1f", help="entanglement: higher = harder to unlearn")})
else:
    st.caption("No forget set for this model yet.")
