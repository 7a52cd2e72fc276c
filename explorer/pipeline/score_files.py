"""Score files made elsewhere, brought in as score sets of a model (docs/scores.md): Feldman &
Zhang's published memorization (and influence), Jiang et al.'s C-scores, the RUM code's CIFAR-10
estimate, raw subset-model runs (masks and correctness per model), and the explorer's own exports.

`read` needs no workspace: the format is told by the file's keys, and every array's shape is checked
against the others. `attach` maps the file's entries to the model's training samples (by position,
by original index, by sample id or by file name: `align`) and refuses, in one line and before
anything is written, a file whose labels are not the dataset's targets. From raw runs, the
memorization, its standard error and influence are the project's own estimate
(explorer.memorization.estimator) from the file's masks and correctness; where the file also has
`memorization`, the two must agree.

A large array (RUM's 10,000 × 50,000 influence matrix, 2 GB) is read in blocks of rows straight
from the npz file and written in blocks to the workspace: it is never held in memory, let alone
twice.
"""

from __future__ import annotations

import csv
import hashlib
import os
import struct
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from .. import data as data_mod
from ..errors import UserError
from ..memorization.estimator import estimate
from ..runtime.progress import Progress, no_progress
from ..store import artifacts
from ..store.workspace import Workspace, npz_bytes
from . import score_sets

FORMATS = {
    "fz": "Feldman & Zhang's memorization estimates (tr_mem, tr_labels; per class infl_matrix_class{c})",
    "cscore": "Jiang et al.'s C-scores (scores, labels; filenames for ImageNet)",
    "rum": "the RUM code's estimate (memorization; influence, test × train)",
    "runs": "raw subset-model runs (trainset_mask, trainset_correctness, testset_correctness)",
    "csv": "a table: sample_id (or index), label, value (or memorization, or cscore), stderr",
}
AGREEMENT = 1e-6  # a file's own memorization against the estimate from its runs: float32 rounding, no more
BLOCK_BYTES = 64 << 20  # rows of a large array read at a time


class ScoreFileError(UserError):
    """A score file that cannot be read, or does not belong to the model's dataset; one line."""


# -- arrays of an npz file, without loading them ---------------------------------------------------


