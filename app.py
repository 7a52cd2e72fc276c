"""Streamlit entry point: navigation over views/ and the sidebar every page shares.

The pages live in views/, not pages/: Streamlit treats a pages/ folder beside the entry point as an
old-style multipage app until st.navigation has run once, so a bookmarked page opened on a fresh
server would run without this file (no navigation, no sidebar)."""

import streamlit as st

from views import ui

st.set_page_config(page_title="Unlearning Explorer", page_icon="🧠", layout="wide")

PAGES = [
    st.Page("views/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("views/models.py", title="Models", icon=":material/model_training:"),
    st.Page("views/memorization.py", title="Memorization", icon=":material/psychology:"),
    st.Page("views/explore.py", title="Explore", icon=":material/scatter_plot:"),
    st.Page("views/unlearn.py", title="Unlearn", icon=":material/auto_delete:"),
    st.Page("views/compare.py", title="Compare", icon=":material/compare_arrows:"),
    st.Page("views/jobs.py", title="Jobs", icon=":material/pending_actions:"),
]

page = st.navigation(PAGES)
ui.sidebar(ui.workspace(), page.title, light=page.title == "Home")
try:
    page.run()
finally:  # after the first page is drawn, so its script does not share the CPU with the imports
    ui.warm_up()
