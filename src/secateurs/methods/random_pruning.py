"""Random pruning: the floor every method must clear.

Units are removed uniformly at random (seeded) at the start of training; the rest of the budget
trains the surviving weights.
"""

from __future__ import annotations

import torch
from torch import Tensor

from secateurs.core.granularity import Filter, Kernel, NofM, Unstructured
from secateurs.methods.registry import METHODS
from secateurs.methods.scoring import ScoreBasedMethod

__all__ = ["RandomPruning"]


@METHODS.register("random", description="remove random units at the start, then train (a sanity floor)")
class RandomPruning(ScoreBasedMethod):
    """Uniformly random masks at the target sparsity."""

    granularities = (Unstructured, Kernel, Filter, NofM)

    def scores(self, name: str, weight: Tensor) -> Tensor:
        return torch.rand(weight.shape, generator=self.generator, device=weight.device)

    def on_phase_start(self, phase_index: int) -> None:
        if phase_index == 0:
            self.prune_to(self.sparsity_targets(), monotone=False)
