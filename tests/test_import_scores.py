"""Score files made elsewhere: every format from a file written with its published keys, dtypes and
shapes, the two real C-score files, alignment refused or mapped by original index, raw runs
estimated here, the export → import round trip, and an imported set driving RUM.

The digits stand in for CIFAR where a file's shape does not matter: their training samples are
what a seeded per-class holdout leaves of the 1,797 (as RUM's CIFAR-100 path holds 10% of each
class out), so a file keyed by original index must be mapped through the holdout's indices.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import CPU, last_json, snapshot
from explorer import commands, data, training
from explorer.cli import app
from explorer.data import DatasetSpec
from explorer.evaluation import influence
from explorer.memorization import estimator, scores
from explorer.memorization.estimator import ExactConfig
from explorer.pipeline import checkpoints, forget_sets, memorize, runs, score_files
from explorer.store import artifacts
from explorer.store.workspace import Workspace

runner = CliRunner()
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared/data from the repository


def cli(ws_path, *args):
    return runner.invoke(app, [*args, "--workspace", str(ws_path)])


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A digits model (with 5% flipped labels: a file's labels are the clean targets) and its dataset."""
    ws = Workspace(tmp_path_factory.mktemp("imports") / "ws")
    rec = checkpoints.train(ws, DatasetSpec(label_noise=0.05), "mlp", training.Recipe(epochs=8), CPU)
    return ws, rec, data.load(DatasetSpec(label_noise=0.05))


def full_labels(ds) -> np.ndarray:
    """The labels of all 1,797 digits in their own order: the train split's at their original
    indices, the test split's (the rest, in order) at theirs."""
    labels = np.empty(ds.source_size, dtype=np.int64)
    labels[ds.train_origin] = ds.y_train_clean.numpy()
    labels[np.setdiff1d(np.arange(ds.source_size), ds.train_origin)] = ds.y_test.numpy()
    return labels


def write(fmt: str, folder, ds, rng) -> tuple:
    """A file of `fmt` with the published keys, dtypes and shapes, and the values each training
    sample must get from it (raw, before orientation)."""
    n, m, full = ds.n_train, len(ds.y_test), full_labels(ds)
    if fmt == "fz":  # Feldman & Zhang's CIFAR-100 file: original order, influence within each class
        tr_mem = rng.random(len(full))
        blocks = {}
        for c in range(10):
            tr, tt = np.flatnonzero(full == c), np.flatnonzero(ds.y_test.numpy() == c)
            blocks |= {f"tr_classidx_{c}": tr, f"tt_classidx_{c}": tt,
                       f"infl_matrix_class{c}": rng.normal(0, 0.05, (len(tr), len(tt))).astype(np.float32)}
        np.savez(folder / "cifar100_infl_matrix.npz", tr_mem=tr_mem, tr_labels=full, tt_labels=ds.y_test.numpy(),
                 **blocks)
        return folder / "cifar100_infl_matrix.npz", "exact", tr_mem[ds.train_origin]
    if fmt == "cscore":  # Jiang et al.'s: labels int64, scores float64, original order
        cs = rng.random(len(full))
        np.savez(folder / "digits-cscores-orig-order.npz", labels=full, scores=cs)
        return folder / "digits-cscores-orig-order.npz", "cscore", cs[ds.train_origin]
    if fmt == "rum":  # the RUM code's np.savez: float32 memorization, influence test × train, no labels
        mem = rng.random(n, dtype=np.float32)
        np.savez(folder / "estimates_results.npz", memorization=mem,
                 influence=rng.normal(0, 0.05, (m, n)).astype(np.float32))
        return folder / "estimates_results.npz", "exact", mem.astype(np.float64)
    if fmt == "runs":  # masks and correctness per model, bool, as the CIFAR-10N memorization release
        masks = estimator.masks_of(estimator.subsets(n, 0.7, 24, 1), n)
        correct = rng.random((24, n)) < np.where(masks, 0.95, 0.7)
        np.savez_compressed(folder / "runs.npz", trainset_mask=masks, trainset_correctness=correct,
                            testset_correctness=rng.random((24, m)) < 0.8, tr_labels=ds.y_train_clean.numpy(),
                            tt_labels=ds.y_test.numpy())
        return folder / "runs.npz", "exact", estimator.estimate(masks, correct)["values"]
    values = rng.random(n)  # csv: the explorer's own export's columns
    lines = ["sample_id,label,value,stderr"] + [f"{i},{y},{v!r},0.01" for i, (y, v) in
                                                enumerate(zip(ds.y_train_clean.tolist(), values.tolist()))]
    (folder / "scores.csv").write_text("\n".join(lines) + "\n")
    return folder / "scores.csv", "exact", values


