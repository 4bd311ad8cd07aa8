"""Grids over cores and machines: ``--jobs N`` gives the results of ``--jobs 1``, shards plus ``report``
give the unsharded grid, no cell runs twice (not even the shared pretraining, when shards race for it),
a killed shard resumes without redoing finished cells, and a job that dies fails only its own cell."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

import secateurs.bench.runner as runner_module
from secateurs.bench import parse_suite, read_results, run_suite
from secateurs.bench.cell_task import CellTask, Outcome, run_cell_task
from secateurs.bench.locks import lock_path, locked_append
from secateurs.bench.results import ResultsIndex, latest_by_cell, results_files
from secateurs.bench.shard import Shard, cells_for
from secateurs.bench.workers import JobPool, default_threads
from secateurs.cli.main import main
from secateurs.errors import UsageError

SRC = Path(__file__).parents[2] / "src"
TINY = {"data": "synthetic", "limit_train": 64, "limit_test": 32, "device": "cpu",
        "train": {"epochs": 2, "batch_size": 32, "lr": 0.05}}
#: A pretraining shared by every cell, four cells that run and one (lottery, 5 rounds in 2 epochs) that fails.
RAW = {"name": "grid", "base": TINY, "pretrain": {"train": {"epochs": 1}},
       "grid": {"model": "mlp", "method": ["dense", "magnitude", "random", "gmp", "lottery"], "sparsity": [0.5],
                "seed": [0]},
       "method_options": {"lottery": {"rounds": 5}}}
FAILING = "runs/mlp/synthetic/lottery/unstructured-s0.5/seed0"
PRETRAIN = "pretrain/mlp/synthetic/seed0"


def _measured(value):
    """A results value without what depends on the machine's load (times) or on when it was written."""
    if isinstance(value, dict):
        return {k: _measured(v) for k, v in value.items()
                if not any(word in k for word in ("seconds", "latency", "finished_at"))}
    if isinstance(value, list):
        return [_measured(v) for v in value]
    return value


def _cells(out):
    return {cell: _measured(line) for cell, line in latest_by_cell(read_results(out)).items()}


def _ok_counts(out):
    return Counter(r["cell"] for r in read_results(out) if r["status"] == "ok")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The grid run the plain way: one process, one cell after the other."""
    out = tmp_path_factory.mktemp("reference")
    summary = run_suite(parse_suite(RAW), out)
    assert [cell for cell, _ in summary.failed] == [FAILING]
    return out


def die_on_lottery(task: CellTask, index: ResultsIndex) -> Outcome:
    """Job work for the test below: the lottery cell's process dies, as if killed for memory."""
    if task.cell.method == "lottery":
        os.kill(os.getpid(), signal.SIGKILL)
    return run_cell_task(task, index)


def test_jobs_2_gives_the_results_of_jobs_1_and_a_dead_job_fails_only_its_cell(reference, tmp_path, monkeypatch):
    monkeypatch.setattr(runner_module, "JobPool", lambda jobs, threads: JobPool(jobs, threads, work=die_on_lottery))
    summary = run_suite(parse_suite(RAW), tmp_path, jobs=2)
    assert sorted(summary.ran) == sorted(set(_cells(reference)) - {FAILING})  # the other jobs went on
    [(failed, reason)] = summary.failed  # the failure is reported, and recorded
    assert failed == FAILING and "job process died (signal SIGKILL" in reason
    assert latest_by_cell(read_results(tmp_path))[FAILING]["error"] == reason
    # seeded cells: the same numbers, bit for bit, whichever job ran them (one replaced the dead one)
    assert {k: v for k, v in _cells(tmp_path).items() if k != FAILING} == \
        {k: v for k, v in _cells(reference).items() if k != FAILING}
    assert set(_ok_counts(tmp_path).values()) == {1}
    # the runs' records say how many threads each job used
    threads = json.loads((tmp_path / "runs/mlp/synthetic/dense/seed0/run.json").read_text())["environment"]["threads"]
    assert threads == default_threads(2)


