"""Benchmarks: `python -m bench [NAME]` prints `name: value` lines, ratios measured in one run."""
