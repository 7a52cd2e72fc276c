"""Importing score files at full CIFAR size: seconds and peak memory (the process's peak resident
set) to import each format into a model, each in a fresh process, and the round trip of exact runs
(export --format npz, then import-scores).

The files are generated with the published keys, dtypes and shapes: Feldman & Zhang's CIFAR-100
file (tr_mem, labels and 100 within-class influence blocks of 500 × 100), the two real C-score
files from ../shared/data/ (when present), RUM's CIFAR-10 file (memorization and a 10,000 × 50,000
float32 influence matrix, 2 GB, saved uncompressed as its code saves it), raw runs of 2,000 models
(compressed) and a 50,000-row CSV. CIFAR itself cannot be downloaded here: the datasets are
stand-ins of CIFAR's shape (50,000 + 10,000 random 32×32 RGB images, so loading them costs what
loading CIFAR costs) whose training labels are the real files' labels. `dataset_load` is what
loading that dataset alone takes, in its own fresh process: a part of every import's figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
N_TRAIN, N_TEST, RUNS = 50_000, 10_000, 2_000


def _labels(classes: int, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(classes), n // classes))


def _train_labels(classes: int) -> np.ndarray:
    """The real C-score file's labels (CIFAR's own, in torchvision's order) when it is there."""
    path = SHARED / f"cifar{classes}-cscores-orig-order.npz"
    if path.exists():
        with np.load(path) as z:
            return z["labels"]
    return _labels(classes, N_TRAIN, classes)


def install_standins() -> None:
    """CIFAR-10 and CIFAR-100 as explorer.data loads them, with random images and real labels."""
    from explorer import data

    def standin(classes: int):
        def load(spec):
            rng = np.random.default_rng(classes)
            xtr = rng.integers(0, 256, (N_TRAIN, 32, 32, 3), dtype=np.uint8)
            xte = rng.integers(0, 256, (N_TEST, 32, 32, 3), dtype=np.uint8)
            return ([str(c) for c in range(classes)], xtr, _train_labels(classes), xte,
                    _labels(classes, N_TEST, 100 + classes))
        return load

    data.SOURCES["cifar10"], data.SOURCES["cifar100"] = standin(10), standin(100)


def _files(folder: Path, models: dict) -> dict[str, tuple[Path, str]]:
    """(file, model id) per format, written as their code bases write them."""
    from explorer import data
    from explorer.memorization.estimator import masks_of, subsets

    c10 = data.load(data.DatasetSpec(name="cifar10", root=str(folder)))
    c100 = data.load(data.DatasetSpec(name="cifar100", root=str(folder)))
    rng = np.random.default_rng(0)
    files = {}
    blocks = {}
    y100, t100 = c100.y_train.numpy(), c100.y_test.numpy()
    for c in range(100):
        tr, tt = np.flatnonzero(y100 == c), np.flatnonzero(t100 == c)
        blocks |= {f"tr_classidx_{c}": tr, f"tt_classidx_{c}": tt,
                   f"infl_matrix_class{c}": rng.normal(0, 0.01, (len(tr), len(tt))).astype(np.float32)}
    np.savez(folder / "cifar100_infl_matrix.npz", tr_mem=rng.random(N_TRAIN), tr_labels=y100, tt_labels=t100, **blocks)
    files["fz"] = (folder / "cifar100_infl_matrix.npz", models["cifar100"])
    for classes in (10, 100):
        path = SHARED / f"cifar{classes}-cscores-orig-order.npz"
        if path.exists():
            files[f"cscore_cifar{classes}"] = (path, models[f"cifar{classes}"])
    with open(folder / "estimates_results.npz", "wb") as f:  # RUM's np.savez, the 2 GB matrix written in rows
        _savez_rows(f, memorization=rng.random(N_TRAIN, dtype=np.float32),
                    influence=((N_TEST, N_TRAIN), lambda lo, hi: rng.random((hi - lo, N_TRAIN), dtype=np.float32) * 0.02 - 0.01))
    files["rum"] = (folder / "estimates_results.npz", models["cifar10"])
    masks = masks_of(subsets(N_TRAIN, 0.7, RUNS, 0), N_TRAIN)
    correct = rng.random((RUNS, N_TRAIN)) < np.where(masks, 0.98, 0.9)
    np.savez_compressed(folder / "runs.npz", trainset_mask=masks, trainset_correctness=correct,
                        testset_correctness=rng.random((RUNS, N_TEST)) < 0.9, tr_labels=c10.y_train.numpy(),
                        tt_labels=c10.y_test.numpy())
    files["runs"] = (folder / "runs.npz", models["cifar10"])
    table = "sample_id,label,value\n" + "".join(f"{i},{y},{v!r}\n" for i, (y, v) in
                                                 enumerate(zip(c10.y_train.numpy().tolist(), rng.random(N_TRAIN).tolist())))
    (folder / "scores.csv").write_text(table)
    files["csv"] = (folder / "scores.csv", models["cifar10"])
    return files


