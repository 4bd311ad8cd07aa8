"""Granularities: what a pruning unit is.

A granularity maps a weight tensor to its *unit tensor* (one entry per removable unit), reduces
full-shape scores to unit scores, expands a unit mask back to the weight's shape, and arranges the
unit tensor into *groups* (rows of a 2-D view) for "exactly k of n per group" quotas.

Every method, the selector, the shrinker and the metrics use these objects; strings such as
``"filter"`` or ``"2:4"`` are parsed into them only at the configuration edge
(:func:`parse_granularity`).

Group conventions (the natural k-of-n group of each granularity):

====================  ======================  =====================================================
granularity           unit tensor             groups (rows)
====================  ======================  =====================================================
``unstructured``      the weight itself       one row per output neuron / filter: all its inputs
``kernel``            ``(out, in)``           one row per filter: its ``in`` kernels
``filter``            ``(out,)``              one row: all filters of the layer
``N:M``               the weight itself       one row per block of M consecutive inputs
====================  ======================  =====================================================
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from secateurs.errors import UsageError

__all__ = [
    "Filter",
    "Granularity",
    "Kernel",
    "NofM",
    "Unstructured",
    "list_granularities",
    "parse_granularity",
]


class Granularity(ABC):
    """The unit a method removes. Subclasses are frozen dataclasses (hashable value objects)."""

    #: Short name used in configs, reports and mask files.
    spec: str
    #: Name of the kind (``"N:M"`` for every N:M), as methods declare what they support.
    kind: ClassVar[str]

    def supports(self, shape: torch.Size | tuple[int, ...]) -> bool:
        """Whether a weight of this shape can be pruned at this granularity."""
        return len(shape) >= 2

    @abstractmethod
    def unit_shape(self, shape: torch.Size | tuple[int, ...]) -> torch.Size:
        """Shape of the unit tensor of a weight of ``shape``."""

    @abstractmethod
    def _broadcast_shape(self, shape: torch.Size | tuple[int, ...]) -> tuple[int, ...]:
        """Shape to which a unit tensor is viewed so that it broadcasts against the weight."""

    def unit_size(self, shape: torch.Size | tuple[int, ...]) -> int:
        """Number of weight elements in one unit."""
        return math.prod(shape) // math.prod(self.unit_shape(shape))

    def reduce(self, scores: Tensor, how: str = "l2") -> Tensor:
        """Reduce full-shape, per-element scores to one score per unit.

        Args:
            scores: a tensor of the weight's shape (for magnitude pruning, the weight itself).
            how: ``"l2"`` (Euclidean norm of each unit), ``"l1"`` (sum of absolute values),
                ``"sum"`` (plain sum, for scores that are already non-negative) or ``"mean"``.
        """
        # The dimensions a unit spans are exactly those its broadcast shape collapses to 1.
        bshape = self._broadcast_shape(scores.shape)
        reduce_dims = tuple(d for d, size in enumerate(bshape) if size == 1 and scores.shape[d] != 1)
        if not reduce_dims:
            unit = _elementwise(scores, how)
        elif how == "l2":
            unit = torch.linalg.vector_norm(scores, ord=2, dim=reduce_dims, keepdim=True)
        elif how == "l1":
            unit = scores.abs().sum(dim=reduce_dims, keepdim=True)
        elif how == "sum":
            unit = scores.sum(dim=reduce_dims, keepdim=True)
        elif how == "mean":
            unit = scores.mean(dim=reduce_dims, keepdim=True)
        else:
            raise ValueError(f"unknown reduction {how!r}; use l2, l1, sum or mean")
        return unit.reshape(self.unit_shape(scores.shape))

    def expand(self, unit_mask: Tensor, shape: torch.Size | tuple[int, ...]) -> Tensor:
        """Broadcast a unit mask (or unit gate) to the weight's shape without copying."""
        return unit_mask.reshape(self._broadcast_shape(shape)).expand(shape)

    def broadcastable(self, unit_mask: Tensor, shape: torch.Size | tuple[int, ...]) -> Tensor:
        """View a unit mask so that ``weight * view`` applies it (cheaper than :meth:`expand`)."""
        return unit_mask.reshape(self._broadcast_shape(shape))

    def group_view(self, unit: Tensor) -> Tensor:
        """Arrange a unit tensor into ``(num_groups, group_size)`` rows (see the module table)."""
        return unit.reshape(unit.shape[0], -1)

    def from_groups(self, grouped: Tensor, unit_shape: torch.Size | tuple[int, ...]) -> Tensor:
        """Inverse of :meth:`group_view`."""
        return grouped.reshape(unit_shape)

    @property
    def fixed_density(self) -> float | None:
        """The density the granularity itself imposes (N/M for N:M), or None when free."""
        return None

    def __str__(self) -> str:
        return self.spec


