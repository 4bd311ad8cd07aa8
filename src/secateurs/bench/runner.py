"""Run a suite's cells into a bench directory: resumably, in parallel jobs, and in shards.

Layout of the bench directory::

    DIR/suite.yaml          the suite as read (the report takes its name and description from it)
    DIR/results.jsonl       one line per cell (see :mod:`secateurs.bench.results`);
                            results.shard-I-of-N.jsonl for each shard of a sharded grid
    DIR/.locks/             claim files: which process runs which cell now (see :mod:`secateurs.bench.locks`)
    DIR/pretrain/...        dense pretraining runs (when the suite has ``pretrain:``)
    DIR/runs/MODEL/DATA/METHOD/VARIANT/seedN/   one run directory per cell

Running the same command again continues where it stopped: cells with an ``ok`` line are skipped,
a cell killed mid-training resumes from its last epoch checkpoint, failed cells are tried again. A
cell whose config changed since it ran is an error (its numbers would silently mix two setups).

``jobs`` > 1 runs cells in that many processes (:mod:`secateurs.bench.workers`); a cell that starts
from a dense pretraining waits until it is finished. ``shard`` runs one deterministic slice of the
grid (:mod:`secateurs.bench.shard`). Every cell runs under a claim (:mod:`secateurs.bench.cell_task`),
so no cell runs twice, whether jobs, shards or whole invocations share the directory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from secateurs.allocation import MacsSplit, sparsity_for_macs
from secateurs.bench.cell_task import BUSY, DONE, OK, CellTask, Outcome, error_line
from secateurs.bench.grid import Cell
from secateurs.bench.macs_target import measure_macs_split, sparsity_for_shrunk_macs
from secateurs.bench.progress import GridProgress
from secateurs.bench.results import RESULTS, ResultsIndex, append_result, config_hash
from secateurs.bench.shard import Shard, cells_for
from secateurs.bench.suite import Suite
from secateurs.bench.workers import InlineRunner, JobPool, default_threads
from secateurs.errors import UsageError
from secateurs.experiment.config import RunConfig
from secateurs.utils.io import atomic_path

__all__ = ["BenchSummary", "run_suite"]

log = logging.getLogger(__name__)

SUITE_COPY = "suite.yaml"
#: Seconds between two looks at a pretraining run that another process is running.
PREREQUISITE_POLL_SECONDS = 2.0


@dataclass
class BenchSummary:
    """What one ``bench`` invocation did."""

    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    elsewhere: list[str] = field(default_factory=list)
    not_applicable: int = 0

    def describe(self) -> str:
        """One line for the terminal."""
        total = len(self.ran) + len(self.skipped) + len(self.failed) + len(self.elsewhere)
        text = f"{total} cells: {len(self.ran)} ran, {len(self.skipped)} already done, {len(self.failed)} failed"
        if self.elsewhere:
            text += f", {len(self.elsewhere)} running in another process"
        return text + (f", {self.not_applicable} not applicable" if self.not_applicable else "")


def run_suite(
    suite: Suite,
    out: str | Path,
    *,
    device: str | None = None,
    data_dir: str | None = None,
    progress: bool = False,
    jobs: int = 1,
    shard: Shard | None = None,
    threads: int | None = None,
) -> BenchSummary:
    """Run the cells of ``suite`` (or of one shard of it) into the bench directory ``out``.

    Args:
        suite: a parsed suite (:func:`secateurs.bench.load_suite`).
        out: the bench directory (created; reused to resume; shared by the shards of a grid).
        device: run every cell on this device instead of the suite's.
        data_dir: look for dataset files here first.
        progress: draw one progress bar over the grid on stderr.
        jobs: cells run at once, each in its own process (1: one after the other, in this process).
        shard: run only this slice of the grid, and the pretraining runs it needs.
        threads: torch threads per job (default: the usable CPUs divided by ``jobs``, at most
            ``OMP_NUM_THREADS``; with one job, torch's own setting unless given).

    Returns:
        Which cells ran, were already done, failed, or were running in another process (failures
        are also logged and recorded).
    """
    if jobs < 1 or (threads is not None and threads < 1):
        raise UsageError("jobs and threads per job are positive integers")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / SUITE_COPY) as tmp:
        tmp.write_text(yaml.safe_dump(suite.source, sort_keys=False))
    since = time.time()
    index = ResultsIndex(out).refresh()
    results_name = shard.results_name if shard is not None else RESULTS
    summary = BenchSummary(not_applicable=len(suite.not_applicable))
    for cell_id, reason in suite.not_applicable:
        if (index.latest(cell_id) or {}).get("status") != "not_applicable":
            append_result({"cell": cell_id, "role": "run", "status": "not_applicable", "error": reason}, out,
                          results_name)
    context = _Context(out=out, device=device, data_dir=data_dir)
    grid = _Grid(summary, lambda cell, reason: append_result(error_line(cell, reason), out, results_name))
    tasks = []
    for cell in cells_for(suite.cells, shard):
        task = _plan(cell, context, index, grid)
        if task is not None:
            tasks.append(CellTask(cell, task[0], task[1], out, results_name, since))
    # No more job processes than cells left to run (none at all when the grid is done).
    parallel = jobs > 1 and len(tasks) > 0
    runner = JobPool(min(jobs, len(tasks)), threads or default_threads(jobs)) if parallel else InlineRunner(index)
    with GridProgress(len(tasks) + len(summary.skipped) + len(summary.failed), enabled=progress) as bar, \
            _torch_threads(threads if not parallel else None):
        bar.advance(len(summary.skipped) + len(summary.failed))  # decided before anything ran
        try:
            _schedule(tasks, runner, grid, bar)
        except BaseException:
            runner.close(kill=True)
            raise
        runner.close()
    return summary


@dataclass
class _Context:
    out: Path
    device: str | None
    data_dir: str | None
    macs_splits: dict[tuple[Any, ...], MacsSplit] = field(default_factory=dict)
    shrunk_sparsity: dict[tuple[Any, ...], tuple[float, int]] = field(default_factory=dict)


class _Grid:
    """The invocation's bookkeeping: the summary, and which pretraining runs are usable or failed."""

    def __init__(self, summary: BenchSummary, record_error: Callable[[Cell, str], Any]) -> None:
        self.summary = summary
        self.pretrain: dict[str, bool] = {}  # finished pretraining runs: id -> usable
        self._record_error = record_error

    def finished(self, cell: Cell, outcome: Outcome) -> None:
        if outcome.status == BUSY:
            self.summary.elsewhere.append(cell.id)
            return
        if outcome.status == OK:
            self.summary.ran.append(cell.id)
        elif outcome.status == DONE:
            self.summary.skipped.append(cell.id)
        else:
            if not outcome.recorded:
                self._record_error(cell, outcome.reason)
            log.warning("cell %s failed: %s", cell.id, outcome.reason)
            self.summary.failed.append((cell.id, outcome.reason))
        if cell.role == "pretrain":
            self.pretrain[cell.id] = outcome.status in (OK, DONE)

    def fail(self, cell: Cell, reason: str) -> None:
        self._record_error(cell, reason)
        self.finished(cell, Outcome("error", reason))


def _plan(cell: Cell, ctx: _Context, index: ResultsIndex, grid: _Grid) -> tuple[RunConfig, str] | None:
    """The cell's config and hash when it still has to run; ``None`` when it is done or cannot run."""
    try:
        config = _resolve(cell, ctx)
    except Exception as exc:
        grid.fail(cell, str(exc) if isinstance(exc, UsageError) else f"{type(exc).__name__}: {exc}")
        return None
    digest = config_hash(config, pretrain=cell.pretrain)
    done = index.latest(cell.id)
    if done is not None and done.get("status") == "ok":
        if done.get("config_hash") != digest:
            grid.fail(cell, f"{cell.id} was run with another config; remove its results or choose another --out")
        else:
            grid.finished(cell, Outcome(DONE))
        return None
    return config, digest


def _schedule(tasks: list[CellTask], runner: InlineRunner | JobPool, grid: _Grid, bar: GridProgress) -> None:
    """Hand out the tasks as slots free up, each cell after the pretraining it starts from."""
    pending = list(tasks)
    retry_at: dict[str, float] = {}  # pretraining runs another process holds: when to look again
    while pending or runner.running():
        _dispatch(pending, runner, grid, bar, retry_at)
        if runner.running():
            finished = runner.collect(timeout=PREREQUISITE_POLL_SECONDS)
        else:
            finished = runner.collect(timeout=0.0)
            if not finished and pending:  # all wait for pretraining that another process holds
                waits = [retry_at[t.cell.id] for t in pending if t.cell.id in retry_at]
                if not waits:  # cannot happen: every prerequisite is planned before its cells
                    for task in pending:
                        grid.fail(task.cell, f"its pretraining run {task.cell.pretrain} was not run")
                        bar.advance()
                    return
                time.sleep(max(0.0, min(waits) - time.monotonic()))
        for task, outcome in finished:
            if outcome.status == BUSY and task.cell.role == "pretrain":
                # Another process runs (or resumes) it: look again later; it is never run twice.
                retry_at[task.cell.id] = time.monotonic() + PREREQUISITE_POLL_SECONDS
                pending.insert(0, task)
                continue
            grid.finished(task.cell, outcome)
            bar.advance()


def _dispatch(pending: list[CellTask], runner: InlineRunner | JobPool, grid: _Grid, bar: GridProgress,
              retry_at: dict[str, float]) -> None:
    """Submit ready tasks, in order, while the runner has free slots; fail those whose pretraining failed."""
    now = time.monotonic()
    for task in list(pending):
        if runner.free() == 0:
            return
        pre = task.cell.pretrain
        if pre is not None and grid.pretrain.get(pre) is False:
            pending.remove(task)
            grid.fail(task.cell, f"its pretraining run {pre} failed")
            bar.advance()
        elif (pre is None or pre in grid.pretrain) and retry_at.get(task.cell.id, 0.0) <= now:
            pending.remove(task)
            bar.show(task.cell.id)
            runner.submit(task)


@contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Run this process's cells with ``threads`` torch threads (then put the setting back)."""
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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
               cell.target_value, config.round_to)
        if key not in ctx.shrunk_sparsity:
            ctx.shrunk_sparsity[key] = sparsity_for_shrunk_macs(config, cell.target_value)
        sparsity, round_to = ctx.shrunk_sparsity[key]
        config = config.with_method_options(sparsity=sparsity)
        if round_to != config.round_to:  # rounded widths cannot reach this target: exact counts
            config = config.with_overrides(round_to=round_to)
    elif cell.target_kind == "macs":
        assert cell.target_value is not None
        key = (config.model, config.data, config.data_dir, config.include, config.exclude, config.limit_train)
        if key not in ctx.macs_splits:
            ctx.macs_splits[key] = measure_macs_split(config)
        sparsity = sparsity_for_macs(ctx.macs_splits[key], cell.target_value, scope=cell.scope or "tensor")
        config = config.with_method_options(sparsity=sparsity)
    return config
