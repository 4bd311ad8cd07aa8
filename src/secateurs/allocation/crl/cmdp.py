"""The constrained MDP of one allocation (spec §A.2-A.3): one episode walks the keys in order.

At step ``t`` the agent sees key ``t``'s static features (its position, input and output widths,
kernel, stride, padding: spec §A.3.2; the position is the key's ordinal, a [PROPOSAL] the spec allows)
and, in the coarse variant, the sum of the prune fractions chosen so far. Its action is stored;
nothing is applied before the last step, where the whole allocation is evaluated once: the reward
(calibration accuracy) and one cost per constraint (in % of the dense model, so a budget
``macs<=25%`` is ``B = 25``) arrive at that step, zero before, as in the official code.

Coarse: a one-number action, the fraction of the key's units to prune, clipped to ``[0, u]`` with
``u = min(1, u0 + g * progress)`` (the README's 0.9 + 0.05); magnitude chooses the units inside the
key. Fine: one keep value per unit (the action is as wide as the widest key; the extra dimensions are
masked out), a unit is kept where its value is at least 0.5, and at least one unit per key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["AllocationCMDP", "Outcome"]


@dataclass(frozen=True)
class Outcome:
    """The evaluation of one complete allocation."""

    reward: float
    costs: tuple[float, ...]


class AllocationCMDP:
    """The environment.

    Args:
        features: ``(T, F)`` static features of the keys, in episode order.
        units: Units of each key (the fine variant's action width per step).
        evaluate: ``evaluate(decisions) -> Outcome``: one decision per key, a prune fraction
            (coarse) or a boolean unit mask (fine).
        fine: The fine variant.
        clip_init / clip_growth: The coarse action bound ``u`` at progress 0, and its growth to progress 1.
    """

    def __init__(self, features: Tensor, units: Sequence[int], evaluate: Callable[[list], Outcome], *,
                 fine: bool = False, clip_init: float = 0.9, clip_growth: float = 0.05) -> None:
        self.features = features.float()
        self.units = list(units)
        self.evaluate = evaluate
        self.fine = fine
        self.clip_init, self.clip_growth = clip_init, clip_growth
        self.steps = features.shape[0]
        self.act_dim = max(self.units) if fine else 1
        self.obs_dim = features.shape[1] + (0 if fine else 1)
        self.progress = 0.0
        self._t = 0
        self._decisions: list = []
        self._history = 0.0

    def bound(self) -> float:
        """The current upper bound of a coarse prune fraction."""
        return min(1.0, self.clip_init + self.clip_growth * self.progress)

    def action_mask(self, t: int) -> Tensor | None:
        """Which action dimensions step ``t`` uses (fine variant), else None."""
        if not self.fine:
            return None
        mask = torch.zeros(self.act_dim)
        mask[: self.units[t]] = 1.0
        return mask

    def observe(self) -> Tensor:
        obs = self.features[self._t]
        return obs if self.fine else torch.cat([obs, torch.tensor([self._history])])

    def reset(self) -> Tensor:
        """Start an episode at the first key."""
        self._t, self._decisions, self._history = 0, [], 0.0
        return self.observe()

    @property
    def t(self) -> int:
        """The current step."""
        return self._t

    def decide(self, action: Tensor, t: int) -> object:
        """The decision an action means at step ``t`` (clipping as the environment does)."""
        if self.fine:
            keep = action[: self.units[t]].clamp(0.0, 1.0) >= 0.5
            if not bool(keep.any()):
                keep[int(action[: self.units[t]].argmax())] = True  # at least one unit per key
            return keep
        return float(action.reshape(-1)[0].clamp(0.0, 1.0).clamp(max=self.bound()))

    def step(self, action: Tensor) -> tuple[Tensor | None, Outcome | None]:
        """Store the action; at the last key evaluate the allocation. Returns the next observation
        (None at the end) and the outcome (None before the end)."""
        decision = self.decide(action, self._t)
        self._decisions.append(decision)
        if not self.fine:
            self._history += float(decision)  # type: ignore[arg-type]
        self._t += 1
        if self._t < self.steps:
            return self.observe(), None
        return None, self.evaluate(list(self._decisions))