@dataclass
class Member:
    """One array of an npz file, found without reading it: its shape and dtype, and where its data
    start when it is stored uncompressed (np.savez), so that it can be read in blocks of rows."""

    path: Path
    key: str
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool
    offset: int | None  # of its data in the file; None when compressed (np.savez_compressed)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def read(self) -> np.ndarray:
        with np.load(self.path) as z:  # allow_pickle stays off: a score file never runs code
            return z[self.key]

    def rows(self, block_bytes: int = BLOCK_BYTES) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, block) over consecutive blocks of rows, read one after the other."""
        row_bytes = max(1, self.nbytes // max(1, self.shape[0]))
        step = max(1, block_bytes // row_bytes)
        if self.fortran:  # rows are not contiguous: mapped when stored, else read whole (one copy)
            whole = (np.memmap(self.path, self.dtype, "r", self.offset, self.shape, order="F")
                     if self.offset is not None else self.read())
            for lo in range(0, self.shape[0], step):
                yield lo, np.array(whole[lo : lo + step])
            return
        with open(self.path, "rb") as raw, zipfile.ZipFile(self.path) as zf:
            if self.offset is not None:
                raw.seek(self.offset)
                stream = raw
            else:
                stream = zf.open(f"{self.key}.npy")
                _header(stream)
            for lo in range(0, self.shape[0], step):
                n = min(step, self.shape[0] - lo)
                buf = stream.read(n * row_bytes)
                if len(buf) != n * row_bytes:
                    raise ScoreFileError(f"{self.path.name}: {self.key} ends early (the file is truncated)")
                yield lo, np.frombuffer(buf, self.dtype).reshape(n, *self.shape[1:])


def _header(stream) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(stream)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read(stream)


def members(path: Path) -> dict[str, Member]:
    """Every array of an npz file by key, with where its data start when stored uncompressed."""
    found = {}
    with zipfile.ZipFile(path) as zf, open(path, "rb") as raw:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            key = info.filename[: -len(".npy")]
            with zf.open(info) as f:
                shape, fortran, dtype = _header(f)
                header_bytes = f.tell()
            if dtype.hasobject:
                raise ScoreFileError(f"{path.name}: {key} holds Python objects (read only by unpickling, which "
                                     "could run code); save it as numbers or fixed-length strings")
            offset = None
            if info.compress_type == zipfile.ZIP_STORED:
                raw.seek(info.header_offset)
                name_len, extra_len = struct.unpack("<HH", raw.read(30)[26:30])
                offset = info.header_offset + 30 + name_len + extra_len + header_bytes
            found[key] = Member(Path(path), key, tuple(shape), dtype, fortran, offset)
    return found


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# -- reading a file ----------------------------------------------------------------------------------


@dataclass
class ScoreFile:
    """What a score file holds, in its own order (entry e of every per-sample array is one sample)."""

    path: Path
    format: str
    name: str  # the score it becomes: exact, or cscore
    values: np.ndarray  # (entries,) float64; for runs, the file's own memorization if it has one
    keys: list[str]
    labels: np.ndarray | None = None  # the training labels it was made with
    test_labels: np.ndarray | None = None
    filenames: list[str] | None = None  # entries named by image file (ImageNet's files)
    ids: np.ndarray | None = None  # entries named by id (a CSV's first column)
    id_space: str = "sample id"  # what `ids` count: the explorer's sample ids, or the original index
    stderr: np.ndarray | None = None
    runs: dict[str, np.ndarray] = field(default_factory=dict)  # masks, correct, test_correct, phi, test_phi
    influence: Member | None = None  # dense, test × entries (RUM)
    blocks: list[tuple[np.ndarray, np.ndarray, Member]] = field(default_factory=list)  # (entries, test ids, values)
    notes: list[str] = field(default_factory=list)

    @property
    def entries(self) -> int:
        return len(self.values)


def detect(keys) -> str:
    """The format a set of npz keys is in, or a one-line refusal."""
    keys = set(keys)
    if {"trainset_mask", "trainset_correctness"} <= keys:
        return "runs"
    if "tr_mem" in keys:
        return "fz"
    if "scores" in keys:
        return "cscore"
    if "memorization" in keys:
        return "rum"
    raise ScoreFileError(f"none of the known keys (tr_mem, scores, memorization, trainset_mask) is among "
                         f"{', '.join(sorted(keys)) or 'no arrays'}; name its --format")


REQUIRED = {"fz": ("tr_mem",), "cscore": ("scores",), "rum": ("memorization",),
            "runs": ("trainset_mask", "trainset_correctness")}


def read(path: Path, fmt: str = "auto") -> ScoreFile:
    """A score file's contents, checked for shape but not yet against any dataset."""
    path = Path(path)
    if fmt != "auto" and fmt not in FORMATS:
        raise ScoreFileError(f"unknown format {fmt!r}; choose auto, {', '.join(FORMATS)}")
    if not path.is_file():
        raise ScoreFileError(f"no such file: {path}")
    if not zipfile.is_zipfile(path):
        if fmt not in ("auto", "csv"):
            raise ScoreFileError(f"{path.name} is not an npz file, so not in the {fmt} format")
        return _csv(path)
    if fmt == "csv":
        raise ScoreFileError(f"{path.name} is an npz file, not a CSV table")
    try:
        arrays = members(path)
    except (zipfile.BadZipFile, ValueError, OSError) as err:
        raise ScoreFileError(f"{path.name} is not a readable npz file ({err})") from None
    fmt = detect(arrays) if fmt == "auto" else fmt
    if missing := [k for k in REQUIRED[fmt] if k not in arrays]:
        raise ScoreFileError(f"{path.name} has no {missing[0]}: not in the {fmt} format ({FORMATS[fmt]})")
    return READERS[fmt](path, arrays)


def _vector(path: Path, arrays: dict[str, Member], key: str, n: int | None = None, kind: str = "f") -> np.ndarray:
    """A 1-D array of the file, its length checked; integer labels stay integers."""
    m = arrays[key]
    if len(m.shape) != 1 or (n is not None and m.shape[0] != n):
        want = f"({n:,},)" if n is not None else "one value per sample"
        raise ScoreFileError(f"{path.name}: {key} has shape {m.shape}, expected {want}")
    a = m.read()
    if kind == "i":
        if a.dtype.kind not in "iub" and not (a.dtype.kind == "f" and np.all(a == np.round(a))):
            raise ScoreFileError(f"{path.name}: {key} are not whole numbers ({a.dtype})")
        return a.astype(np.int64)
    if kind == "s":
        return a
    if a.dtype.kind not in "iubf":
        raise ScoreFileError(f"{path.name}: {key} are not numbers ({a.dtype})")
    return a.astype(np.float64)


