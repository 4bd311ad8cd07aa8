"""Exception types of secateurs.

Every error a user can cause by bad input is a :class:`UsageError`; the command line turns it into one
line on stderr and exit code 2. Everything else is a bug or an environment problem.
"""

from __future__ import annotations


class SecateursError(Exception):
    """Base class of every error raised on purpose by secateurs."""


class UsageError(SecateursError, ValueError):
    """Bad input from the user: an unknown name, a value out of range, a mismatched checkpoint."""


class DataNotFoundError(UsageError):
    """A dataset's files are missing; the message says how to get them."""
