"""Run a suite's cells into a bench directory, resumably, one progress bar across the grid.

Layout of the bench directory::

    DIR/suite.yaml          the suite as read (the report takes its name and description from it)
    DIR/results.jsonl       one line per cell (see :mod:`secateurs.bench.results`)
    DIR/pretrain/...        dense pretraining runs (when the suite has ``pretrain:``)
    DIR/runs/MODEL/DATA/METHOD/VARIANT/seedN/   one run directory per cell

Running the same command again continues where it stopped: cells with an ``ok`` line are skipped,
a cell killed mid-training resumes from its last epoch checkpoint, failed cells are tried again. A
cell whose config changed since it ran is an error (its numbers would silently mix two setups).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from secateurs.allocation import MacsSplit, sparsity_for_macs
from secateurs.bench.grid import Cell
from secateurs.bench.macs_target import measure_macs_split, sparsity_for_shrunk_macs
from secateurs.bench.results import append_result, config_hash, latest_by_cell, matches_saved, read_results
from secateurs.bench.suite import Suite
from secateurs.errors import UsageError
from secateurs.experiment.config import RunConfig, load_recipe
from secateurs.utils.io import atomic_path

__all__ = ["BenchSummary", "run_suite"]

log = logging.getLogger(__name__)

SUITE_COPY = "suite.yaml"


@dataclass
class BenchSummary:
    """What one ``bench`` invocation did."""

    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    not_applicable: int = 0

    def describe(self) -> str:
        """One line for the terminal."""
        total = len(self.ran) + len(self.skipped) + len(self.failed)
        text = f"{total} cells: {len(self.ran)} ran, {len(self.skipped)} already done, {len(self.failed)} failed"
        return text + (f", {self.not_applicable} not applicable" if self.not_applicable else "")


def run_suite(
    suite: Suite,
    out: str | Path,
    *,
    device: str | None = None,
    data_dir: str | None = None,
    progress: bool = False,
) -> BenchSummary:
    """Run every cell of ``suite`` into the bench directory ``out``.

    Args:
        suite: a parsed suite (:func:`secateurs.bench.load_suite`).
        out: the bench directory (created; reused to resume).
        device: run every cell on this device instead of the suite's.
        data_dir: look for dataset files here first.
        progress: draw one progress bar over the grid on stderr.

    Returns:
        Which cells ran, were already done, or failed (failures are also logged and recorded).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / SUITE_COPY) as tmp:
        tmp.write_text(yaml.safe_dump(suite.source, sort_keys=False))
    previous = latest_by_cell(read_results(out))
    summary = BenchSummary(not_applicable=len(suite.not_applicable))
    for cell_id, reason in suite.not_applicable:
        if previous.get(cell_id, {}).get("status") != "not_applicable":
            append_result({"cell": cell_id, "role": "run", "status": "not_applicable", "error": reason}, out)
    context = _Context(out=out, previous=previous, device=device, data_dir=data_dir)
    with _GridProgress(len(suite.cells), enabled=progress) as bar:
        for cell in suite.cells:
            bar.show(cell.id)
            status, reason = _run_cell(cell, context)
            if status == "ok":
                summary.ran.append(cell.id)
            elif status == "skipped":
                summary.skipped.append(cell.id)
            else:
                summary.failed.append((cell.id, reason))
            bar.advance()
    return summary


@dataclass
class _Context:
    out: Path
    previous: dict[str, dict[str, Any]]
    device: str | None
    data_dir: str | None
    failed_pretrain: set[str] = field(default_factory=set)
    macs_splits: dict[tuple[Any, ...], MacsSplit] = field(default_factory=dict)
    shrunk_sparsity: dict[tuple[Any, ...], float] = field(default_factory=dict)


def _run_cell(cell: Cell, ctx: _Context) -> tuple[str, str]:
    from secateurs.experiment.run import execute

    try:
        if cell.pretrain in ctx.failed_pretrain:
            raise UsageError(f"its pretraining run {cell.pretrain} failed")
        config = _resolve(cell, ctx)
        digest = config_hash(config, pretrain=cell.pretrain)
        done = ctx.previous.get(cell.id)
        if done is not None and done.get("status") == "ok":
            if done.get("config_hash") == digest:
                return "skipped", ""
            raise UsageError(f"{cell.id} was run with another config; remove its results or choose another --out")
        run_dir = ctx.out / cell.id
        _check_run_dir(run_dir, config)
        started = time.perf_counter()
        report = execute(config, run_dir, resume=True)
    except Exception as exc:  # one failing cell must not end the grid
        reason = str(exc) if isinstance(exc, UsageError) else f"{type(exc).__name__}: {exc}"
        log.warning("cell %s failed: %s", cell.id, reason)
        append_result({**cell.keys(), "status": "error", "run_dir": cell.id, "error": reason}, ctx.out)
        if cell.role == "pretrain":
            ctx.failed_pretrain.add(cell.id)
        return "error", reason
    line: dict[str, Any] = {**cell.keys(), "status": "ok", "run_dir": cell.id, "config_hash": digest,
                            "wall_seconds": round(time.perf_counter() - started, 3)}
    for key, value in report.items():
        line.setdefault(key, value)
    append_result(line, ctx.out)
    log.info("cell %s: accuracy %s", cell.id, report.get("accuracy"))
    return "ok", ""


def _resolve(cell: Cell, ctx: _Context) -> RunConfig:
    """The cell's config as it runs here: pretrained start, device, data location, MACs target."""
    changes: dict[str, Any] = {}
    if cell.pretrain is not None:
        changes["from_checkpoint"] = str(ctx.out / cell.pretrain)
    if ctx.device is not None:
        changes["device"] = ctx.device
    if ctx.data_dir is not None:
        changes["data_dir"] = ctx.data_dir
    config = cell.config.with_overrides(**changes) if changes else cell.config
    if cell.target_kind == "macs" and config.couples_channels:
        assert cell.target_value is not None
        key = ("shrunk", config.model, config.data, config.include, config.exclude, config.method_config().scope,
               cell.target_value)
        if key not in ctx.shrunk_sparsity:
            ctx.shrunk_sparsity[key] = sparsity_for_shrunk_macs(config, cell.target_value)
        config = config.with_method_options(sparsity=ctx.shrunk_sparsity[key])
    elif cell.target_kind == "macs":
        assert cell.target_value is not None
        key = (config.model, config.data, config.data_dir, config.include, config.exclude, config.limit_train)
        if key not in ctx.macs_splits:
            ctx.macs_splits[key] = measure_macs_split(config)
        sparsity = sparsity_for_macs(ctx.macs_splits[key], cell.target_value, scope=cell.scope or "tensor")
        config = config.with_method_options(sparsity=sparsity)
    return config


def _check_run_dir(run_dir: Path, config: RunConfig) -> None:
    """Refuse to resume a run directory that another config started."""
    saved = run_dir / "config.yaml"
    if saved.exists() and not matches_saved(config, load_recipe(saved)):
        raise UsageError(f"{run_dir} holds a run of another config; remove it or choose another --out")


class _GridProgress:
    """One rich progress bar over the cells (a no-op when disabled)."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        self._total, self._enabled = total, enabled
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> _GridProgress:
        if self._enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), console=Console(stderr=True))
            self._task = self._progress.add_task("bench", total=self._total)
            self._progress.start()
        return self

    def show(self, description: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=description)

    def advance(self) -> None:
        if self._progress is not None:
            self._progress.advance(self._task)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
