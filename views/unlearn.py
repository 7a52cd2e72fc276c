import json

import pandas as pd
import streamlit as st

from explorer import unlearning, ui

ws = ui.workspace()
st.title("Unlearn")
st.caption("Pick a model and a forget set, then a method. The first run on a forget set also retrains the "
           "oracle (the same model trained without the forget set) so every result can be judged against it.")
ui.last_job_message()

rec = ui.pick_model(ws, "unlearn_pick")
if rec is None:
    st.stop()
sets = [f for f in ws.find("forget_set") if f["dataset_id"] == rec["dataset_id"]][::-1]
if not sets:
    st.info("No forget set for this model's dataset yet: select samples on the **Explore** page.")
    st.stop()

fs = st.selectbox("Forget set", sets, format_func=lambda f: f"{f['name']} · {f['size']} samples · {f['id']}")
c1, c2, c3 = st.columns(3)
c1.metric("samples", fs["size"])
c2.metric("classes", len(fs["classes"]))
c3.metric("entanglement (ES)", f"{fs['es']:.1f}", help="How mixed the forget set is with the rest in the model's "
          "feature space (RUM). Higher = harder to unlearn.")

name = st.selectbox("Method", list(unlearning.REGISTRY))
method = unlearning.REGISTRY[name]
st.caption(method.summary)
with st.form("unlearn"):
    c1, c2, c3 = st.columns(3)
    epochs = c1.number_input("Epochs", 1, 200, int(method.defaults["epochs"]))
    lr = c2.number_input("Learning rate", 1e-6, 1.0, float(method.defaults["lr"]), format="%.4f")
    batch = c3.number_input("Batch size", 1, 4096, int(method.defaults["batch_size"]))
    if st.form_submit_button("Run", type="primary"):
        params = json.dumps({"epochs": epochs, "lr": lr, "batch_size": batch})
        ui.launch(ws, ["unlearn", rec["id"], "--forget", fs["id"], "--method", name, "--params", params],
                  f"{name} on {fs['name']}", "unlearn_job")
ui.job_status(ws, "unlearn_job")

done = [r for r in ws.find("run", model_id=rec["id"], forget_set_id=fs["id"])][::-1]
if done:
    st.subheader("Runs on this forget set")
    st.dataframe(pd.DataFrame([{"method": r["method"], "epochs": r["params"].get("epochs"), "lr": r["params"].get("lr"),
                                "forget acc": r["metrics"]["acc_forget"], "oracle forget acc": r["oracle"]["acc_forget"],
                                "ToW": r["metrics"]["tow"]} for r in done]),
                 hide_index=True, column_config={k: st.column_config.NumberColumn(format="%.3f")
                                                 for k in ("forget acc", "oracle forget acc", "ToW")})
    st.page_link("views/compare.py", label="Compare them in detail", icon=":material/arrow_forward:")
