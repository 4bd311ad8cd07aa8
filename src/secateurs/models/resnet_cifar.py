"""CIFAR-style residual networks: ResNet-20/56 (He et al. 2016, section 4.2) and ResNet-18.

Shortcuts that change shape are 1x1 conv + BN projections ("option B"), not the zero-padding
identity ("option A") of some CIFAR code: a projection is an ordinary layer, so dependency-graph
tools (torch-pruning) can see and prune the channels that the residual add couples.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from secateurs.models._weight_init import init_weights
from secateurs.models.registry import register_model

__all__ = ["BasicBlock", "CifarResNet", "resnet18", "resnet20", "resnet56"]


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut (identity, or 1x1 conv-BN when the shape changes).

    Args:
        in_planes: Input channels.
        planes: Output channels.
        stride: Stride of the first convolution (and of the projection shortcut).
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Applies the block."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """3x3 stem conv (stride 1, no max pool), stages of BasicBlocks, global average pool, linear.

    The first stage keeps the stride; every later stage halves the resolution and its first block
    projects the shortcut.

    Args:
        in_channels: Input channels.
        num_classes: Output classes.
        widths: Channels of each stage; the stem has ``widths[0]`` channels.
        blocks: Number of blocks in each stage.
    """

    def __init__(
        self, in_channels: int, num_classes: int, widths: Sequence[int], blocks: Sequence[int]
    ):
        super().__init__()
        if len(widths) != len(blocks):
            raise ValueError("widths and blocks must have the same length")
        # Registration order fixes modules() order: stem first, classifier last.
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        in_planes = widths[0]
        for index, (planes, count) in enumerate(zip(widths, blocks)):
            stride = 1 if index == 0 else 2
            stage = []
            for block in range(count):
                stage.append(BasicBlock(in_planes, planes, stride if block == 0 else 1))
                in_planes = planes
            self.add_module(f"layer{index + 1}", nn.Sequential(*stage))
        self.num_stages = len(widths)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Maps images ``(N, C, H, W)`` to logits ``(N, classes)``."""
        x = self.relu(self.bn1(self.conv1(x)))
        for index in range(self.num_stages):
            x = getattr(self, f"layer{index + 1}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _he_cifar(depth: int, in_channels: int, num_classes: int) -> CifarResNet:
    # He et al.: depth 6n+2, three stages of n blocks with 16, 32 and 64 channels.
    n = (depth - 2) // 6
    return CifarResNet(in_channels, num_classes, widths=(16, 32, 64), blocks=(n, n, n))


@register_model("resnet20", "ResNet-20 for CIFAR (He et al.), 16/32/64 channels, ~0.27M params")
def resnet20(*, in_channels: int, num_classes: int, image_size: tuple[int, int]) -> CifarResNet:
    """Builds ResNet-20 (three stages of 3 BasicBlocks).

    Args:
        in_channels: Input channels.
        num_classes: Output classes.
        image_size: ``(height, width)``; unused (global pooling handles any size).

    Returns:
        The model.
    """
    del image_size
    return _he_cifar(20, in_channels, num_classes)


@register_model("resnet56", "ResNet-56 for CIFAR (He et al.), 16/32/64 channels, ~0.85M params")
def resnet56(*, in_channels: int, num_classes: int, image_size: tuple[int, int]) -> CifarResNet:
    """Builds ResNet-56 (three stages of 9 BasicBlocks).

    Args:
        in_channels: Input channels.
        num_classes: Output classes.
        image_size: ``(height, width)``; unused (global pooling handles any size).

    Returns:
        The model.
    """
    del image_size
    return _he_cifar(56, in_channels, num_classes)


@register_model("resnet18", "ResNet-18, CIFAR-style (3x3 stem, no max pool), 64-512 channels")
def resnet18(*, in_channels: int, num_classes: int, image_size: tuple[int, int]) -> CifarResNet:
    """Builds the common CIFAR-style ResNet-18 (four stages of 2 BasicBlocks, 64 to 512 channels).

    Args:
        in_channels: Input channels.
        num_classes: Output classes.
        image_size: ``(height, width)``; unused (global pooling handles any size).

    Returns:
        The model.
    """
    del image_size
    return CifarResNet(in_channels, num_classes, widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2))
