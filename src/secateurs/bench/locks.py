"""File locks that let processes (and machines sharing a file system) divide a bench directory's work.

A cell is *claimed* by holding an exclusive POSIX record lock (``fcntl.lockf``) on
``DIR/.locks/<cell>.lock`` while it runs. The kernel (or the NFS lock manager) drops the lock when
its process ends, however it ends, so a killed job never leaves a stale claim behind: the next process
that asks gets it and resumes the cell from its checkpoint. POSIX locks work across machines on the
usual shared file systems (NFSv3 with lockd, NFSv4, Lustre mounted with ``flock``, GPFS, BeeGFS).

POSIX locks belong to a process, and closing *any* descriptor of the file releases them; so a process
opens each lock file once, for as long as it holds the lock (the runner never holds two claims on one
cell).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["LOCK_DIR", "CellClaim", "claim_cell", "locked_append"]

#: Directory of the claim files inside a bench directory.
LOCK_DIR = ".locks"

try:  # POSIX; without it (Windows) one process runs a grid alone and nothing needs dividing
    import fcntl
except ImportError:  # pragma: no cover - not on the platforms secateurs is tested on
    fcntl = None  # type: ignore[assignment]


class CellClaim:
    """An exclusive claim on one cell of a bench directory; :meth:`release` (or ``with``) gives it up."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def release(self) -> None:
        """Give the claim up (closing the descriptor drops the lock)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> CellClaim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_path(bench_dir: Path, cell_id: str) -> Path:
    """Where ``cell_id``'s claim file lives (cell ids hold slashes: one flat file name per cell)."""
    return bench_dir / LOCK_DIR / (cell_id.replace("/", "__") + ".lock")


def claim_cell(bench_dir: str | Path, cell_id: str) -> CellClaim | None:
    """Claim ``cell_id`` without waiting; ``None`` when another process holds it."""
    path = lock_path(Path(bench_dir), cell_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    if fcntl is None:  # pragma: no cover
        return CellClaim(fd)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # EAGAIN / EACCES: held by another process
        os.close(fd)
        return None
    return CellClaim(fd)


@contextmanager
def _exclusive(fd: int) -> Iterator[None]:
    if fcntl is not None:
        fcntl.lockf(fd, fcntl.LOCK_EX)  # waits: appends are short
    try:
        yield
    finally:
        if fcntl is not None:
            fcntl.lockf(fd, fcntl.LOCK_UN)


def locked_append(path: str | Path, line: str) -> None:
    """Append one text line to ``path`` under an exclusive lock, flushed and fsynced.

    Several processes (the jobs of one ``bench`` and, on a shared file system, other machines) may
    append to the same file; the lock keeps their lines whole and in one piece each. A line cut short by
    a process killed mid-write is closed with a newline first, so the next line is not glued to it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = line.encode() if line.endswith("\n") else (line + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        with _exclusive(fd):
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data
            while data:  # a regular file takes it all at once, barring a signal or a full disk
                data = data[os.write(fd, data):]
            os.fsync(fd)
    finally:
        os.close(fd)
