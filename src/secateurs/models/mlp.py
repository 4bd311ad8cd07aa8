"""LeNet-300-100: the fully connected network of the early pruning papers (LeCun et al. 1998)."""

from __future__ import annotations

import torch
from torch import nn

from secateurs.models.registry import register_model

__all__ = ["MLP", "mlp"]


class MLP(nn.Module):
    """Flatten, two hidden ReLU layers, then a linear classifier.

    Args:
        in_features: Number of input values per example (channels x height x width).
        num_classes: Number of output classes.
        hidden: Widths of the hidden layers.
    """

    def __init__(self, in_features: int, num_classes: int, hidden: tuple[int, ...] = (300, 100)):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for out in hidden:
            layers += [nn.Linear(width, out), nn.ReLU(inplace=True)]
            width = out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Maps images ``(N, C, H, W)`` (or flat ``(N, C*H*W)``) to logits ``(N, classes)``."""
        return self.classifier(self.features(x))


@register_model("mlp", "LeNet-300-100: fully connected, hidden layers 300 and 100 (ReLU)")
def mlp(*, in_channels: int, num_classes: int, image_size: tuple[int, int]) -> MLP:
    """Builds LeNet-300-100 for images of the given shape.

    Args:
        in_channels: Input channels.
        num_classes: Output classes.
        image_size: ``(height, width)`` of the input images.

    Returns:
        The model.
    """
    height, width = image_size
    return MLP(in_channels * height * width, num_classes)
