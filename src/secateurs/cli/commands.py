"""The subcommands: each adds its arguments and runs by calling the public API."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from secateurs.cli.bench_command import bench_arguments, report_arguments, run_bench, run_report
from secateurs.cli.command import Command
from secateurs.cli.command import write_out as _out
from secateurs.cli.estimate_command import ESTIMATE
from secateurs.cli.reproduce_command import REPRODUCE
from secateurs.cli.run_args import add_run_arguments, run_config_from_args, setting_sources
from secateurs.cli.shrink_command import SHRINK, add_prunability_arguments, run_prunability
from secateurs.cli.ticket_search_command import Command as SEARCH_TICKETS
from secateurs.errors import UsageError

__all__ = ["COMMANDS", "Command"]


# ---------------------------------------------------------------------------------------------- list
def _list_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=["methods", "models", "datasets", "granularities", "settings", "allocators", "costs"],
                   help="what to list (allocators, costs: for --allocation and --budget; settings: the run and training settings of recipes and flags)")
    p.add_argument("name", nargs="?", help="with methods: one method, listed with its options")


def _list_run(args: argparse.Namespace) -> int:
    # Read from the generated catalogue: listing what exists needs no torch (seconds of start-up).
    from secateurs.cli.catalogue import catalogue
    from secateurs.cli.option_help import method_options_help, settings_help

    rows: list[tuple[str, str]]
    if args.name is not None and args.what != "methods":
        raise UsageError(f"`secateurs list {args.what}` takes no name (only `list methods NAME` does)")
    if args.what == "settings":
        _out(settings_help())
        return 0
    if args.what == "methods" and args.name is not None:
        _out(method_options_help(args.name))
        return 0
    if args.what == "methods":
        rows = [(f"{e['name']} ({', '.join(e['aliases'])})" if e["aliases"] else e["name"], e["description"])
                for e in catalogue()["methods"]]
    else:
        rows = [(name, text) for name, text in catalogue()[args.what]]
        if args.what == "costs":
            rows.append(("module:function", "your own f(model) or f(model, masks) -> float"))
    width = max(len(r[0]) for r in rows)
    _out("\n".join(f"{name:<{width}}  {text}" for name, text in rows))
    return 0


# ----------------------------------------------------------------------------------------- train/prune
def _train_args(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p, pruning=False)


def _prune_args(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p, pruning=True)


def _execute(args: argparse.Namespace, pruning: bool) -> int:
    from secateurs.experiment.record import RunOrigin
    from secateurs.experiment.resume import require_resumable
    from secateurs.experiment.run import REPORT, execute
    from secateurs.train.distributed import launched

    if args.resume:
        require_resumable(args.out, finished=REPORT)
    config = run_config_from_args(args, pruning=pruning)
    origin = RunOrigin(argv=["secateurs", *getattr(args, "argv", [])], sources=setting_sources(args, pruning=pruning))
    with launched() as world:  # under torchrun: join the other processes (data-parallel training)
        if not world.is_main:
            logging.getLogger().setLevel(logging.ERROR)  # rank 0 says it once
        report = execute(config, args.out, resume=args.resume, show_progress=sys.stderr.isatty(), origin=origin)
    if world.is_main:
        _out(_summary(report, args.out))
    return 0


def _summary(report: dict[str, Any], out: str) -> str:
    acc = report.get("accuracy")
    parts = [
        f"{report['method']} {report['model']} on {report['dataset']}:",
        f"accuracy {acc:.2f}%" if acc is not None else "accuracy n/a",
        f"sparsity {report['achieved_sparsity']:.4f}",
        f"params {report['params_nonzero']:,}/{report['params_total']:,}",
        f"MACs {report['macs_effective']:,}/{report['macs_dense']:,}",
    ]
    return " ".join(parts) + f"\nrun directory: {out}"


# -------------------------------------------------------------------------------------------- inspect
def _inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", nargs="?", help="a run directory, a `shrink --out` directory or a compressed model file")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--record", action="store_true",
                   help="print the run record (run.json: command line, settings and their sources, versions, data)")
    add_prunability_arguments(p)


def _inspect_run(args: argparse.Namespace) -> int:
    from secateurs.experiment.inspect import describe_run

    if args.prunability:
        return run_prunability(args)
    if args.run is None:
        raise UsageError("inspect needs a run directory (or --prunability MODEL)")
    run = Path(args.run)
    if run.is_file():  # a compressed model file (`shrink --compress`)
        from secateurs.experiment.inspect_export import describe_compressed_file

        _out(describe_compressed_file(run, as_json=args.json))
        return 0
    if not run.is_dir():
        raise UsageError(f"no run directory at {run}")
    from secateurs.experiment.inspect_export import describe_export_dir, is_export_dir

    if is_export_dir(run):
        _out(describe_export_dir(run, as_json=args.json))
        return 0
    _out(describe_run(run, as_json=args.json, record=args.record))
    return 0


COMMANDS: dict[str, Command] = {
    "list": Command("list registered methods, models, datasets, granularities, allocators or costs", _list_args, _list_run),
    "train": Command("train a dense model (the reference for pruning)", _train_args, lambda a: _execute(a, False),
                     distributed=True),
    "prune": Command("prune a model with a method (from scratch or --from a trained model)", _prune_args,
                     lambda a: _execute(a, True), distributed=True),
    "inspect": Command("show a run's report and per-layer table", _inspect_args, _inspect_run),
    "reproduce": REPRODUCE,
    "shrink": SHRINK,
    "estimate": ESTIMATE,
    "search-tickets": SEARCH_TICKETS,
    "bench": Command("run a benchmark suite (methods x targets x seeds), resumably", bench_arguments, run_bench),
    "report": Command("tables, plots and an HTML page from a bench directory", report_arguments, run_report),
}
