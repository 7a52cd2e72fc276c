"""Named sets of method settings. `paper` are the published defaults (tuned for 45,000 CIFAR
images at batch 256; they barely move a digits model); `digits` were calibrated for the
embedded dataset by `unlearn --sweep` (an MLP with 5% flipped labels, a 75-sample low/mid/high
forget set: finetune, neggrad_plus and salun at their best ToW). The other methods' digits values
are starting points not yet swept (neggrad's published lr 1e-4 does nothing on digits); run
`unlearn --sweep` to tune them for a forget set. `digits` is used for the embedded dataset
unless the user names another preset."""

from __future__ import annotations

PRESETS: dict[str, dict[str, dict]] = {
    "paper": {},  # each method's own defaults
    "digits": {
        "finetune": {"epochs": 5, "lr": 0.25},
        "neggrad": {"epochs": 5, "lr": 0.003},
        "neggrad_plus": {"epochs": 5, "lr": 0.25, "alpha": 0.99},
        "l1_sparse": {"epochs": 10, "lr": 0.05, "alpha": 5e-4},
        "random_label": {"epochs": 5, "lr": 0.1},
        "salun": {"epochs": 5, "lr": 0.1, "gamma": 0.5},
        "scrub": {"epochs": 5, "lr": 0.025, "alpha": 0.01},
    },
}


def default_for(dataset: str) -> str:
    return dataset if dataset in PRESETS else "paper"


def settings(preset: str, method: str) -> dict:
    """The preset's parameters for a method (empty: the method's defaults)."""
    return dict(PRESETS[preset].get(method, {}))