def _elementwise(scores: Tensor, how: str) -> Tensor:
    if how in ("l2", "l1"):
        return scores.abs()
    if how in ("sum", "mean"):
        return scores
    raise ValueError(f"unknown reduction {how!r}; use l2, l1, sum or mean")


@dataclass(frozen=True)
class Unstructured(Granularity):
    """Every weight element is a unit. Groups: the inputs of each output neuron or filter."""

    spec: str = "unstructured"
    kind: ClassVar[str] = "unstructured"

    def supports(self, shape: torch.Size | tuple[int, ...]) -> bool:
        return len(shape) >= 1

    def unit_shape(self, shape: torch.Size | tuple[int, ...]) -> torch.Size:
        return torch.Size(shape)

    def _broadcast_shape(self, shape: torch.Size | tuple[int, ...]) -> tuple[int, ...]:
        return tuple(shape)


@dataclass(frozen=True)
class Kernel(Granularity):
    """Each 2-D kernel ``weight[o, i]`` of a convolution is a unit (a single weight for a linear).

    Groups: the ``in`` kernels of each filter.
    """

    spec: str = "kernel"
    kind: ClassVar[str] = "kernel"

    def unit_shape(self, shape: torch.Size | tuple[int, ...]) -> torch.Size:
        return torch.Size(shape[:2])

    def _broadcast_shape(self, shape: torch.Size | tuple[int, ...]) -> tuple[int, ...]:
        return (shape[0], shape[1]) + (1,) * (len(shape) - 2)


@dataclass(frozen=True)
class Filter(Granularity):
    """Each output channel (filter, or output neuron of a linear layer) is a unit.

    Groups: one group holding all filters of the layer.
    """

    spec: str = "filter"
    kind: ClassVar[str] = "filter"

    def unit_shape(self, shape: torch.Size | tuple[int, ...]) -> torch.Size:
        return torch.Size(shape[:1])

    def _broadcast_shape(self, shape: torch.Size | tuple[int, ...]) -> tuple[int, ...]:
        return (shape[0],) + (1,) * (len(shape) - 1)

    def group_view(self, unit: Tensor) -> Tensor:
        return unit.reshape(1, -1)


@dataclass(frozen=True)
class NofM(Granularity):
    """N:M semi-structured sparsity: N of every M consecutive input weights are kept.

    Units are single weights; the groups are the blocks of M consecutive elements along the flattened
    input dimension of each output row (``weight.reshape(out, -1)``), which for ``2:4`` is the layout
    that sparse tensor cores accelerate.
    """

    kind: ClassVar[str] = "N:M"
    n: int = 2
    m: int = 4

    def __post_init__(self) -> None:
        if not (0 < self.n <= self.m):
            raise UsageError(f"N:M granularity needs 0 < N <= M, got {self.n}:{self.m}")

    @property
    def spec(self) -> str:  # type: ignore[override]
        return f"{self.n}:{self.m}"

    def supports(self, shape: torch.Size | tuple[int, ...]) -> bool:
        return len(shape) >= 2 and (math.prod(shape[1:]) % self.m == 0)

    def unit_shape(self, shape: torch.Size | tuple[int, ...]) -> torch.Size:
        return torch.Size(shape)

    def _broadcast_shape(self, shape: torch.Size | tuple[int, ...]) -> tuple[int, ...]:
        return tuple(shape)

    def group_view(self, unit: Tensor) -> Tensor:
        return unit.reshape(-1, self.m)

    @property
    def fixed_density(self) -> float | None:
        return self.n / self.m


_NAMED: dict[str, tuple[Granularity, str]] = {
    "unstructured": (Unstructured(), "single weights"),
    "kernel": (Kernel(), "2-D kernels of a convolution (weight[o, i, :, :])"),
    "filter": (Filter(), "output channels: whole filters / output neurons"),
}


def list_granularities() -> list[tuple[str, str]]:
    """Names and one-line descriptions of the granularities :func:`parse_granularity` accepts."""
    return [(name, text) for name, (_, text) in _NAMED.items()] + [
        ("N:M", "N kept of every M consecutive inputs, e.g. 2:4 (semi-structured)")
    ]


def parse_granularity(spec: str | Granularity) -> Granularity:
    """Parse ``"unstructured"``, ``"kernel"``, ``"filter"`` or ``"N:M"`` into a granularity object."""
    if isinstance(spec, Granularity):
        return spec
    text = str(spec).strip().lower()
    if text in _NAMED:
        return _NAMED[text][0]
    if ":" in text:
        left, _, right = text.partition(":")
        if left.isdigit() and right.isdigit():
            return NofM(int(left), int(right))
    known = ", ".join(list(_NAMED) + ["N:M (e.g. 2:4)"])
    raise UsageError(f"unknown granularity {spec!r}; known: {known}")
