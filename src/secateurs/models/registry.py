"""The model zoo's registry: names to builders, plus ``torchvision:<name>`` and ``timm:<name>`` pass-through.

The library itself is model-agnostic; this registry only serves the CLI, the benchmarks and the
examples, which need to turn a name from a config file into a fresh, randomly initialised network
whose input channels and classes follow the dataset.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from torch import nn

from secateurs.errors import UsageError

__all__ = ["ModelBuilder", "build_model", "list_models", "register_model"]

TORCHVISION_PREFIX = "torchvision:"
TIMM_PREFIX = "timm:"
_RESERVED_PREFIXES = (TORCHVISION_PREFIX, TIMM_PREFIX)

# Modules whose import registers the built-in models. Imported lazily so that importing the registry
# stays cheap and so that `list_models()` is complete however the package was first imported.
_BUILTIN_MODULES = (
    "secateurs.models.mlp",
    "secateurs.models.lenet5",
    "secateurs.models.resnet_cifar",
    "secateurs.models.vgg",
)


class ModelBuilder(Protocol):
    """A callable that builds a fresh model for a dataset's input shape and class count."""

    def __call__(
        self, *, in_channels: int, num_classes: int, image_size: tuple[int, int]
    ) -> nn.Module:
        """Builds the model; ``image_size`` is ``(height, width)``."""
        ...


BuilderT = TypeVar("BuilderT", bound=Callable[..., nn.Module])


@dataclass(frozen=True)
class _Entry:
    name: str
    description: str
    builder: ModelBuilder


_REGISTRY: dict[str, _Entry] = {}
_builtins_loaded = False


def _ensure_builtins() -> None:
    """Imports the built-in model modules once, which registers them."""
    global _builtins_loaded
    if _builtins_loaded:
        return
    # Set first: the imported modules import this one back, and must not recurse.
    _builtins_loaded = True
    for module_name in _BUILTIN_MODULES:
        importlib.import_module(module_name)


def register_model(name: str, description: str) -> Callable[[BuilderT], BuilderT]:
    """Registers a model builder under ``name``.

    The builder is called with keyword arguments ``in_channels``, ``num_classes`` and
    ``image_size`` (a ``(height, width)`` tuple) and must return a freshly initialised module whose
    first ``nn.Conv2d`` (in ``modules()`` order) is the stem and whose last ``nn.Linear`` is the
    classifier.

    Args:
        name: Registry name, as used on the command line (e.g. ``"resnet20"``).
        description: One line shown by ``secateurs list models``.

    Returns:
        A decorator that registers the builder and returns it unchanged.

    Raises:
        UsageError: If the name is empty, reserved, or already registered.
    """
    if not name or name.startswith(_RESERVED_PREFIXES):
        raise UsageError(f"invalid model name {name!r}: names must be non-empty and not start with "
                         f"{' or '.join(map(repr, _RESERVED_PREFIXES))}")

    def decorator(builder: BuilderT) -> BuilderT:
        if name in _REGISTRY:
            raise UsageError(f"model {name!r} is already registered; pick another name")
        _REGISTRY[name] = _Entry(name, description, builder)
        return builder

    return decorator


def list_models() -> list[tuple[str, str]]:
    """Lists the registered models.

    ``torchvision:<name>`` and ``timm:<name>`` models are not listed; any torchvision classification
    model and any timm model works.

    Returns:
        ``(name, description)`` pairs in registration order.
    """
    _ensure_builtins()
    return [(entry.name, entry.description) for entry in _REGISTRY.values()]


def _check_positive_int(value: object, what: str) -> int:
    # bool is an int subclass; True as a channel count is almost surely a bug upstream.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{what} must be a positive integer, got {value!r}")
    return value


def _normalise_image_size(image_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(image_size, (tuple, list)):
        if len(image_size) != 2:
            raise UsageError(f"image_size must be an int or (height, width), got {image_size!r}")
        return (_check_positive_int(image_size[0], "image height"),
                _check_positive_int(image_size[1], "image width"))
    size = _check_positive_int(image_size, "image_size")
    return (size, size)


def build_model(
    name: str, *, in_channels: int, num_classes: int, image_size: int | tuple[int, int]
) -> nn.Module:
    """Builds a freshly initialised model by name.

    Args:
        name: A registered name (see :func:`list_models`) or ``torchvision:<name>`` for any
            torchvision classification model (built with ``weights=None``), or ``timm:<name>`` for any
            timm model (built with ``pretrained=False``; needs the ``timm`` extra).
        in_channels: Channels of the input images (1 for MNIST, 3 for CIFAR).
        num_classes: Number of output classes.
        image_size: Side of the square input images, or ``(height, width)``.

    Returns:
        The model, in training mode, on the CPU.

    Raises:
        UsageError: If the name is unknown, torchvision or timm is needed but missing, or a size is invalid.
    """
    in_channels = _check_positive_int(in_channels, "in_channels")
    num_classes = _check_positive_int(num_classes, "num_classes")
    size = _normalise_image_size(image_size)
    if name.startswith(TORCHVISION_PREFIX):
        from secateurs.models.torchvision_models import build_torchvision_model

        return build_torchvision_model(
            name[len(TORCHVISION_PREFIX):], in_channels=in_channels, num_classes=num_classes
        )
    if name.startswith(TIMM_PREFIX):
        from secateurs.models.timm_models import build_timm_model

        return build_timm_model(name[len(TIMM_PREFIX):], in_channels=in_channels, num_classes=num_classes,
                                image_size=size)
    _ensure_builtins()
    entry = _REGISTRY.get(name)
    if entry is None:
        raise UsageError(_unknown_name_message(name))
    return entry.builder(in_channels=in_channels, num_classes=num_classes, image_size=size)


def _unknown_name_message(name: str) -> str:
    known = list(_REGISTRY)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return (f"unknown model {name!r}{hint}; known models: {', '.join(known)}, "
            f"{TORCHVISION_PREFIX}<name> for any torchvision classification model, or {TIMM_PREFIX}<name> "
            "for any timm model")
