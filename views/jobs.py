import pandas as pd
import streamlit as st

from explorer import jobs, ui

ws = ui.workspace()
st.title("Jobs")
st.caption("Everything slow runs as a background process; it keeps going if you leave this page.")


@st.fragment(run_every=2.0)
def job_table():
    rows = jobs.list_jobs(ws)
    if not rows:
        st.info("No jobs yet. Training, memorization and unlearning runs appear here while they work.")
        return
    table = pd.DataFrame(rows)[["id", "title", "state", "progress", "message", "result_id"]]
    st.dataframe(
        table, hide_index=True,
        column_config={"progress": st.column_config.ProgressColumn("progress", min_value=0, max_value=1)},
    )
    for job in rows[:20]:
        with st.expander(f"{job['id']} · {job['title']} · {job['state']}"):
            st.code(jobs.log_tail(job, 30) or "(no output yet)", language=None)
            if job["state"] in jobs.ACTIVE and st.button("Cancel", key=f"cancel-{job['id']}"):
                jobs.cancel(ws, job["id"])
                st.rerun(scope="fragment")


job_table()
