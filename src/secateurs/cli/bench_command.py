"""``secateurs bench SUITE.yaml --out DIR`` and ``secateurs report DIR``: thin wrappers over the API."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from secateurs.cli.command import write_out as _out
from secateurs.errors import UsageError

if TYPE_CHECKING:
    from secateurs.bench.grid import Cell

__all__ = ["bench_arguments", "report_arguments", "run_bench", "run_report"]


def bench_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``bench``."""
    p.add_argument("suite", help="suite YAML file (see docs/benchmarks.md)")
    p.add_argument("--out", required=True, help="bench directory; run the same command again to resume")
    p.add_argument("--device", help="run every cell on this device (cpu, cuda, cuda:N, auto)")
    p.add_argument("--data-dir", help="look for dataset files here first")
    p.add_argument("--dry-run", action="store_true", help="list the cells and exit")


def run_bench(args: argparse.Namespace) -> int:
    """Run a suite; exit 0 when every cell finished, 1 when some failed (the rest still ran)."""
    from secateurs.bench import load_suite, run_suite
    from secateurs.experiment.run import resolve_device

    if args.device is not None:
        resolve_device(args.device)  # a bad device is a usage error now, not a failure of every cell
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise UsageError(f"--data-dir {args.data_dir} is not a directory")
    suite = load_suite(args.suite)
    if args.dry_run:
        lines = [f"{cell.id}  ({_budget(cell)} epochs)" for cell in suite.cells]
        lines += [f"{cell_id}  (not applicable: {reason})" for cell_id, reason in suite.not_applicable]
        _out("\n".join(lines) + f"\n{len(suite.cells)} cells")
        return 0
    try:
        summary = run_suite(suite, args.out, device=args.device, data_dir=args.data_dir,
                            progress=sys.stderr.isatty())
    except KeyboardInterrupt:
        print("secateurs: interrupted; run the same command again to resume the grid", file=sys.stderr)
        return 130
    _out(f"{suite.name}: {summary.describe()}\nresults: {Path(args.out) / 'results.jsonl'}")
    for cell_id, reason in summary.failed:
        _out(f"failed: {cell_id}: {reason}")
    return 1 if summary.failed else 0


def report_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``report``."""
    p.add_argument("dir", help="a bench directory (holding results.jsonl)")
    p.add_argument("--out", help="where the report goes (default DIR/report)")
    p.add_argument("--no-plots", action="store_true", help="tables and HTML only")


def run_report(args: argparse.Namespace) -> int:
    """Write the tables, plots and HTML page of a bench directory."""
    from secateurs.reporting import write_report

    bench = Path(args.dir)
    if not (bench / "results.jsonl").exists():
        raise UsageError(f"no results.jsonl in {bench}; run `secateurs bench SUITE.yaml --out {bench}` first")
    files = write_report(bench, args.out, plots=not args.no_plots)
    _out("\n".join(str(path) for path in files.all()))
    return 0


def _budget(cell: Cell) -> str:
    epochs = cell.config.train.epochs
    return f"{cell.pretrain_epochs}+{epochs}" if cell.pretrain_epochs else str(epochs)
