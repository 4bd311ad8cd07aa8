"""VGG-16 with batch norm, CIFAR style (Simonyan & Zisserman 2015; one linear classifier)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from secateurs.models._weight_init import init_weights
from secateurs.models.registry import register_model

__all__ = ["VGG", "VGG16_CONFIG", "vgg16"]

# Output channels of each 3x3 conv; "M" is a 2x2 max pool.
VGG16_CONFIG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)


class VGG(nn.Module):
    """Conv-BN-ReLU stages with max pools, global average pool, then one linear classifier.

    Pools use ``ceil_mode=True``: identical to the usual pools on 32x32 inputs, and 28x28 inputs
    (MNIST) still reach 1x1 after five pools (28, 14, 7, 4, 2, 1) instead of collapsing to zero.
    The adaptive average pool makes the classifier's input 512 for any image size.

    Args:
        in_channels: Input channels.
        num_classes: Output classes.
        config: Conv widths and ``"M"`` pools, e.g. :data:`VGG16_CONFIG`.
    """

    def __init__(self, in_channels: int, num_classes: int, config: Sequence[int | str]):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for item in config:
            if item == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            else:
                width = int(item)
                layers += [
                    # BN follows, so a conv bias would be redundant.
                    nn.Conv2d(channels, width, 3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                ]
                channels = width
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Maps images ``(N, C, H, W)`` to logits ``(N, classes)``."""
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


@register_model("vgg16", "VGG-16 with batch norm, CIFAR style, one linear classifier")
def vgg16(*, in_channels: int, num_classes: int, image_size: tuple[int, int]) -> VGG:
    """Builds VGG-16-BN.

    Args:
        in_channels: Input channels.
        num_classes: Output classes.
        image_size: ``(height, width)``; unused (pooling handles 28x28, 32x32 and larger).

    Returns:
        The model.
    """
    del image_size
    return VGG(in_channels, num_classes, VGG16_CONFIG)
