"""Presenting results: Plotly figures, the comparison tables, what the Explore page says about a
selection, the self-contained HTML report. Reads records (through explorer.store) but never
computes a result or publishes one; the only code that imports plotly."""
