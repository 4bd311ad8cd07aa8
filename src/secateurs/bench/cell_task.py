"""One cell, run under its claim: the unit of work a bench process (or one of its jobs) executes.

Everything that must not happen twice happens while the cell's claim is held: checking that nobody
finished it meanwhile, training, and appending its results line. Another process that wants the same
cell (a job of the same ``bench``, a shard on another machine, a second ``bench`` on the same
directory) either finds it claimed and moves on, or gets the claim afterwards and finds its line.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from secateurs.bench.grid import Cell
from secateurs.bench.locks import claim_cell
from secateurs.bench.results import ResultsIndex, append_result, matches_saved
from secateurs.errors import UsageError
from secateurs.experiment.config import RunConfig, load_recipe

__all__ = ["CellTask", "Outcome", "error_line", "run_cell_task"]

log = logging.getLogger(__name__)

#: Outcome statuses: trained here; finished by another process; being run by another process; failed.
OK, DONE, BUSY, ERROR = "ok", "done", "busy", "error"


@dataclass(frozen=True)
class CellTask:
    """What a process needs to run one cell (picklable: it travels to a job process).

    Attributes:
        cell: the grid cell.
        config: its config as it runs here (pretrained start, device, data location, MACs target).
        digest: the hash of that config its results line carries.
        out: the bench directory.
        results_name: the results file this invocation appends to.
        since: when this invocation started: a failure another process recorded after it is taken as
            this cell's failure now, not tried again (the next invocation tries again).
    """

    cell: Cell
    config: RunConfig
    digest: str
    out: Path
    results_name: str
    since: float


@dataclass(frozen=True)
class Outcome:
    """How a task ended: ``status`` is one of ok, done, busy, error; ``reason`` says why for errors;
    ``recorded``: whether its results line is written (not when its process died before it could)."""

    status: str
    reason: str = ""
    recorded: bool = True


def error_line(cell: Cell, reason: str) -> dict[str, Any]:
    """The results line of a cell that failed."""
    return {**cell.keys(), "status": "error", "run_dir": cell.id, "error": reason}


def run_cell_task(task: CellTask, index: ResultsIndex) -> Outcome:
    """Claim the cell, run it unless another process finished it, and append its line; then release it.

    ``index`` is this process's view of the bench directory's results (refreshed here, under the claim).
    Exceptions of the run become an ``error`` outcome and line: one failing cell never ends the grid.
    """
    from secateurs.experiment.run import execute

    cell = task.cell
    claim = claim_cell(task.out, cell.id)
    if claim is None:
        return Outcome(BUSY)
    with claim:
        latest = index.refresh().latest(cell.id)
        if latest is not None and latest.get("status") == "ok":
            if latest.get("config_hash") == task.digest:
                return Outcome(DONE)
            return _fail(task, f"{cell.id} was run with another config; remove its results or choose another --out")
        if latest is not None and latest.get("status") == "error" and _stamp(latest) >= task.since:
            return Outcome(ERROR, f"{latest.get('error')} (recorded by another process)")
        try:
            run_dir = task.out / cell.id
            _check_run_dir(run_dir, task.config)
            started = time.perf_counter()
            report = execute(task.config, run_dir, resume=True)
        except Exception as exc:  # one failing cell must not end the grid
            return _fail(task, str(exc) if isinstance(exc, UsageError) else f"{type(exc).__name__}: {exc}")
        line: dict[str, Any] = {**cell.keys(), "status": "ok", "run_dir": cell.id, "config_hash": task.digest,
                                "wall_seconds": round(time.perf_counter() - started, 3)}
        for key, value in report.items():
            line.setdefault(key, value)
        append_result(line, task.out, task.results_name)
        log.info("cell %s: accuracy %s", cell.id, report.get("accuracy"))
        return Outcome(OK)


def _fail(task: CellTask, reason: str) -> Outcome:
    append_result(error_line(task.cell, reason), task.out, task.results_name)
    return Outcome(ERROR, reason)


def _stamp(record: dict[str, Any]) -> float:
    stamp = record.get("finished_at")
    return float(stamp) if isinstance(stamp, int | float) else 0.0


def _check_run_dir(run_dir: Path, config: RunConfig) -> None:
    """Refuse to resume a run directory that another config started."""
    saved = run_dir / "config.yaml"
    if saved.exists() and not matches_saved(config, load_recipe(saved)):
        raise UsageError(f"{run_dir} holds a run of another config; remove it or choose another --out")
