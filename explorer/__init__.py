"""Memorization-based machine unlearning explorer."""

__version__ = "0.1.0"
