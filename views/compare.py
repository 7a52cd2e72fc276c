import pandas as pd
import streamlit as st

from explorer import plots, ui

ws = ui.workspace()
st.title("Compare")
st.caption("Each run against the original model and the oracle retrained without the forget set. A good "
           "unlearning run matches the oracle: forget accuracy drops to the oracle's, retain and test hold.")

runs = ws.find("run")[::-1]
if not runs:
    st.info("No runs yet: unlearn a forget set on the **Unlearn** page.")
    st.stop()

table = pd.DataFrame([{"id": r["id"], "method": r["method"], "model": r["model_id"], "forget set": r["forget_set_id"],
                       **{k: r["metrics"][k] for k in ("acc_retain", "acc_forget", "acc_test", "mia_efficacy", "tow",
                                                        "tow_mia", "seconds", "speedup")}} for r in runs])
st.dataframe(table, hide_index=True)

run = st.selectbox("Run", runs, format_func=lambda r: f"{r['name']} · {r['id']}")
st.plotly_chart(plots.before_after(run["original"], run["metrics"], run["oracle"]), key="before_after")
rows = {"original": run["original"], "unlearned": run["metrics"], "oracle": run["oracle"]}
st.dataframe(pd.DataFrame(rows).T[["acc_retain", "acc_forget", "acc_test", "mia_efficacy"]])
m = run["metrics"]
st.caption(f"ToW {m['tow']:.3f} · ToW-MIA {m['tow_mia']:.3f} · {m['seconds']:.2f} s vs {m['retrain_seconds']:.2f} s "
           f"to retrain ({m['speedup']:.1f}× faster) on {run['device']}")
