"""Per-layer budgets: allocators.

An allocator turns a budget (a MACs target, later any cost) into the sparsities the pruned tensors
or channel groups are trained to; any mask method then reaches those.
"""

from secateurs.allocation.macs_target import MacsSplit, measure_macs_split, sparsity_for_macs, sparsity_for_shrunk_macs

__all__ = ["MacsSplit", "measure_macs_split", "sparsity_for_macs", "sparsity_for_shrunk_macs"]
