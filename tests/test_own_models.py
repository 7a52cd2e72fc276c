"""Bring your own model: checkpoints saved by other code bases (RUM/SalUn, pytorch-cifar) and a
user's own architecture, imported and then used like any model trained here.

Each foreign model is written here the way its code base writes it, trained a few steps (so its
batch-norm statistics are not the defaults), saved the way that code saves it, imported, and must
predict exactly what the original module predicts on the same images.
"""

from __future__ import annotations

import json
import os
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from conftest import last_json
from explorer import data, models
from explorer.cli import app
from explorer.data import DatasetSpec
from explorer.pipeline import checkpoints
from explorer.pipeline.checkpoints import CheckpointError
from explorer.store import artifacts

runner = CliRunner()
DIGITS = DatasetSpec()


def cli(ws_path, *args):
    return runner.invoke(app, [*args, "--workspace", str(ws_path)])


def pixels(ds, split="train") -> torch.Tensor:
    """The dataset's images as [0, 1] pixels, (n, C, H, W): what RUM/SalUn models take."""
    thumbs = ds.thumbs_train if split == "train" else ds.thumbs_test
    x = torch.from_numpy(thumbs).float() / 255
    return x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)


def train_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float = 0.05):
    """A few SGD steps: weights and batch-norm statistics away from their initial values."""
    torch.manual_seed(0)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(y), (min(64, len(y)),))
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    # Batch-norm statistics of the training images, as a trained model has them: without them a
    # deep net barely a step from its initialization answers the same whatever the image.
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # a cumulative average: one pass sets them
    with torch.no_grad():
        model(x)
    for bn in bns:
        bn.momentum = 0.1
    return opt


@torch.no_grad()
def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    return model(x)


def assert_same_predictions(ws, rec, original, to_input, ds):
    """The imported model, loaded back from the workspace, on the dataset's own tensors gives the
    original module's outputs on the same images as the original expects them (`to_input` of the
    [0, 1] pixels)."""
    loaded = artifacts.load_model(ws, rec)
    x = torch.cat([pixels(ds), pixels(ds, "test")])
    want, got = logits(original, to_input(x)), logits(loaded, torch.cat([ds.x_train, ds.x_test]))
    tol = 1e-4 * want.abs().max()
    assert want.std(0).max() > 100 * tol  # the outputs depend on the input, so the check means something
    assert torch.equal(want.argmax(1), got.argmax(1))
    assert (want - got).abs().max() <= tol


@pytest.fixture
def image_folder(tmp_path):
    """A tiny CIFAR-like set: 32×32 RGB images of two classes (no CIFAR here, and a ResNet-18 on
    32×32 images is cheap when they are few)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls, tint in (("cat", (90, 0, -60)), ("dog", (-60, 30, 90))):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(8):
            image = np.clip(rng.normal(128, 50, (32, 32, 3)) + tint, 0, 255).astype(np.uint8)
            Image.fromarray(image).save(tmp_path / "imgs" / cls / f"{i}.png")
    return DatasetSpec(name="imagefolder", root=str(tmp_path / "imgs"))


# -- 1. RUM / SalUn: torchvision's ResNet-18 with a CIFAR stem and a normalize layer ----------------


class NormalizeByChannelMeanStd(nn.Module):
    """As RUM and SalUn define it: the model takes [0, 1] pixels and normalizes them itself."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("std", torch.tensor(std))

    def forward(self, x):
        return x.sub(self.mean[None, :, None, None]).div(self.std[None, :, None, None])


CIFAR_MEAN, CIFAR_STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]


