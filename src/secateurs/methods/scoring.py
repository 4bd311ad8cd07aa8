"""Score-and-select methods: a fixed mask per target, recomputed from scores when the method says.

Subclasses implement :meth:`ScoreBasedMethod.scores` (per-element importance, higher = keep) and
decide *when* to call :meth:`ScoreBasedMethod.prune_to`. Reduction to units, the quota scope and
tie-safe exact selection are shared (:mod:`secateurs.core.selection`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from secateurs.core.parametrize import FixedMask, MaskParametrization
from secateurs.core.selection import select
from secateurs.core.targets import Target
from secateurs.methods.base import PruningMethod

__all__ = ["ScoreBasedMethod"]


class ScoreBasedMethod(PruningMethod):
    """A method whose masks are chosen by ranking scores (magnitude, random, ...)."""

    def make_parametrization(self, target: Target, weight: Tensor) -> MaskParametrization:
        return FixedMask(self.config.granularity, target.shape, device=weight.device)

    def scores(self, name: str, weight: Tensor) -> Tensor:
        """Importance of each element of ``weight`` (the masked, effective weight); higher is kept."""
        return weight.abs()

    @torch.no_grad()
    def prune_to(self, sparsity: float | Mapping[str, float], *, monotone: bool = True) -> None:
        """Set every target's mask so that ``sparsity`` of it (or of all, for the global scope) is removed.

        Args:
            sparsity: the target fraction, reached exactly where the granularity allows; or one per
                key (see :meth:`PruningMethod.sparsity_targets`).
            monotone: units already pruned stay pruned (their scores are set to -inf first).
        """
        gran = self.config.granularity
        unit_scores, shapes = {}, {}
        for name, p, original in self.weights():
            assert isinstance(p, FixedMask)
            effective = original * gran.broadcastable(p.mask.to(original.dtype), original.shape)
            s = gran.reduce(self.scores(name, effective), how="l2").float()
            if monotone:
                s = s.masked_fill(~p.mask, float("-inf"))
            unit_scores[name], shapes[name] = s, original.shape
        keep = select(unit_scores, {n: gran for n in unit_scores}, shapes, sparsity, self.config.scope)
        for name, mask in keep.items():
            p = self.parametrizations[name]
            assert isinstance(p, FixedMask)
            # Monotone: a global ranking over units of different sizes may drop a different set of
            # already-pruned units than last time; never let one come back.
            p.set_(mask & p.mask if monotone else mask)