def _savez_rows(f, **arrays) -> None:
    """np.savez's layout (stored .npy members) for arrays too large to hold: a (shape, rows(lo, hi))
    pair is written in blocks of rows."""
    import zipfile

    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, value in arrays.items():
            with zf.open(f"{key}.npy", "w", force_zip64=True) as out:
                if isinstance(value, np.ndarray):
                    np.lib.format.write_array(out, value)
                    continue
                shape, rows = value
                np.lib.format.write_array_header_2_0(out, {"descr": "<f4", "fortran_order": False, "shape": shape})
                for lo in range(0, shape[0], 500):
                    out.write(rows(lo, min(lo + 500, shape[0])).tobytes())


def _child(argv: list[str]) -> None:
    """One import (or one dataset load) in this process; prints seconds and peak memory."""
    install_standins()
    from explorer import data
    from explorer.pipeline import score_files
    from explorer.store.workspace import Workspace

    what, ws_path, model_id = argv[:3]
    ws = Workspace(ws_path)
    start = time.perf_counter()
    if what == "load":
        from explorer.store import artifacts

        data.load(artifacts.spec_of(ws.get(ws.get(model_id, "model")["dataset_id"], "dataset")))
        rec = {"id": None}
    else:
        rec = score_files.import_scores(ws, ws.get(model_id, "model"), Path(argv[3]))
    seconds = time.perf_counter() - start
    # VmHWM, not ru_maxrss: a child's ru_maxrss starts at its parent's size at fork, which the exec does not reset
    hwm = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM"))
    peak = int(hwm.split()[1]) / 1024  # kB
    print(json.dumps({"seconds": seconds, "peak_mb": peak, "id": rec["id"]}))


def _run_child(*args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "bench.scores", *args], capture_output=True, text=True, env=env,
                         cwd=ROOT, check=False)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def run() -> dict:
    install_standins()
    from explorer import data, training
    from explorer.pipeline import checkpoints, score_sets
    from explorer.store.workspace import Workspace, npz_bytes

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ws = Workspace(tmp / "ws")
        models = {}
        for name in ("cifar10", "cifar100"):
            spec = data.DatasetSpec(name=name, root=str(tmp))
            ds = data.load(spec)
            models[name] = checkpoints.register_import(ws, training.init_model("mlp", ds, 0), "mlp", spec, name)["id"]
        start = time.perf_counter()
        files = _files(tmp, models)
        os.sync()  # a user's file is on disk before its import: the import does not pay for writing it
        results["scores_files_written_seconds"] = round(time.perf_counter() - start, 1)
        load = _run_child("load", str(ws.path), models["cifar10"])
        results["scores_dataset_load"] = f"{load['seconds']:.2f} s, peak {load['peak_mb']:,.0f} MB"
        ids = {}
        for fmt, (path, model_id) in files.items():
            got = _run_child("import", str(ws.path), model_id, str(path))
            ids[fmt] = got["id"]
            size = path.stat().st_size / 2**20
            results[f"scores_import_{fmt}"] = (f"{got['seconds']:.2f} s, peak {got['peak_mb']:,.0f} MB "
                                               f"({size:,.0f} MB file)")
            print(f"scores_import_{fmt}: {results[f'scores_import_{fmt}']}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        exported = tmp / "export.npz"
        exported.write_bytes(npz_bytes(**score_sets.runs_arrays(ws, ws.get(ids["runs"]))))
        export_seconds = time.perf_counter() - start
        back = _run_child("import", str(ws.path), models["cifar10"], str(exported))
        from explorer.store import artifacts

        same = np.array_equal(artifacts.load_scores(ws, ids["runs"]).values,
                              artifacts.load_scores(ws, back["id"]).values, equal_nan=True)
        results["scores_round_trip"] = (f"export {export_seconds:.2f} s + import {back['seconds']:.2f} s "
                                        f"({RUNS:,} runs × {N_TRAIN:,}); same estimate bit for bit: {same}")
    return results


if __name__ == "__main__":
    _child(sys.argv[1:])
