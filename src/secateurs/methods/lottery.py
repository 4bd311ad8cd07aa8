"""Iterative magnitude pruning with rewinding (Frankle & Carbin 2019; Frankle et al. 2020).

The epoch budget is split into training phases. After each phase the weights are pruned by
magnitude (each round removes the same fraction of what is left, so round r reaches
``1 - (1 - S)**(r / R)``), then the surviving weights *and BatchNorm buffers* are rewound to an early
iterate and trained again with a fresh optimizer and learning-rate schedule.

From scratch there are ``rounds + 1`` phases: a dense one, then one per pruning round (the last trains
the final ticket). From a trained model there are ``rounds`` phases, each starting with a prune,
and the rewind point is the trained model itself.

The rewind point is ``rewind_fraction`` of the first phase (Frankle et al.'s "late rewinding"
stabilises deeper networks; ``0`` rewinds to initialisation as in the original lottery ticket paper).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from secateurs.core.granularity import Filter, Kernel, NofM, Unstructured
from secateurs.errors import UsageError
from secateurs.methods.base import MethodConfig, Phase
from secateurs.methods.registry import METHODS
from secateurs.methods.rewind import rewind_, round_sparsity, snapshot
from secateurs.methods.scoring import ScoreBasedMethod

__all__ = ["LotteryConfig", "LotteryTicketPruning"]


@dataclass(frozen=True, kw_only=True)
class LotteryConfig(MethodConfig):
    """IMP settings.

    Attributes:
        rounds: number of pruning rounds.
        rewind_fraction: rewind point as a fraction of the first phase's steps.
    """

    rounds: int = field(default=3, metadata={"help": "number of prune-and-rewind rounds", "ge": 1})
    rewind_fraction: float = field(default=0.05, metadata={
        "help": "rewind point, fraction of the first phase", "ge": 0.0, "lt": 1.0})


@METHODS.register("lottery", aliases=("imp",), description="iterative magnitude pruning with rewinding (lottery tickets)")
class LotteryTicketPruning(ScoreBasedMethod):
    """Rounds of train, prune by magnitude, rewind."""

    Config = LotteryConfig
    granularities = (Unstructured, Kernel, Filter, NofM)
    config: LotteryConfig

    def __init__(self, config: LotteryConfig) -> None:
        super().__init__(config)
        self._snapshot: dict[str, Tensor] = {}

    def phases(self) -> list[Phase]:
        n = self.config.rounds + (0 if self.horizon.pretrained else 1)
        if self.horizon.epochs < n:
            raise UsageError(f"lottery with {self.config.rounds} rounds needs at least {n} epochs")
        base, extra = divmod(self.horizon.epochs, n)
        # The remainder goes to the last phase: the final ticket gets the longest training.
        return [Phase(f"round{i}", base + (extra if i == n - 1 else 0)) for i in range(n)]

    def _rewind_step(self) -> int:
        first = self.phases()[0].epochs * self.horizon.steps_per_epoch
        return 0 if self.horizon.pretrained else int(self.config.rewind_fraction * first)

    def round_sparsity(self, round_index: int, target: float | None = None) -> float:
        """Sparsity after pruning round ``round_index`` (1-based) on the way to ``target`` (default
        the config's sparsity; with an allocation each key follows its own geometric path)."""
        return round_sparsity((self.config.sparsity or 0.0) if target is None else target, round_index,
                              self.config.rounds)

    def _take_snapshot(self) -> None:
        assert self.model is not None
        self._snapshot = snapshot(self.model)

    def _rewind(self) -> None:
        assert self.model is not None
        rewind_(self.model, self._snapshot)

    def on_phase_start(self, phase_index: int) -> None:
        if phase_index == 0 and self._rewind_step() == 0:
            self._take_snapshot()
        round_index = phase_index + (1 if self.horizon.pretrained else 0)
        if round_index >= 1:
            self.prune_to(self.sparsity_targets(lambda target: self.round_sparsity(round_index, target)))
            self._rewind()

    def on_step(self, step: int) -> None:
        if step == self._rewind_step() and not self._snapshot:
            self._take_snapshot()

    def extra_state(self) -> dict[str, Any]:
        return {"snapshot": self._snapshot}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self._snapshot = dict(state.get("snapshot", {}))

