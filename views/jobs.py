import time

import pandas as pd
import streamlit as st

from explorer.store import jobs
from views import ui

ws = ui.workspace()
st.title("Jobs")
st.caption("Everything slow runs as a background process: it keeps going if you leave this page, a cancelled job "
           "writes nothing half-done, and an interrupted exact-memorization run resumes where it stopped. "
           f"At most {jobs.max_jobs(ws)} run at once here, each on its share of the cores; the others wait in line "
           "and start as one ends (`python -m explorer jobs --max-jobs N` sets it).")


def _duration(job) -> str:
    if not job["started"]:
        return ""
    seconds = int((job["finished"] or time.time()) - job["started"])
    return f"{seconds // 60}m {seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def job_table(polling: bool) -> None:
    rows = jobs.list_jobs(ws)  # refreshed: a job whose process died is running no longer
    if polling and not any(j["state"] in jobs.ACTIVE for j in rows):
        st.rerun(scope="app")  # the last running job has ended: draw once more, then stop polling
    if not rows:
        st.info("No jobs yet. Training, memorization and unlearning runs appear here while they work.")
        return
    table = pd.DataFrame([{
        "job": j["title"], "state": j["state"], "progress": j["progress"], "message": j["message"],
        "started": pd.to_datetime(j["started"] or j["created"], unit="s", utc=True).tz_convert(None),
        "duration": _duration(j), "id": j["id"]} for j in rows])
    st.dataframe(table, hide_index=True, column_config={
        "progress": st.column_config.ProgressColumn("progress", min_value=0, max_value=1),
        "started": st.column_config.DatetimeColumn("started (UTC)", format="YYYY-MM-DD HH:mm:ss"),
    })
    for job in rows[:20]:
        with st.expander(f"{job['title']} · {job['state']} · {job['id']}"):
            st.code(jobs.log_tail(job, 200) or "(no output yet)", language=None, height=240)
            if job["state"] in jobs.ACTIVE and st.button("Cancel", key=f"cancel-{job['id']}"):
                jobs.cancel(ws, job["id"])
                st.rerun(scope="fragment")


# Polls only while a job runs: each poll sends the table and the logs of the last 20 jobs again.
# (A job whose process died still counts here; the fragment's listing finds it and stops polling.)
polling = bool(jobs.list_jobs(ws, active_only=True))
st.fragment(job_table, run_every=ui.SLOW_POLL_SECONDS if polling else None)(polling)