def _labels(path, arrays, n, train_key, test_key):
    labels = _vector(path, arrays, train_key, n, "i") if train_key in arrays else None
    test = _vector(path, arrays, test_key, None, "i") if test_key in arrays else None
    return labels, test


def _names(raw: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in raw.tolist()]


def _fz(path: Path, arrays: dict[str, Member]) -> ScoreFile:
    values = _vector(path, arrays, "tr_mem")
    labels, test_labels = _labels(path, arrays, len(values), "tr_labels", "tt_labels")
    sf = ScoreFile(path, "fz", "exact", values, sorted(arrays), labels, test_labels)
    if "tr_filenames" in arrays:  # ImageNet's file: no canonical order, joined on the file name
        sf.filenames = _names(_vector(path, arrays, "tr_filenames", len(values), "s"))
    classes = sorted(int(k[len("infl_matrix_class"):]) for k in arrays
                     if k.startswith("infl_matrix_class") and k[len("infl_matrix_class"):].isdigit())
    for c in classes:
        if f"tr_classidx_{c}" not in arrays or f"tt_classidx_{c}" not in arrays:
            raise ScoreFileError(f"{path.name}: infl_matrix_class{c} comes without tr_classidx_{c} and tt_classidx_{c}")
        train = _vector(path, arrays, f"tr_classidx_{c}", None, "i")
        test = _vector(path, arrays, f"tt_classidx_{c}", None, "i")
        block = arrays[f"infl_matrix_class{c}"]
        if block.shape != (len(train), len(test)):
            raise ScoreFileError(f"{path.name}: infl_matrix_class{c} has shape {block.shape}, not (train in class, "
                                 f"test in class) = ({len(train)}, {len(test)})")
        if len(train) and (train.min() < 0 or train.max() >= len(values)):
            raise ScoreFileError(f"{path.name}: tr_classidx_{c} indexes outside tr_mem's {len(values):,} samples")
        sf.blocks.append((train, test, block))
    return sf


def _cscore(path: Path, arrays: dict[str, Member]) -> ScoreFile:
    values = _vector(path, arrays, "scores")
    labels = _vector(path, arrays, "labels", len(values), "i") if "labels" in arrays else None
    sf = ScoreFile(path, "cscore", "cscore", values, sorted(arrays), labels)
    if "filenames" in arrays:
        sf.filenames = _names(_vector(path, arrays, "filenames", len(values), "s"))
    return sf


def _rum(path: Path, arrays: dict[str, Member]) -> ScoreFile:
    values = _vector(path, arrays, "memorization")
    labels, test_labels = _labels(path, arrays, len(values), "tr_labels", "tt_labels")
    sf = ScoreFile(path, "rum", "exact", values, sorted(arrays), labels, test_labels)
    if "influence" in arrays:
        infl = arrays["influence"]
        if len(infl.shape) != 2 or infl.shape[1] != len(values):
            raise ScoreFileError(f"{path.name}: influence has shape {infl.shape}; RUM's is (test samples, training "
                                 f"samples) = (m, {len(values):,})")
        if infl.dtype.kind != "f":
            raise ScoreFileError(f"{path.name}: influence is not floating point ({infl.dtype})")
        sf.influence = infl
    if labels is None:
        sf.notes.append("the file has no labels, so its order could not be checked against the dataset's "
                        "(RUM's is CIFAR-10's own, torchvision's order)")
    return sf


