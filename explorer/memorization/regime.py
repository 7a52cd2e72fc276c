"""Whether a model is in the memorization regime: memorization is about models that fit their
training set (Feldman & Zhang's reach ~100%, mislabeled samples included). A model that fits
less has its scores dominated by what it failed to learn: the flipped labels it never fitted
score ≈ 0 under exact memorization and high under the loss-based proxies."""

from __future__ import annotations

FITS = 0.99  # training accuracy from which a model counts as fitting its training set


def fits(model_rec: dict) -> bool | None:
    """Whether the model fits its training set; None when the record does not say."""
    acc = model_rec.get("train_acc")
    return None if acc is None else acc >= FITS


def warning(model_rec: dict) -> str | None:
    """One line for every page that shows the model's memorization scores, or None."""
    if fits(model_rec) is not False:
        return None
    flipped = model_rec.get("flipped_fit")
    of_flipped = f" and {flipped:.0%} of its flipped labels" if flipped is not None else ""
    return (f"This model fits {model_rec['train_acc']:.1%} of its training set{of_flipped}, under {FITS:.0%}: "
            "its memorization scores then mostly say what it failed to learn. Train it longer, or with the "
            "default recipe for its dataset, which reaches the memorization regime.")


def augmentation_note(model_rec: dict) -> str | None:
    """One line for every page that shows the memorization of a model trained with augmentation
    (flips and shifts), or None: what its scores then mean."""
    if not (model_rec.get("recipe") or {}).get("augment"):
        return None
    return ("This model trained with augmentation (random flips and shifts), and so do its subset models: a sample "
            "counts as memorized when its shifted views are, and a held-out sample's flipped twin may be learned "
            "from others; holdout retraining is weakened by it (Zhao & Triantafillou 2024).")
