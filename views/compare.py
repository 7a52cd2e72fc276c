import pandas as pd
import streamlit as st

from explorer import plots, ui

ws = ui.workspace()
st.title("Compare")
st.caption("Each run against the original model and the oracle retrained without the forget set. A good "
           "unlearning run behaves like the oracle: forget accuracy falls to the oracle's while retain and test "
           "accuracy hold.")

runs = ws.find("run")[::-1]
if not runs:
    st.info("No runs yet: unlearn a forget set on the **Unlearn** page.")
    st.stop()

names = {r["id"]: r.get("name", r["id"]) for r in [*ws.find("model"), *ws.find("forget_set")]}
METRICS = {
    "acc_retain": ("retain acc", "Accuracy on the training samples kept. Should stay close to the oracle's."),
    "acc_forget": ("forget acc", "Accuracy on the forget set, against its training labels. Should match the oracle's "
                                 "(with flipped labels the oracle, never having seen them, gets them wrong)."),
    "acc_test": ("test acc", "Accuracy on held-out data. Should stay close to the oracle's."),
    "mia_efficacy": ("MIA efficacy", "Share of the forget set a membership-inference attack calls 'not trained on'. "
                                     "Should match the oracle's."),
    "tow": ("ToW", "Tug of war: product of (1 − |gap to oracle|) on forget, retain and test accuracy. 1 = identical "
                   "to the oracle."),
    "tow_mia": ("ToW-MIA", "ToW with the forget-accuracy gap replaced by the MIA-efficacy gap."),
}
table = pd.DataFrame([{"run": r["id"], "method": r["method"], "model": names.get(r["model_id"], r["model_id"]),
                       "forget set": names.get(r["forget_set_id"], r["forget_set_id"]),
                       **{k: r["metrics"][k] for k in METRICS}, "seconds": r["metrics"]["seconds"],
                       "speedup": r["metrics"]["speedup"]} for r in runs])
config = {k: st.column_config.NumberColumn(label, help=text, format="%.3f") for k, (label, text) in METRICS.items()}
config["seconds"] = st.column_config.NumberColumn("time", format="%.2f s")
config["speedup"] = st.column_config.NumberColumn("speed-up", format="%.1f×", help="Oracle retraining time / run time.")
st.dataframe(table, hide_index=True, column_config=config)

run = st.selectbox("Run", runs, format_func=lambda r: f"{r['name']} · {r['id']}")
st.plotly_chart(plots.before_after(run["original"], run["metrics"], run["oracle"]), key="before_after")
m = run["metrics"]
if run["oracle"] is None:
    st.info("This run skipped the oracle, so ToW, ToW-MIA and the speed-up were not measured (never guessed).")
else:
    c1, c2, c3 = st.columns(3)
    c1.metric("ToW", f"{m['tow']:.3f}", help=METRICS["tow"][1])
    c2.metric("ToW-MIA", f"{m['tow_mia']:.3f}", help=METRICS["tow_mia"][1])
    c3.metric("speed-up", f"{m['speedup']:.1f}×", help=f"{m['seconds']:.2f} s vs {m['retrain_seconds']:.2f} s to "
              f"retrain, on {run['device']}")
details = run.get("details") or {}
if details.get("steps"):
    st.markdown("**Steps**")
    st.dataframe(pd.DataFrame([{k: v for k, v in step.items() if k != "ids"} for step in details["steps"]]),
                 hide_index=True)
if details.get("grid"):
    st.markdown("**λ grid on the codes** (data-free)")
    st.dataframe(pd.DataFrame(details["grid"]), hide_index=True)
with st.expander("What the metrics mean"):
    st.markdown("\n".join(f"- **{label}** — {text}" for label, text in METRICS.values()))
