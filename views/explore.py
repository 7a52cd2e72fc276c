import numpy as np
import streamlit as st

from explorer import forget_sets, metrics, plots, scores, ui
from explorer.errors import UserError

ws = ui.workspace()
st.title("Explore")
st.caption("Each point is a training sample, placed by the model's penultimate features (first two principal "
           "components; UMAP is coming). Draw a lasso or a box around points to select them, then save them as a "
           "forget set. Click a class in the legend to hide it.")

rec = ui.pick_model(ws, "explore_pick")
if rec is None:
    st.stop()

ws_path = str(ws.path.resolve())
ds = ui.dataset(ws, rec)
labels = ds.y_train.numpy()
ids = np.arange(ds.n_train)
available = ui.available_scores(ws, rec)
c1, c2 = st.columns(2)
colour_by = c1.selectbox("Colour by", ["class", *available],
                         index=1 + list(available).index("exact") if "exact" in available else 0,
                         format_func=lambda n: n if n == "class" else f"{scores.oriented_name(n)} · {scores.label(n)}",
                         help="Scores are oriented so that brighter = more memorized.")
sets = [f for f in ws.find("forget_set") if f["dataset_id"] == rec["dataset_id"]][::-1]
shown_set = c2.selectbox("Outline a forget set", [None, *sets],
                         format_func=lambda f: "none" if f is None else f"{f['name']} · {f['size']} samples")
colour = None if colour_by == "class" else scores.oriented(colour_by, available[colour_by])
xy = ui.sample_map(ws_path, rec["id"], "pca")

figure = plots.sample_map(xy, colour, ids, labels, "class" if colour is None else scores.oriented_name(colour_by),
                          class_names=ds.classes, highlight=np.asarray(shown_set["ids"]) if shown_set else None)
event = st.plotly_chart(figure, key=f"map-{rec['id']}", on_select="rerun", selection_mode=("lasso", "box"))
selected = plots.selected_ids(event.get("selection") if event else None)

if not selected:
    st.info("Nothing selected yet: drag a lasso or a box on the map.")
    st.stop()

sel = np.asarray(selected)
st.subheader(f"{len(sel)} samples selected")
c1, c2, c3 = st.columns(3)
c1.metric("classes", len(np.unique(labels[sel])))
if colour is not None:
    c2.metric(f"mean {scores.oriented_name(colour_by)}", f"{np.nanmean(colour[sel]):.3f}",
              delta=f"{np.nanmean(colour[sel]) - np.nanmean(colour):+.3f} vs all samples", delta_color="off")
if len(sel) < ds.n_train:
    feats = ui.features(ws_path, rec["id"])
    es = metrics.entanglement(feats, sel)
    baseline = metrics.entanglement(feats, np.random.default_rng(0).choice(ds.n_train, len(sel), replace=False))
    c3.metric("entanglement (ES)", f"{es:,.1f}",
              help="RUM's entanglement score: spread within the selection and the rest over the distance between "
                   f"their centres. Higher = more mixed with the rest = harder to unlearn. A random set of this size "
                   f"scores {baseline:,.0f}: it sits right on top of the rest.")

shown = sel if colour is None else sel[np.argsort(-np.nan_to_num(colour[sel], nan=-np.inf), kind="stable")]
count = min(40, len(shown))
st.caption(f"{count} of {len(sel)} selected samples" + ("" if colour is None else ", most memorized first"))
ui.gallery(ds.thumbs_train[shown[:count]],
           [ui.caption_for(i, ds, None if colour is None else colour[i]) for i in shown[:count]])

with st.form("save_forget"):
    name = st.text_input("Name", f"selection · {len(sel)} samples")
    if st.form_submit_button("Save as forget set", type="primary"):
        try:
            fs = forget_sets.create(ws, rec, "selection", name=name, ids=selected,
                                    features=ui.features(ws_path, rec["id"]))
        except UserError as err:
            st.error(str(err))
        else:
            st.success(f"Saved forget set “{fs['name']}” ({fs['size']} samples, entanglement {fs['es']:.1f}).")
            st.page_link("views/unlearn.py", label="Unlearn it", icon=":material/arrow_forward:")