def _runs(path: Path, arrays: dict[str, Member]) -> ScoreFile:
    masks, correct = arrays["trainset_mask"], arrays["trainset_correctness"]
    if len(masks.shape) != 2 or masks.shape != correct.shape:
        raise ScoreFileError(f"{path.name}: trainset_mask {masks.shape} and trainset_correctness {correct.shape} "
                             "must both be (runs, training samples)")
    k, n = masks.shape
    runs = {"masks": masks.read(), "correct": correct.read()}
    for key, name, second in (("testset_correctness", "test_correct", None), ("trainset_margins", "phi", n),
                              ("testset_margins", "test_phi", None)):
        if key in arrays:
            a = arrays[key]
            if len(a.shape) != 2 or a.shape[0] != k or (second is not None and a.shape[1] != second):
                raise ScoreFileError(f"{path.name}: {key} has shape {a.shape}, expected ({k}, "
                                     f"{'test samples' if second is None else f'{second:,}'})")
            runs[name] = a.read()
    if "test_phi" in runs and "test_correct" in runs and runs["test_phi"].shape != runs["test_correct"].shape:
        raise ScoreFileError(f"{path.name}: testset_margins and testset_correctness differ in shape")
    for name in ("masks", "correct", "test_correct"):
        a = runs.get(name)
        if a is not None and (a.dtype.kind not in "biuf" or ((a < 0) | (a > 1)).any()):
            raise ScoreFileError(f"{path.name}: {name.replace('masks', 'trainset_mask')} must hold 0/1 or "
                                 "true/false values")
    if runs["masks"].dtype != bool and not np.isin(runs["masks"], (0, 1)).all():
        raise ScoreFileError(f"{path.name}: trainset_mask must be true/false per run and sample")
    runs["masks"] = runs["masks"].astype(bool, copy=False)
    values = _vector(path, arrays, "memorization", n) if "memorization" in arrays else np.full(n, np.nan)
    labels, test_labels = _labels(path, arrays, n, "tr_labels", "tt_labels")
    sf = ScoreFile(path, "runs", "exact", values, sorted(arrays), labels, test_labels, runs=runs)
    if "influence" in arrays:
        sf.notes.append("its influence matrix is not kept: influence comes from its runs, as for exact "
                        "memorization computed here")
    return sf


VALUE_COLUMNS = {"value": "exact", "memorization": "exact", "cscore": "cscore"}


def _csv(path: Path) -> ScoreFile:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ScoreFileError(f"{path.name} is neither an npz file nor a readable CSV table ({err})") from None
    if not rows:
        raise ScoreFileError(f"{path.name} is empty")
    header = [h.strip() for h in rows[0]]
    value_col = next((c for c in VALUE_COLUMNS if c in header), None)
    id_col = next((c for c in ("sample_id", "index") if c in header), None)
    if value_col is None or id_col is None:
        raise ScoreFileError(f"{path.name}: a score table needs a sample_id (or index) column and a value (or "
                             f"memorization, or cscore) column; its header is {', '.join(header)[:120]}")
    col = {h: i for i, h in enumerate(header)}
    body = [r for r in rows[1:] if any(cell.strip() for cell in r)]

    def column(name, kind):
        try:
            cells = [r[col[name]].strip() for r in body]
            if kind == "i":
                return np.array([int(c) for c in cells], dtype=np.int64)
            return np.array([float(c) if c else np.nan for c in cells], dtype=np.float64)
        except (ValueError, IndexError) as err:
            raise ScoreFileError(f"{path.name}: column {name} has a value that is not a number ({err})") from None

    ids = column(id_col, "i")
    if len(np.unique(ids)) != len(ids):
        raise ScoreFileError(f"{path.name}: {id_col} repeats a sample")
    sf = ScoreFile(path, "csv", VALUE_COLUMNS[value_col], column(value_col, "f"), header,
                   labels=column("label", "i") if "label" in col else None, ids=ids,
                   id_space="sample id" if id_col == "sample_id" else "original index")
    if "stderr" in col:
        sf.stderr = column("stderr", "f")
    return sf


READERS = {"fz": _fz, "cscore": _cscore, "rum": _rum, "runs": _runs}


# -- which training sample is which entry ------------------------------------------------------------


@dataclass
class Alignment:
    """Entry of the file for each training sample (−1: not in the file), how it was found, and what
    the labels said."""

    at: np.ndarray
    how: str
    labels: str
    test: bool  # whether the file's test samples are the dataset's (test correctness, influence kept)


def _first(ids: np.ndarray, count: int = 5) -> str:
    shown = ", ".join(str(int(i)) for i in ids[:count])
    return shown + (", …" if len(ids) > count else "")


def _by_name(sf: ScoreFile, ds: data_mod.Dataset, dataset: str) -> np.ndarray:
    if ds.train_files is None:
        raise ScoreFileError(f"{sf.path.name} names its samples by image file; it goes with an image folder "
                             f"(--dataset imagefolder), not {dataset}")
    ours = ds.train_files
    # On the file name alone where the folder's names are unique (ImageNet's are); else class/name.
    unique = len({Path(f).name for f in ours}) == len(ours)
    for key in ((lambda f: Path(f).name), (lambda f: Path(f).stem)) if unique else \
            ((lambda f: "/".join(Path(f).parts[-2:])),):
        index = {key(f.replace("\\", "/")): e for e, f in enumerate(sf.filenames)}
        at = np.array([index.get(key(f), -1) for f in ours], dtype=np.int64)
        if (at >= 0).any():
            return at
    raise ScoreFileError(f"none of the {len(ours):,} images of the folder is named in {sf.path.name} "
                         f"(its first: {sf.filenames[0] if sf.filenames else 'none'})")


