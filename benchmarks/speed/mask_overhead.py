# ruff: noqa: T201 - a benchmark script reports on stdout
"""Training-step time of the mask methods against the dense step, interleaved in one process.

One step is what :func:`secateurs.train.fit` does per batch: set the learning rate, forward,
cross-entropy, the method's penalty, ``zero_grad``, backward, the optimizer step (the run's default
SGD with Nesterov momentum and the method's own parameter groups) and ``method.on_step``. Every
configuration gets its own model and optimizer; the configurations are timed in interleaved rounds
(dense, gmp, cs, ..., dense, gmp, ...) so that a shared machine's load drifts over all of them alike,
and the table gives the median over rounds and the ratio to the dense median.

Methods sit at a chosen point of their schedules: ``--epoch E`` of a ``--horizon``-epoch run
(default epoch 0 of 10: the start of the anneal, where Gibbs' filter sampler costs most). The goals
of issue 16 are ratios of at most 1.15 for cs and dpp and 1.3 for gibbs.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/speed/mask_overhead.py
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/speed/mask_overhead.py --models resnet20:64 --rounds 5

``--timer process`` (the default) measures this process's CPU time, which other processes' load on a
shared machine disturbs far less than wall time (use it with one thread).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.benchmark import Timer

from secateurs.core.targets import select_targets
from secateurs.methods import Horizon, build_method
from secateurs.models import build_model
from secateurs.train.config import TrainConfig
from secateurs.train.optim import build_optimizer

#: label -> (method name or None for dense, options)
CONFIGS: dict[str, tuple[str | None, dict[str, Any]]] = {
    "dense": (None, {}),
    "gmp": ("gmp", {}),
    "cs": ("cs", {}),
    "dpp": ("dpp", {}),
    "dpp kernel": ("dpp", {"granularity": "kernel"}),
    "gibbs": ("gibbs", {}),
    "gibbs kernel": ("gibbs", {"granularity": "kernel"}),
    "gibbs filter": ("gibbs", {"granularity": "filter"}),
}
#: Goal of issue 16 per method (ratio to the dense step).
GOALS = {"cs": 1.15, "dpp": 1.15, "gibbs": 1.3}
STEPS_PER_EPOCH = 100


def make_step(model_name: str, batch: int, method_name: str | None, options: dict[str, Any], *, sparsity: float,
              epoch: int, horizon: int) -> Callable[[], None]:
    """A closure running one training step of a fresh model (and method) at ``epoch`` of ``horizon``."""
    torch.manual_seed(0)
    model = build_model(model_name, in_channels=1, num_classes=10, image_size=(28, 28))
    method = None
    if method_name is not None:
        method = build_method(method_name, sparsity=sparsity, **options)
        method.attach(model, horizon=Horizon(epochs=horizon, steps_per_epoch=STEPS_PER_EPOCH))
    config = TrainConfig(epochs=horizon, batch_size=batch)
    optimizer = build_optimizer(model, config, method)
    if method is not None:
        # The phase holding ``epoch`` (a method with several phases starts each one with its hook).
        start = 0
        for index, phase in enumerate(method.phases()):
            if start <= epoch:
                method.on_phase_start(index)
            start += phase.epochs
        method.on_epoch_start(epoch)
    model.train()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(batch, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    counter = [epoch * STEPS_PER_EPOCH]

    def step() -> None:
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"]
        loss = torch.nn.functional.cross_entropy(model(x), y)
        if method is not None and (extra := method.penalty()) is not None:
            loss = loss + extra
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        counter[0] += 1
        if method is not None:
            method.on_step(counter[0])

    return step


def measure(model_name: str, batch: int, labels: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Median step time of each configuration over interleaved rounds, and its ratio to dense."""
    steps = {label: make_step(model_name, batch, *CONFIGS[label], sparsity=args.sparsity, epoch=args.epoch,
                              horizon=args.horizon) for label in labels}
    for step in steps.values():  # warm-up: allocator, lazy initialisation, first-call overheads
        for _ in range(args.warmup):
            step()
    clock = time.process_time if args.timer == "process" else time.perf_counter
    times: dict[str, list[float]] = {label: [] for label in steps}
    for _ in range(args.rounds):
        for label, step in steps.items():
            timer = Timer(stmt="step()", globals={"step": step}, num_threads=args.threads, timer=clock)
            times[label].append(timer.timeit(args.number).mean)
    dense = statistics.median(times["dense"])
    # A floor for methods that sample fresh masks: one uniform draw per pruned weight per step (what
    # DPP's Gumbel noise and Gibbs' unstructured sampler need at least; the filter sampler draws one per
    # weight and sweep).
    model = build_model(model_name, in_channels=1, num_classes=10, image_size=(28, 28))
    pruned = sum(t.shape.numel() for t in select_targets(model))
    gen = torch.Generator().manual_seed(0)
    draw = Timer(stmt="torch.rand(n, generator=g)", globals={"torch": torch, "n": pruned, "g": gen},
                 num_threads=args.threads, timer=clock)
    times["uniform draw per pruned weight"] = [draw.timeit(args.number * 10).mean for _ in range(args.rounds)]
    rows = []
    for label, values in times.items():
        median = statistics.median(values)
        method = CONFIGS[label][0] if label in CONFIGS else None
        rows.append({"model": model_name, "batch": batch, "config": label, "median_ms": 1000 * median,
                     "min_ms": 1000 * min(values), "max_ms": 1000 * max(values), "ratio": median / dense,
                     "goal": GOALS.get(method or ""), "samples_ms": [1000 * v for v in values]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["lenet5:128", "mlp:128", "resnet20:64"],
                        help="MODEL:BATCH pairs")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS),
                        help="configurations to time (dense is always timed)")
    parser.add_argument("--sparsity", type=float, default=0.95)
    parser.add_argument("--epoch", type=int, default=0, help="the schedules' epoch the step is timed at")
    parser.add_argument("--horizon", type=int, default=10, help="epochs of the run the schedules are laid out for")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (median taken over them)")
    parser.add_argument("--number", type=int, default=5, help="steps per timing")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per configuration")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--timer", choices=("process", "wall"), default="process")
    parser.add_argument("--out", type=Path, help="append the rows as JSON lines here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    labels = ["dense", *[c for c in args.configs if c != "dense"]]
    print(f"{args.threads} thread(s), {args.timer} time, {args.rounds} rounds x {args.number} steps, "
          f"sparsity {args.sparsity}, epoch {args.epoch} of {args.horizon}, torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}")
    print("| model (batch) | configuration | median step (ms) | min-max (ms) | ratio to dense | goal |")
    print("|---|---|---|---|---|---|")
    for spec in args.models:
        name, _, batch = spec.partition(":")
        rows = measure(name, int(batch or 128), labels, args)
        for r in rows:
            goal = "" if r["goal"] is None else f"≤ {r['goal']}" + (" ✓" if r["ratio"] <= r["goal"] else " ✗")
            print(f"| {name} ({r['batch']}) | {r['config']} | {r['median_ms']:.1f} | "
                  f"{r['min_ms']:.1f}-{r['max_ms']:.1f} | {r['ratio']:.2f} | {goal} |", flush=True)
        if args.out is not None:
            with args.out.open("a") as f:
                for r in rows:
                    f.write(json.dumps({**r, "threads": args.threads, "timer": args.timer, "epoch": args.epoch,
                                        "horizon": args.horizon, "torch": torch.__version__}) + "\n")


if __name__ == "__main__":
    main()
