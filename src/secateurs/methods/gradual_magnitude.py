"""Gradual magnitude pruning (Zhu & Gupta, "To prune, or not to prune", 2017).

Sparsity follows the cubic schedule ``s_t = s_f + (s_i - s_f) * (1 - (t - t_0) / (n Δt))**3`` from
``start`` to ``end`` (fractions of the run's steps), with the masks recomputed from weight
magnitudes every ``update_every`` steps; pruned weights stay pruned. After ``end`` the network
fine-tunes at the final mask for the rest of the budget, while the learning rate decays.

Defaults fitted to an epoch budget: from scratch pruning starts after 10 % of training (the paper
starts once the dense model has learnt something) and ends at 70 %, leaving 30 % to recover; from a
trained model it starts at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from secateurs.core.granularity import Filter, Kernel, NofM, Unstructured
from secateurs.core.schedules import polynomial
from secateurs.errors import UsageError
from secateurs.methods.base import MethodConfig, Phase
from secateurs.methods.registry import METHODS
from secateurs.methods.scoring import ScoreBasedMethod

__all__ = ["GradualMagnitudeConfig", "GradualMagnitudePruning"]


@dataclass(frozen=True, kw_only=True)
class GradualMagnitudeConfig(MethodConfig):
    """GMP settings (fractions of the total optimizer steps of the run).

    Attributes:
        start: when pruning begins; default 0.1 from scratch, 0 from a trained model.
        end: when the final sparsity is reached.
        initial_sparsity: ``s_i`` of the schedule.
        power: exponent of the schedule (3 in the paper).
        updates: how many mask updates between ``start`` and ``end`` (the paper's ``n``).
    """

    start: float | None = field(default=None, metadata={"help": "fraction of steps when pruning starts", "ge": 0.0})
    end: float = field(default=0.7, metadata={
        "help": "fraction of steps when final sparsity is reached", "gt": 0.0, "le": 1.0})
    initial_sparsity: float = field(default=0.0, metadata={
        "help": "sparsity at the start of the ramp", "ge": 0.0, "lt": 1.0})
    power: float = field(default=3.0, metadata={"help": "exponent of the sparsity ramp", "gt": 0.0})
    updates: int = field(default=100, metadata={"help": "number of mask updates along the ramp", "ge": 1})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.start is not None and not self.start < self.end:
            raise UsageError(f"start must come before end ({self.end}), got {self.start}")


@METHODS.register("gmp", description="gradual magnitude pruning with the cubic schedule of Zhu & Gupta")
class GradualMagnitudePruning(ScoreBasedMethod):
    """Magnitude masks tightened on a cubic schedule, then fine-tuning at the final mask."""

    Config = GradualMagnitudeConfig
    granularities = (Unstructured, Kernel, Filter, NofM)
    config: GradualMagnitudeConfig

    def _ramp(self) -> tuple[int, int, int]:
        total = self.horizon.total_steps
        start_frac = self.config.start if self.config.start is not None else (0.0 if self.horizon.pretrained else 0.1)
        start, end = int(start_frac * total), int(self.config.end * total)
        every = max(1, (end - start) // self.config.updates)
        return start, end, every

    def phases(self) -> list[Phase]:
        start, end, _ = self._ramp()
        if end <= start:
            raise UsageError(
                f"gmp needs more than {self.horizon.total_steps} steps to ramp sparsity; give more epochs"
            )
        return super().phases()

    def sparsity_at(self, step: int, target: float | None = None) -> float:
        """The scheduled sparsity after ``step`` optimizer steps on the way to ``target`` (default
        the config's sparsity; with an allocation every key ramps to its own target)."""
        start, end, _ = self._ramp()
        target = float(self.config.sparsity or 0.0) if target is None else target
        # The ramp never starts above a key's own target (an allocation may give some keys less).
        initial = min(self.config.initial_sparsity, target)
        return polynomial(start, end, initial, target, self.config.power)(step)

    def _maybe_update(self, step: int) -> None:
        start, end, every = self._ramp()
        if start <= step <= end and ((step - start) % every == 0 or step == end):
            self.prune_to(self.sparsity_targets(lambda target: self.sparsity_at(step, target)))

    def on_phase_start(self, phase_index: int) -> None:
        if phase_index == 0:
            self._maybe_update(0)

    def on_step(self, step: int) -> None:
        self._maybe_update(step)
