import streamlit as st

from explorer import ui

ws = ui.workspace()
st.title("Memorization-based unlearning explorer")
st.markdown(
    """
A model **memorizes** a training sample when it gets that sample right only because the sample
was in its training set: drop the sample, retrain, and the model gets it wrong. Atypical and
mislabeled samples are the ones memorized most.

**Unlearning** removes the influence of a *forget set* from a trained model without retraining
from scratch. How hard that is depends on how strongly the forget set was memorized, which is
what this explorer lets you see.
"""
)

STEPS = [
    ("views/models.py", "Models", "train a classifier (the embedded handwritten digits train in seconds), recording "
                                  "how each sample was learned, epoch by epoch"),
    ("views/memorization.py", "Memorization", "score every training sample: how memorized is it, exactly and by "
                                              "cheap proxies?"),
    ("views/explore.py", "Explore", "map the samples, colour them by a score, and lasso a forget set"),
    ("views/unlearn.py", "Unlearn", "run an unlearning method on the forget set"),
    ("views/compare.py", "Compare", "check the unlearned model against the model retrained without the forget set"),
]
for i, (path, title, what) in enumerate(STEPS, 1):
    left, right = st.columns([1, 5])
    with left:
        st.page_link(path, label=f"{i}. {title}")
    right.write(what)

models = ws.find("model")
trained = [m for m in models if m.get("source") != "oracle"]
counts = ws.counts()
cols = st.columns(5)
cols[0].metric("models", len(trained), help=f"plus {len(models) - len(trained)} oracles retrained for runs")
for col, (label, kind) in zip(cols[1:], [("score sets", "scores"), ("forget sets", "forget_set"), ("runs", "run"),
                                         ("jobs", "job")]):
    col.metric(label, counts[kind])

ui.last_job_message()
if not trained:
    st.subheader("Start here")
    st.write("Train a small CNN on the digits (30 epochs, about ten seconds on a laptop CPU).")
    if st.button("Train a digits CNN", type="primary"):
        ui.launch(ws, ["train", "--dataset", "digits", "--arch", "cnn"], "train digits cnn", "home_job")
elif counts["scores"] == 0:
    st.page_link("views/memorization.py", label="Next: see what your model memorized", icon=":material/arrow_forward:")
elif counts["forget_set"] == 0:
    st.page_link("views/explore.py", label="Next: pick a forget set on the map", icon=":material/arrow_forward:")
elif counts["run"] == 0:
    st.page_link("views/unlearn.py", label="Next: unlearn your forget set", icon=":material/arrow_forward:")
ui.job_status(ws, "home_job")
