"""Building ``timm:<name>`` models, with the input adapted to the data.

timm (PyTorch Image Models) is an optional dependency (the ``timm`` extra), so it is imported only
inside the builder. timm models take the input channels (``in_chans``) and the class count at
construction; models with a fixed input size (vision transformers, LeViT, Swin...) also take
``img_size``, which sizes their position embeddings and attention biases. Convolutional models do
not take it, and work at any input size.
"""

from __future__ import annotations

import difflib
from typing import Any

import torch
from torch import nn

from secateurs.errors import UsageError

__all__ = ["build_timm_model"]


def _timm() -> Any:
    try:
        import timm
    except ImportError as exc:
        raise UsageError("timm models need timm; install it with `pip install 'secateurs[timm]'` "
                         "(or `pip install timm`)") from exc
    return timm


def build_timm_model(
    name: str, *, in_channels: int, num_classes: int, image_size: tuple[int, int]
) -> nn.Module:
    """Builds a randomly initialised timm model for the data's channels, classes and image size.

    Args:
        name: timm model name, e.g. ``"resnet18"`` or ``"vit_tiny_patch16_224"`` (without the
            ``timm:`` prefix).
        in_channels: Input channels (``in_chans``; timm adapts its stem).
        num_classes: Number of output classes.
        image_size: ``(height, width)`` of the input; passed as ``img_size`` to models that take it.

    Returns:
        The model built by ``timm.create_model(name, pretrained=False, ...)``, in training mode.

    Raises:
        UsageError: If timm is not installed, has no model of that name, or cannot build it for
            this input.
    """
    timm = _timm()
    if not timm.models.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=1)
        hint = f" (did you mean 'timm:{close[0]}'?)" if close else ""
        raise UsageError(f"unknown timm model {name!r}{hint}; see timm.list_models()")
    kwargs: dict[str, Any] = {"pretrained": False, "in_chans": in_channels, "num_classes": num_classes}
    height, width = image_size
    try:
        try:
            model = timm.create_model(name, **kwargs, img_size=_as_img_size(height, width))
        except TypeError as exc:
            if "img_size" not in str(exc):
                raise
            # A model that works at any input size (most convolutional networks) has no img_size.
            return timm.create_model(name, **kwargs)
        return _fit_img_size(timm, name, kwargs, model, in_channels, height, width)
    except (TypeError, ValueError, AssertionError, RuntimeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"timm cannot build {name!r} for {in_channels}-channel {height}x{width} images: "
                         f"{first}") from None


def _as_img_size(height: int, width: int) -> int | tuple[int, int]:
    return height if height == width else (height, width)


def _runs_on(model: nn.Module, in_channels: int, height: int, width: int) -> bool:
    training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, in_channels, height, width))
        return True
    except (RuntimeError, AssertionError, ValueError, IndexError):
        return False
    finally:
        model.train(training)


def _fit_img_size(
    timm: Any, name: str, kwargs: dict[str, Any], model: nn.Module, in_channels: int, height: int, width: int
) -> nn.Module:
    """The model built with the ``img_size`` under which it runs on ``height x width`` inputs.

    A model sizes its position embeddings or attention biases as ``img_size // stride``, while its
    strided stem rounds up: LeViT (stride 16) built for 28x28 expects a 1x1 map and gets 2x2. Such a
    model runs on the data when built for the size rounded up to its stride, which is tried next.
    """
    if _runs_on(model, in_channels, height, width):
        return model
    for stride in (16, 32):
        up_h, up_w = -(-height // stride) * stride, -(-width // stride) * stride
        if (up_h, up_w) == (height, width):
            continue
        try:
            candidate = timm.create_model(name, **kwargs, img_size=_as_img_size(up_h, up_w))
        except (TypeError, ValueError, AssertionError, RuntimeError):
            continue
        if _runs_on(candidate, in_channels, height, width):
            return candidate
    raise RuntimeError("the model does not run on inputs of this size")
