"""``secateurs bench SUITE.yaml --out DIR`` and ``secateurs report DIR``: thin wrappers over the API."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from secateurs.cli.command import positive_int
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
    p.add_argument("--jobs", type=positive_int, default=1, metavar="N",
                   help="run N cells at once, each in its own process (default 1: one after the other)")
    p.add_argument("--threads-per-job", type=positive_int, metavar="T",
                   help="torch threads of each job (default: usable CPUs // jobs, at most $OMP_NUM_THREADS)")
    p.add_argument("--shard", type=shard_spec, metavar="I/N",
                   help="run only slice I of N of the grid (a job array on a shared file system; "
                        "`secateurs report` merges the shards)")
    p.add_argument("--dry-run", action="store_true", help="list the cells (of the shard) and exit")


def shard_spec(text: str) -> tuple[int, int]:
    """An argparse type: ``I/N`` with 1 <= I <= N (a usage error, one line, otherwise)."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"expected I/N, e.g. 2/8 (slice 2 of 8), got {text!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 1 <= index <= count:
        raise argparse.ArgumentTypeError(f"{index}/{count}: I/N needs 1 <= I <= N (slices are numbered from 1)")
    return index, count


def run_bench(args: argparse.Namespace) -> int:
    """Run a suite; exit 0 when every cell finished, 1 when some failed (the rest still ran)."""
    from secateurs.bench import load_suite, run_suite
    from secateurs.bench.shard import Shard, cells_for
    from secateurs.experiment.run import resolve_device

    if args.device is not None:
        resolve_device(args.device)  # a bad device is a usage error now, not a failure of every cell
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise UsageError(f"--data-dir {args.data_dir} is not a directory")
    suite = load_suite(args.suite)
    shard = Shard(*args.shard) if args.shard is not None else None
    if args.dry_run:
        cells = cells_for(suite.cells, shard)
        lines = [f"{cell.id}  ({_budget(cell)} epochs)" for cell in cells]
        if shard is None:
            lines += [f"{cell_id}  (not applicable: {reason})" for cell_id, reason in suite.not_applicable]
        where = f" (shard {shard} of a grid of {len(suite.cells)})" if shard is not None else ""
        _out("\n".join(lines) + f"\n{len(cells)} cells{where}")
        return 0
    try:
        summary = run_suite(suite, args.out, device=args.device, data_dir=args.data_dir,
                            progress=sys.stderr.isatty(), jobs=args.jobs, shard=shard, threads=args.threads_per_job)
    except KeyboardInterrupt:
        print("secateurs: interrupted; run the same command again to resume the grid", file=sys.stderr)
        return 130
    results = Path(args.out) / (shard.results_name if shard is not None else "results.jsonl")
    label = f"{suite.name} shard {shard}" if shard is not None else suite.name
    _out(f"{label}: {summary.describe()}\nresults: {results}")
    for cell_id, reason in summary.failed:
        _out(f"failed: {cell_id}: {reason}")
    for cell_id in summary.elsewhere:
        _out(f"running in another process: {cell_id}")
    return 1 if summary.failed else 0


def report_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``report``."""
    p.add_argument("dir", help="a bench directory (holding results.jsonl, or the results of its shards)")
    p.add_argument("--out", help="where the report goes (default DIR/report)")
    p.add_argument("--no-plots", action="store_true", help="tables and HTML only")


def run_report(args: argparse.Namespace) -> int:
    """Write the tables, plots and HTML page of a bench directory."""
    from secateurs.bench.results import results_files
    from secateurs.reporting import write_report
    from secateurs.reporting.build import cells_without_result

    bench = Path(args.dir)
    sources = results_files(bench)
    if not sources:
        raise UsageError(f"no results.jsonl (nor results of shards) in {bench}; "
                         f"run `secateurs bench SUITE.yaml --out {bench}` first")
    files = write_report(bench, args.out, plots=not args.no_plots)
    merged = [f"merged {len(sources)} results files: {', '.join(p.name for p in sources)}"] if len(sources) > 1 else []
    _out("\n".join([*merged, *(str(path) for path in files.all())]))
    missing = cells_without_result(bench)
    if missing:  # a partial report is fine (a grid still running), but say so
        sys.stderr.write(f"secateurs: note: cells of the suite without a result yet: {len(missing)} "
                         f"(first: {missing[0]}); a shard not run yet or still running?\n")
    return 0


def _budget(cell: Cell) -> str:
    epochs = cell.config.train.epochs
    return f"{cell.pretrain_epochs}+{epochs}" if cell.pretrain_epochs else str(epochs)
