"""``global``: one magnitude threshold across every key (global magnitude pruning as an allocation).

Units of different sizes are compared by their root-mean-square weight (the L2 norm over the unit
divided by the square root of its size), so a 3x3x64 filter and a 3x3x16 filter stand on one scale;
for unstructured units this is plain ``|w|``. Every key keeps at least one unit.
"""

from __future__ import annotations

import math

from secateurs.allocation.base import ALLOCATORS, Allocation, Allocator
from secateurs.allocation.problem import AllocationProblem
from secateurs.allocation.uniform import bisect_feasible
from secateurs.core.selection import select_global

__all__ = ["GlobalAllocator"]


@ALLOCATORS.register("global", description="one magnitude threshold over all layers")
class GlobalAllocator(Allocator):
    """Per-key sparsities from one global magnitude ranking."""

    def solve(self, problem: AllocationProblem) -> Allocation:
        scores = {k.name: problem.unit_scores(k.name) / math.sqrt(k.unit_size) for k in problem.keys}
        sizes = {k.name: k.unit_size for k in problem.keys}

        def at(overall: float) -> dict[str, float]:
            keep = select_global(scores, sizes, min(overall, 0.999999))
            return {k.name: min(1.0 - float(keep[k.name].sum()) / k.units, k.max_sparsity) for k in problem.keys}

        if not problem.budgets:
            return Allocation(at(float(problem.sparsity or 0.0)))
        chosen, t = bisect_feasible(problem, at)
        return Allocation(chosen, search={"global_sparsity": round(t, 6)})
