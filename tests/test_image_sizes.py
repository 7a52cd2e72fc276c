"""Image folders at their own size: a 16×16 folder stays 16×16 (a model fitted on it was scored on
its images blown up to 32×32 before), a folder of mixed sizes is refused unless a size is named,
and an import whose accuracy looks like a mismatch rather than a model says so."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import last_json
from explorer import data, training
from explorer.cli import app
from explorer.data import DataError, DatasetSpec
from explorer.pipeline import checkpoints
from explorer.store import artifacts, records
from explorer.store.workspace import Workspace
from test_own_models import logits, rum_resnet18, train_steps

runner = CliRunner()


def cli(ws_path, *args):
    return runner.invoke(app, [*args, "--workspace", str(ws_path)])


def folder(root, side=16, odd=None, per_class=12):
    """Two tinted classes of side×side RGB images; `odd` gives one image another size."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls, tint in (("cat", (90, 0, -60)), ("dog", (-60, 30, 90))):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            s = odd if odd and cls == "dog" and i == 0 else side
            image = np.clip(rng.normal(128, 50, (s, s, 3)) + tint, 0, 255).astype(np.uint8)
            Image.fromarray(image).save(root / cls / f"{i}.png")
    return DatasetSpec(name="imagefolder", root=str(root))


def test_a_16_pixel_folder_stays_16_and_its_record_says_so(tmp_path, ws):
    spec = folder(tmp_path / "imgs")
    ds = data.load(spec)
    assert ds.shape == (3, 16, 16) and ds.thumbs_train.shape[1:] == (16, 16, 3)
    rec = checkpoints.dataset_record(ws, spec, ds)
    assert rec["image_size"] == 16 and rec["shape"] == [3, 16, 16]
    assert artifacts.spec_of(rec).image_size == 16  # loaded back at the size recorded
    assert ds.train_files[0].startswith(("cat/", "dog/"))  # the file names a score file can join on


def test_a_record_made_when_folders_were_resized_still_loads_at_32(tmp_path):
    spec = folder(tmp_path / "imgs")
    old = {k: v for k, v in spec.as_meta().items() if k != "image_size"}  # as such records were written
    assert data.load(artifacts.spec_of(records.read("dataset", old))).shape == (3, 32, 32)
    assert "image_size" not in DatasetSpec().as_meta()  # other datasets keep their record ids


def test_mixed_sizes_are_refused_in_one_line_unless_a_size_is_named(tmp_path):
    spec = folder(tmp_path / "imgs", odd=20)
    with pytest.raises(DataError, match=r"holds images of 2 sizes .*dog/0.png is 20×20.*--image-size N") as err:
        data.load(spec)
    assert "\n" not in str(err.value)
    ws_path = tmp_path / "ws"
    res = cli(ws_path, "train", "--dataset", "imagefolder", "--data-root", spec.root, "--arch", "mlp", "--epochs", "1")
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1 and not ws_path.exists()
    res = cli(ws_path, "train", "--dataset", "imagefolder", "--data-root", spec.root, "--arch", "mlp", "--epochs",
              "1", "--image-size", "16", "--device", "cpu", "--json")
    assert res.exit_code == 0, res.output
    ds_rec = Workspace(ws_path).get(last_json(res.stdout)["dataset_id"])
    assert ds_rec["shape"] == [3, 16, 16] and ds_rec["image_size"] == 16


def test_a_non_square_folder_needs_a_size(tmp_path):
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(4):
            Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(tmp_path / cls / f"{i}.png")
    with pytest.raises(DataError, match="16×12 images .*not square"):
        data.load(DatasetSpec(name="imagefolder", root=str(tmp_path)))
    assert data.load(DatasetSpec(name="imagefolder", root=str(tmp_path), image_size=8)).shape == (3, 8, 8)
    with pytest.raises(DataError, match="--image-size is for image folders"):
        data.load(DatasetSpec(image_size=8))


def own_pixels(split_root) -> tuple[torch.Tensor, torch.Tensor]:
    """The folder's images as their files hold them ([0, 1], N×3×H×W) and their labels, in the
    order an ImageFolder lists them (classes, then files, sorted), read without explorer.data."""
    from PIL import Image

    xs, ys = [], []
    for label, cls in enumerate(sorted(p.name for p in split_root.iterdir())):
        for f in sorted((split_root / cls).iterdir()):
            xs.append(np.asarray(Image.open(f).convert("RGB")))
            ys.append(label)
    return torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).float() / 255, torch.tensor(ys)


