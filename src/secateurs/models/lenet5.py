"""LeNet-5 (LeCun et al. 1998) with ReLU and max pooling, as used in the pruning literature."""

from __future__ import annotations

import torch
from torch import nn

from secateurs.errors import UsageError
from secateurs.models._weight_init import init_weights
from secateurs.models.registry import register_model

__all__ = ["LeNet5", "lenet5"]

# Smallest side for which two 5x5 convs (the first padded) and two 2x2 pools leave >= 1 pixel.
_MIN_SIDE = 12


def _side_after_features(side: int) -> int:
    # conv1 is padded by 2 so keeps the side; pool halves; conv2 (unpadded) removes 4; pool halves.
    return (side // 2 - 4) // 2


class LeNet5(nn.Module):
    """conv 6@5x5 (padding 2) - pool - conv 16@5x5 - pool - fc 120 - fc 84 - classifier.

    The padded first convolution gives the classic 16x5x5 features on 28x28 inputs (MNIST) and
    16x6x6 on 32x32 inputs (CIFAR); the flatten size is computed from the image size.

    Args:
        in_channels: Input channels.
        num_classes: Output classes.
        image_size: ``(height, width)`` of the input images, each at least 12.
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: tuple[int, int]):
        super().__init__()
        height, width = image_size
        if min(height, width) < _MIN_SIDE:
            raise UsageError(f"lenet5 needs images of at least {_MIN_SIDE}x{_MIN_SIDE}, "
                             f"got {height}x{width}")
        self.conv1 = nn.Conv2d(in_channels, 6, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        self.pool = nn.MaxPool2d(2)
        self.relu = nn.ReLU(inplace=True)
        flat = 16 * _side_after_features(height) * _side_after_features(width)
        self.fc1 = nn.Linear(flat, 120)
        self.fc2 = nn.Linear(120, 84)
        self.classifier = nn.Linear(84, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Maps images ``(N, C, H, W)`` to logits ``(N, classes)``."""
        x = self.pool(self.relu(self.conv1(x)))
        x = self.pool(self.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = self.relu(self.fc1(x))
        x = self.relu(self.fc2(x))
        return self.classifier(x)


@register_model("lenet5", "LeNet-5: conv 6@5x5, conv 16@5x5, fc 120, fc 84 (ReLU, max pool)")
def lenet5(*, in_channels: int, num_classes: int, image_size: tuple[int, int]) -> LeNet5:
    """Builds LeNet-5 for images of the given shape.

    Args:
        in_channels: Input channels.
        num_classes: Output classes.
        image_size: ``(height, width)`` of the input images.

    Returns:
        The model.
    """
    return LeNet5(in_channels, num_classes, image_size)
