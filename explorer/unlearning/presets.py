"""Named sets of method settings. `paper` are the published defaults (tuned for 45,000 CIFAR
images at batch 256; they barely move a digits model); `digits` were calibrated for the
embedded dataset by `unlearn --sweep` (an MLP with 5% flipped labels, a 75-sample low/mid/high
forget set): every method at its best ToW there, the grid re-centred until the best stopped
moving (neggrad's published lr 1e-4 does nothing on digits; it plateaus near ToW 0.67 from lr
0.015). For another forget set, `unlearn --sweep` tunes them again. `digits` is used for the
embedded dataset unless the user names another preset."""

from __future__ import annotations

PRESETS: dict[str, dict[str, dict]] = {
    "paper": {},  # each method's own defaults
    "digits": {
        "finetune": {"epochs": 5, "lr": 0.25},
        "neggrad": {"epochs": 5, "lr": 0.015},
        "neggrad_plus": {"epochs": 5, "lr": 0.25, "alpha": 0.99},
        "l1_sparse": {"epochs": 10, "lr": 0.25, "alpha": 1e-4},
        "random_label": {"epochs": 5, "lr": 0.1},
        "salun": {"epochs": 5, "lr": 0.1, "gamma": 0.5},
        "scrub": {"epochs": 2, "lr": 0.125, "alpha": 0.001},
    },
}


def default_for(dataset: str) -> str:
    return dataset if dataset in PRESETS else "paper"


def settings(preset: str, method: str) -> dict:
    """The preset's parameters for a method (empty: the method's defaults)."""
    return dict(PRESETS[preset].get(method, {}))
