"""What each kind of record holds, and the one place where an older record is brought up to date.

A record is a JSON object in the catalog (workspace.py): `id`, `kind`, `created`, `files`, its
`version`, and the fields of its kind below. The types say which fields code may rely on once a
record has been read; records stay plain dicts, exactly as `--json` prints them (its field names
are a contract: a field is added, never renamed).

Every record is read through `read(kind, raw)` (`Workspace.get` and `find` do it), which upgrades
an older record one version at a time, as `workspace.MIGRATIONS` upgrades the catalog. A record
without `version` is version 0: written by an explorer from before records had versions, at any
stage of its history; its step (0 → 1) fills every field added since then with what the older
code did. The upgrade happens as the record is read; nothing is written back, so reading never
changes a workspace.

A new field: add it to its kind's type below; if older records need a value for it, append a step
to the kind's `UPGRADES` (a step that has shipped is never edited) and `put` stamps the new version.
"""

from __future__ import annotations

from typing import Callable, TypedDict


class Record(TypedDict):
    """What every record has."""

    id: str
    kind: str
    created: float  # seconds since the epoch
    version: int  # its kind's version (VERSIONS) once read
    files: list[str]  # its artifact files (store/artifacts.py names them)


class DatasetRecord(Record):
    name: str  # digits, mnist5k, cifar10, imagefolder, …
    root: str
    split_seed: int
    label_noise: float
    classes: list[str]
    n_train: int
    n_test: int
    shape: list[int]  # channels, height, width
    flipped: list[int]  # training sample ids whose label was flipped


class ModelRecord(Record):
    name: str
    source: str  # trained, imported or oracle
    arch: str
    dataset: str
    dataset_id: str
    recipe: dict | None  # Recipe.as_meta(); None for a model trained elsewhere and imported without --recipe
    epochs: int | None
    log: list[dict]  # per-epoch training figures
    seconds: float | None  # training time
    device: str | None
    has_dynamics: bool
    has_codes: bool
    train_acc: float
    test_acc: float
    per_class_acc: list[float]
    flipped_fit: float | None  # the share of flipped labels it fits; None without label noise


class OracleRecord(ModelRecord):
    base_model_id: str
    forget_set_id: str
    order: str  # "replay" (the original's batches without the forget set) or "shuffle" (older)
    recipe_from: str  # trained, imported or default: where its recipe came from


class ScoreSetRecord(Record):
    name: str  # exact, confidence, ho_ret, …
    label: str
    orientation: int
    model_id: str
    dataset_id: str
    params: dict
    seconds: float
    device: str | None
    n: int
    n_nan: int


class ForgetSetRecord(Record):
    name: str
    dataset_id: str
    model_id: str
    strategy: str
    how: dict  # how it was made (classes, seed, score, …)
    ids: list[int]
    size: int
    classes: list[int]
    class_counts: dict[str, int]
    es: float  # entanglement
    es_centre: str  # "halves" (the RUM code's centre) or "pooled" (older sets)


class RunRecord(Record):
    name: str
    model_id: str
    forget_set_id: str
    oracle_id: str | None
    method: str
    params: dict
    preset: str | None
    device: str
    metrics: dict  # acc_retain, acc_forget, acc_test, mia_efficacy, tow, tow_mia, seconds, … (present/comparison.py says what each is)
    original: dict
    oracle: dict | None
    analysis: dict


class EvaluationRecord(Record):
    name: str
    model_id: str
    forget_set_id: str
    method: str
    params: dict
    preset: str | None
    models: int  # N
    device: str
    forget_ids: list[int]
    forgetting_quality: float | None
    forgetting_quality_interval: list[float | None]
    score: float | None
    epsilons: list[float]
    epsilon_cap: float
    epsilon_bound: str  # "simultaneous", or "per rule" (older evaluations bounded each rule alone)
    forgetting_quality_point: float
    score_point: float | None  # None in older evaluations
    epsilons_point: list[float] | None
    epsilon_cap_point: float
    klom: float | None  # None in evaluations from before KLoM
    kloms: list[float] | None
    seconds: float | None


LEGACY_IMAGE_SIZE = 32  # the side every image folder was resized to before folders kept their own size


def _dataset_0(rec: dict) -> None:
    rec.setdefault("flipped", [])
    if rec.get("name") == "imagefolder":  # made when every folder was resized to 32×32, and still is
        rec.setdefault("image_size", LEGACY_IMAGE_SIZE)


def _model_0(rec: dict) -> None:
    for key, value in (("recipe", None), ("epochs", None), ("log", []), ("seconds", None), ("device", None),
                       ("has_dynamics", False), ("has_codes", False), ("flipped_fit", None)):
        rec.setdefault(key, value)
    if rec.get("source") == "oracle":
        rec.setdefault("order", "shuffle")  # an oracle from before replaying drew a fresh order of R
        rec.setdefault("recipe_from", "trained")  # oracles of imported models came later, with the field


def _scores_0(rec: dict) -> None:
    rec.setdefault("params", {})
    rec.setdefault("device", None)


def _forget_set_0(rec: dict) -> None:
    rec.setdefault("how", {})
    rec.setdefault("es_centre", "pooled")  # entanglement's centre before it followed the RUM code


def _run_0(rec: dict) -> None:
    for key, value in (("params", {}), ("preset", None), ("oracle_id", None), ("metrics", {}), ("analysis", {})):
        rec.setdefault(key, value)


def _evaluation_0(rec: dict) -> None:
    for key, value in (("params", {}), ("preset", None), ("score_point", None), ("epsilons_point", None),
                       ("klom", None), ("kloms", None), ("seconds", None)):
        rec.setdefault(key, value)
    rec.setdefault("epsilon_bound", "per rule")
    if "epsilon_cap_point" not in rec and "models" in rec:  # N runs against N oracles
        from ..evaluation import forgetting  # only for such records: the catalog opens without it

        rec["epsilon_cap_point"] = forgetting.cap(rec["models"], rec["models"], confidence=None)


def _none(rec: dict) -> None:
    """A kind with nothing to fill: only its version is set."""


# UPGRADES[kind][i] takes a record of version i to i + 1, in place. Append; never edit one that shipped.
UPGRADES: dict[str, list[Callable[[dict], None]]] = {
    "dataset": [_dataset_0],
    "model": [_model_0],
    "scores": [_scores_0],
    "embedding": [_none],
    "forget_set": [_forget_set_0],
    "run": [_run_0],
    "sweep": [_none],
    "evaluation": [_evaluation_0],
}
VERSIONS = {kind: len(steps) for kind, steps in UPGRADES.items()}  # what `put` stamps


def read(kind: str, raw: dict) -> dict:
    """The record up to date: a copy of `raw` with the fields added since it was written filled
    in, and its `version` the current one. A record from a newer explorer is returned as it is."""
    rec = dict(raw)
    version = rec.get("version", 0)
    steps = UPGRADES.get(kind, [])
    for step in steps[version:]:
        step(rec)
    rec["version"] = max(version, len(steps))
    return rec
