"""Training-step time with Gibbs masks against the dense step (and a fixed-mask step) on one model.

One step = forward, cross-entropy, backward, SGD (momentum 0.9, weight decay 5e-4) step, and the
method's ``on_step`` hook. Every configuration is timed with ``torch.utils.benchmark.Timer`` in
interleaved rounds (dense, fixed mask, gibbs modes, dense, ...), so a shared machine's load drifts
evenly over all of them; the table reports the median over rounds and the ratio to the dense median.

On a machine shared with other jobs, ``--timer process --threads 1`` measures this process's CPU
time, which other processes' load disturbs far less than wall time.

Gibbs modes are timed at the first epoch's inverse temperature (``beta_start``) and at the final one
(``beta_end``): the filter sampler stops sweeping once every filter's chain is decided, so its cost
depends on beta.

Example::

    PYTHONPATH=src .venv/bin/python benchmarks/gibbs/step_time.py --model resnet20 --batch 64 \\
        --rounds 7 --out docs/results/gibbs_step_time.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.benchmark import Timer

from secateurs.methods import Horizon, build_method
from secateurs.models import build_model

EPOCHS = 10  # horizon used to place the two beta stages (epoch 0 and epoch 9)


def make_step(model_name: str, batch: int, method_name: str | None, options: dict, epoch: int,
              channels: int, size: int, classes: int) -> Callable[[], None]:
    """Build a model (and method) and return a closure running one training step."""
    torch.manual_seed(0)
    model = build_model(model_name, in_channels=channels, num_classes=classes, image_size=size)
    method = None
    if method_name is not None:
        method = build_method(method_name, **options)
        method.attach(model, horizon=Horizon(epochs=EPOCHS, steps_per_epoch=100))
        method.on_phase_start(0)
        method.on_epoch_start(epoch)
        if hasattr(method, "prune_to"):  # fixed-mask reference: prune once, then time the masked step
            method.prune_to(float(options["sparsity"]))
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(batch, channels, size, size, generator=g)
    y = torch.randint(0, classes, (batch,), generator=g)
    counter = [0]

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        counter[0] += 1
        if method is not None:
            method.on_step(counter[0])

    return step


def configurations(sparsity: float) -> dict[str, tuple[str | None, dict, int]]:
    """Label -> (method, options, epoch)."""
    configs: dict[str, tuple[str | None, dict, int]] = {
        "dense": (None, {}, 0),
        "fixed mask (magnitude)": ("magnitude", {"sparsity": sparsity}, 0),
    }
    for gran in ("unstructured", "kernel", "filter"):
        for label, epoch in (("beta_start", 0), ("beta_end", EPOCHS - 1)):
            configs[f"gibbs {gran} @ {label}"] = ("gibbs", {"sparsity": sparsity, "granularity": gran}, epoch)
    configs["gibbs filter @ beta_start, sweeps=10"] = (
        "gibbs", {"sparsity": sparsity, "granularity": "filter", "sweeps": 10}, 0)
    return configs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (median taken over them)")
    parser.add_argument("--number", type=int, default=1, help="steps per timing")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--timer", choices=("wall", "process"), default="wall",
                        help="wall clock, or this process's CPU time (robust to other processes' load; "
                             "use with --threads 1)")
    parser.add_argument("--only", nargs="*", help="labels to time (default all)")
    parser.add_argument("--out", type=Path, help="write the measurements as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    configs = configurations(args.sparsity)
    if args.only:
        configs = {k: v for k, v in configs.items() if k in args.only or k == "dense"}
    steps = {label: make_step(args.model, args.batch, m, o, e, args.channels, args.size, args.classes)
             for label, (m, o, e) in configs.items()}
    for step in steps.values():  # warm-up: allocator, lazy init, first-call overheads
        step()
        step()
    times: dict[str, list[float]] = {label: [] for label in steps}
    for _ in range(args.rounds):
        for label, step in steps.items():
            timer = Timer(stmt="step()", globals={"step": step}, num_threads=args.threads, label=label,
                          timer=time.process_time if args.timer == "process" else time.perf_counter)
            times[label].append(timer.timeit(args.number).mean)
    dense = statistics.median(times["dense"])
    rows = []
    for label, values in times.items():
        med = statistics.median(values)
        rows.append({"config": label, "median_s": med, "min_s": min(values), "max_s": max(values),
                     "ratio_to_dense": med / dense, "samples": values})
    print(f"model {args.model}, batch {args.batch}, {args.threads} threads, {args.timer} time, {args.rounds} rounds "
          f"x {args.number} step(s), torch {torch.__version__}, {platform.processor() or platform.machine()}")
    print("| configuration | median step (s) | min-max (s) | ratio to dense |")
    print("|---|---|---|---|")
    for r in rows:
        spread = f"{r['min_s']:.3f}-{r['max_s']:.3f}"
        print(f"| {r['config']} | {r['median_s']:.3f} | {spread} | {r['ratio_to_dense']:.2f} |")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        meta = {"model": args.model, "batch": args.batch, "threads": args.threads, "timer": args.timer,
                "rounds": args.rounds,
                "number": args.number, "sparsity": args.sparsity, "torch": torch.__version__}
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
