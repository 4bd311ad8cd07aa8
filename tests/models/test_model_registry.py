"""Registry behaviour: unknown names, bad sizes, registration, torchvision pass-through."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import secateurs
from secateurs.errors import UsageError
from secateurs.models import build_model, list_models, register_model
from secateurs.models import registry


def test_unknown_name_lists_known_models() -> None:
    with pytest.raises(UsageError) as info:
        build_model("resnet21", in_channels=3, num_classes=10, image_size=32)
    message = str(info.value)
    assert "resnet21" in message and "resnet20" in message and "torchvision:" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "kwargs",
    [
        {"in_channels": 0, "num_classes": 10, "image_size": 32},
        {"in_channels": 3, "num_classes": -1, "image_size": 32},
        {"in_channels": 3, "num_classes": 10, "image_size": 0},
        {"in_channels": 3, "num_classes": 10, "image_size": (32, 32, 3)},
        {"in_channels": True, "num_classes": 10, "image_size": 32},
    ],
)
def test_bad_sizes_are_usage_errors(kwargs: dict) -> None:
    with pytest.raises(UsageError):
        build_model("mlp", **kwargs)


def test_lenet5_rejects_tiny_images() -> None:
    with pytest.raises(UsageError, match="at least"):
        build_model("lenet5", in_channels=1, num_classes=10, image_size=8)


def test_register_model(monkeypatch: pytest.MonkeyPatch) -> None:
    list_models()  # load the built-ins before isolating the registry
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @register_model("tiny", "a tiny test model")
    def tiny(*, in_channels: int, num_classes: int, image_size: tuple[int, int]) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size[0] * image_size[1],
                                                     num_classes))

    assert ("tiny", "a tiny test model") in list_models()
    model = build_model("tiny", in_channels=1, num_classes=3, image_size=4)
    assert model(torch.randn(2, 1, 4, 4)).shape == (2, 3)
    with pytest.raises(UsageError, match="already registered"):
        register_model("tiny", "again")(tiny)
    with pytest.raises(UsageError):
        register_model("torchvision:mine", "reserved prefix")


def test_torchvision_resnet18_with_one_input_channel() -> None:
    pytest.importorskip("torchvision")
    model = build_model("torchvision:resnet18", in_channels=1, num_classes=10, image_size=32)
    stem = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert stem is model.conv1
    assert stem.in_channels == 1 and stem.out_channels == 64
    assert stem.kernel_size == (7, 7) and stem.stride == (2, 2) and stem.padding == (3, 3)
    assert stem.bias is None
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_torchvision_three_channels_keeps_stem() -> None:
    pytest.importorskip("torchvision")
    model = build_model("torchvision:resnet18", in_channels=3, num_classes=5, image_size=32)
    assert model.conv1.in_channels == 3 and model.fc.out_features == 5


def test_unknown_torchvision_name() -> None:
    pytest.importorskip("torchvision")
    with pytest.raises(UsageError, match="torchvision"):
        build_model("torchvision:not_a_model", in_channels=3, num_classes=10, image_size=32)


def test_missing_torchvision_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes `import torchvision` raise ImportError.
    monkeypatch.setitem(sys.modules, "torchvision", None)
    with pytest.raises(UsageError, match="pip install torchvision"):
        build_model("torchvision:resnet18", in_channels=3, num_classes=10, image_size=32)


def test_import_is_light() -> None:
    code = (
        "import sys, torch, secateurs.models, secateurs.metrics\n"
        "from secateurs.models import list_models; list_models()\n"
        "assert 'torchvision' not in sys.modules, 'torchvision imported'\n"
        "assert not torch.cuda.is_initialized(), 'CUDA initialised'\n"
    )
    # The child must find the same secateurs, installed or not.
    src = str(Path(secateurs.__file__).resolve().parents[1])
    paths = [src, os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 0, result.stderr


def test_adapt_first_conv_keeps_hyperparameters_and_falls_back_on_groups() -> None:
    from secateurs.models.torchvision_models import adapt_first_conv

    model = nn.Sequential(nn.Conv2d(3, 6, 3, stride=2, padding=1, groups=3), nn.Conv2d(6, 2, 1))
    new = adapt_first_conv(model, 6)
    assert model[0] is new and (new.in_channels, new.out_channels, new.groups) == (6, 6, 3)
    assert new.stride == (2, 2) and new.padding == (1, 1) and new.bias is not None
    new = adapt_first_conv(model, 1)
    assert (new.in_channels, new.out_channels, new.groups) == (1, 6, 1)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 2, 4, 4)
    with pytest.raises(UsageError):
        adapt_first_conv(nn.Linear(2, 2), 1)
