"""Is an output directory usable? Asked before any data loads or anything trains.

A run that fails at its first checkpoint after minutes of training, because ``--out`` names a file
or a read-only place, wastes the minutes; the command line asks this first, in one line.
"""

from __future__ import annotations

import os
from pathlib import Path

from secateurs.errors import UsageError

__all__ = ["check_output_dir"]


def check_output_dir(path: str | Path, *, flag: str = "--out") -> Path:
    """Raise UsageError unless ``path`` is a directory, or can be created as one, that we can write.

    Nothing is created here: a refused command leaves nothing behind.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path} is a file, not a directory; choose another {flag}")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{flag} {path} lies under {existing}, which is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "the directory itself" if existing == path else str(existing)
        why = "is on a read-only file system" if _read_only(existing) else "is not writable by this user"
        raise UsageError(f"{flag} {path} cannot be written: {where} {why}")
    return path


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # statvfs is POSIX-only
        return False
