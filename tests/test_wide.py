"""The batched engine for conv nets with batch norm and residual blocks (wide.py): the same
models as training each alone, a sample outside a model's subset never touching it."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from explorer import models, training
from explorer.memorization import estimator
from explorer.training import augment, ensembles, fused, wide

CPU = torch.device("cpu")


def _resnet_block_net(channels=3, classes=4):
    """A stem, one residual block with a downsampling shortcut (batch norm in both paths), pooling."""
    down = nn.Sequential(nn.Conv2d(8, 12, 1, stride=2, bias=False), nn.BatchNorm2d(12))
    return nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         BasicBlock(8, 12, stride=2, downsample=down), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(12, classes))


def _fast(channels=3, classes=4):
    return models.fast_cnn(channels, classes, 16, widths=(8, 12, 12))


def _data(n=96, side=16, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.randn(n, 3, side, side, generator=g) * 0.5 + y.view(-1, 1, 1, 1) * 0.3
    return x, y


def _seeded(build, seed):
    torch.manual_seed(seed)
    return build().double()


@pytest.mark.parametrize("build, extra", [
    (_resnet_block_net, {}),
    (_fast, {"augment": True, "label_smoothing": 0.2, "cosine": True}),
    (_fast, {"sd_lambda": 0.3, "weight_decay": 0.0}),
], ids=["resnet_block", "fast_cnn_augmented", "fast_cnn_sd"])
def test_the_wide_batched_engine_trains_each_model_as_fit_trains_it(build, extra):
    """Weights, batch-norm running statistics and eval-mode outputs of K models trained as one
    wide model equal those of K independent `fit`s, in float64 (where float rounding, which SGD
    amplifies, cannot hide a different algorithm)."""
    x, y = _data()
    x = x.double()
    seeds = [5, 6, 7]
    subs = torch.as_tensor(estimator.subsets(len(y), 0.7, len(seeds), seed=0))
    recipe = training.Recipe(epochs=2, lr=0.05, batch_size=16, **extra)
    ens = fused.train([_seeded(build, s) for s in seeds], x, y, subs, recipe, CPU, seeds, "own")
    assert isinstance(ens, wide.Wide)
    ens.eval()
    wide_logits = ens.forward(x[:10])
    for k, seed in enumerate(seeds):
        alone = _seeded(build, seed)
        training.fit(alone, x[subs[k]], y[subs[k]], replace(recipe, seed=seed), CPU, record_dynamics=False)
        together = ens.module(k, _seeded(build, 0))
        mine, theirs = alone.state_dict(), together.state_dict()
        assert mine.keys() == theirs.keys()
        assert any("running_mean" in key for key in mine)
        for key in mine:
            assert torch.allclose(mine[key].double(), theirs[key].double(), atol=1e-9, rtol=1e-7), key
        alone.eval()
        assert torch.allclose(alone(x[:10]), wide_logits[:, k], atol=1e-9)


def test_a_sample_outside_a_models_subset_never_changes_its_wide_model():
    x, y = _data()
    subs = torch.as_tensor(estimator.subsets(len(y), 0.7, 3, seed=1))
    outside = np.setdiff1d(np.arange(len(y)), subs[0].numpy())[:10]
    x2, y2 = x.clone(), y.clone()
    x2[outside] = torch.randn_like(x2[outside]) * 5
    y2[outside] = (y2[outside] + 1) % 4
    recipe = training.Recipe(epochs=2, lr=0.05, batch_size=16, augment=True)
    states = []
    for xs, ys in ((x, y), (x2, y2)):
        nets = [_seeded(_resnet_block_net, s).float() for s in range(3)]
        ens = fused.train(nets, xs, ys, subs, recipe, CPU, [0, 1, 2], "own")
        states.append([ens.state(k) for k in range(3)])
    first, second = states
    assert all(torch.equal(first[0][key], second[0][key]) for key in first[0])  # model 0: bit for bit
    assert not all(torch.equal(first[1][key], second[1][key]) for key in first[1])


def test_a_forward_that_mixes_channels_is_refused_not_trained_wrong():
    class Concat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 3, padding=1)
            self.head = nn.Linear(8, 2)

        def forward(self, x):
            h = torch.cat([self.a(x), self.b(x)], 1)  # along channels: model k's block is no longer k-th
            return self.head(h.mean((2, 3)))

    assert wide.unwidenable(Concat()) is None  # only running it shows the mixing
    with pytest.raises(ValueError, match="mixes channels|cannot be trained batched"):
        wide.Wide([Concat(), Concat()], CPU)
    assert "dropout" in wide.unwidenable(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)))


def test_registry_conv_nets_with_batch_norm_train_batched_not_fused():
    for arch in ("resnet18", "vgg16_bn", "fast_cnn"):
        assert ensembles.not_batchable(arch) is None
        assert "batch norm" in ensembles.not_fusable(arch)
        assert "batched" in ensembles.refused("fused", arch)
    assert "mnemonic codes" in ensembles.not_batchable("resnet18", {"mnemonic_tmix": 0.1})
    assert ensembles.not_batchable("mlp", {"mnemonic_tmix": 0.1}) is None
    assert ensembles.not_batchable("sigmoid_mlp", {"mnemonic_tmix": 0.1}) is None  # wide, without batch norm
    assert "augmentation" in ensembles.not_fusable("mlp", {"augment": True})


def test_augmentation_flips_and_shifts_within_two_pixels():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    same = augment.apply(x, torch.tensor([False, False]), torch.zeros(2, 2, dtype=torch.long))
    assert torch.equal(same, x)
    flipped = augment.apply(x, torch.tensor([True, False]), torch.zeros(2, 2, dtype=torch.long))
    assert torch.equal(flipped[0], x[0].flip(-1)) and torch.equal(flipped[1], x[1])
    shifted = augment.apply(x, torch.tensor([False, False]), torch.tensor([[1, 0], [0, -2]]))
    assert torch.equal(shifted[0, 0, :-1], x[0, 0, 1:])  # one row up: row i shows row i + 1
    assert torch.equal(shifted[1, 0, :, 2:], x[1, 0, :, :-2])  # two columns right


def test_fast_cnn_learns_a_small_separable_cifar_shaped_set_with_its_recipe():
    """The registry's fast CIFAR net, with its default recipe (augmentation, label smoothing,
    cosine) cut to a small batch for 160 samples: it fits them and generalizes."""
    g = torch.Generator().manual_seed(0)
    n, classes = 200, 4
    y = torch.arange(n) % classes
    colours = torch.randn(classes, 3, 1, 1, generator=g)
    x = colours[y] + 0.8 * torch.randn(n, 3, 16, 16, generator=g)
    recipe = replace(training.default_for("fast_cnn", "cifar10"), batch_size=32, epochs=8, lr=0.1)
    assert recipe.augment and recipe.label_smoothing == 0.2
    torch.manual_seed(0)
    net = models.build("fast_cnn", 3, classes, 16)
    training.fit(net, x[:160], y[:160], recipe, CPU, record_dynamics=False)
    assert training.accuracy(net, x[:160], y[:160]) > 0.9
    assert training.accuracy(net, x[160:], y[160:]) > 0.8


def test_the_whitening_stem_whitens_its_own_training_patches_and_stays_fixed():
    g = torch.Generator().manual_seed(3)
    mix = torch.tensor([[1.0, 0.8, 0.0], [0.0, 0.6, 0.5], [0.2, 0.0, 0.3]])
    x = torch.einsum("dc,nchw->ndhw", mix, torch.randn(300, 3, 8, 8, generator=g))  # correlated channels
    stem = models.Whiten(3)
    stem.init_from_data(x)
    patches = torch.nn.functional.unfold(x.double(), 2).transpose(1, 2).reshape(-1, 12)
    out = patches @ stem.weight.double().reshape(24, 12).T
    cov = out[:, :12].T @ out[:, :12] / len(out)
    assert torch.allclose(cov, torch.eye(12, dtype=torch.float64), atol=0.05)  # white, up to the eps
    assert torch.allclose(out[:, 12:], -out[:, :12])  # and its negation

    x, y = _data()
    net = _seeded(_fast, 0).float()
    recipe = training.Recipe(epochs=2, lr=0.05, batch_size=16)
    training.fit(net, x[:60], y[:60], recipe, CPU, record_dynamics=False)
    fitted = models.Whiten(3)
    fitted.init_from_data(x[:60])  # its own samples only, and never trained after
    assert torch.equal(net[0].weight, fitted.weight) and not net[0].weight.requires_grad
