"""``secateurs report DIR``: read a bench directory, write the tables, plots and HTML page."""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from secateurs.bench.results import latest_by_cell, read_results
from secateurs.errors import UsageError
from secateurs.reporting.aggregate import SummaryRow, failures, summarize
from secateurs.reporting.environment import load_environments
from secateurs.reporting.html import render_html
from secateurs.reporting.tables import build_tables, render_markdown, write_csv

__all__ = ["ReportFiles", "cells_without_result", "write_report"]

log = logging.getLogger(__name__)


@dataclass
class ReportFiles:
    """The files a report wrote."""

    markdown: Path
    csv: Path
    html: Path
    images: list[Path] = field(default_factory=list)

    def all(self) -> list[Path]:
        """Every file, the page first."""
        return [self.html, self.markdown, self.csv, *self.images]


def write_report(bench_dir: str | Path, out: str | Path | None = None, *, plots: bool = True) -> ReportFiles:
    """Write ``results.md``, ``results.csv``, ``index.html`` and ``img/*.png`` for a bench directory.

    Args:
        bench_dir: a directory written by :func:`secateurs.bench.run_suite`.
        out: where the report goes (default ``bench_dir/report``).
        plots: draw the PNG plots (needs matplotlib; without it the tables are still written).

    Raises:
        UsageError: the directory holds no results.
    """
    bench_dir = Path(bench_dir)
    out = Path(out) if out is not None else bench_dir / "report"
    records = _in_suite_order(list(latest_by_cell(read_results(bench_dir)).values()), bench_dir)
    if not records:
        raise UsageError(f"{bench_dir} holds no results (results.jsonl is missing or empty)")
    title, description = _suite_text(bench_dir)
    rows = summarize(records)
    tables = build_tables(rows, load_environments(bench_dir, rows))
    failed = failures(records)
    out.mkdir(parents=True, exist_ok=True)
    images = _plots(rows, bench_dir, out) if plots else []
    links = [(p.relative_to(out).as_posix(), caption) for p, caption in images]
    files = ReportFiles(out / "results.md", out / "results.csv", out / "index.html", [p for p, _ in images])
    files.markdown.write_text(render_markdown(tables, title=title, description=description, failures=failed,
                                              images=links))
    write_csv(rows, files.csv)
    files.html.write_text(render_html(tables, title=title, description=description, failures=failed, images=links))
    return files


def _plots(rows: list[SummaryRow], bench_dir: Path, out: Path) -> list[tuple[Path, str]]:
    if importlib.util.find_spec("matplotlib") is None:
        log.warning("matplotlib is not installed (pip install secateurs[report]); the report has no plots")
        return []
    from secateurs.reporting.plots import make_plots

    return [(p.path, p.title) for p in make_plots(rows, bench_dir, out / "img")]


def _suite_text(bench_dir: Path) -> tuple[str, str]:
    """Title and description from the suite copy the runner saved (defaults when it is missing)."""
    path = bench_dir / "suite.yaml"
    raw = yaml.safe_load(path.read_text()) if path.exists() else None
    raw = raw if isinstance(raw, dict) else {}
    name = raw.get("name") or bench_dir.name
    return f"Benchmark report: {name}", str(raw.get("description") or "")


def _in_suite_order(records: list[dict[str, Any]], bench_dir: Path) -> list[dict[str, Any]]:
    """The records in the order of the suite's cells, so the tables do not depend on which cell finished
    first (parallel jobs and shards finish in any order); cells the suite no longer names go last."""
    cells = _suite_cells(bench_dir)
    if cells is None:
        return records  # no (valid) suite copy: the order the results were written in
    rank = {cell: position for position, cell in enumerate(cells)}
    return sorted(records, key=lambda r: rank.get(r["cell"], len(rank)))


def cells_without_result(bench_dir: str | Path) -> list[str]:
    """The suite's cells that no results file mentions yet (a shard not run or still running), in
    suite order; empty when the bench directory has no (valid) suite copy."""
    cells = _suite_cells(Path(bench_dir))
    if cells is None:
        return []
    seen = latest_by_cell(read_results(bench_dir))
    return [cell for cell in cells if cell not in seen]


def _suite_cells(bench_dir: Path) -> list[str] | None:
    """Every cell id of the suite copy (runs, then the not-applicable combinations), or ``None``."""
    from secateurs.bench.suite import parse_suite

    path = bench_dir / "suite.yaml"
    try:
        suite = parse_suite(yaml.safe_load(path.read_text()), where=str(path))
    except (OSError, UsageError, yaml.YAMLError, TypeError, ValueError):
        return None
    return [cell.id for cell in suite.cells] + [cell for cell, _ in suite.not_applicable]
