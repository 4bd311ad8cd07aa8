"""Allocators: per-key sparsities from budgets (or one sparsity), applied by any mask method.

An allocator implements :meth:`Allocator.allocate`; the registry ``ALLOCATORS`` names them
(``secateurs prune --allocation NAME``). Shared code never names an allocator.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor

from secateurs.allocation.problem import AllocationProblem
from secateurs.methods.registry import Registry

__all__ = ["ALLOCATORS", "Allocation", "Allocator"]


@dataclass
class Allocation:
    """The outcome of an allocator.

    Attributes:
        sparsities: Key -> target sparsity.
        units: Key -> chosen unit mask, for allocators that choose the units themselves (the fine
            ``crl`` variant); None when units are left to the method.
        search: The search's cost and trace: ``evaluations``, ``seconds``, and allocator-specific fields.
    """

    sparsities: dict[str, float]
    units: dict[str, Tensor] | None = None
    search: dict[str, Any] = field(default_factory=dict)


class Allocator(ABC):
    """Base class of allocators. ``needs_reward``: whether it evaluates candidates on calibration data."""

    registry_name: ClassVar[str] = ""
    needs_reward: ClassVar[bool] = False
    #: Whether it analyses the model on calibration images from the training data (``problem.calibration``).
    needs_calibration: ClassVar[bool] = False
    #: Options the allocator reads from ``problem.options`` (anything else is a usage error).
    options: ClassVar[tuple[str, ...]] = ()

    def allocate(self, problem: AllocationProblem) -> Allocation:
        """Choose the per-key sparsities for ``problem``; records evaluations and seconds."""
        start = time.perf_counter()
        before = problem.evaluations
        allocation = self.solve(problem)
        # What the method gets is what was measured: the rounded counts (filter runs with round_to).
        if problem.round_to > 1:
            allocation.sparsities = problem.exact(allocation.sparsities)
            if allocation.units is not None:
                allocation.units = problem.rounded_units(allocation.units)
        allocation.search.setdefault("evaluations", problem.evaluations - before)
        allocation.search.setdefault("seconds", round(time.perf_counter() - start, 3))
        allocation.search.setdefault("allocator", self.registry_name)
        return allocation

    @abstractmethod
    def solve(self, problem: AllocationProblem) -> Allocation:
        """The allocation itself."""


#: Every allocator by name.
ALLOCATORS: Registry[type[Allocator]] = Registry("allocator")