def align(sf: ScoreFile, ds: data_mod.Dataset, dataset: str) -> Alignment:
    """Which entry of the file each training sample is, checked by the labels: a file whose labels
    differ from the dataset's targets is refused, naming how many differ and the first few."""
    n = ds.n_train
    if sf.filenames is not None:
        at, how = _by_name(sf, ds, dataset), "file name"
    elif sf.ids is not None:
        space = ds.source_size if sf.id_space == "original index" else n
        if sf.ids.min() < 0 or sf.ids.max() >= space:
            raise ScoreFileError(f"{sf.path.name}: {sf.id_space} {int(sf.ids.max())} is outside {dataset}'s "
                                 f"{space:,} training samples")
        where = np.full(space, -1, dtype=np.int64)
        where[sf.ids] = np.arange(sf.entries)
        at, how = (where[ds.train_origin] if sf.id_space == "original index" else where), sf.id_space
    elif sf.entries == ds.source_size:  # keyed by original index: the dataset may hold some out
        at, how = ds.train_origin.copy(), "position" if np.array_equal(ds.train_origin, np.arange(n)) else \
            "original index"
    elif sf.entries == n:
        at, how = np.arange(n), "position"
    else:
        raise ScoreFileError(
            f"{sf.path.name} holds {sf.entries:,} samples but {dataset} has {n:,} training samples (of "
            f"{ds.source_size:,} in its source's order): a file indexed after a holdout (RUM's CIFAR-100 path "
            "keeps tr_mem[train_idx]) must be imported whole, keyed by the original index")
    have = np.flatnonzero(at >= 0)
    if not len(have):
        raise ScoreFileError(f"no training sample of {dataset} is in {sf.path.name}")
    if sf.labels is None:
        said = "no labels in the file: its order could not be checked"
    else:
        theirs, ours = sf.labels[at[have]], ds.y_train_clean.numpy()[have]
        said = _check_labels(sf, theirs, ours, at[have], how, dataset)
    test = sf.test_labels is not None and len(sf.test_labels) == len(ds.y_test)
    if test:
        differ = np.flatnonzero(sf.test_labels != ds.y_test.numpy())
        if len(differ):
            raise ScoreFileError(f"{sf.path.name} is not aligned with {dataset}'s test set: its test labels differ at "
                                 f"{len(differ):,} of {len(sf.test_labels):,} samples (file indices "
                                 f"{_first(differ)}); nothing was imported")
        said += "; test labels equal too"
    return Alignment(at, how, said, test)


def _check_labels(sf, theirs, ours, entries, how, dataset) -> str:
    if how == "file name":  # a folder of some of the classes numbers them its own way: one-to-one will do
        mapping = {}
        for f in np.unique(theirs):
            d, counts = np.unique(ours[theirs == f], return_counts=True)
            mapping[int(f)] = int(d[counts.argmax()])
        expected = np.array([mapping[int(f)] for f in theirs])
        differ = np.flatnonzero(expected != ours)
        if not len(differ) and len(set(mapping.values())) < len(mapping):
            differ = np.arange(len(ours))  # two of the file's classes are one class here
    else:
        differ = np.flatnonzero(theirs != ours)
    if len(differ):
        raise ScoreFileError(f"{sf.path.name} is not aligned with {dataset}: its labels differ from the dataset's "
                             f"targets at {len(differ):,} of {len(ours):,} samples (file indices "
                             f"{_first(entries[differ])}); nothing was imported")
    if how == "file name" and not np.array_equal(theirs, ours):
        return f"labels match one-to-one on {len(ours):,} samples (the file numbers the classes its own way)"
    return f"labels equal the dataset's targets on {len(ours):,} samples"


# -- attaching it to a model ----------------------------------------------------------------------