def test_two_shards_and_report_equal_the_unsharded_grid(reference, tmp_path, capsys):
    suite = parse_suite(RAW)
    first = run_suite(suite, tmp_path, shard=Shard(1, 2))
    second = run_suite(suite, tmp_path, shard=Shard(2, 2))
    # the shared pretraining ran in the first shard; the second found it done and did not run it again
    assert PRETRAIN in first.ran and PRETRAIN in second.skipped
    assert set(first.ran).isdisjoint(second.ran)
    assert [p.name for p in results_files(tmp_path)] == ["results.shard-1-of-2.jsonl", "results.shard-2-of-2.jsonl"]
    assert _cells(tmp_path) == _cells(reference)
    assert set(_ok_counts(tmp_path).values()) == {1}

    capsys.readouterr()
    assert main(["report", str(tmp_path), "--no-plots"]) == 0
    assert "merged 2 results files" in capsys.readouterr().out
    assert main(["report", str(reference), "--no-plots"]) == 0

    def table(out):
        with (out / "report" / "results.csv").open() as f:
            return [{k: v for k, v in row.items() if "seconds" not in k} for row in csv.DictReader(f)]

    assert table(tmp_path) == table(reference) and len(table(tmp_path)) == 5  # pretrain + four methods
    # a shard run again skips what it finished and retries only its failure
    again = run_suite(suite, tmp_path, shard=Shard(1, 2))
    assert not again.ran and set(again.skipped) == set(first.ran)


def test_shards_partition_the_grid_and_bring_the_pretraining_they_need():
    suite = parse_suite({**RAW, "grid": {**RAW["grid"], "seed": [0, 1]}})
    shards = [cells_for(suite.cells, Shard(i, 3)) for i in (1, 2, 3)]
    runs = [[c.id for c in cells if c.role == "run"] for cells in shards]
    assert sorted(sum(runs, [])) == sorted(c.id for c in suite.cells if c.role == "run")  # each exactly once
    assert [len(r) for r in runs] == [4, 3, 3]
    for cells in shards:
        needed = {c.pretrain for c in cells if c.role == "run"}
        assert [c.id for c in cells if c.role == "pretrain"] == sorted(needed)  # and first
        assert all(c.role == "pretrain" for c in cells[:len(needed)])
    assert cells_for(suite.cells, None) == suite.cells
    with pytest.raises(UsageError, match="1 <= I <= N"):
        Shard(3, 2)


def _bench(suite_file, out, *extra):
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "secateurs", "bench", str(suite_file), "--out", str(out), *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def test_shards_started_together_run_the_shared_pretraining_once(tmp_path):
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(json.dumps({**RAW, "grid": {**RAW["grid"], "method": ["dense", "magnitude"]}}))
    out = tmp_path / "bench"
    shards = [_bench(suite_file, out, "--shard", f"{i}/2") for i in (1, 2)]
    printed = [p.communicate(timeout=300) for p in shards]
    assert [p.returncode for p in shards] == [0, 0], printed
    counts = _ok_counts(out)
    assert set(counts) == {PRETRAIN, "runs/mlp/synthetic/dense/seed0",
                           "runs/mlp/synthetic/magnitude/unstructured-s0.5/seed0"}
    assert set(counts.values()) == {1}  # the pretraining too: one shard ran it, the other waited for it
    stdout = "".join(o for o, _ in printed)
    assert stdout.count("1 ran, 1 already done") == 1 and stdout.count("2 ran, 0 already done") == 1


def test_killed_shard_resumes_and_skips_its_finished_cells(tmp_path):
    raw = {**RAW, "grid": {**RAW["grid"], "method": ["dense", "magnitude", "random", "gmp"], "sparsity": [0.5, 0.75]}}
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(json.dumps(raw))
    out = tmp_path / "bench"
    results = out / Shard(2, 2).results_name
    shard = _bench(suite_file, out, "--shard", "2/2")
    deadline = time.monotonic() + 240
    while sum(r.get("status") == "ok" for r in _lines(results)) < 2 and shard.poll() is None:
        assert time.monotonic() < deadline, "the shard never finished two cells"
        time.sleep(0.05)
    os.killpg(shard.pid, signal.SIGKILL)  # the whole job, as a scheduler ends it
    shard.communicate()
    finished = {r["cell"] for r in _lines(results) if r.get("status") == "ok"}
    stamps = {cell: (out / cell / "report.json").stat().st_mtime_ns for cell in finished}

    resumed = run_suite(parse_suite(raw), out, shard=Shard(2, 2))
    assert not resumed.failed and not resumed.elsewhere
    assert set(resumed.skipped) == finished and resumed.ran  # it had not finished when it was killed
    assert {cell: (out / cell / "report.json").stat().st_mtime_ns for cell in finished} == stamps
    assert set(_ok_counts(out).values()) == {1}
    assert set(_ok_counts(out)) == {c.id for c in cells_for(parse_suite(raw).cells, Shard(2, 2))}


