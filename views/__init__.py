"""The app's screen: one Streamlit page per file, run by app.py's navigation, and `ui`, the pieces
they share. The only code that imports streamlit."""
