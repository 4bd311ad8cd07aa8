"""Speed-friendly widths: shrunk models at 25 % of the dense MACs, rounded vs exact channel counts.

For each model (random weights: only the shapes matter for speed) four versions run side by side:

* ``dense``: the model as built;
* ``exact``: secateurs' MACs-target allocation (``--budget 'macs<=25%'``, uniform allocator, magnitude
  inside each coupled channel group) with exact kept counts (``round_to 1``), then ``shrink``;
* ``round8``: the same allocation with kept counts rounded to multiples of 8 (the default,
  ``round_to 8``): the solver counts the rounding, so the target still holds;
* ``tp``: Torch-Pruning's ``MetaPruner`` (L2 magnitude, one ratio for every layer, its defaults, no
  rounding) at the ratio whose MACs are closest to 25 % from below (bisection).

Every version is timed with ``torch.utils.benchmark.Timer`` in interleaved rounds (dense, exact,
round8, tp, dense, ...) in one process, keeping each one's fastest forward (robust to neighbours on
a shared machine). The table gives the MACs ratio, the speedup over dense and their product
``speedup x MACs ratio``: 1.0 means the model got as much faster as it got cheaper.

    OMP_NUM_THREADS=1 python benchmarks/speed/widths.py --threads 1 --out widths.json
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
from pathlib import Path

import torch
from torch import nn

from secateurs.allocation import AllocationProblem
from secateurs.allocation.uniform import UniformAllocator
from secateurs.budget import parse_budgets
from secateurs.core.granularity import Filter
from secateurs.core.targets import select_targets
from secateurs.metrics import count_macs
from secateurs.models import build_model
from secateurs.structured import coupled_channel_groups, shrink

MODELS = ("resnet20", "vgg16", "resnet18")
FRACTION = 0.25


def secateurs_shrunk(model: nn.Module, x: torch.Tensor, round_to: int) -> tuple[nn.Module, list[int]]:
    """The shrunk model of a ``macs<=25%`` allocation at ``round_to``, and its kept counts per group."""
    model = copy.deepcopy(model)
    groups = coupled_channel_groups(model, x)
    targets = select_targets(model, include_first=True)
    problem = AllocationProblem(model, targets, Filter(), x, groups=groups,
                                budgets=parse_budgets([f"macs<={FRACTION:.0%}"]), round_to=round_to)
    problem.check_meetable()
    allocation = UniformAllocator().allocate(problem)
    masks = problem.masks(allocation.sparsities)
    with torch.no_grad():
        for name, entry in masks.items():
            model.get_parameter(name).mul_(entry.full())
    counts = sorted(problem.keep_counts(allocation.sparsities).values())
    return shrink(model, masks, x, groups=groups, round_to=round_to).model.eval(), counts


def torch_pruning_shrunk(model: nn.Module, x: torch.Tensor, dense_macs: int) -> nn.Module:
    """Torch-Pruning's MetaPruner (its defaults) at the uniform ratio leaving just under 25 % of the MACs."""
    import torch_pruning as tp

    def pruned(ratio: float) -> nn.Module:
        copy_ = copy.deepcopy(model)
        classifier = [m for m in copy_.modules() if isinstance(m, nn.Linear)][-1]
        pruner = tp.pruner.MetaPruner(copy_, x, importance=tp.importance.MagnitudeImportance(p=2),
                                      pruning_ratio=ratio, ignored_layers=[classifier])
        pruner.step()
        return copy_.eval()

    low, high = 0.0, 0.95
    for _ in range(12):
        middle = 0.5 * (low + high)
        if count_macs(pruned(middle), x).dense > FRACTION * dense_macs:
            low = middle
        else:
            high = middle
    return pruned(high)


def fastest_ms(model: nn.Module, x: torch.Tensor, threads: int, min_run_time: float) -> float:
    """Fastest per-forward time (ms) of one ``blocked_autorange`` run."""
    from torch.utils.benchmark import Timer

    with torch.no_grad():
        model(x)  # warm-up
        timer = Timer("model(x)", globals={"model": model, "x": x}, num_threads=threads)
        return min(timer.blocked_autorange(min_run_time=min_run_time).times) * 1e3


def bench(name: str, threads: int, rounds: int, min_run_time: float, batches: tuple[int, ...]) -> list[dict]:
    torch.manual_seed(0)
    dense = build_model(name, in_channels=3, num_classes=10, image_size=32).eval()
    one = torch.randn(1, 3, 32, 32)
    dense_macs = count_macs(dense, one).dense
    exact, exact_counts = secateurs_shrunk(dense, one, 1)
    round8, round8_counts = secateurs_shrunk(dense, one, 8)
    versions = {"dense": dense, "exact": exact, "round8": round8, "tp": torch_pruning_shrunk(dense, one, dense_macs)}
    macs = {key: count_macs(model, one).dense for key, model in versions.items()}
    sys.stderr.write(f"{name}: kept counts exact {exact_counts}\n  round8 {round8_counts}\n")
    rows = []
    for batch in batches:
        x = torch.randn(batch, 3, 32, 32)
        best = dict.fromkeys(versions, float("inf"))
        for _ in range(rounds):  # interleaved: every version sees the same background load
            for key, model in versions.items():
                best[key] = min(best[key], fastest_ms(model, x, threads, min_run_time))
        for key in versions:
            if key == "dense":
                continue
            ratio, speedup = macs[key] / macs["dense"], best["dense"] / best[key]
            rows.append({"model": name, "batch": batch, "threads": threads, "version": key, "macs_ratio": ratio,
                         "ms_dense": best["dense"], "ms": best[key], "speedup": speedup,
                         "speedup_times_macs_ratio": speedup * ratio})
            sys.stderr.write(json.dumps(rows[-1]) + "\n")
    return rows


def table(rows: list[dict]) -> str:
    """One line per model and batch: MACs ratio, speedup and their product for each version."""
    lines = ["| model | batch | ms dense | exact: MACs / speedup / product | round 8: MACs / speedup / product "
             "| Torch-Pruning: MACs / speedup / product |", "|---|---|---|---|---|---|"]
    keys = sorted({(r["model"], r["batch"]) for r in rows}, key=lambda k: (MODELS.index(k[0]), k[1]))
    for model, batch in keys:
        cells = {r["version"]: r for r in rows if r["model"] == model and r["batch"] == batch}
        parts = [f"{c['macs_ratio']:.3f} / {c['speedup']:.2f}x / **{c['speedup_times_macs_ratio']:.2f}**"
                 for c in (cells["exact"], cells["round8"], cells["tp"])]
        lines.append(f"| {model} | {batch} | {cells['exact']['ms_dense']:.2f} | " + " | ".join(parts) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("widths.json"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    parser.add_argument("--min-run-time", type=float, default=0.3, help="seconds per timing block")
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--batches", nargs="*", type=int, default=[1, 64])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [r for name in args.models for r in bench(name, args.threads, args.rounds, args.min_run_time,
                                                       tuple(args.batches))]
    meta = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
            "threads": args.threads, "rounds": args.rounds, "min_run_time": args.min_run_time}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    sys.stdout.write(table(rows) + "\n")


if __name__ == "__main__":
    main()
