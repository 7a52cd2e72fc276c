import streamlit as st

from explorer import commands
from views import ui

ws = ui.workspace()
GLOSSARY = {
    "memorization": "how much a model's prediction on a training sample depends on that sample being in its training "
                    "set: accuracy when trained with it minus accuracy when trained without it (Feldman & Zhang 2020).",
    "proxy": "a cheap score that ranks samples like memorization does: confidence during training, loss curvature, "
             "holdout retraining, …",
    "forget set (S)": "the training samples to unlearn; the retain set (R) is the rest of the training set, the test "
                      "set (T) data never trained on.",
    "oracle": "the model retrained from scratch without the forget set: what perfect unlearning would give.",
    "ToW": "tug of war: (1 − |forget-accuracy gap|) × (1 − |retain gap|) × (1 − |test gap|) to the oracle; 1 = "
           "indistinguishable from it.",
    "MIA": "membership-inference attack: tries to tell samples the model was trained on from samples it never saw.",
    "entanglement (ES)": "how mixed the forget set is with the retain set in the model's feature space; higher = "
                         "harder to unlearn (RUM).",
    "RUM": "refined unlearning meta-algorithm: split the forget set by memorization and unlearn the parts in "
           "sequence, each with the method that suits it (Zhao et al. 2024).",
    "mnemonic codes": "random per-class inputs mixed into training so a class can later be forgotten in one shot, "
                      "without data (Yamashita et al. 2024).",
}
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
demo_runs = [r for r in ws.find("run") if r.get("demo")]  # the demo marks its runs
demo_done = bool(demo_runs)
with st.container(border=True):
    st.markdown(f"**The demo** — the whole story in about a minute on a laptop CPU{ui.measured_demo()}: "
                "digits with 5% flipped labels, a "
                "model, exact memorization (128 subset models) and every proxy, a UMAP map, a forget set mixing low, "
                "mid and high memorization for RUM, fine-tuning, NegGrad+ and SalUn against the oracle, and one "
                "whole class forgotten in one shot (mnemonic codes) by the paper's own MNIST model. Running it again "
                "reuses what exists.")
    if st.button("Open the demo" if demo_done else "Run the demo", type="primary", key="demo"):
        ui.launch(ws, commands.demo(), "demo", "home_job")
    ui.job_status(ws, "home_job")
if demo_done:
    if demo_runs:  # the headline; and the browser loads its table and chart code while this is read
        from explorer.present import comparison, plots

        rows = [r for r in comparison.rows(ws, demo_runs) if not r["run"].startswith("(")]
        st.markdown("**What the demo found**: each method's tug of war with the oracle (ToW, 1 = as if retrained "
                    "without the forget set) and its seconds; on the chart, up and to the left is better.")
        left, right = st.columns([2, 3])
        left.dataframe([{"method": r["method"], "forget set": r["forget set"], "ToW": r["tow"], "seconds": r["seconds"]}
                        for r in rows], hide_index=True,
                       column_config={"ToW": st.column_config.NumberColumn(format="%.3f"),
                                      "seconds": st.column_config.NumberColumn(format="%.1f")})
        ui.chart(right, plots.tow_vs_seconds(rows), key="demo_tow")
    st.page_link("views/explore.py", label="Explore the demo's map: lasso the dark red points", icon=":material/arrow_forward:")
    st.page_link("views/compare.py", label="Compare the demo's methods against the oracle", icon=":material/arrow_forward:")

if not trained:
    st.subheader("Or start from scratch")
    st.write("Train a small CNN on the digits (70 epochs, about a minute on a laptop CPU, to fit its flipped labels).")
    if st.button("Train a digits CNN"):
        ui.launch(ws, commands.train("digits", "cnn", {}), "train digits cnn", "home_job")
elif counts["scores"] == 0:
    st.page_link("views/memorization.py", label="Next: see what your model memorized", icon=":material/arrow_forward:")
elif counts["forget_set"] == 0:
    st.page_link("views/explore.py", label="Next: pick a forget set on the map", icon=":material/arrow_forward:")
elif counts["run"] == 0:
    st.page_link("views/unlearn.py", label="Next: unlearn your forget set", icon=":material/arrow_forward:")

with st.expander("Glossary"):
    st.markdown("\n".join(f"- **{term}** — {text}" for term, text in GLOSSARY.items()))
