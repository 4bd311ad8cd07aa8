"""``singularity``: per-group sparsities under the caps of the effective-filter estimate.

The gradient-matrix analysis (:mod:`secateurs.analysis.singularity`) gives each coupled channel
group ``r`` effective filters out of ``n``; level 1 of the hierarchical pruning removes
``floor(alpha (n - r))`` filters from every group, with one ``alpha`` found by bisection to meet the
sparsity or the budgets. Any mask method then trains each group to its allocated sparsity
(``secateurs prune --method gmp --granularity filter --allocation singularity``), so no layer is
pruned past its estimated cap: the safety rail of Zhou et al.'s analysis for every method.

A target beyond the estimate stops at the caps (``alpha = 1``) and is flagged in the search record
(``target_beyond_estimate``); ``exceed_caps: true`` lets ``alpha`` go on to the minimum keep instead.
Keys the analysis cannot count (the classifier, groups that cannot be removed) keep every unit.

Options (``--allocation-option`` / ``allocation_options``): ``criterion``, ``tau``, ``epsilon``,
``calibration`` (training images), ``positions``, ``kappa`` (minimum keep), ``exceed_caps``.
"""

from __future__ import annotations

from typing import Any

import torch

from secateurs.allocation.base import ALLOCATORS, Allocation, Allocator
from secateurs.allocation.problem import AllocationProblem
from secateurs.analysis.singularity.estimate import estimate_network
from secateurs.analysis.singularity.selection import cap_counts, find_alpha, removal_counts
from secateurs.analysis.singularity.spectrum import Criterion
from secateurs.core.granularity import Filter
from secateurs.errors import UsageError

__all__ = ["SingularityAllocator"]


@ALLOCATORS.register("singularity", description="per-group caps from the effective-filter estimate (Zhou et al.)")
class SingularityAllocator(Allocator):
    """Level 1 of the singularity method as an allocation: ``k = floor(alpha (n - r))`` per group."""

    needs_calibration = True
    options = ("criterion", "tau", "epsilon", "calibration", "positions", "kappa", "exceed_caps")

    def solve(self, problem: AllocationProblem) -> Allocation:
        if not isinstance(problem.granularity, Filter) or not problem.groups:
            raise UsageError("the singularity allocation needs --granularity filter on a model whose channel "
                             "groups can be traced")
        if problem.calibration is None:
            raise UsageError("the singularity allocation needs calibration images from the training data")
        opts = problem.options
        criterion = Criterion(str(opts.get("criterion", "energy")), float(opts.get("tau", 0.99)),
                              float(opts.get("epsilon", 1e-3)))
        kappa = float(opts.get("kappa", 0.1))
        exceed = bool(opts.get("exceed_caps", False))
        images = problem.calibration[: int(opts.get("calibration", problem.calibration.shape[0]))]
        estimate = estimate_network(problem.model, problem.groups, problem.targets, images, criterion=criterion,
                                    positions=int(opts.get("positions", 16)),
                                    generator=torch.Generator().manual_seed(problem.seed))
        by_key = {e.unit.key: e for e in estimate.units}
        caps = {}
        for key in problem.keys:
            e = by_key.get(key.name)
            caps[key.name] = cap_counts(key.units, e.effective, key.units, kappa) if e is not None else (0, 0)
        names = [k.name for k in problem.keys]
        units = {k.name: k.units for k in problem.keys}

        def at(alpha: float) -> dict[str, float]:
            counts = removal_counts([caps[n] for n in names], alpha)
            return {n: k / units[n] for n, k in zip(names, counts)}

        def reached(alpha: float) -> bool:
            if problem.budgets:
                return problem.feasible(at(alpha))
            return problem.density(at(alpha)) <= 1.0 - float(problem.sparsity or 0.0) + 1e-12

        alpha = find_alpha(reached)
        beyond = alpha is None
        if alpha is None:
            alpha = (find_alpha(reached, upper=2.0) or 2.0) if exceed else 1.0
        search: dict[str, Any] = {
            "alpha": round(alpha, 6), "target_beyond_estimate": beyond, "exceed_caps": exceed,
            "criterion": criterion.name, "tau": criterion.tau,
            "max_sparsity": estimate.max_sparsity, "max_params_reduction": estimate.max_params_reduction,
            "max_macs_reduction": estimate.max_macs_reduction,
            "effective": {n: by_key[n].effective for n in names if n in by_key},
            "caps": {n: caps[n][0] for n in names},
        }
        return Allocation(at(alpha), search=search)
