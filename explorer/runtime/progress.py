"""Progress reports: every long computation takes a `progress(fraction, message)` callback, which
the CLI draws as a bar and a job writes into its row (where a requested cancel takes effect)."""

from __future__ import annotations

from typing import Callable

Progress = Callable[[float, str], None]


def no_progress(fraction: float, message: str) -> None:
    """The callback of a caller that does not want reports."""


def stage(progress: Progress, lo: float, hi: float, label: str | None = None) -> Progress:
    """Map a sub-task's 0–1 progress onto [lo, hi] of the whole, its messages prefixed by `label`."""
    if label is None:
        return lambda f, msg: progress(lo + (hi - lo) * f, msg)
    return lambda f, msg: progress(lo + (hi - lo) * f, f"{label}: {msg}")


def clock(seconds: float) -> str:
    """A duration as `1h 05m` or `4m 09s`, for ETAs."""
    seconds = int(seconds)
    return f"{seconds // 3600}h {seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m {seconds % 60:02d}s"
