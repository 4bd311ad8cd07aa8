"""Building ``torchvision:<name>`` models, with the stem adapted to the data's input channels.

torchvision is an optional dependency, so it is imported only inside the builder.
"""

from __future__ import annotations

from torch import nn

from secateurs.errors import UsageError
from secateurs.models._weight_init import kaiming_init_conv

__all__ = ["adapt_first_conv", "build_torchvision_model"]


def build_torchvision_model(name: str, *, in_channels: int, num_classes: int) -> nn.Module:
    """Builds a randomly initialised torchvision classification model.

    Args:
        name: torchvision model name, e.g. ``"resnet18"`` (without the ``torchvision:`` prefix).
        in_channels: Input channels; the first convolution is replaced when this is not 3.
        num_classes: Number of output classes.

    Returns:
        The model built by ``torchvision.models.get_model(name, weights=None, ...)``.

    Raises:
        UsageError: If torchvision is not installed or has no classification model of that name.
    """
    try:
        import torchvision
    except ImportError as exc:
        raise UsageError(
            f"model 'torchvision:{name}' needs torchvision; "
            "install it with `pip install torchvision`"
        ) from exc
    # Only the top-level module holds classification models; detection or segmentation models
    # take num_classes with another meaning and return something other than logits.
    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        raise UsageError(
            f"unknown torchvision classification model {name!r}; e.g. torchvision:resnet18 "
            f"(see torchvision.models.list_models(module=torchvision.models))"
        )
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    if in_channels != 3:
        adapt_first_conv(model, in_channels)
    return model


def adapt_first_conv(model: nn.Module, in_channels: int) -> nn.Conv2d:
    """Replaces the first ``nn.Conv2d`` of ``model`` by one taking ``in_channels`` inputs.

    The new convolution keeps every other hyperparameter (kernel, stride, padding, dilation, groups,
    bias, padding mode, device, dtype; groups only when they divide ``in_channels``, else 1) and
    gets a fresh Kaiming initialisation.

    Args:
        model: The model to modify in place.
        in_channels: The new number of input channels.

    Returns:
        The new convolution.

    Raises:
        UsageError: If the model has no ``nn.Conv2d``.
    """
    found = next(
        ((fqn, m) for fqn, m in model.named_modules() if isinstance(m, nn.Conv2d)), None
    )
    if found is None:
        raise UsageError(f"cannot adapt {type(model).__name__} to {in_channels} input channels: "
                         "it has no Conv2d stem")
    fqn, old = found
    # Keep the grouping when it still divides the inputs; otherwise fall back to a dense conv,
    # which keeps out_channels (and so the rest of the network) unchanged.
    groups = old.groups if in_channels % old.groups == 0 else 1
    new = nn.Conv2d(
        in_channels,
        old.out_channels,
        kernel_size=old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        dilation=old.dilation,
        groups=groups,
        bias=old.bias is not None,
        padding_mode=old.padding_mode,
        device=old.weight.device,
        dtype=old.weight.dtype,
    )
    kaiming_init_conv(new)
    parent_name, _, child_name = fqn.rpartition(".")
    setattr(model.get_submodule(parent_name), child_name, new)
    return new
