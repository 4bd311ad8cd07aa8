"""Pruning methods: the interface, the registry and every registered method.

Importing this package registers every method. Add a method by writing one module with a
``@METHODS.register(...)`` class and one import line below.
"""

from __future__ import annotations

from typing import Any

from secateurs.methods import gradual_magnitude, lottery, magnitude, random_pruning  # noqa: F401  (registration)
from secateurs.methods import gibbs  # noqa: F401  (registration)
from secateurs.methods import continuous_sparsification  # noqa: F401  (registration)
from secateurs.methods import dpp  # noqa: F401  (registration)
from secateurs.methods import singularity  # noqa: F401  (registration)
from secateurs.methods import crl  # noqa: F401  (registration)
from secateurs.methods.base import Horizon, MethodConfig, Phase, PruningMethod
from secateurs.methods.registry import METHODS

__all__ = ["METHODS", "Horizon", "MethodConfig", "Phase", "PruningMethod", "build_method", "method_config_class"]


def method_config_class(name: str) -> type[MethodConfig]:
    """The config dataclass of the method ``name`` (aliases accepted)."""
    return METHODS.get(name).Config


def build_method(name: str, **config: Any) -> PruningMethod:
    """Create a method by registered name with its config fields as keywords.

    Example:
        >>> method = build_method("gmp", sparsity=0.9, granularity="filter")
    """
    cls = METHODS.get(name)
    return cls(cls.Config(**config))
