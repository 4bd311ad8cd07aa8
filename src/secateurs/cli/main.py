"""The ``secateurs`` command line: thin parsing around the public API.

``main(argv) -> int`` never exits the interpreter, so tests call it in-process. Bad input becomes one
line on stderr and exit code 2; a diverged run one line and exit code 3; an interrupted run says how
to resume it (exit code 130).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from secateurs._version import __version__
from secateurs.cli.commands import COMMANDS
from secateurs.errors import EXIT_DIVERGED, DivergedError, UsageError
from secateurs.utils.output_dir import check_output_dir

__all__ = ["entry_point", "main"]


class _Exit(Exception):
    """``--help`` or ``--version`` finished: leave ``main`` with this status instead of exiting."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting, so errors stay one line and
    ``main`` returns (never exits the interpreter) after ``--help``."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            self._print_message(message, sys.stderr)
        raise _Exit(status)


def build_parser() -> argparse.ArgumentParser:
    """The full parser with one sub-parser per command."""
    parser = _Parser(prog="secateurs", description="Prune neural networks in PyTorch.")
    parser.add_argument("--version", action="version", version=f"secateurs {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, command in COMMANDS.items():
        # "resolve": a command may replace -h/--help (prune's also lists a method's options)
        p = sub.add_parser(name, help=command.help, description=command.help, conflict_handler="resolve")
        command.add_arguments(p)
        p.set_defaults(handler=command.run)
    return parser


def _refuse_duplicates(command: str) -> None:
    """Under ``torchrun`` with several processes only data-parallel commands run (train, prune): any
    other would run once per process, side by side, writing the same files."""
    from secateurs.utils.torchrun import launched_processes

    processes = launched_processes()
    if processes > 1 and not COMMANDS[command].distributed:
        able = " and ".join(name for name, c in COMMANDS.items() if c.distributed)
        raise UsageError(f"`secateurs {command}` runs in one process; torchrun started {processes} "
                         f"(only {able} run data-parallel)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    argv = list(argv) if argv is not None else sys.argv[1:]
    try:
        args = parser.parse_args(argv)
        args.argv = argv  # the run record keeps the exact command line
        if getattr(args, "handler", None) is None:
            parser.print_help(sys.stderr)
            return 2
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
        _refuse_duplicates(args.command)
        if getattr(args, "out", None):  # every --out is an output directory: refuse a bad one before any work
            check_output_dir(args.out)
        return int(args.handler(args) or 0)
    except _Exit as done:
        return done.status
    except UsageError as exc:
        print(f"secateurs: error: {exc}", file=sys.stderr)
        return 2
    except DivergedError as exc:
        print(f"secateurs: error: {exc}", file=sys.stderr)
        return EXIT_DIVERGED
    except KeyboardInterrupt:
        print("secateurs: interrupted; the last finished epoch is saved, continue with --resume", file=sys.stderr)
        return 130


def entry_point() -> NoReturn:
    """Console-script entry point."""
    sys.exit(main())
