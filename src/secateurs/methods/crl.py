"""``crl``: pruning through constrained reinforcement learning (Malik et al., ICPR 2022), the whole procedure.

The paper's procedure is: a pretrained network, a PPO-Lagrangian search for the per-layer keep
ratios (coarse) or the kept filters (fine) that maximise calibration accuracy under the budgets,
the masks applied once, then fine-tuning with the masks fixed (spec §A.7-A.8). Here the search is
the ``crl`` allocator (:mod:`secateurs.allocation.crl`), which the run calls before training (after
a short dense warm-up when the run does not start from trained weights); this method applies its
result at the first step (magnitude inside each key for the coarse variant, the chosen units for the
fine one) and keeps the masks fixed while the network fine-tunes. ``--allocation`` can pair the same
procedure with any other allocator.
"""

from __future__ import annotations

import torch

from secateurs.core.granularity import Filter, Kernel, Unstructured
from secateurs.core.parametrize import FixedMask
from secateurs.methods.magnitude import MagnitudePruning
from secateurs.methods.registry import METHODS

__all__ = ["ConstrainedRLPruning"]


@METHODS.register("crl", description="constrained RL (PPO-Lagrangian) allocation under budgets, then fine-tune "
                                     "(Malik et al.)")
class ConstrainedRLPruning(MagnitudePruning):
    """One-shot pruning to the ``crl`` allocation, then fine-tuning at the fixed masks."""

    default_allocation = "crl"
    # N:M fixes every group's density: nothing is left to allocate.
    granularities = (Unstructured, Kernel, Filter)

    @torch.no_grad()
    def prune_to(self, sparsity, *, monotone: bool = True) -> None:  # type: ignore[override]
        if not self.allocated_units:
            super().prune_to(sparsity, monotone=monotone)
            return
        for name, p in self.parametrizations.items():
            assert isinstance(p, FixedMask)
            units = self.allocated_units.get(name)
            if units is None:
                raise RuntimeError(f"the fine crl allocation has no units for {name}")
            p.set_(units.to(p.mask.device))
