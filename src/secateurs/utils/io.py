"""Atomic writes: a file is either the old version or the complete new one, never half written.

A run killed mid-save (a preempted job, Ctrl-C) must not lose the last good checkpoint, so every
file secateurs writes goes to a temporary sibling first and is moved into place with ``os.replace``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

__all__ = ["append_jsonl", "atomic_path", "load_weights_only", "save_json", "save_torch"]


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_torch(obj: Any, path: str | Path) -> None:
    """``torch.save`` atomically. Only tensors and plain containers: it must load weights-only."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_weights_only(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True``: never unpickles arbitrary objects."""
    return torch.load(path, map_location=map_location, weights_only=True)


def save_json(obj: Any, path: str | Path) -> None:
    """Write JSON atomically, indented for people."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def append_jsonl(obj: Any, path: str | Path) -> None:
    """Append one JSON object as a line (flushed and fsynced: logs survive a crash).

    Strict JSON: NaN or infinity raise ValueError (Python's ``NaN`` token is not JSON).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(obj, allow_nan=False) + "\n"
    with path.open("a") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())
