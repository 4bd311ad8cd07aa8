"""Contract tests of every registered model: shapes, gradients, stem and classifier order."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from secateurs.models import build_model, list_models

MODEL_NAMES = [name for name, _ in list_models()]
# (in_channels, image_size, num_classes): MNIST-like and CIFAR-100-like data.
DATA_SHAPES = [(1, 28, 10), (3, 32, 100)]


def test_builtin_models_are_registered() -> None:
    assert {"mlp", "lenet5", "resnet20", "resnet56", "resnet18", "vgg16"} <= set(MODEL_NAMES)
    assert all(description for _, description in list_models())


@pytest.mark.parametrize("in_channels,image_size,num_classes", DATA_SHAPES)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_backward(name: str, in_channels: int, image_size: int, num_classes: int) -> None:
    model = build_model(
        name, in_channels=in_channels, num_classes=num_classes, image_size=image_size
    )
    x = torch.randn(2, in_channels, image_size, image_size)
    out = model(x)
    assert out.shape == (2, num_classes)
    out.square().mean().backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None, param_name
        assert torch.isfinite(param.grad).all(), param_name


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_first_conv_is_stem_and_last_linear_is_classifier(name: str) -> None:
    model = build_model(name, in_channels=3, num_classes=7, image_size=32)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    x = torch.randn(2, 3, 32, 32)
    seen: dict[str, torch.Tensor] = {}
    hooks = [linears[-1].register_forward_hook(lambda m, i, o: seen.update(logits=o))]
    if convs:
        hooks.append(convs[0].register_forward_pre_hook(lambda m, i: seen.update(stem_in=i[0])))
    out = model(x)
    for hook in hooks:
        hook.remove()
    assert torch.equal(seen["logits"], out)
    if convs:
        assert seen["stem_in"] is x
        assert convs[0].in_channels == 3


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name,expected", [("resnet20", 0.27e6), ("resnet56", 0.85e6)])
def test_he_cifar_resnet_sizes(name: str, expected: float) -> None:
    model = build_model(name, in_channels=3, num_classes=10, image_size=32)
    assert abs(_count(model) - expected) / expected < 0.05


def test_resnet_shortcuts_are_projections_when_shape_changes() -> None:
    model = build_model("resnet20", in_channels=3, num_classes=10, image_size=32)
    assert isinstance(model.layer1[0].shortcut, nn.Identity)
    projection = model.layer2[0].shortcut
    assert isinstance(projection[0], nn.Conv2d) and projection[0].kernel_size == (1, 1)
    assert isinstance(projection[1], nn.BatchNorm2d)


def test_resnet18_is_cifar_style() -> None:
    model = build_model("resnet18", in_channels=3, num_classes=10, image_size=32)
    stem = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1) and stem.out_channels == 64
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    widths = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert max(widths) == 512
    assert abs(_count(model) - 11.17e6) / 11.17e6 < 0.02


def test_vgg16_has_thirteen_batchnorm_convs() -> None:
    model = build_model("vgg16", in_channels=3, num_classes=10, image_size=32)
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 13
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 13


def test_convs_get_kaiming_fan_out_init() -> None:
    model = build_model("vgg16", in_channels=3, num_classes=10, image_size=32)
    conv = model.features[-4]  # a 512 -> 512 conv: 512 * 9 fan-out, plenty of samples
    assert isinstance(conv, nn.Conv2d)
    expected_std = (2.0 / (conv.out_channels * 9)) ** 0.5
    assert conv.weight.std().item() == pytest.approx(expected_std, rel=0.05)


def test_image_size_accepts_height_width() -> None:
    model = build_model("lenet5", in_channels=1, num_classes=10, image_size=(28, 32))
    assert model(torch.randn(2, 1, 28, 32)).shape == (2, 10)
