"""Fixtures of the metrics tests: a fixed-mask parametrization like the ones pruning methods use."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize


class FixedMask(nn.Module):
    """Multiplies the weight by a fixed mask, and owns a learned tensor like a method's scores."""

    def __init__(self, mask: torch.Tensor, extra_matmul: bool = False):
        super().__init__()
        self.register_buffer("mask", mask.to(torch.float32))
        self.scores = nn.Parameter(torch.ones(4, 4))
        self.extra_matmul = extra_matmul

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        masked = weight * self.mask
        if self.extra_matmul:
            # A matmul inside the parametrization: counted by FlopCounterMode, but not the layer's.
            masked = masked + 0.0 * (self.scores @ self.scores).sum()
        return masked


def _half_mask(shape: torch.Size) -> torch.Tensor:
    flat = torch.zeros(shape.numel())
    flat[: shape.numel() // 2] = 1.0
    return flat.reshape(shape)


@pytest.fixture
def half_mask() -> Callable[[torch.Size], torch.Tensor]:
    """Makes a mask keeping exactly the first half of the elements (numel must be even)."""
    return _half_mask


@pytest.fixture
def apply_mask() -> Callable[..., FixedMask]:
    """Registers a :class:`FixedMask` on ``module.weight`` and returns the parametrization."""

    def apply(module: nn.Module, mask: torch.Tensor, extra_matmul: bool = False) -> FixedMask:
        parametrization = FixedMask(mask, extra_matmul)
        parametrize.register_parametrization(module, "weight", parametrization)
        return parametrization

    return apply
