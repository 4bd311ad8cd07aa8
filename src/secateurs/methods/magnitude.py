"""One-shot magnitude pruning (per tensor or global), then fine-tuning for the rest of the budget.

From a trained model (``prune --from``) the weights are pruned at once. From scratch, a one-shot
prune of random initial weights would be random pruning, so the dense network first trains for
``prune_at`` of the budget (default half), is pruned by magnitude, and fine-tunes for the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from secateurs.core.granularity import Filter, Kernel, NofM, Unstructured
from secateurs.methods.base import MethodConfig
from secateurs.methods.registry import METHODS
from secateurs.methods.scoring import ScoreBasedMethod

__all__ = ["MagnitudeConfig", "MagnitudePruning"]


@dataclass(frozen=True, kw_only=True)
class MagnitudeConfig(MethodConfig):
    """Magnitude pruning settings.

    Attributes:
        prune_at: fraction of the epoch budget trained dense before the one-shot prune; default
            0 from a trained model, 0.5 from scratch.
    """

    prune_at: float | None = field(default=None, metadata={
        "help": "fraction of epochs before pruning", "ge": 0.0, "lt": 1.0})


@METHODS.register("magnitude", description="one-shot magnitude pruning (per tensor or global), then fine-tune")
class MagnitudePruning(ScoreBasedMethod):
    """Keep the largest-magnitude units (L2 norm of each unit)."""

    Config = MagnitudeConfig
    granularities = (Unstructured, Kernel, Filter, NofM)
    config: MagnitudeConfig

    @property
    def prune_step(self) -> int:
        """The optimizer step after which the one-shot prune happens."""
        frac = self.config.prune_at
        if frac is None:
            frac = 0.0 if self.horizon.pretrained else 0.5
        # At least one epoch is left for fine-tuning.
        epochs = min(int(round(frac * self.horizon.epochs)), self.horizon.epochs - 1)
        return max(epochs, 0) * self.horizon.steps_per_epoch

    def on_phase_start(self, phase_index: int) -> None:
        if phase_index == 0 and self.prune_step == 0:
            self.prune_to(self.sparsity_targets())

    def on_step(self, step: int) -> None:
        if step == self.prune_step:
            self.prune_to(self.sparsity_targets())