class _Digest(threading.Thread):
    """The file's sha256, computed beside the import (hashlib lets go of the GIL on large chunks)."""

    def __init__(self, path: Path):
        super().__init__(daemon=True)
        self.path, self.value, self.error = path, None, None
        self.start()

    def run(self):
        try:
            self.value = sha256(self.path)
        except OSError as err:
            self.error = err

    def result(self) -> str:
        self.join()
        if self.error is not None:
            raise self.error
        return self.value


def _runs_estimate(sf: ScoreFile, al: Alignment, ds: data_mod.Dataset) -> tuple[np.ndarray, dict, dict]:
    """The estimate from the file's runs, in the dataset's order: (values, arrays, record fields)."""
    if (al.at < 0).any():
        missing = np.flatnonzero(al.at < 0)
        raise ScoreFileError(f"{sf.path.name}'s runs leave out {len(missing):,} training samples (sample ids "
                             f"{_first(missing)}): an estimate from runs needs every sample's membership")
    same = sf.entries == len(al.at) and np.array_equal(al.at, np.arange(len(al.at)))
    runs = {k: v[:, al.at] if k in ("masks", "correct", "phi") and not same else v for k, v in sf.runs.items()}
    est = estimate(runs["masks"], runs["correct"])
    own = sf.values[al.at]
    both = np.isfinite(own) & np.isfinite(est["values"])
    gap = np.abs(own[both] - est["values"][both])
    if len(gap) and gap.max() > AGREEMENT:
        far = np.flatnonzero(both)[gap > AGREEMENT]
        raise ScoreFileError(f"{sf.path.name}: its memorization differs from the estimate from its own runs at "
                             f"{len(far):,} samples (by up to {gap.max():.3g}; sample ids {_first(far)}): its masks "
                             "or correctness are not the ones it was computed from")
    if not al.test:
        if "test_correct" in runs and runs["test_correct"].shape[1] != len(ds.y_test):
            sf.notes.append(f"its {runs['test_correct'].shape[1]:,} test samples are not this dataset's "
                            f"{len(ds.y_test):,}: test correctness (influence) not kept")
            runs.pop("test_correct")
            runs.pop("test_phi", None)
    arrays = {k: est[k] for k in ("stderr", "cscore", "n_in", "n_out")} | runs
    never = int((est["n_out"] == 0).sum())
    meta = {"models": int(len(runs["masks"])), "never_held_out": never,
            "agreement": float(gap.max()) if len(gap) else None}
    return est["values"], arrays, meta


def _dense_influence(ws: Workspace, sf: ScoreFile, al: Alignment, n_test: int, progress: Progress) -> Path:
    """RUM's test × train matrix, re-indexed to the dataset's training samples, written in blocks
    of test rows to a staged file (float32, NaN for samples the file lacks)."""
    infl, n = sf.influence, len(al.at)
    same = sf.entries == n and np.array_equal(al.at, np.arange(n))
    have = np.flatnonzero(al.at >= 0)
    staged = ws.staging("scores")
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")), "fortran_order": False, "shape": (n_test, n)}
    with open(staged, "wb") as out:
        np.lib.format.write_array_header_2_0(out, header)
        if same and infl.offset is not None and not infl.fortran and infl.dtype == np.dtype("<f4") \
                and hasattr(os, "copy_file_range"):
            _copy_bytes(infl, out, n_test, progress)  # RUM's own layout: the kernel copies it as it is
        else:
            _copy_rows(infl, out, same, have, al.at, n, n_test, progress)
        out.flush()
        os.fsync(out.fileno())
    return staged


