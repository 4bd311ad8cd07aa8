"""Exception types of secateurs.

Every error a user can cause by bad input is a :class:`UsageError`; the command line turns it into one
line on stderr and exit code 2. A training run that diverged is a :class:`DivergedError`: one line and
exit code 3 (:data:`EXIT_DIVERGED`). Everything else is a bug or an environment problem.
"""

from __future__ import annotations


class SecateursError(Exception):
    """Base class of every error raised on purpose by secateurs."""


class UsageError(SecateursError, ValueError):
    """Bad input from the user: an unknown name, a value out of range, a mismatched checkpoint."""


class DataNotFoundError(UsageError):
    """A dataset's files are missing; the message says how to get them."""


#: Exit code of the command line for a diverged run (2 is bad input, 130 an interrupt).
EXIT_DIVERGED = 3


class DivergedError(SecateursError):
    """Training produced a non-finite loss, weight or mask state; the run stopped without a result.

    The message says where (epoch, step), which checkpoint is the last good one and what to try.
    """


class DamagedFileError(UsageError):
    """A file secateurs reads (weights, masks, a report, a shrink spec, data) is truncated or corrupt."""
