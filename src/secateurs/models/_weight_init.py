"""Weight initialisation shared by the model zoo."""

from __future__ import annotations

from torch import nn

__all__ = ["init_weights", "kaiming_init_conv"]


def kaiming_init_conv(conv: nn.Conv2d) -> None:
    """Kaiming-normal (fan-out, ReLU) weights and zero bias, as in He et al. and torchvision.

    Args:
        conv: The convolution to initialise in place.
    """
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def init_weights(model: nn.Module) -> None:
    """Initialises every conv (Kaiming) and batch norm (ones and zeros) of ``model`` in place.

    Linear layers keep PyTorch's default initialisation.

    Args:
        model: The model to initialise.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            kaiming_init_conv(module)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
