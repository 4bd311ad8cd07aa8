"""``timm:<name>`` models: input channels, classes and (for fixed-size models) the image size follow the data."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from secateurs.cli.main import main
from secateurs.errors import UsageError
from secateurs.models import build_model, register_model

pytest.importorskip("timm")


def test_a_convolutional_timm_model_takes_the_data_channels_and_classes() -> None:
    model = build_model("timm:resnet18", in_channels=1, num_classes=7, image_size=20)
    stem = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert stem.in_channels == 1
    assert model.eval()(torch.randn(2, 1, 20, 20)).shape == (2, 7)


def test_a_fixed_size_timm_model_is_built_for_the_data_size() -> None:
    model = build_model("timm:vit_tiny_patch16_224", in_channels=1, num_classes=10, image_size=32)
    # 2x2 patches plus the class token: the position embedding follows img_size, not the default 224.
    assert model.pos_embed.shape[1] == 2 * 2 + 1
    assert model.patch_embed.proj.in_channels == 1
    assert model.eval()(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_a_model_whose_stem_rounds_up_is_sized_to_run_on_the_data() -> None:
    # LeViT's stride-16 stem maps 28x28 to 2x2, but img_size=28 would size its attention biases for 1x1.
    model = build_model("timm:levit_128s", in_channels=1, num_classes=10, image_size=28)
    assert model.eval()(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_unknown_timm_names_are_one_line_usage_errors(capsys) -> None:
    with pytest.raises(UsageError, match="did you mean 'timm:resnet18'") as info:
        build_model("timm:resnt18", in_channels=3, num_classes=10, image_size=32)
    assert "\n" not in str(info.value)
    with pytest.raises(UsageError):
        register_model("timm:mine", "reserved prefix")
    assert main(["inspect", "--prunability", "timm:no_such_model"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_inspect_prunability_of_a_timm_model(capsys) -> None:
    assert main(["inspect", "--prunability", "timm:resnet18", "--image-size", "32", "--in-channels", "1"]) == 0
    out = capsys.readouterr().out
    assert "ResNet" in out and "layer1.0.conv1" in out and "removable" in out
