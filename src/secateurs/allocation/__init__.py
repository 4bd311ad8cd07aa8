"""Allocation: per-key (per-layer, per-channel-group) sparsities from budgets or one sparsity.

Allocators: ``uniform``, ``global`` (one magnitude threshold), ``random-search`` (black-box
baseline), ``crl`` (constrained RL, Malik et al. 2022), ``singularity`` (caps from the effective-filter
estimate, Zhou et al. 2022). Any mask method trains to the result
(:meth:`secateurs.methods.PruningMethod.use_allocation`). The MACs-target solver of the benchmarks
(:mod:`secateurs.allocation.macs_target`) lives here too.
"""

from secateurs.allocation import crl, global_threshold, random_search, singularity, uniform  # noqa: F401  (registration)
from secateurs.allocation.base import ALLOCATORS, Allocation, Allocator
from secateurs.allocation.macs_target import MacsSplit, measure_macs_split, sparsity_for_macs, sparsity_for_shrunk_macs
from secateurs.allocation.problem import AllocationKey, AllocationProblem, build_keys

__all__ = [
    "ALLOCATORS", "Allocation", "AllocationKey", "AllocationProblem", "Allocator", "MacsSplit", "build_keys",
    "measure_macs_split", "sparsity_for_macs", "sparsity_for_shrunk_macs",
]
