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
what this explorer lets you see:

1. **Models** — train a classifier (the embedded handwritten digits train in seconds on a laptop),
   recording how each sample was learned, epoch by epoch.
2. **Memorization** — score every training sample: how memorized is it?
3. **Explore** — map the samples, colour them by a score, and lasso a forget set.
4. **Unlearn** — run an unlearning method on the forget set.
5. **Compare** — check the unlearned model against the model retrained without the forget set.
"""
)

counts = ws.counts()
cols = st.columns(5)
for col, (label, kind) in zip(cols, [("models", "model"), ("score sets", "scores"), ("forget sets", "forget_set"),
                                     ("runs", "run"), ("jobs", "job")]):
    col.metric(label, counts[kind])

ui.last_job_message()
if counts["model"] == 0:
    st.subheader("Start here")
    st.write("Train a small CNN on the digits (30 epochs, about ten seconds on a laptop CPU).")
    if st.button("Train a digits CNN", type="primary"):
        ui.launch(ws, ["train", "--dataset", "digits", "--arch", "cnn"], "train digits cnn", "home_job")
ui.job_status(ws, "home_job")
