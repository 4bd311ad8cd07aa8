"""How many processes ``torchrun`` started for this job, read without importing torch (the command
line asks it before choosing what to import)."""

from __future__ import annotations

import os

__all__ = ["launched_processes"]


def launched_processes() -> int:
    """The ``WORLD_SIZE`` that ``torchrun`` sets for every process it starts (1 without it)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)
