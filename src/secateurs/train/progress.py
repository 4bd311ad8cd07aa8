"""One progress bar style for everything that trains (``fit``, the ticket search)."""

from __future__ import annotations

__all__ = ["ProgressBar", "progress_bar"]


class ProgressBar:
    """A transient rich progress bar on the terminal (gone once closed, so logs stay readable).

    Args:
        total: Units of work in the whole run (steps, epochs).
        done: Units already done (a resumed run starts there).
        description: The label in front of the bar.
    """

    def __init__(self, total: int, done: int, description: str = "training") -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        self._progress = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                                  TimeRemainingColumn(), transient=True)
        self._task = self._progress.add_task(description, total=total, completed=done)
        self._progress.start()

    def advance(self, units: int = 1) -> None:
        """Mark ``units`` more as done."""
        self._progress.advance(self._task, units)

    def close(self) -> None:
        """Remove the bar."""
        self._progress.stop()


def progress_bar(enabled: bool, total: int, done: int = 0, description: str = "training") -> ProgressBar | None:
    """A :class:`ProgressBar` when ``enabled``, else None."""
    return ProgressBar(total, done, description) if enabled else None
