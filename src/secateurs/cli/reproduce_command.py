"""``secateurs reproduce RUN --out NEW``: rerun a run from its record (``run.json``) and compare.

Prints ``reproduced ...`` and exits 0 when the rerun matches (exactly on the same environment,
within a stated tolerance otherwise); otherwise prints a table of what differs and which
environment fields differ, and exits 1. A run that cannot be rerun (no record, a record of another
version, data or ``--from`` weights that are gone or changed) gets one line and exit 2.
"""

from __future__ import annotations

import argparse
import sys

from secateurs.cli.command import Command, write_out

__all__ = ["REPRODUCE"]


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a finished run directory with a run record (run.json)")
    p.add_argument("--out", required=True, help="directory for the rerun (must not hold a run)")


def _run(args: argparse.Namespace) -> int:
    from secateurs.experiment.reproduce import reproduce

    argv = ["secateurs", *getattr(args, "argv", [])]
    comparison = reproduce(args.run, args.out, show_progress=sys.stderr.isatty(), argv=argv)
    write_out(comparison.render())
    return 0 if comparison.reproduced else 1


REPRODUCE = Command("rerun a run from its record (run.json) and compare masks, metrics and environment",
                    _arguments, _run)
