# ruff: noqa: T201 - a benchmark script reports on stdout
"""Whole-run time of ``secateurs prune`` per method against gmp's, interleaved, optionally for several checkouts.

Each run is the command line a user types (start-up, data loading, training, the per-epoch
evaluation and metrics, the artifacts and the report), timed from outside: the CPU seconds of the
process (user + system, what a shared machine's load disturbs least; use one thread) and its wall
seconds; ``train_seconds`` from ``report.json`` (the training loop with its per-epoch evaluation,
wall clock) is shown too. Runs go in interleaved rounds (every method of every checkout once, then again), so a shared
machine's load drifts over all of them alike; the table gives the median over rounds and the ratio to
gmp's median of the same checkout. The issue-16 goal is 1.2.

Sources: ``--src NAME=PATH`` (repeatable) times the ``src`` directory at PATH (e.g. a checkout of
an older commit, made with ``git worktree add`` or ``git archive``) under the label NAME; default:
this checkout.

    OMP_NUM_THREADS=1 python benchmarks/speed/run_time.py --epochs 5 --limit-train 12000 --limit-test 2000
    OMP_NUM_THREADS=1 python benchmarks/speed/run_time.py --src before=/tmp/before/src --src after=src
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def one_run(src: Path, method: str, args: argparse.Namespace, out: Path) -> dict[str, float]:
    """Run ``secateurs prune`` once; wall seconds and the report's train_seconds."""
    command = [sys.executable, "-m", "secateurs", "prune", "--model", args.model, "--data", "fashion-mnist",
               "--method", method, "--sparsity", str(args.sparsity), "--epochs", str(args.epochs),
               "--seed", "0", "--out", str(out)]
    if args.limit_train:
        command += ["--limit-train", str(args.limit_train)]
    if args.limit_test:
        command += ["--limit-test", str(args.limit_test)]
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": str(args.threads)}
    start = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise subprocess.CalledProcessError(child.returncode, command)
    report = json.loads((out / "report.json").read_text())
    return {"cpu_s": usage.ru_utime + usage.ru_stime, "wall_s": wall, "train_s": float(report["train_seconds"]),
            "accuracy": float(report["accuracy"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", action="append", default=[], help="NAME=PATH of a src directory (repeatable)")
    parser.add_argument("--methods", nargs="+", default=["gmp", "cs", "dpp", "gibbs"])
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--sparsity", type=float, default=0.95)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--limit-train", type=int, default=12000)
    parser.add_argument("--limit-test", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="append the rows as JSON lines here")
    args = parser.parse_args()
    sources = dict(s.split("=", 1) for s in args.src) or {"this": str(ROOT / "src")}
    if "gmp" not in args.methods:
        args.methods = ["gmp", *args.methods]
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for label, src in sources.items():
                for method in args.methods:
                    row = one_run(Path(src).resolve(), method, args, Path(tmp) / f"{label}-{method}-{r}")
                    results.setdefault((label, method), []).append(row)
                    print(f"# round {r + 1} {label} {method}: {row['cpu_s']:.1f} s CPU, {row['wall_s']:.1f} s wall",
                          file=sys.stderr, flush=True)
    print(f"{args.model}, fashion-mnist, {args.limit_train or 60000} training / {args.limit_test or 10000} test "
          f"images, {args.epochs} epochs, sparsity {args.sparsity}, {args.threads} thread(s), "
          f"median of {args.rounds} interleaved rounds")
    print("| source | method | CPU (s) | ratio to gmp | wall (s) | ratio to gmp | train_seconds | accuracy |")
    print("|---|---|---|---|---|---|---|---|")
    keys = ("cpu_s", "wall_s", "train_s")
    for label in sources:
        base = {k: statistics.median(r[k] for r in results[(label, "gmp")]) for k in keys}
        for method in args.methods:
            rows = results[(label, method)]
            med = {k: statistics.median(r[k] for r in rows) for k in keys}
            print(f"| {label} | {method} | {med['cpu_s']:.1f} | {med['cpu_s'] / base['cpu_s']:.2f} | "
                  f"{med['wall_s']:.1f} | {med['wall_s'] / base['wall_s']:.2f} | {med['train_s']:.1f} | "
                  f"{rows[-1]['accuracy']:.2f} |")
            if args.out is not None:
                with args.out.open("a") as f:
                    f.write(json.dumps({"source": label, "method": method, "model": args.model, "epochs": args.epochs,
                                        "limit_train": args.limit_train, "limit_test": args.limit_test,
                                        "runs": rows}) + "\n")


if __name__ == "__main__":
    main()
