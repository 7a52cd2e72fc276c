import numpy as np
import streamlit as st

from explorer import plots, ui

ws = ui.workspace()
st.title("Memorization")
st.caption(
    "How strongly did the model memorize each training sample? Cheap proxies come from the "
    "model's own training dynamics; the exact Feldman–Zhang estimate (many models on random "
    "70% subsets) and the other proxies are coming to this page next."
)

rec = ui.pick_model(ws, "mem_pick", dynamics_only=True)
if rec is None:
    st.stop()

ds = ui.dataset(ws, rec)
conf = ui.proxies(str(ws.path.resolve()), rec["id"])["confidence"]
labels = ds.y_train.numpy()
flipped = set(ds.flipped.tolist())

st.subheader("Mean true-label confidence during training")
st.caption("Averaged over epochs. Low confidence = learned late or never = likely memorized.")
st.plotly_chart(plots.histogram(conf, labels, xlabel="mean confidence", class_names=ds.classes), key="conf_hist")

count = st.slider("Images", 10, 60, 20, 10)
order = np.argsort(conf)
st.subheader("Least confident training samples")
ui.gallery(ds.thumbs_train[order[:count]],
           [f"#{i} y={ds.classes[labels[i]]} {conf[i]:.2f}" + (" ⚑" if i in flipped else "") for i in order[:count]])
if flipped:
    st.caption("⚑ = label flipped by label noise.")
st.subheader("Most confident training samples")
ui.gallery(ds.thumbs_train[order[::-1][:count]],
           [f"#{i} y={ds.classes[labels[i]]} {conf[i]:.2f}" for i in order[::-1][:count]])