def checked_folder(root, per_class: int, seed: int) -> None:
    """16×16 images told apart by a one-pixel checkerboard, which resizing blurs away."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:16, :16]
    checker = np.where((yy + xx) % 2 == 0, 50, -50)[..., None]
    for cls, pattern in (("checked", checker), ("plain", 0)):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            image = np.clip(rng.normal(128, 20, (16, 16, 3)) + pattern, 0, 255).astype(np.uint8)
            Image.fromarray(image).save(root / cls / f"{i}.png")


def test_a_resnet_fitted_at_16_pixels_imports_with_its_accuracy(tmp_path):
    """RUM/SalUn's ResNet-18 trained on the folder's own 16×16 images, as their files hold them,
    and saved as their code saves it (with its best accuracy), is scored on those images at that
    size: the accuracy the import reports is the module's own on the files. Blown up to 32×32 (as
    every folder was), the same model answers one class whatever the image, and the import says so."""
    root = tmp_path / "imgs"
    checked_folder(root / "train", 12, 0)
    checked_folder(root / "test", 6, 1)
    x_train, y_train = own_pixels(root / "train")
    x_test, y_test = own_pixels(root / "test")
    torch.manual_seed(0)
    net = rum_resnet18(3, 2)
    train_steps(net, x_train, y_train, steps=15)
    train_acc = (logits(net, x_train).argmax(1) == y_train).float().mean().item()
    test_acc = (logits(net, x_test).argmax(1) == y_test).float().mean().item()
    assert train_acc == 1.0  # it fits its images: what a wrong size would ruin
    torch.save({"state_dict": net.state_dict(), "best_sa": 100 * test_acc, "epoch": 15}, tmp_path / "model_SA_best.pth.tar")
    res = cli(tmp_path / "ws", "import-model", str(tmp_path / "model_SA_best.pth.tar"), "--arch", "resnet18",
              "--dataset", "imagefolder", "--data-root", str(root), "--json")
    assert res.exit_code == 0, res.output
    rec = last_json(res.stdout)
    assert rec["train_acc"] == pytest.approx(train_acc) and rec["test_acc"] == pytest.approx(test_acc)
    assert rec["recorded_accuracy"] == {"key": "best_sa", "split": "validation", "accuracy": pytest.approx(test_acc)}
    assert rec["warning"] is None and "warning" not in res.stderr
    ds = artifacts.dataset_of(Workspace(tmp_path / "ws"), rec)
    assert ds.shape == (3, 16, 16) and torch.equal(ds.y_test, y_test)

    res = cli(tmp_path / "ws", "import-model", str(tmp_path / "model_SA_best.pth.tar"), "--arch", "resnet18",
              "--dataset", "imagefolder", "--data-root", str(root), "--image-size", "32", "--json")
    assert res.exit_code == 0, res.output
    resized = last_json(res.stdout)
    assert resized["test_acc"] <= test_acc - checkpoints.FAR_BELOW
    assert "far below the" in resized["warning"] and "at exactly 0 test accuracy" in resized["warning"]


def test_an_import_far_below_what_its_file_records_warns(tmp_path):
    ds = data.load(DatasetSpec())
    torch.manual_seed(0)
    # pytorch-cifar's main.py saves its test accuracy, in percent, beside the weights
    torch.save({"net": training.init_model("mlp", ds, 0).state_dict(), "acc": 95.0, "epoch": 3}, tmp_path / "ckpt.pth")
    ws_path = tmp_path / "ws"
    res = cli(ws_path, "import-model", str(tmp_path / "ckpt.pth"), "--arch", "mlp", "--dataset", "digits", "--json")
    assert res.exit_code == 0, res.output
    rec = last_json(res.stdout)
    assert "far below the 0.950 its file records (acc, test accuracy)" in rec["warning"]
    assert "check the images' size" in res.stderr
    assert Workspace(ws_path).find("model")  # registered all the same: a warning, not a refusal


def test_classes_at_exactly_0_and_1_look_like_a_mismatch():
    evaluation = {"test_acc": 0.5, "per_class_acc": [1.0, 0.0, 1.0, float("nan")]}
    said = checkpoints.mismatch_warning(evaluation, None, ["cat", "dog", "fox", "owl"])
    assert said.startswith("classes dog are at exactly 0 test accuracy and cat, fox at exactly 1")
    assert checkpoints.mismatch_warning({"test_acc": 0.5, "per_class_acc": [0.6, 0.4]}, None, ["a", "b"]) is None
    near = {"key": "acc", "split": "test", "accuracy": 0.6}
    assert checkpoints.mismatch_warning({"test_acc": 0.5, "per_class_acc": [0.6, 0.4]}, near, ["a", "b"]) is None
