"""``uniform``: the same sparsity for every key; with budgets the smallest one that meets them all."""

from __future__ import annotations

from secateurs.allocation.base import ALLOCATORS, Allocation, Allocator
from secateurs.allocation.problem import AllocationProblem

__all__ = ["UniformAllocator", "bisect_feasible"]


def bisect_feasible(problem: AllocationProblem, make, *, steps: int = 14) -> tuple[dict[str, float], float]:
    """Smallest ``t`` in [0, 1] whose allocation ``make(t)`` meets the constraints (monotone in ``t``).

    Returns the allocation and ``t``; ``make(1)`` must be the tightest candidate.
    """
    if problem.feasible(make(0.0)):
        return make(0.0), 0.0
    low, high = 0.0, 1.0
    for _ in range(steps):
        mid = 0.5 * (low + high)
        if problem.feasible(make(mid)):
            high = mid
        else:
            low = mid
    return make(high), high


@ALLOCATORS.register("uniform", description="the same sparsity in every layer / channel group")
class UniformAllocator(Allocator):
    """Uniform per-key sparsity, capped at the minimum keep (one unit)."""

    def solve(self, problem: AllocationProblem) -> Allocation:
        cap = problem.min_keep()
        if not problem.budgets:
            s = float(problem.sparsity or 0.0)
            return Allocation({k: min(s, m) for k, m in cap.items()})
        top = max(cap.values())
        chosen, t = bisect_feasible(problem, lambda t: {k: min(t * top, m) for k, m in cap.items()})
        return Allocation(chosen, search={"uniform_sparsity": round(t * top, 6)})
