"""The training recipe: everything that decides how a model is trained from its initial weights.

Each field is declared once, below, with its type, default, range and help (`Knob`): validation,
`as_meta`, the `train` command's options (explorer/cli.py) and the Models page's form
(views/models.py) are all made from these declarations, so a new field is one line here plus
whatever the training loop does with it.

`as_meta()` is what a model record keeps and what run keys are hashed from; a field at its "off"
value is left out, so a model trained without codes, the SD loss, blocks or mixed precision
keeps the record (and the cache keys) it had before the field existed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from ..errors import RecipeError

__all__ = ["KNOBS", "PAPER", "REGIME", "Knob", "Recipe", "RecipeError", "default_for", "default_text", "kind", "knob"]


@dataclass(frozen=True)
class Knob:
    """What the command line, the form and validation know of one recipe field."""

    label: str  # what a form calls it; its message names it too
    help: str
    low: float | None = None  # the least value allowed (inclusive), if any
    high: float | None = None  # the value it must stay below (exclusive), if any
    positive: bool = False  # strictly above 0
    off: object = None  # at this value `as_meta` leaves the field out (records older than the field)
    also_off: tuple[str, ...] = ()  # fields left out with it (the codes' seed without codes)
    form: bool = True  # offered on the Models form (the rest: the command line only)
    default_note: str = ""  # where the default comes from, when `default_for` may change it
    cost: str | None = None  # how it changes a step's cost, keying engine calibrations: "value", or "on" (whether set)


def kind(f) -> str:
    """A recipe field's type as a name, "int", "float" or "bool", however it was annotated."""
    return f.type if isinstance(f.type, str) else f.type.__name__


def default_text(f) -> str:
    """Where a recipe field's default comes from, in words, for the CLI's help and the form."""
    note = f.metadata["knob"].default_note
    return f"{note} {f.default}" if note else f"{f.default}"


def knob(default, label: str, help: str, **how) -> object:
    """A recipe field's declaration: `epochs: int = knob(30, "Epochs", "…", low=1)`."""
    return field(default=default, metadata={"knob": Knob(label, help, **how)})


_FROM_RECIPES = "a paper's recipe for its own model (sigmoid_mlp, fast_cnn), else the memorization regime's for the architecture and dataset (digits, mnist5k), else"


@dataclass
class Recipe:
    epochs: int = knob(30, "Epochs", "Passes over the training set (per block, with blocks).", low=1,
                        default_note=_FROM_RECIPES)
    lr: float = knob(0.05, "Learning rate", "SGD step size.", positive=True, default_note=_FROM_RECIPES)
    momentum: float = knob(0.9, "Momentum", "SGD momentum.", low=0, form=False, default_note=_FROM_RECIPES)
    weight_decay: float = knob(5e-4, "Weight decay", "L2 penalty of SGD.", low=0, default_note=_FROM_RECIPES)
    batch_size: int = knob(64, "Batch size", "Samples per step.", low=1, default_note=_FROM_RECIPES,
                          cost="value")
    seed: int = knob(0, "Seed", "Seeds the initial weights, the batch order and the code swaps.", low=0)
    cosine: bool = knob(False, "Cosine schedule", "Cosine learning-rate schedule.", form=False)
    mnemonic_tmix: float = knob(
        0.0, "Mnemonic codes (t_mix)",
        "Probability of swapping a training sample for its class's random code, so the model can later forget a "
        "class in one shot without data (Yamashita et al.); 0.1 costs well under a point of accuracy, 0.3 is used "
        "for CIFAR-10.", low=0, high=1, off=0.0, also_off=("codes_seed",), default_note=_FROM_RECIPES, cost="on")
    codes_seed: int = knob(0, "Codes seed", "Seed of the mnemonic codes.", low=0, form=False)
    sd_lambda: float = knob(
        0.0, "SD loss λ",
        "Weight of Thudi et al.'s SD loss (CE + λ·mean std of each sample's logits / classes): lowers the "
        "unlearning and verification errors of single-gradient unlearning (sgd_unroll); 0.1 is typical.",
        low=0, off=0.0, cost="on")
    blocks: int = knob(
        0, "Blocks",
        "Train in B ≥ 2 class-stratified blocks, one after another (epochs per block), storing the model after "
        "each, for DeepObliviate (10 is typical); 0 = ordinary training, with dynamics.", low=0, off=0, cost="on")
    amp: bool = knob(
        False, "Mixed precision (bf16)",
        "Forward passes in bfloat16 autocast, losses and weights in float32. For GPUs with bf16 (Ampere or newer); "
        "on most CPUs bf16 is emulated and slower. Exact memorization and unlearning of the model follow it.",
        off=False, cost="value")
    augment: bool = knob(
        False, "Augmentation (flip, translate)",
        "A random horizontal flip and a shift of up to 2 pixels of each training sample in each epoch, as fast "
        "CIFAR training does. It changes what memorization means (a sample is seen only in shifted views), and "
        "every score of such a model says so.", off=False, cost="on", default_note=_FROM_RECIPES)
    label_smoothing: float = knob(
        0.0, "Label smoothing", "Cross-entropy against (1 − ε)·one-hot + ε/classes; fast CIFAR training uses 0.2.",
        low=0, high=1, off=0.0, default_note=_FROM_RECIPES, form=False)

    def __post_init__(self):
        for f in fields(self):
            _check(f.name, kind(f), f.metadata["knob"], getattr(self, f.name))
        if self.blocks == 1:
            raise RecipeError(f"blocks must be 0 (no blocks) or at least 2, got {self.blocks}")

    @classmethod
    def from_meta(cls, meta: dict) -> Recipe:
        """The recipe an `as_meta()` dict (a model record's `recipe`) describes."""
        return cls(**meta)

    def cost_key(self) -> dict:
        """What of the recipe changes the cost of a training step (the fields declaring a `cost`):
        the key, with the architecture and device, under which an engine calibration is kept."""
        return {f.name: getattr(self, f.name) if f.metadata["knob"].cost == "value" else bool(getattr(self, f.name))
                for f in fields(self) if f.metadata["knob"].cost}

    def as_meta(self) -> dict:
        meta = asdict(self)
        for f in fields(self):
            declared = f.metadata["knob"]
            if declared.off is not None and meta.get(f.name) == declared.off:
                for gone in (f.name, *declared.also_off):
                    meta.pop(gone, None)
        return meta


