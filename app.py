"""Streamlit entry point: navigation over pages/ and the sidebar every page shares."""

import streamlit as st

from explorer import ui

st.set_page_config(page_title="Unlearning Explorer", page_icon=":material/psychology:", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/models.py", title="Models", icon=":material/model_training:"),
    st.Page("pages/memorization.py", title="Memorization", icon=":material/psychology:"),
    st.Page("pages/explore.py", title="Explore", icon=":material/scatter_plot:"),
    st.Page("pages/unlearn.py", title="Unlearn", icon=":material/auto_delete:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare_arrows:"),
    st.Page("pages/jobs.py", title="Jobs", icon=":material/pending_actions:"),
]

page = st.navigation(PAGES)
ui.sidebar(ui.workspace())
page.run()
