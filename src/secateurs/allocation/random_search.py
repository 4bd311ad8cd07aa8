"""``random-search``: the black-box baseline at the same number of reward evaluations as ``crl``.

Each candidate perturbs the uniform allocation's per-key densities by a log-normal factor, is then
scaled (one factor for all keys, by bisection on the costs alone) to the loosest allocation that
meets the constraints, and is scored by the same reward as ``crl`` (calibration accuracy after
batch-norm re-estimation). The best candidate wins; the uniform allocation is candidate 0, so the
search never returns anything worse than uniform on the reward.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from secateurs.allocation.base import ALLOCATORS, Allocation, Allocator
from secateurs.allocation.problem import AllocationProblem
from secateurs.allocation.uniform import UniformAllocator
from secateurs.errors import UsageError

__all__ = ["RandomSearchAllocator", "fit_densities"]

#: Reward evaluations when the run does not say (the same default as ``crl``).
DEFAULT_EPISODES = 96


def fit_densities(problem: AllocationProblem, densities: Mapping[str, float], *, steps: int = 12) -> dict[str, float]:
    """Sparsities ``1 - clip(f * d_k)`` with the largest ``f`` that meets the constraints."""
    floor = {k.name: 1.0 / k.units for k in problem.keys}

    def at(f: float) -> dict[str, float]:
        return {k.name: 1.0 - min(1.0, max(floor[k.name], f * densities[k.name])) for k in problem.keys}

    high = max(1.0 / max(densities[k.name], 1e-9) for k in problem.keys)  # every key dense at f = high
    if problem.feasible(at(high)):
        return at(high)
    low = 0.0
    for _ in range(steps):
        mid = 0.5 * (low + high)
        if problem.feasible(at(mid)):
            low = mid
        else:
            high = mid
    return at(low)


@ALLOCATORS.register("random-search", aliases=("random_search",),
                     description="black-box baseline: random allocations scaled to the budget, best reward wins")
class RandomSearchAllocator(Allocator):
    """Random search over per-key densities with a feasibility projection."""

    needs_reward = True
    options = ("episodes", "sigma")

    def solve(self, problem: AllocationProblem) -> Allocation:
        episodes = int(problem.options.get("episodes", DEFAULT_EPISODES))
        sigma = float(problem.options.get("sigma", 0.5))
        if episodes < 1 or not sigma > 0:
            raise UsageError("random-search needs episodes >= 1 and sigma > 0")
        gen = torch.Generator().manual_seed(problem.seed)
        base = UniformAllocator().solve(problem).sparsities
        densities = {k: 1.0 - s for k, s in base.items()}
        best = base
        best_reward = problem.reward(problem.unit_masks(base))
        trace = [best_reward]
        for _ in range(episodes - 1):
            z = torch.randn(len(problem.keys), generator=gen).tolist()
            shape = {k.name: densities[k.name] * math.exp(sigma * zi) for k, zi in zip(problem.keys, z, strict=True)}
            candidate = fit_densities(problem, shape)
            reward = problem.reward(problem.unit_masks(candidate))
            trace.append(reward)
            if reward > best_reward:
                best, best_reward = candidate, reward
        return Allocation(best, search={"best_reward": best_reward, "rewards": trace})
