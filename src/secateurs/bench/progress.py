"""One rich progress bar over the cells of a grid (a no-op when disabled)."""

from __future__ import annotations

from typing import Any

__all__ = ["GridProgress"]


class GridProgress:
    """One rich progress bar over the cells (a no-op when disabled)."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        self._total, self._enabled = total, enabled
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> GridProgress:
        if self._enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), console=Console(stderr=True))
            self._task = self._progress.add_task("bench", total=self._total)
            self._progress.start()
        return self

    def show(self, description: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=description)

    def advance(self, cells: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, cells)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
