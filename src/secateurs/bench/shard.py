"""Deterministic slices of a grid, so that a cluster job array covers it on a shared file system.

Shard ``I/N`` owns every N-th cell of the suite's cell order, starting at the I-th (round robin keeps
the shards' sizes within one cell and spreads methods and seeds over them). The order depends only on
the suite, so every array task computes the same partition without talking to the others.

Dense pretraining runs are not dealt out: they are *prerequisites*, run on demand by whichever shard
needs one first (claimed with a lock, see :mod:`secateurs.bench.locks`) while the others wait for it.
A pretraining run that no cell starts from is dealt out like any other cell.
"""

from __future__ import annotations

from dataclasses import dataclass

from secateurs.bench.grid import Cell
from secateurs.errors import UsageError

__all__ = ["Shard", "cells_for"]


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (1-based, as ``--shard I/N`` and Slurm's array ids count)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 1 <= self.index <= self.count:
            raise UsageError(f"--shard {self.index}/{self.count}: I/N needs 1 <= I <= N")

    @property
    def results_name(self) -> str:
        """This shard's results file in the bench directory (``secateurs report`` merges them all)."""
        return f"results.shard-{self.index}-of-{self.count}.jsonl"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def cells_for(cells: list[Cell], shard: Shard | None) -> list[Cell]:
    """The cells one invocation runs, in suite order: its share, with the pretraining runs they need first.

    Without a shard that is every cell.
    """
    if shard is None:
        return list(cells)
    needed = {c.pretrain for c in cells if c.pretrain is not None}
    dealt = [c for c in cells if c.id not in needed]
    own = [c for position, c in enumerate(dealt) if position % shard.count == shard.index - 1]
    wanted = {c.pretrain for c in own if c.pretrain is not None}
    prerequisites = [c for c in cells if c.id in wanted]
    return prerequisites + own