FORMATS = ["fz", "cscore", "rum", "runs", "csv"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_is_recognised_mapped_and_kept_with_its_source(model, tmp_path, fmt):
    ws, rec, ds = model
    path, name, want = write(fmt, tmp_path, ds, np.random.default_rng(FORMATS.index(fmt)))
    res = cli(ws.path, "import-scores", str(path), "--model", rec["id"], "--name", f"{fmt} file", "--json")
    assert res.exit_code == 0, res.output
    got = last_json(res.stdout)
    assert got["name"] == name and got["source"]["format"] == fmt and got["title"] == f"{fmt} file"
    assert got["source"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert got["source"]["file"] == path.name and got["n_missing"] == 0
    stored = artifacts.load_scores(ws, got["id"])
    np.testing.assert_array_equal(stored.values, want)
    # Keyed by original index, a digits file covers all 1,797: mapped through the split's holdout.
    assert got["params"]["aligned_by"] == ("original index" if fmt in ("fz", "cscore") else
                                           "sample id" if fmt == "csv" else "position")
    if fmt == "rum":  # RUM's file has no labels: said, not silently trusted
        assert "could not be checked" in got["labels_checked"] and "warning:" in res.stderr
    else:
        assert got["labels_checked"].startswith("labels equal the dataset's targets on 1,347 samples")
    if fmt == "cscore":  # a consistency: 1 − C is the memorization-like score
        assert got["orientation"] == -1 and scores.oriented_name("cscore") == "1 − cscore"
        np.testing.assert_allclose(stored.oriented, 1 - want)
    if fmt == "runs":
        est = estimator.estimate(stored.arrays["masks"], stored.arrays["correct"])
        np.testing.assert_array_equal(stored.arrays["stderr"], est["stderr"])
        assert got["models"] == 24 and stored.arrays["test_correct"].shape == (24, len(ds.y_test))
    if fmt == "csv":
        np.testing.assert_array_equal(stored.arrays["stderr"], np.full(ds.n_train, 0.01))
    listed = json.loads(cli(ws.path, "list", "scores", "--json").stdout)
    assert got["id"] in [s["id"] for s in listed]


def test_imported_influence_is_kept_and_exported(model, tmp_path):
    ws, rec, ds = model
    rng = np.random.default_rng(7)
    path, *_ = write("rum", tmp_path, ds, rng)
    rum = score_files.import_scores(ws, rec, path)
    with np.load(path) as z:
        matrix = z["influence"]  # test × train, as RUM's code computes it
    stored = artifacts.open_influence(ws, rum)
    np.testing.assert_array_equal(stored.of_train(5), matrix[:, 5].astype(np.float64))
    res = cli(ws.path, "export", rum["id"], "--table", "influence", "--top", "3", "--format", "json")
    assert res.exit_code == 0, res.output
    rows = [r for r in json.loads(res.stdout) if r["train_id"] == 5]
    assert rows == influence.pairs_of(5, matrix[:, 5], 3) and len(rows) == 6

    # Over all 1,797 digits (by original index) and in float64: re-indexed and cast block by block.
    wide = rng.normal(0, 0.05, (len(ds.y_test), ds.source_size))
    np.savez(tmp_path / "wide.npz", memorization=rng.random(ds.source_size), influence=wide)
    stored = artifacts.open_influence(ws, score_files.import_scores(ws, rec, tmp_path / "wide.npz"))
    for i in (0, 5, ds.n_train - 1):
        np.testing.assert_array_equal(stored.of_train(i), wide[:, ds.train_origin[i]].astype(np.float32))

    fz_path, *_ = write("fz", tmp_path, ds, rng)
    fz = score_files.import_scores(ws, rec, fz_path)
    assert fz["influence"] == {"layout": "blocks", "blocks": 10}
    with np.load(fz_path) as z:
        i = 0  # training sample 0 is original index train_origin[0], in its class's block at that row
        c = int(ds.y_train_clean[i])
        row = int(np.flatnonzero(z[f"tr_classidx_{c}"] == ds.train_origin[i])[0])
        want = np.full(len(ds.y_test), np.nan)
        want[z[f"tt_classidx_{c}"]] = z[f"infl_matrix_class{c}"][row]
    np.testing.assert_array_equal(artifacts.open_influence(ws, fz).of_train(i), want)


def test_misaligned_labels_are_refused_in_one_line_and_nothing_is_written(model, tmp_path):
    ws, rec, ds = model
    full = full_labels(ds)
    shuffled = full.copy()
    swap = ds.train_origin[[3, 40, 41]]
    shuffled[swap] = (shuffled[swap] + 1) % 10
    np.savez(tmp_path / "bad.npz", tr_mem=np.random.default_rng(0).random(len(full)), tr_labels=shuffled)
    # The same labels in the dataset's sample order rather than the original order: misaligned too.
    np.savez(tmp_path / "reordered.npz", scores=np.zeros(len(full)), labels=np.r_[ds.y_train_clean.numpy(), ds.y_test.numpy()])
    before = snapshot(ws)
    res = cli(ws.path, "import-scores", str(tmp_path / "bad.npz"), "--model", rec["id"])
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "labels differ from the dataset's targets at 3 of 1,347 samples" in res.stderr
    assert f"file indices {', '.join(map(str, sorted(swap)))}" in res.stderr
    res = cli(ws.path, "import-scores", str(tmp_path / "reordered.npz"), "--model", rec["id"])
    assert res.exit_code == 2 and "not aligned" in res.stderr
    assert snapshot(ws) == before


BAD_FILES = [
    ("keys.npz", {"weights": np.zeros(3)}, "none of the known keys"),
    ("short.npz", {"tr_mem": np.zeros(1_000), "tr_labels": np.zeros(1_000, np.int64)}, "a file indexed after a holdout"),
    ("runs.npz", {"trainset_mask": np.ones((3, 1347), bool), "trainset_correctness": np.ones((3, 1346), bool)},
     "must both be (runs, training samples)"),
    ("objects.npz", {"scores": np.zeros(1797), "filenames": np.array([object()] * 1797, dtype=object)},
     "Python objects"),
]


@pytest.mark.parametrize("name, arrays, message", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_files_exit_2_with_one_line(model, tmp_path, name, arrays, message):
    ws, rec, _ = model
    np.savez(tmp_path / name, allow_pickle=True, **arrays) if name == "objects.npz" else np.savez(tmp_path / name, **arrays)
    before = snapshot(ws)
    res = cli(ws.path, "import-scores", str(tmp_path / name), "--model", rec["id"])
    assert res.exit_code == 2, res.output
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert snapshot(ws) == before


def test_a_holdout_indexed_file_is_mapped_by_original_index(model, tmp_path):
    """RUM's CIFAR-100 path keeps tr_mem[train_idx]: scores by position after a holdout. Scores
    keyed by original index (the whole file, or an `index` column) land on the right samples; a
    positional slice of another length is refused, not shifted."""
    ws, rec, ds = model
    full = full_labels(ds)
    rng = np.random.default_rng(3)
    tr_mem = rng.random(len(full))
    np.savez(tmp_path / "fz.npz", tr_mem=tr_mem, tr_labels=full)
    got = artifacts.load_scores(ws, score_files.import_scores(ws, rec, tmp_path / "fz.npz"))
    assert not np.array_equal(ds.train_origin, np.arange(ds.n_train))  # a holdout: positions are not indices
    np.testing.assert_array_equal(got.values, tr_mem[ds.train_origin])
    some = rng.choice(ds.train_origin, 200, replace=False)  # a partial table keyed by original index
    (tmp_path / "some.csv").write_text("index,label,memorization\n" + "".join(
        f"{i},{full[i]},{float(tr_mem[i])!r}\n" for i in some))
    partial = score_files.import_scores(ws, rec, tmp_path / "some.csv")
    values = artifacts.load_scores(ws, partial).values
    kept = np.flatnonzero(np.isin(ds.train_origin, some))
    np.testing.assert_array_equal(values[kept], tr_mem[ds.train_origin[kept]])
    assert partial["n_missing"] == ds.n_train - 200 and np.isnan(values).sum() == ds.n_train - 200
    keep = np.sort(rng.choice(len(full), int(0.9 * len(full)), replace=False))  # a 10% holdout's positions
    np.savez(tmp_path / "sliced.npz", tr_mem=tr_mem[keep], tr_labels=full[keep])
    with pytest.raises(score_files.ScoreFileError, match="must be imported whole, keyed by the original index"):
        score_files.import_scores(ws, rec, tmp_path / "sliced.npz")


def test_runs_give_the_estimators_memorization_and_must_agree_with_their_own(model, tmp_path):
    ws, rec, ds = model
    n = ds.n_train
    rng = np.random.default_rng(5)
    masks = rng.random((30, n)) < 0.5
    correct = rng.random((30, n)) < 0.8
    est = estimator.estimate(masks, correct)
    # RUM's code's own figure: float32, so within rounding of ours
    np.savez(tmp_path / "agree.npz", trainset_mask=masks, trainset_correctness=correct,
             memorization=est["values"].astype(np.float32))
    got = score_files.import_scores(ws, rec, tmp_path / "agree.npz")
    np.testing.assert_array_equal(artifacts.load_scores(ws, got).values, est["values"])
    assert got["agreement"] <= score_files.AGREEMENT and got["never_held_out"] == int((est["n_out"] == 0).sum())
    wrong = est["values"].copy()
    wrong[[7, 9]] += 0.25
    np.savez(tmp_path / "disagree.npz", trainset_mask=masks, trainset_correctness=correct, memorization=wrong)
    before = snapshot(ws)
    res = cli(ws.path, "import-scores", str(tmp_path / "disagree.npz"), "--model", rec["id"])
    assert res.exit_code == 2 and "differs from the estimate from its own runs at 2 samples" in res.stderr
    assert snapshot(ws) == before


@pytest.fixture(scope="module")
def exact(model):
    ws, rec, _ = model
    return memorize.exact(ws, rec, ExactConfig(models=8, epochs=4, engine="batched"), CPU)


def test_export_then_import_gives_the_same_estimate_bit_for_bit(model, exact, tmp_path):
    ws, rec, ds = model
    out = tmp_path / "exact-runs.npz"
    res = cli(ws.path, "export", exact["id"], "--format", "npz", "--out", str(out))
    assert res.exit_code == 0, res.output
    with np.load(out) as z:
        assert {"trainset_mask", "trainset_correctness", "testset_correctness", "trainset_margins",
                "testset_margins", "memorization", "tr_labels", "tt_labels", "trained_labels"} <= set(z.files)
        np.testing.assert_array_equal(z["tr_labels"], ds.y_train_clean.numpy())  # the targets, not the flipped
    res = cli(ws.path, "import-scores", str(out), "--model", rec["id"], "--json")
    assert res.exit_code == 0, res.output
    again = artifacts.load_scores(ws, last_json(res.stdout)["id"])
    first = artifacts.load_scores(ws, exact)
    assert again.values.tobytes() == first.values.tobytes()
    for key in ("stderr", "masks", "correct", "test_correct", "phi", "test_phi", "n_in", "n_out"):
        assert again.arrays[key].tobytes() == first.arrays[key].tobytes(), key
    # Exported again, the import is the same file's content
    res = cli(ws.path, "export", again.record["id"], "--format", "npz", "--out", str(tmp_path / "again.npz"))
    assert res.exit_code == 0, res.output


def test_npz_export_refuses_what_it_cannot_write(model, exact, tmp_path):
    ws, rec, _ = model
    proxies = memorize.compute_proxies(ws, rec, ["confidence"], CPU)[0][0]
    for args, message in (((exact["id"], "--format", "npz"), "give --out FILE"),
                          ((proxies["id"], "--format", "npz", "--out", str(tmp_path / "x.npz")), "no subset runs")):
        res = cli(ws.path, "export", *args)
        assert res.exit_code == 2 and message in res.stderr
    assert not (tmp_path / "x.npz").exists()


def test_an_imported_set_drives_forget_sets_rum_and_the_memorization_groups(tmp_path):
    ws = Workspace(tmp_path / "ws")
    rec = checkpoints.train(ws, DatasetSpec(), "mlp", training.Recipe(epochs=8), CPU)
    ds = data.load(DatasetSpec())
    path, *_ = write("fz", tmp_path, ds, np.random.default_rng(11))
    imported = score_files.import_scores(ws, rec, path)
    assert artifacts.memorization_of(ws, rec)[0] == "exact"  # what evaluate's per-group split reads
    fs = forget_sets.create(ws, rec, "mix", size=30, score_id=imported["id"])
    assert fs["memorization_id"] == imported["id"] and fs["how"]["score_id"] == imported["id"]
    values = artifacts.load_scores(ws, imported).values
    assert set(np.argsort(values)[-10:]) <= set(fs["ids"])  # mix: a third from the most memorized
    run = runs.unlearn(ws, rec, fs, "rum", {"score": "exact", "steps": [
        "none", {"method": "finetune", "params": {"epochs": 1}}, {"method": "finetune", "params": {"epochs": 1}}]}, CPU)
    assert run["details"]["score"] == {"name": "exact", "id": imported["id"]}
    assert sum(run["details"]["groups"].values()) == 30


@pytest.fixture
def cifar_standins(monkeypatch, tmp_path):
    """CIFAR-10 and CIFAR-100 as explorer.data loads them, with the real C-score files' training
    labels and 2×2 images: torchvision cannot download CIFAR here, and alignment reads only labels.
    What the test can fail on is the file's content: its keys and dtypes, its 50,000 entries
    landing on the right samples, their orientation, and the other file's labels being refused."""
    def standin(path, classes):
        def load(spec):
            with np.load(path) as z:
                labels = z["labels"]
            rng = np.random.default_rng(0)
            x = rng.integers(0, 256, (len(labels), 2, 2, 3), dtype=np.uint8)
            return [str(c) for c in range(classes)], x, labels, x[:100], np.arange(100) % classes
        return load

    made = {}
    for classes in (10, 100):
        path = SHARED / f"cifar{classes}-cscores-orig-order.npz"
        if not path.exists():
            pytest.skip(f"{path} is absent")
        monkeypatch.setitem(data.SOURCES, f"cifar{classes}", standin(path, classes))
        made[classes] = path
    ws = Workspace(tmp_path / "ws")
    models = {}
    for classes in made:
        spec = DatasetSpec(name=f"cifar{classes}", root=str(tmp_path / f"c{classes}"))
        net = training.init_model("mlp", data.load(spec), 0)
        models[classes] = checkpoints.register_import(ws, net, "mlp", spec, f"cifar{classes} stand-in")
    return ws, models, made


def test_the_real_cscore_files_attach_to_a_dataset_with_their_labels(cifar_standins):
    ws, models, files = cifar_standins
    for classes, path in files.items():
        res = cli(ws.path, "import-scores", str(path), "--model", models[classes]["id"], "--json")
        assert res.exit_code == 0, res.output
        rec = last_json(res.stdout)
        assert rec["source"]["format"] == "cscore" and rec["name"] == "cscore" and rec["n"] == 50_000
        assert rec["params"]["aligned_by"] == "position" and rec["labels_checked"].startswith("labels equal")
        with np.load(path) as z:
            assert z["labels"].dtype == np.int64 and z["scores"].dtype == np.float64
            np.testing.assert_allclose(artifacts.load_scores(ws, rec).oriented, 1 - z["scores"])
            labels = z["labels"]
        assert np.bincount(labels).tolist() == [50_000 // classes] * classes
    # CIFAR-10's first training images in torchvision's order: frog, truck, truck, deer, automobile, …
    with np.load(files[10]) as z:
        assert z["labels"][:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    before = snapshot(ws)  # the CIFAR-100 file is not in CIFAR-10's order, nor of its labels
    res = cli(ws.path, "import-scores", str(files[100]), "--model", models[10]["id"])
    assert res.exit_code == 2 and "labels differ from the dataset's targets at" in res.stderr
    assert snapshot(ws) == before


# -- the pages ---------------------------------------------------------------------------------------


def open_page(monkeypatch, ws: Workspace, page: str, model_id: str, **state):
    from streamlit.testing.v1 import AppTest

    from conftest import ROOT

    monkeypatch.setenv("EXPLORER_WORKSPACE", str(ws.path))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.switch_page(f"views/{page}.py")
    at.session_state["model_id"] = model_id
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


@pytest.fixture(scope="module")
def imported_only(tmp_path_factory):
    """A digits model whose only exact memorization and influence came from RUM's file, and a C-score."""
    folder = tmp_path_factory.mktemp("imported_only")
    ws = Workspace(folder / "ws")
    rec = checkpoints.train(ws, DatasetSpec(), "mlp", training.Recipe(epochs=4), CPU)
    ds = data.load(DatasetSpec())
    rng = np.random.default_rng(13)
    rum = score_files.import_scores(ws, rec, write("rum", folder, ds, rng)[0], title="RUM's CIFAR-10 estimate")
    score_files.import_scores(ws, rec, write("cscore", folder, ds, rng)[0])
    return ws, rec, rum, folder


def test_memorization_page_shows_imported_sets_against_the_proxies_and_imports_a_file(monkeypatch, imported_only):
    from explorer.store import jobs

    ws, rec, rum, folder = imported_only
    at = open_page(monkeypatch, ws, "memorization", rec["id"])
    assert not at.exception and not at.error
    said = [c.value for c in at.caption if "is imported" in c.value]
    assert any(c.startswith("**exact** is imported: RUM's CIFAR-10 estimate (rum") for c in said)
    assert any(c.startswith("**cscore** is imported") for c in said)
    assert {el.key for el in at.get("plotly_chart")} == {"scatter"}  # exact against a proxy, the same chart
    assert not any("How the exact estimate converged" in e.label for e in at.expander)  # no runs came with it
    at.session_state["mem_import"] = True  # open the import expander: its form is drawn only then
    at.run()
    ds = data.load(DatasetSpec())
    path = folder / "cscores.csv"  # a table of C-scores: the exact set stays RUM's for the next test
    path.write_text("sample_id,label,cscore\n" + "".join(f"{i},{y},0.5\n" for i, y in enumerate(ds.y_train.tolist())))
    next(t for t in at.text_input if t.label == "…or a file on this machine").input(str(path))
    next(b for b in at.button if b.label == "Import scores").click().run()
    assert not at.exception
    job = next(j for j in jobs.list_jobs(ws) if j["argv"][0] == "import-scores")
    assert job["argv"] == commands.import_scores(str(path), rec["id"], "auto")
    assert jobs.wait(ws, job["id"], timeout=180)["state"] == "succeeded"
    assert artifacts.latest_scores(ws, rec["id"])["cscore"]["title"] == "cscores.csv"


def test_explore_shows_an_imported_influence_matrix_for_a_sample(monkeypatch, imported_only):
    ws, rec, rum, folder = imported_only
    with np.load(folder / "estimates_results.npz") as z:
        expected = influence.pairs_of(9, z["influence"][:, 9], 5)
    at = open_page(monkeypatch, ws, "explore", rec["id"], explore_selection={"model": rec["id"], "ids": [9]})
    assert not at.exception and not at.error
    table = next(d.value for d in at.dataframe if "test id" in d.value.columns)
    assert table["test id"].tolist() == [p["test_id"] for p in expected]
    assert any(m.value.startswith("From the influence matrix imported with RUM's CIFAR-10 estimate") for m in at.markdown)


@pytest.mark.parametrize("layout", ["stored", "compressed", "fortran", "zip64"])
def test_large_arrays_are_read_in_blocks_whatever_their_layout(tmp_path, layout):
    import zipfile

    a = np.random.default_rng(0).random((301, 57), dtype=np.float32)
    path = tmp_path / "a.npz"
    if layout == "zip64":  # how np.savez writes members (and a file over 4 GB needs)
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf, zf.open("influence.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array(f, a)
    else:
        save = np.savez_compressed if layout == "compressed" else np.savez
        save(path, influence=np.asfortranarray(a) if layout == "fortran" else a)
    member = score_files.members(path)["influence"]
    assert (member.offset is None) == (layout == "compressed") and member.fortran == (layout == "fortran")
    blocks = list(member.rows(block_bytes=57 * 4 * 40))  # 40 rows at a time
    assert [lo for lo, _ in blocks] == list(range(0, 301, 40))
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), a)


def test_a_file_naming_its_images_is_joined_on_the_file_name(tmp_path, ws):
    """ImageNet's files have no canonical order: `tr_filenames` (bytes), joined with an image
    folder's files, here PNG copies of some of them, in classes the folder numbers its own way."""
    from PIL import Image

    names = {"n02085620": [f"n02085620_{i}" for i in range(6)], "n01440764": [f"n01440764_{i}" for i in range(6)]}
    for wnid, stems in names.items():
        (tmp_path / "imgs" / wnid).mkdir(parents=True)
        for stem in stems[:5]:  # the folder lacks one image of each class
            Image.fromarray(np.full((8, 8, 3), len(stem), np.uint8)).save(tmp_path / "imgs" / wnid / f"{stem}.png")
    spec = DatasetSpec(name="imagefolder", root=str(tmp_path / "imgs"), test_fraction=0.2)
    ds = data.load(spec)
    rec = checkpoints.register_import(ws, training.init_model("mlp", ds, 0), "mlp", spec, "folder")
    entries = [(f"{wnid}/{stem}.JPEG", {"n01440764": 0, "n02085620": 151}[wnid]) for wnid, stems in names.items()
               for stem in stems]
    order = np.random.default_rng(0).permutation(len(entries))
    tr_mem = np.random.default_rng(1).random(len(entries))
    np.savez(tmp_path / "imagenet_index.npz", tr_mem=tr_mem, tr_labels=np.array([entries[i][1] for i in order]),
             tr_filenames=np.array([entries[i][0].encode() for i in order]))
    got = score_files.import_scores(ws, rec, tmp_path / "imagenet_index.npz")
    assert got["params"]["aligned_by"] == "file name" and "one-to-one" in got["labels_checked"]
    position = {entries[i][0].split("/")[1].split(".")[0]: e for e, i in enumerate(order)}
    want = [tr_mem[position[f.split("/")[1].split(".")[0]]] for f in ds.train_files]
    np.testing.assert_array_equal(artifacts.load_scores(ws, got).values, want)
    # One class of the file over two of the folder's: not aligned.
    np.savez(tmp_path / "merged.npz", tr_mem=tr_mem, tr_labels=np.zeros(len(entries), np.int64),
             tr_filenames=np.array([entries[i][0].encode() for i in order]))
    with pytest.raises(score_files.ScoreFileError, match="not aligned"):
        score_files.import_scores(ws, rec, tmp_path / "merged.npz")
    with pytest.raises(score_files.ScoreFileError, match="goes with an image folder"):
        other = checkpoints.train(ws, DatasetSpec(), "mlp", training.Recipe(epochs=1), CPU)
        score_files.import_scores(ws, other, tmp_path / "imagenet_index.npz")


def test_a_missing_file_is_refused_before_the_workspace_is_opened(tmp_path):
    res = cli(tmp_path / "ws", "import-scores", str(tmp_path / "nowhere.npz"), "--model", "m-00000000")
    assert res.exit_code == 2 and "no such file" in res.stderr and not (tmp_path / "ws").exists()
    (tmp_path / "table.csv").write_text("id,score\n1,0.5\n")
    res = cli(tmp_path / "ws", "import-scores", str(tmp_path / "table.csv"), "--model", "m-00000000")
    assert res.exit_code == 2 and "needs a sample_id (or index) column" in res.stderr
    assert not (tmp_path / "ws").exists()
