import numpy as np
import streamlit as st

from explorer import forget_sets, metrics, plots, scores, ui
from explorer.errors import UserError

ws = ui.workspace()
st.title("Explore")
st.caption("Each point is a training sample, placed by the model's penultimate features (PCA; UMAP is "
           "coming). Draw a lasso or a box around points to select them, then save them as a forget set.")

rec = ui.pick_model(ws, "explore_pick")
if rec is None:
    st.stop()

ws_path = str(ws.path.resolve())
ds = ui.dataset(ws, rec)
labels = ds.y_train.numpy()
ids = np.arange(ds.n_train)
available = ui.available_scores(ws, rec)
colour_by = st.selectbox("Colour by", ["label", *available],
                         index=1 + list(available).index("exact") if "exact" in available else 0,
                         format_func=lambda n: n if n == "label" else f"{n} · {scores.label(n)}")
colour = labels.astype(float) if colour_by == "label" else available[colour_by]
xy = ui.sample_map(ws_path, rec["id"], "pca")

event = st.plotly_chart(plots.sample_map(xy, colour, ids, labels, colour_by), key=f"map-{rec['id']}",
                        on_select="rerun", selection_mode=("lasso", "box"))
selected = plots.selected_ids(event.get("selection") if event else None)

if not selected:
    st.info("Nothing selected yet: drag a lasso or a box on the map.")
    st.stop()

st.subheader(f"{len(selected)} samples selected")
sel = np.asarray(selected)
c1, c2, c3 = st.columns(3)
c1.metric("classes", len(np.unique(labels[sel])))
if colour_by != "label":
    c2.metric(f"mean {colour_by}", f"{np.nanmean(colour[sel]):.3f}")
if len(sel) < ds.n_train:
    es = metrics.entanglement(ui.features(ws_path, rec["id"]), sel)
    c3.metric("entanglement (ES)", f"{es:.2f}", help="RUM's entanglement score: higher = harder to unlearn.")
ui.gallery(ds.thumbs_train[sel[:40]], [f"#{i} y={ds.classes[labels[i]]}" for i in sel[:40]])

with st.form("save_forget"):
    name = st.text_input("Name", f"selection · {len(sel)} samples")
    if st.form_submit_button("Save as forget set", type="primary"):
        try:
            fs = forget_sets.create(ws, rec, "selection", name=name, ids=selected)
        except UserError as err:
            st.error(str(err))
        else:
            st.success(f"Saved forget set {fs['id']} ({fs['size']} samples, entanglement {fs['es']:.2f}). "
                       "Unlearn it on the **Unlearn** page.")