def _check(name: str, kind: str, declared: Knob, value) -> None:
    """One field's value against its declaration; RecipeError in one line."""
    what = name  # the field's name is the option's (--mnemonic-tmix) and the --recipe JSON key
    if kind == "bool":
        if value is not True and value is not False:
            raise RecipeError(f"{what} must be true or false, got {value!r}")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind == "int" and value != int(value)):
        raise RecipeError(f"{what} must be {'a whole number' if kind == 'int' else 'a number'}, got {value!r}")
    if not math.isfinite(value):
        raise RecipeError(f"{what} must be a finite number, got {value}")
    if declared.positive and not value > 0:
        raise RecipeError(f"{what} must be above 0, got {value}")
    if declared.low is not None and value < declared.low:
        raise RecipeError(f"{what} must be at least {declared.low:g}, got {value}")
    if declared.high is not None and not value < declared.high:
        raise RecipeError(f"{what} must be in [{declared.low:g}, {declared.high:g}), got {value}")


KNOBS: dict[str, Knob] = {f.name: f.metadata["knob"] for f in fields(Recipe)}


# Recipes that reach the memorization regime (docs/memorization.md) on the embedded data with 5–10%
# flipped labels: ≥ 99% training accuracy with ≥ 90% of the flipped labels fitted, in as few
# epochs as we found do it (`python -m bench memorization` measures them). Weight decay off: it
# is what keeps a small model from fitting its mislabeled samples.
REGIME: dict[tuple[str, str], dict] = {
    ("mlp", "digits"): {"epochs": 60, "lr": 0.1, "weight_decay": 0.0},
    ("cnn", "digits"): {"epochs": 70, "lr": 0.1, "weight_decay": 0.0},
    ("mlp", "mnist5k"): {"epochs": 30, "lr": 0.05, "weight_decay": 0.0},
}


# The recipes a paper's own model was published with, on any dataset: the mnemonic-code paper's
# MNIST MLP (Yamashita et al., ACML 2024; conf/mnist.yaml of its code: SGD lr 0.01, momentum 0.9,
# weight decay 5e-4, batch 128, 200 epochs, codes swapped in with t_mix 0.1).
PAPER: dict[str, dict] = {
    "sigmoid_mlp": {"epochs": 200, "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 128,
                    "mnemonic_tmix": 0.1},
    # The fast CIFAR-10 net (models.fast_cnn) after airbench (Jordan 2024, arXiv 2404.00498): batch
    # 1024, about 10 epochs, label smoothing 0.2, flip-and-translate. Its schedule (warm-up, linear
    # decay, Nesterov, lookahead) is approximated by momentum SGD with a cosine schedule.
    "fast_cnn": {"epochs": 10, "lr": 0.4, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 1024,
                 "cosine": True, "augment": True, "label_smoothing": 0.2},
}


def default_for(arch: str, dataset: str) -> Recipe:
    """The recipe a model of `arch` on `dataset` trains with when none is given: its paper's for a
    paper's own model, the regime's where we measured one, else the class defaults."""
    return Recipe(**PAPER.get(arch, {}), **REGIME.get((arch, dataset), {}))
