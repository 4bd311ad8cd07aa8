"""What every subcommand module exposes: a :class:`Command`, and how commands print."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Command", "positive_int", "write_out"]


@dataclass(frozen=True)
class Command:
    """One subcommand: its help line, how it adds its arguments, and how it runs (returns the exit code).

    ``distributed``: the command runs as one job of several processes under ``torchrun``
    (data-parallel training); other commands refuse to be started several times.
    """

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    distributed: bool = False


def write_out(text: str) -> None:
    """Print a command's result on stdout, ending with one newline."""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (a usage error, one line, otherwise).

    It raises ``ArgumentTypeError``, whose message argparse keeps (after the flag's name); any other
    ValueError, UsageError included, argparse replaces with "invalid positive_int value".
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value
