import pytest
import torch

from explorer import models
from explorer.models import ArchError


@pytest.mark.parametrize("arch, channels, size, feat_dim", [
    ("mlp", 1, 8, 128),
    ("cnn", 1, 8, 64),
    ("cnn", 3, 32, 64),
    ("resnet18", 1, 8, 512),
    ("resnet18", 3, 32, 512),
    ("resnet50", 3, 32, 2048),
    ("vgg16_bn", 3, 32, 512),
])
def test_architectures_fit_the_data_and_expose_features(arch, channels, size, feat_dim):
    model = models.build(arch, channels, 7, size)
    x = torch.randn(2, channels, size, size)
    model.eval()
    assert model(x).shape == (2, 7)
    assert models.penultimate(model, x).shape == (2, feat_dim)
    assert torch.allclose(models.predict_proba(model, x).sum(1), torch.ones(2))


def test_too_small_images_and_unknown_names_are_refused():
    with pytest.raises(ArchError, match="at least 32"):
        models.build("vgg16_bn", 1, 10, 8)
    with pytest.raises(ArchError, match="unknown architecture"):
        models.build("transformer", 1, 10, 8)