def _copy_bytes(infl: Member, out, n_test: int, progress: Progress) -> None:
    """The matrix's bytes as they are in the npz file, copied by the kernel in blocks."""
    out.flush()
    row_bytes = infl.nbytes // n_test
    step = max(1, BLOCK_BYTES // row_bytes) * row_bytes
    with open(infl.path, "rb") as src:
        done = 0
        while done < infl.nbytes:
            sent = os.copy_file_range(src.fileno(), out.fileno(), min(step, infl.nbytes - done), infl.offset + done)
            if sent == 0:
                raise ScoreFileError(f"{infl.path.name}: {infl.key} ends early (the file is truncated)")
            done += sent
            rows = done // row_bytes
            progress(0.1 + 0.85 * rows / n_test, f"influence: {rows:,} of {n_test:,} test rows")
    out.seek(0, os.SEEK_END)


def _copy_rows(infl: Member, out, same: bool, have, at, n: int, n_test: int, progress: Progress) -> None:
    """The matrix re-indexed (and cast to float32) block by block of test rows."""
    for lo, block in infl.rows():
        if same:
            rows = block.astype("<f4", copy=False)
        else:
            rows = np.full((len(block), n), np.nan, dtype="<f4")
            rows[:, have] = block[:, at[have]]
        out.write(memoryview(np.ascontiguousarray(rows)).cast("B"))
        progress(0.1 + 0.85 * (lo + len(block)) / n_test, f"influence: {lo + len(block):,} of {n_test:,} test rows")


def _block_influence(sf: ScoreFile, al: Alignment, n_test: int) -> bytes:
    """Feldman & Zhang's within-class blocks, their rows re-indexed to the dataset's sample ids."""
    sample_of = np.full(sf.entries, -1, dtype=np.int64)
    have = np.flatnonzero(al.at >= 0)
    sample_of[al.at[have]] = have
    kept = {}
    for b, (entries, test, member) in enumerate(sf.blocks):
        ids = sample_of[entries]
        keep = ids >= 0
        kept[f"train_{b}"], kept[f"test_{b}"] = ids[keep], test
        kept[f"values_{b}"] = member.read()[keep].astype(np.float32)
    return npz_bytes(n_test=np.int64(n_test), blocks=np.int64(len(sf.blocks)), **kept)


def attach(ws: Workspace, model_rec: dict, sf: ScoreFile, title: str | None = None,
           progress: Progress = no_progress) -> dict:
    """Publish the file's scores as a score set of the model: mapped to its training samples
    (`align`), from raw runs estimated here, with the influence matrix where the file has one and
    its test samples are the dataset's; the record keeps the source (file name, sha256, format)."""
    start = time.perf_counter()
    digest = _Digest(sf.path)
    ds = artifacts.dataset_of(ws, model_rec)
    dataset = model_rec.get("dataset", ds.spec.name)
    progress(0.02, f"aligning {sf.entries:,} samples with {dataset}")
    al = align(sf, ds, dataset)
    have = al.at >= 0
    arrays, meta = {}, {}
    if sf.runs:
        values, arrays, meta = _runs_estimate(sf, al, ds)
    else:
        values = np.full(ds.n_train, np.nan)
        values[have] = sf.values[al.at[have]]
        if sf.stderr is not None:
            arrays["stderr"] = np.where(have, sf.stderr[np.maximum(al.at, 0)], np.nan)
    files: dict = {}
    staged = None
    try:
        test_ok = al.test or (sf.test_labels is None and (sf.influence is not None and
                                                           sf.influence.shape[0] == len(ds.y_test)))
        if sf.influence is not None and test_ok:
            staged = _dense_influence(ws, sf, al, len(ds.y_test), progress)
            files[artifacts.INFLUENCE] = staged
            meta["influence"] = {"layout": "dense", "shape": [len(ds.y_test), ds.n_train]}
            if sf.test_labels is None:
                sf.notes.append("its influence matrix has no test labels: its test order could not be checked")
        elif sf.blocks and al.test:
            files[artifacts.INFLUENCE_BLOCKS] = _block_influence(sf, al, len(ds.y_test))
            meta["influence"] = {"layout": "blocks", "blocks": len(sf.blocks)}
        elif sf.influence is not None or sf.blocks:
            sf.notes.append(f"its influence matrix is not kept: its test samples are not {dataset}'s "
                            f"{len(ds.y_test):,}")
        progress(0.97, "publishing")
        source = {"file": sf.path.name, "sha256": digest.result(), "format": sf.format, "keys": sf.keys,
                  "entries": sf.entries}
        return score_sets.publish(
            ws, model_rec, sf.name, values, seconds=round(time.perf_counter() - start, 3), device="cpu",
            params={"format": sf.format, "aligned_by": al.how}, arrays=arrays, files=files,
            imported=True, title=title or sf.path.name, source=source, labels_checked=al.labels,
            n_missing=int((~have).sum()), warnings=list(sf.notes), **meta)
    finally:
        if staged is not None and staged.exists():  # published: renamed away; failed: removed
            staged.unlink()


def import_scores(ws: Workspace, model_rec: dict, path: Path, fmt: str = "auto", title: str | None = None,
                  progress: Progress = no_progress) -> dict:
    """`read` then `attach`: a score file as a score set of the model."""
    return attach(ws, model_rec, read(path, fmt), title, progress)
