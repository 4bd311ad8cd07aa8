"""Where cells run: in the ``bench`` process itself (``--jobs 1``) or in N job processes (``--jobs N``).

Job processes come from a ``forkserver`` (``spawn`` where there is none): a fresh interpreter that
imports torch and secateurs once and forks each job from there. Unlike a plain ``fork`` of the
``bench`` process this is safe with CUDA and with OpenMP thread pools the parent has already started,
and unlike ``spawn`` the jobs after the first start in a fraction of a second. Jobs live for the whole
grid, taking one cell at a time. Each runs
torch with ``threads`` intra-op threads, so N jobs do not oversubscribe the cores. A job that dies
without answering (killed for memory, a segfault) fails the cell it held, and a new job takes its
place; the other jobs go on.

Why not ``concurrent.futures.ProcessPoolExecutor``: when one of its workers dies, the pool is
"broken" and every pending and running task fails with it, so one cell killed for memory would fail
the grid; here only that cell fails. The pool is otherwise the standard library's machinery
(``multiprocessing`` processes, pipes and ``connection.wait``).

Job processes ignore Ctrl-C: the ``bench`` process decides, and stops them (:meth:`JobPool.close`)
when it is interrupted. A cell stopped that way resumes from its last checkpoint next time.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from multiprocessing import connection
from pathlib import Path
from typing import Any

from secateurs.bench.cell_task import ERROR, CellTask, Outcome, run_cell_task
from secateurs.bench.results import ResultsIndex

__all__ = ["InlineRunner", "JobPool", "default_threads", "usable_cpus"]

#: Environment variables that size the thread pools of torch's CPU backends at start-up.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask: a Slurm allocation or ``taskset``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def default_threads(jobs: int) -> int:
    """Threads per job: the usable CPUs shared out (at least 1), never more than ``OMP_NUM_THREADS``."""
    threads = max(1, usable_cpus() // jobs)
    cap = os.environ.get("OMP_NUM_THREADS", "")
    return min(threads, int(cap)) if cap.isdigit() and int(cap) >= 1 else threads


class InlineRunner:
    """Runs each task at once, in this process (``--jobs 1``): one slot, and no process boundary, so a
    debugger or a test's monkeypatch reaches the training code."""

    def __init__(self, index: ResultsIndex) -> None:
        self._index = index
        self._done: list[tuple[CellTask, Outcome]] = []

    def free(self) -> int:
        """Slots ready for a task."""
        return 0 if self._done else 1

    def running(self) -> list[CellTask]:
        """Tasks started and not yet collected (none: a task finishes inside :meth:`submit`)."""
        return []

    def submit(self, task: CellTask) -> None:
        """Run ``task`` now."""
        self._done.append((task, run_cell_task(task, self._index)))

    def collect(self, timeout: float) -> list[tuple[CellTask, Outcome]]:
        """The finished tasks (``timeout`` is not needed: nothing runs in the background)."""
        done, self._done = self._done, []
        return done

    def close(self, *, kill: bool = False) -> None:
        """Nothing to stop."""


@dataclass
class _Job:
    process: Any
    conn: Any
    task: CellTask | None = None


#: What a job does with a task: run it under its claim, with the job's view of the results.
Work = Callable[[CellTask, ResultsIndex], Outcome]


class JobPool:
    """``jobs`` spawned processes, each running one task at a time with ``threads`` torch threads.

    ``work`` is what a job does with a task (a module-level function: it is imported by name in the
    job process); the default runs the cell.
    """

    def __init__(self, jobs: int, threads: int, work: Work = run_cell_task) -> None:
        import multiprocessing

        if "forkserver" in multiprocessing.get_all_start_methods():
            self._context = multiprocessing.get_context("forkserver")
            self._context.set_forkserver_preload([__name__])  # torch loads once, in the server
        else:  # pragma: no cover - Windows
            self._context = multiprocessing.get_context("spawn")
        self._threads = threads
        self._work = work
        self._jobs = [self._start() for _ in range(jobs)]

    def _start(self) -> _Job:
        ours, theirs = self._context.Pipe()
        process = self._context.Process(target=_job_main, args=(theirs, self._threads, self._work),
                                        name="secateurs-bench-job")
        with _thread_environment(self._threads):  # read by the child's thread pools when torch loads
            process.start()
        theirs.close()
        return _Job(process, ours)

    def free(self) -> int:
        """Idle jobs."""
        return sum(job.task is None for job in self._jobs)

    def running(self) -> list[CellTask]:
        """Tasks the jobs are running now."""
        return [job.task for job in self._jobs if job.task is not None]

    def submit(self, task: CellTask) -> None:
        """Hand ``task`` to an idle job (call only when :meth:`free` is positive)."""
        job = next(job for job in self._jobs if job.task is None)
        job.conn.send(task)
        job.task = task

    def collect(self, timeout: float) -> list[tuple[CellTask, Outcome]]:
        """Wait up to ``timeout`` seconds for jobs to finish; their tasks and outcomes."""
        busy = [job for job in self._jobs if job.task is not None]
        if not busy:
            return []
        connection.wait([job.conn for job in busy] + [job.process.sentinel for job in busy], timeout)
        finished = []
        for job in busy:
            outcome = _answer(job)
            if outcome is None and job.process.is_alive():
                continue
            if outcome is None:  # died without answering: its cell failed, a new job takes the slot
                job.process.join()
                outcome = Outcome(ERROR, f"its job process died ({_death(job.process.exitcode)})", recorded=False)
                job.conn.close()
                replacement = self._start()
                job.process, job.conn = replacement.process, replacement.conn
            assert job.task is not None
            finished.append((job.task, outcome))
            job.task = None
        return finished

    def close(self, *, kill: bool = False) -> None:
        """Stop the jobs: after their current task, or at once with ``kill`` (an interrupted grid)."""
        for job in self._jobs:
            if kill:
                job.process.terminate()
            else:
                with suppress(OSError):  # a job that already died answers nothing
                    job.conn.send(None)
        for job in self._jobs:
            job.process.join(timeout=None if not kill else 10)
            if job.process.is_alive():
                job.process.kill()
                job.process.join()
            job.conn.close()


def _answer(job: _Job) -> Outcome | None:
    try:
        return job.conn.recv() if job.conn.poll() else None
    except (EOFError, OSError):
        return None


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name if -exitcode in signal.valid_signals() else str(-exitcode)
        return f"signal {name}" + (", perhaps killed for memory" if name == "SIGKILL" else "")
    return f"exit code {exitcode}"


@contextmanager
def _thread_environment(threads: int) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    os.environ.update({name: str(threads) for name in THREAD_VARIABLES})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _job_main(conn: Any, threads: int, work: Work) -> None:
    """A job process: run the tasks that arrive until told to stop (``None``) or the pipe closes."""
    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the bench process handles Ctrl-C for the grid
    torch.set_num_threads(threads)
    indexes: dict[Path, ResultsIndex] = {}
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):  # the bench process is gone
            return
        if task is None:
            return
        index = indexes.setdefault(task.out, ResultsIndex(task.out))
        try:
            conn.send(work(task, index))
        except (BrokenPipeError, OSError):
            return
