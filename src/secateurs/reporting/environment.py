"""Which software and machine produced each run of a benchmark, from the runs' records (``run.json``).

Every distinct environment gets a short label (``E1``, ``E2``, ...). The report shows, per run group
(a model on a dataset), one block describing the environments of its runs, a column naming each
row's environment, and a warning when the runs compared side by side came from different ones:
their accuracies may differ in the last digits and their seconds are not comparable at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from secateurs.errors import UsageError
from secateurs.experiment.record import RECORD, describe_environment, read_record
from secateurs.reporting.aggregate import SummaryRow

__all__ = ["ENVIRONMENT_FIELDS", "Environments", "load_environments"]

#: The fields that make two environments different (times, platform strings and paths do not).
ENVIRONMENT_FIELDS = ("secateurs", "git_commit", "git_dirty", "python", "torch", "torchvision", "device",
                      "device_name", "cuda", "threads", "deterministic")


@dataclass
class Environments:
    """The environments of a bench directory's runs, labelled in order of first appearance."""

    by_run: dict[str, int] = field(default_factory=dict)  # run_dir -> index into ``envs``
    envs: list[dict[str, Any]] = field(default_factory=list)

    def label(self, index: int) -> str:
        """``E1`` for the first environment."""
        return f"E{index + 1}"

    def of_row(self, row: SummaryRow) -> list[int]:
        """The environments of a row's runs (empty when none of them has a record)."""
        return sorted({self.by_run[d] for d in row.run_dirs if d in self.by_run})

    def column(self, row: SummaryRow) -> str:
        """The row's environment labels, ``?`` when its runs have no record."""
        found = self.of_row(row)
        return ",".join(self.label(i) for i in found) if found else "?"

    def notes(self, rows: Sequence[SummaryRow]) -> list[str]:
        """One block for a run group: each environment it used, and a warning when it used several."""
        used = sorted({i for r in rows for i in self.of_row(r)})
        missing = [d for r in rows for d in r.run_dirs if d not in self.by_run]
        notes = [f"Environment {self.label(i)}: {describe_environment(self.envs[i])}" for i in used]
        if missing:
            notes.append(f"{len(missing)} run(s) have no run record ({RECORD}; made by an older secateurs): "
                         "their environment is unknown.")
        if len(used) > 1:
            fields = [f for f in ENVIRONMENT_FIELDS if len({str(self.envs[i].get(f)) for i in used}) > 1]
            notes.append(f"Warning: the runs compared here come from {len(used)} environments "
                         f"({', '.join(self.label(i) for i in used)}) that differ in {', '.join(fields)}; "
                         "numbers may differ for that reason alone and seconds are not comparable.")
        return notes


def load_environments(bench_dir: str | Path, rows: Sequence[SummaryRow]) -> Environments:
    """Read the record of every run of ``rows`` (a damaged or missing record counts as unknown)."""
    out = Environments()
    keys: list[tuple[str, ...]] = []
    for row in rows:
        for run_dir in row.run_dirs:
            path = Path(bench_dir) / run_dir
            if run_dir in out.by_run or not (path / RECORD).exists():
                continue
            try:
                env = read_record(path).get("environment") or {}
            except UsageError:
                continue
            key = tuple(str(env.get(f)) for f in ENVIRONMENT_FIELDS)
            if key not in keys:
                keys.append(key)
                out.envs.append(env)
            out.by_run[run_dir] = keys.index(key)
    return out
