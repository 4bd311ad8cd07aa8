"""Help text generated from the config dataclasses: a method's options, the run's settings.

``secateurs list methods NAME`` and ``secateurs prune --method NAME --help`` print a method's
options with what each accepts, its default and its one-line help, read from the fields of the
method's ``Config`` (their ``metadata["help"]``). They read them from the generated catalogue
(:mod:`secateurs.cli.catalogue`, checked against the code by a test), so help needs no torch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from secateurs.cli.catalogue import catalogue, method_entry

__all__ = ["MethodHelpAction", "method_options_help", "settings_help"]


def _table(rows: list[tuple[str, str, str, str]], indent: str = "  ") -> str:
    header = ("option", "accepts", "default", "meaning")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    lines = [f"{indent}{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}".rstrip()
             for r in [header, *rows]]
    return "\n".join(lines)


def method_options_help(name: str) -> str:
    """The options of the method ``name`` (aliases accepted; UsageError when unknown)."""
    entry = method_entry(name)
    rows = [tuple(row) for row in entry["options"]]
    return (f"{entry['name']}: {entry['description']}\n"
            f"options (prune -o KEY=VALUE, or method_options: in a recipe):\n{_table(rows)}")


def settings_help() -> str:
    """The run settings and training settings, as recipes (``--config``) and flags take them."""
    settings = catalogue()["settings"]
    run, train = ([tuple(row) for row in settings[part]] for part in ("run", "train"))
    return (f"run settings (top level of a recipe; flags --NAME):\n{_table(run)}\n\n"
            f"training settings (train: in a recipe; flags --NAME):\n{_table(train)}")


class MethodHelpAction(argparse.Action):
    """``--help`` that, after ``--method NAME``, also lists that method's options."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: Any = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest=dest, default=default, nargs=0,
                         help=help or "show this help (after --method NAME: also its options) and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        text = parser.format_help()
        method = getattr(namespace, "method", None)
        if method:
            text += "\n" + method_options_help(method) + "\n"
        else:
            text += "\nA method's own options: secateurs prune --method NAME --help (or secateurs list methods NAME)\n"
        sys.stdout.write(text)
        parser.exit()