def _hold(lock, *then):
    """A bare process (no torch: it starts in milliseconds) that holds ``lock`` as a bench process would
    hold a cell's claim, then runs the lines ``then`` and exits (dropping the claim)."""
    code = ["import fcntl, os, sys, time",
            f"fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT); fcntl.lockf(fd, fcntl.LOCK_EX)",
            "print('locked', flush=True)", *then]
    lock.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", "\n".join(code)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_cell_waits_for_a_pretraining_another_process_holds_and_takes_over_when_it_dies(tmp_path, monkeypatch):
    """Another process (here a bare lock holder, as if a shard died mid-pretraining) has claimed the
    pretraining: the cells wait, then this process claims it, runs it once, and runs them."""
    monkeypatch.setattr(runner_module, "PREREQUISITE_POLL_SECONDS", 0.05)
    released = tmp_path / "released"
    holder = _hold(lock_path(tmp_path, PRETRAIN), "time.sleep(1.0)",
                   f"open({str(released)!r}, 'w').write(repr(time.time()))")
    raw = {**RAW, "grid": {**RAW["grid"], "method": ["dense"]}}
    summary = run_suite(parse_suite(raw), tmp_path)
    holder.wait()
    assert sorted(summary.ran) == [PRETRAIN, "runs/mlp/synthetic/dense/seed0"] and not summary.elsewhere
    pretrain_line = latest_by_cell(read_results(tmp_path))[PRETRAIN]
    assert pretrain_line["finished_at"] >= float(released.read_text())  # it ran only after the claim was free


def test_a_cell_another_process_is_running_is_left_to_it(tmp_path, capsys):
    """Two invocations on one directory (a shard started twice): a claimed cell is not run a second time."""
    suite = tmp_path / "suite.yaml"
    suite.write_text(json.dumps({"base": TINY, "grid": {"model": "mlp", "method": ["dense", "random"],
                                                        "sparsity": 0.5}}))
    out, dense = tmp_path / "b", "runs/mlp/synthetic/dense/seed0"
    holder = _hold(lock_path(out, dense), "sys.stdin.read()")  # holds until we close its stdin
    try:
        code = main(["bench", str(suite), "--out", str(out)])
    finally:
        holder.stdin.close()
        holder.wait()
    printed = capsys.readouterr()
    assert code == 0 and "1 ran, 0 already done, 0 failed, 1 running in another process" in printed.out
    assert f"running in another process: {dense}" in printed.out
    assert set(_ok_counts(out)) == {"runs/mlp/synthetic/random/unstructured-s0.5/seed0"}
    assert not (out / dense).exists()
    assert main(["report", str(out), "--no-plots"]) == 0  # a partial grid reports, and says what is missing
    assert f"without a result yet: 1 (first: {dense})" in capsys.readouterr().err


def _lines(path):
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def test_results_lines_stay_whole_after_a_torn_write_and_are_read_incrementally(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"cell": "a", "status": "ok", "finished_at": 1}\n{"cell": "b", "sta')  # killed mid-line
    index = ResultsIndex(tmp_path).refresh()
    assert index.latest("a")["status"] == "ok" and index.latest("b") is None
    locked_append(path, json.dumps({"cell": "b", "status": "ok", "finished_at": 2}))
    locked_append(tmp_path / Shard(1, 2).results_name, json.dumps({"cell": "a", "status": "error", "finished_at": 3}))
    assert index.refresh().latest("b")["status"] == "ok"  # the torn fragment became its own (skipped) line
    assert index.latest("a")["status"] == "error"  # the latest line wins, whichever file holds it
    assert [r["cell"] for r in read_results(tmp_path)] == ["a", "b", "a"]


@pytest.mark.parametrize(("flags", "needle"), [
    (["--shard", "3/2"], "--shard: 3/2: I/N needs 1 <= I <= N"), (["--shard", "0/2"], "0/2: I/N needs"),
    (["--shard", "1/0"], "1/0: I/N needs"), (["--shard", "half"], "expected I/N, e.g. 2/8"),
    (["--jobs", "0"], "--jobs: expected a positive integer, got 0"), (["--jobs", "-1"], "got -1"),
    (["--threads-per-job", "0"], "--threads-per-job: expected a positive integer")])
def test_bad_jobs_or_shard_is_one_line_and_exit_2(tmp_path, capsys, flags, needle):
    suite = tmp_path / "suite.yaml"
    suite.write_text(json.dumps(RAW))
    code = main(["bench", str(suite), "--out", str(tmp_path / "b"), *flags])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "b").exists()


def test_dry_run_lists_one_shard(tmp_path, capsys):
    suite = tmp_path / "suite.yaml"
    suite.write_text(json.dumps(RAW))
    assert main(["bench", str(suite), "--out", str(tmp_path / "b"), "--shard", "2/2", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(PRETRAIN) and lines[-1] == "3 cells (shard 2/2 of a grid of 6)"