def rum_resnet18(channels: int, num_classes: int) -> nn.Module:
    import torchvision

    class ResNet(torchvision.models.ResNet):
        def __init__(self):
            super().__init__(torchvision.models.resnet.BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
            self.normalize = NormalizeByChannelMeanStd(CIFAR_MEAN, CIFAR_STD)
            self.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()

        def forward(self, x):
            return super().forward(self.normalize(x))

    return ResNet()


def test_rum_salun_resnet_checkpoint_keeps_its_normalization(ws, tmp_path, image_folder):
    ds = data.load(image_folder)
    torch.manual_seed(0)
    net = rum_resnet18(3, ds.num_classes)
    opt = train_steps(net, pixels(ds), ds.y_train, steps=1)
    # SalUn's save_checkpoint: the weights under "state_dict", beside the epoch and the optimizer
    torch.save({"state_dict": net.state_dict(), "epoch": 3, "best_sa": 41.0, "optimizer": opt.state_dict()},
               tmp_path / "0model_SA_best.pth.tar")

    rec = checkpoints.import_model(ws, tmp_path / "0model_SA_best.pth.tar", "resnet18", image_folder)

    assert rec["layout"].startswith("RUM/SalUn") and any("normalize.mean" in m for m in rec["mapped"])
    assert rec["normalize"] == {"mean": pytest.approx(CIFAR_MEAN), "std": pytest.approx(CIFAR_STD)}
    assert_same_predictions(ws, rec, net, lambda p: p, ds)  # the original takes [0, 1] pixels


@pytest.mark.parametrize("normalize", ["dataset", "0.5/0.5"])
def test_a_normalize_that_contradicts_the_files_buffers_is_refused(tmp_path, image_folder, normalize):
    torch.save({"state_dict": rum_resnet18(3, 2).state_dict()}, tmp_path / "rum.pt")
    with pytest.raises(CheckpointError, match="normalizes \\[0, 1\\] pixels itself"):
        checkpoints.fit(tmp_path / "rum.pt", "resnet18", image_folder, normalize=normalize)


# -- 2. pytorch-cifar: its own ResNet-18 (shortcut, linear) and VGG names --------------------------


class CifarBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                                          nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet18(nn.Module):
    def __init__(self, channels=3, num_classes=10):
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(64, 2, 1)
        self.layer2 = self._make_layer(128, 2, 2)
        self.layer3 = self._make_layer(256, 2, 2)
        self.layer4 = self._make_layer(512, 2, 2)
        self.linear = nn.Linear(512, num_classes)

    def _make_layer(self, planes, blocks, stride):
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(CifarBasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.avg_pool2d(out, 4)
        return self.linear(out.view(out.size(0), -1))


def test_pytorch_cifar_resnet_checkpoint_is_mapped(ws, tmp_path, image_folder):
    ds = data.load(image_folder)
    mean, std = "0.4914,0.4822,0.4465", "0.2023,0.1994,0.2010"  # pytorch-cifar's transforms.Normalize

    def to_input(p):
        return (p - torch.tensor(eval_floats(mean))[:, None, None]) / torch.tensor(eval_floats(std))[:, None, None]

    torch.manual_seed(0)
    net = CifarResNet18(num_classes=ds.num_classes)
    train_steps(net, to_input(pixels(ds)), ds.y_train, steps=1)
    # pytorch-cifar's main.py: a DataParallel model's state under "net", beside acc and epoch
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    torch.save({"net": state, "acc": 40.0, "epoch": 2}, tmp_path / "ckpt.pth")

    rec = checkpoints.import_model(ws, tmp_path / "ckpt.pth", "resnet18", image_folder, normalize=f"{mean}/{std}")

    assert rec["layout"] == "pytorch-cifar"
    assert "linear.* → fc.*" in rec["mapped"] and any("shortcut" in m for m in rec["mapped"])
    assert_same_predictions(ws, rec, net, to_input, ds)


def eval_floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def test_a_resnet_in_no_known_layout_is_refused_in_one_line(tmp_path):
    state = {k.replace("layer", "stage"): v for k, v in CifarResNet18(channels=1).state_dict().items()}
    torch.save(state, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="do not fit a resnet18 .*tried the torchvision, pytorch-cifar layouts"):
        checkpoints.fit(tmp_path / "odd.pt", "resnet18", DIGITS)


VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class CifarVGG(nn.Module):
    """pytorch-cifar's VGG('VGG16')."""

    def __init__(self, num_classes):
        super().__init__()
        layers, in_channels = [], 3
        for x in VGG16:
            if x == "M":
                layers += [nn.MaxPool2d(kernel_size=2, stride=2)]
            else:
                layers += [nn.Conv2d(in_channels, x, kernel_size=3, padding=1), nn.BatchNorm2d(x), nn.ReLU(inplace=True)]
                in_channels = x
        layers += [nn.AvgPool2d(kernel_size=1, stride=1)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x):
        out = self.features(x)
        return self.classifier(out.view(out.size(0), -1))


class SalunVGG(nn.Module):
    """RUM/SalUn's models/VGG.py vgg16_bn: convolutions without biases, no last max-pool, a 2×2
    average pool, a 2048-256-256-C classifier and the normalize layer."""

    def __init__(self, num_classes):
        super().__init__()
        layers, in_channels = [], 3
        for v in VGG16[:-1]:
            if v == "M":
                layers += [nn.MaxPool2d(kernel_size=2, stride=2)]
            else:
                layers += [nn.Conv2d(in_channels, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                in_channels = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(nn.Linear(2048, 256), nn.ReLU(True), nn.Linear(256, 256), nn.ReLU(True),
                                        nn.Linear(256, num_classes))
        self.normalize = NormalizeByChannelMeanStd([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616])

    def forward(self, x):
        x = self.features(self.normalize(x))
        return self.classifier(torch.flatten(self.avgpool(x), 1))


@pytest.mark.parametrize("make, save, normalize, layout", [
    (CifarVGG, lambda net: {"net": net.state_dict(), "acc": 50.0, "epoch": 1}, "0.5/0.25", "pytorch-cifar"),
    (SalunVGG, lambda net: {"state_dict": net.state_dict(), "epoch": 1}, None, "RUM/SalUn vgg16_bn"),
], ids=["pytorch-cifar", "salun"])
def test_vgg_checkpoints_of_other_code_bases(ws, tmp_path, image_folder, make, save, normalize, layout):
    ds = data.load(image_folder)

    def to_input(p):
        return p if normalize is None else (p - 0.5) / 0.25

    torch.manual_seed(0)
    net = make(ds.num_classes)
    train_steps(net, to_input(pixels(ds)), ds.y_train, steps=1, lr=0.01)
    torch.save(save(net), tmp_path / "vgg.pt")

    rec = checkpoints.import_model(ws, tmp_path / "vgg.pt", "vgg16_bn", image_folder, normalize=normalize)

    assert rec["layout"] == layout
    assert_same_predictions(ws, rec, net, to_input, ds)


# -- 3. a user's own architecture: MODULE:CALLABLE ---------------------------------------------

USER_MODULE = '''
import torch
from torch import nn


class Net(nn.Module):
    """A plain MLP for the 8×8 digits, with its author's own layer names."""

    def __init__(self, hidden=32, classes=10):
        super().__init__()
        self.fc1 = nn.Linear(64, hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def not_a_model(**kwargs):
    return "a string"
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A module of the user's, importable as `usernets` (as from the folder they work in)."""
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "usernets.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(folder))
    import importlib
    import sys

    yield importlib.import_module("usernets")
    sys.modules.pop("usernets", None)  # the next test's module is another file


def trained_user_net(user_module, ds, hidden=32):
    torch.manual_seed(0)
    net = user_module.Net(hidden=hidden)
    train_steps(net, pixels(ds), ds.y_train, steps=150, lr=0.1)  # on [0, 1] pixels: imported with --normalize none
    return net


def test_user_architecture_through_the_whole_path(tmp_path, user_module):
    ds = data.load(DIGITS)
    net = trained_user_net(user_module, ds)
    torch.save(net.state_dict(), tmp_path / "mlp.pt")  # a plain torch.save of the state dict
    wsp = tmp_path / "ws"

    res = cli(wsp, "import-model", str(tmp_path / "mlp.pt"), "--arch", "usernets:Net", "--arch-kwargs",
              '{"hidden": 32}', "--dataset", "digits", "--normalize", "none", "--recipe",
              '{"epochs": 4, "lr": 0.1, "batch_size": 128}', "--json")
    assert res.exit_code == 0, res.output
    model = last_json(res.stdout)
    assert model["arch"] == "usernets:Net" and model["arch_kwargs"] == {"hidden": 32}
    assert model["recipe"]["epochs"] == 4 and model["train_acc"] > 0.8 and model["warning"] is None
    assert model["test_acc"] == pytest.approx((logits(net, pixels(ds, "test")).argmax(1) == ds.y_test).float().mean())

    res = cli(wsp, "proxies", model["id"], "--only", "ho_ret,curvature", "--device", "cpu", "--json")
    assert res.exit_code == 0, res.output
    assert {s["name"] for s in last_json(res.stdout)["scores"]} == {"ho_ret", "curvature"}

    res = cli(wsp, "embed", model["id"], "--method", "pca", "--device", "cpu", "--json")
    assert res.exit_code == 0, res.output
    from explorer.store.workspace import Workspace

    ws = Workspace(wsp, create=False)
    sample_map = artifacts.load_map(ws, ws.get(last_json(res.stdout)["id"]))
    assert sample_map.features.shape == (ds.n_train + len(ds.y_test), 32)  # the input of fc2, the last Linear

    res = cli(wsp, "forget-set", "create", "--model", model["id"], "--strategy", "class", "--class", "3",
              "--size", "20", "--json")
    assert res.exit_code == 0, res.output
    fs = last_json(res.stdout)

    res = cli(wsp, "unlearn", model["id"], "--forget", fs["id"], "--method", "finetune", "--params",
              '{"epochs": 1}', "--device", "cpu", "--json")
    assert res.exit_code == 0, res.output
    run = last_json(res.stdout)
    assert run["metrics"]["tow"] is not None
    oracle = ws.get(run["oracle_id"])
    assert oracle["recipe"] == model["recipe"] and oracle["recipe_from"] == "imported"
    assert oracle["arch"] == "usernets:Net" and oracle["normalize"] == model["normalize"]

    res = cli(wsp, "compare", run["id"], "--format", "json")
    assert res.exit_code == 0, res.output
    oracle_row = next(r for r in json.loads(res.stdout) if r["method"] == "oracle")
    assert '"epochs": 4' in oracle_row["settings"] and "--recipe" in oracle_row["settings"]
    res = cli(wsp, "compare", run["id"], "--out", str(tmp_path / "report.html"))
    assert res.exit_code == 0, res.output
    assert run["id"] in (tmp_path / "report.html").read_text()


def test_head_names_the_penultimate_layer(ws, tmp_path, user_module):
    ds = data.load(DIGITS)
    torch.save(user_module.Net().state_dict(), tmp_path / "mlp.pt")
    fitted = checkpoints.fit(tmp_path / "mlp.pt", "usernets:Net", DIGITS, head="fc1")
    assert models.penultimate(fitted.model, ds.x_test[:5]).shape == (5, 64)  # fc1's input: the 8×8 pixels
    with pytest.raises(models.ArchError, match="no layer 'fc9'"):
        checkpoints.fit(tmp_path / "mlp.pt", "usernets:Net", DIGITS, head="fc9")


def test_an_import_near_chance_warns(tmp_path, user_module):
    torch.manual_seed(0)
    torch.save(user_module.Net().state_dict(), tmp_path / "untrained.pt")
    res = cli(tmp_path / "ws", "import-model", str(tmp_path / "untrained.pt"), "--arch", "usernets:Net",
              "--dataset", "digits", "--json")
    assert res.exit_code == 0, res.output
    assert "near chance" in last_json(res.stdout)["warning"]
    assert "warning:" in res.stderr and "check --normalize and the dataset's split" in res.stderr


def test_timm_architecture(ws, tmp_path):
    timm = pytest.importorskip("timm")
    net = timm.create_model("resnet10t", pretrained=False, num_classes=10, in_chans=1)
    torch.save(net.state_dict(), tmp_path / "timm.pt")
    rec = checkpoints.import_model(ws, tmp_path / "timm.pt", "timm:resnet10t", DIGITS)
    ds = data.load(DIGITS)
    assert_same_predictions(ws, rec, net, ds.x_test, ds)


BAD_IMPORTS = [
    (("--arch", "no_such_module_here:Net"), "cannot import no_such_module_here"),
    (("--arch", "usernets:Missing"), "has no callable 'Missing'"),
    (("--arch", "usernets:not_a_model"), "returned a str, not a torch.nn.Module"),
    (("--arch", "usernets:Net", "--arch-kwargs", '{"classes": 5}'), "outputs of shape (5,) per sample but digits has 10"),
    (("--arch", "usernets:Net", "--five-class-weights"), "the file's model has 5 classes but digits has 10"),
    (("--arch", "usernets:Net", "--arch-kwargs", '{"width": 5}'), "unexpected keyword argument 'width'"),
    (("--arch", "usernets:Net", "--arch-kwargs", "{oops"), "--arch-kwargs is not valid JSON"),
    (("--arch", "usernets:Net; rm -rf /"), "is not MODULE:CALLABLE"),
    (("--arch", "mlp", "--arch-kwargs", '{"hidden": 5}'), "--arch-kwargs are for a MODULE:CALLABLE"),
    (("--arch", "resnet18"), "do not fit a resnet18"),
    (("--arch", "usernets:Net", "--normalize", "0.1,0.2/0.3,0.4"), "2 values per part but the images have 1 channel"),
    (("--arch", "usernets:Net", "--normalize", "0.1/0"), "positive standard deviations"),
    (("--arch", "usernets:Net", "--normalize", "bright"), "not dataset, none or MEAN/STD"),
    (("--arch", "usernets:Net", "--recipe", '{"epochz": 3}'), "--recipe has no setting 'epochz'"),
    (("--arch", "usernets:Net", "--recipe", '{"lr": -1}'), "lr must be above 0, got -1"),
]


@pytest.mark.parametrize("args, message", BAD_IMPORTS, ids=[" ".join(a) for a, _ in BAD_IMPORTS])
def test_bad_imports_exit_2_with_one_line_and_write_nothing(tmp_path, user_module, args, message):
    five = "classes" in args[-1] or "--five-class-weights" in args  # weights of a five-class net
    torch.save(user_module.Net(classes=5 if five else 10).state_dict(), tmp_path / "mlp.pt")
    args = tuple(a for a in args if a != "--five-class-weights")
    res = cli(tmp_path / "ws", "import-model", str(tmp_path / "mlp.pt"), "--dataset", "digits", *args)
    assert res.exit_code == 2, res.output
    assert len(res.stderr.strip().splitlines()) == 1 and message in res.stderr, res.stderr
    assert not (tmp_path / "ws").exists()


def test_timm_without_timm_is_refused_in_one_line(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "timm", None)  # as if it were not installed
    torch.save({"w": torch.zeros(1)}, tmp_path / "w.pt")
    res = cli(tmp_path / "ws", "import-model", str(tmp_path / "w.pt"), "--arch", "timm:resnet18", "--dataset", "digits")
    assert res.exit_code == 2 and "needs timm installed" in res.stderr
    assert not (tmp_path / "ws").exists()


def test_a_user_model_loads_in_a_process_started_elsewhere(tmp_path, user_module):
    """A later job (another process, another working folder) finds the user's module again."""
    import subprocess
    import sys

    from conftest import ROOT

    torch.save(user_module.Net().state_dict(), tmp_path / "mlp.pt")
    res = cli(tmp_path / "ws", "import-model", str(tmp_path / "mlp.pt"), "--arch", "usernets:Net",
              "--dataset", "digits", "--json")
    assert res.exit_code == 0, res.output
    model_id = last_json(res.stdout)["id"]
    code = ("import sys; from explorer.store.workspace import Workspace; from explorer.store import artifacts; "
            f"ws = Workspace({str(tmp_path / 'ws')!r}, create=False); "
            f"print(type(artifacts.load_model(ws, ws.get({model_id!r}))).__name__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "Net"


def test_registry_models_keep_their_records(ws, tmp_path):
    """A plain registry import records only `arch`, as before: old and new records load alike."""
    torch.manual_seed(0)
    torch.save(models.build("mlp", 1, 10, 8).state_dict(), tmp_path / "mlp.pt")
    rec = checkpoints.import_model(ws, tmp_path / "mlp.pt", "mlp", DIGITS)
    assert models.arch_of(rec) == "mlp" and not any(k in rec for k in models.ARCH_FIELDS)
    assert rec["layout"] == "explorer" and rec["mapped"] == []



def test_every_method_without_training_dynamics_runs_on_a_user_model(ws, tmp_path, user_module):
    """The methods that need only the weights and the data unlearn a user's model with its own input
    convention; those that need the training run (θ_0, blocks) are refused in one line."""
    from explorer import unlearning
    from explorer.pipeline import forget_sets, memorize, runs

    ds = data.load(DIGITS)
    torch.save(trained_user_net(user_module, ds).state_dict(), tmp_path / "mlp.pt")
    model = checkpoints.import_model(ws, tmp_path / "mlp.pt", "usernets:Net", DIGITS, normalize="none",
                                     recipe=checkpoints.parse_recipe('{"epochs": 1}'))
    memorize.compute_proxies(ws, model, ["curvature"], torch.device("cpu"))
    fs = forget_sets.create(ws, model, "class", classes=[3])  # a whole class, as mnemonic forgets
    for name in unlearning.NAMES:
        params = {"score": "curvature"} if name == "rum" else {"with_data": 1} if name == "mnemonic" else {}
        if "epochs" in unlearning.make(name, {}).params:
            params["epochs"] = 1
        if name in ("sgd_unroll", "deepobliviate"):
            with pytest.raises(unlearning.ParamError, match="needs"):
                runs.unlearn(ws, model, fs, name, params, torch.device("cpu"), with_oracle=False)
            continue
        run = runs.unlearn(ws, model, fs, name, params, torch.device("cpu"), with_oracle=False)
        assert 0 <= run["metrics"]["acc_forget"] <= 1, name
        assert artifacts.unlearned_model(ws, run).explorer_input_scale is not None  # its input convention kept


def test_models_page_imports_a_user_model_and_shows_its_accuracy(monkeypatch, ws, tmp_path, user_module):
    from streamlit.testing.v1 import AppTest

    from conftest import ROOT
    from explorer.store import jobs

    ds = data.load(DIGITS)
    torch.save(trained_user_net(user_module, ds).state_dict(), tmp_path / "mine.pt")
    monkeypatch.chdir(tmp_path / "code")  # the job imports usernets from where the app was started
    monkeypatch.setenv("EXPLORER_WORKSPACE", str(ws.path))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.switch_page("views/models.py")
    at.run()
    assert not any(t.key == "imp_path" for t in at.text_input)  # only the open tab's form is drawn
    at.session_state["models_tab"] = "Import"
    at.run()
    at.text_input(key="imp_path").set_value(str(tmp_path / "mine.pt"))
    at.text_input(key="imp_own").set_value("usernets:Net")
    at.text_input(key="imp_kwargs").set_value('{"hidden": 32}')
    at.selectbox(key="imp_norm").set_value("none")
    at.text_input(key="imp_recipe").set_value('{"epochs": 3}')
    next(b for b in at.button if b.label == "Import").click().run()
    assert not at.exception
    [job] = jobs.list_jobs(ws)
    done = jobs.wait(ws, job["id"], timeout=180)
    assert done["state"] == "succeeded", jobs.log_tail(done)
    rec = ws.get(done["result_id"], "model")
    assert (rec["arch"], rec["arch_kwargs"], rec["recipe"]["epochs"]) == ("usernets:Net", {"hidden": 32}, 3)
    assert rec["normalize"] == {"mean": [0.0], "std": [1.0]} and rec["train_acc"] > 0.8

    at.session_state["last_job"] = done  # what the page's job poller leaves when the job ends
    at.run()
    assert any(f"test accuracy {rec['test_acc']:.3f}" in i.value for i in at.info)
