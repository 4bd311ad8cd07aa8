"""Latency before and after shrinking: does removing channels make the model faster by its MACs ratio?

For each model, half of the channels of every removable group are pruned (the same channels in all of
a group's producers), which leaves about 25 % of the dense MACs; the masked model (dense compute) and
the shrunk model are then timed with ``torch.utils.benchmark.Timer`` at 1 and 2 threads, batch 1 and
64, in interleaved rounds, keeping the fastest forward of each (robust to a busy machine). The table
reports the MACs ratio, the measured speedup and their quotient (the goal: >= 0.75).

With ``--device cuda`` both models run on the GPU instead, at batch 1 and 256 (threads do not apply;
``Timer`` synchronises the device around each measurement).

    python benchmarks/structured/latency.py --out benchmarks/structured/results/latency.json
    python benchmarks/structured/latency.py --device cuda --out benchmarks/structured/results/latency-gpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

from secateurs.metrics import count_macs
from secateurs.models import build_model
from secateurs.structured import coupled_channel_groups, group_filter_masks, shrink

# (zoo name, input channels, image side): CIFAR-style models at 32x32, a torchvision ResNet at 64x64.
MODELS = (("resnet20", 3, 32), ("vgg16", 3, 32), ("resnet18", 3, 32), ("torchvision:resnet18", 3, 64))


def prune_half(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(masked model, shrunk model) with the second half of every removable group's channels pruned."""
    groups = coupled_channel_groups(model, x)
    keep = {}
    for group in groups:
        if group.removable and group.exact:
            per_chunk = torch.arange(group.channels // group.chunks) < (group.channels // group.chunks + 1) // 2
            keep[group.root] = per_chunk.repeat(group.chunks)
    masks = group_filter_masks(model, groups, keep)
    with torch.no_grad():
        for name, entry in masks.items():
            model.get_parameter(name).mul_(entry.full())
    return model, shrink(model, masks, x, round_to=8).model


def fastest_ms(model: torch.nn.Module, x: torch.Tensor, threads: int, min_run_time: float) -> float:
    """Fastest per-forward time (ms) of one ``blocked_autorange`` run: on a shared machine the
    minimum is the time of a forward that ran uncontended, the median mostly measures the neighbours."""
    from torch.utils.benchmark import Timer

    with torch.no_grad():
        model(x)  # warm-up: allocation and lazy initialisation
        timer = Timer("model(x)", globals={"model": model, "x": x}, num_threads=threads)
        return min(timer.blocked_autorange(min_run_time=min_run_time).times) * 1e3


def bench(name: str, channels: int, side: int, min_run_time: float, rounds: int, device: str = "cpu") -> list[dict]:
    torch.manual_seed(0)
    model = build_model(name, in_channels=channels, num_classes=10, image_size=side).eval()
    one = torch.randn(1, channels, side, side)
    masked, shrunk = prune_half(model, one)
    dense_macs, shrunk_macs = count_macs(masked, one).dense, count_macs(shrunk, one).dense
    masked, shrunk = masked.to(device), shrunk.to(device)
    on_gpu = device != "cpu"
    rows = []
    for threads in ((1,) if on_gpu else (1, 2)):
        for batch in ((1, 256) if on_gpu else (1, 64)):
            x = torch.randn(batch, channels, side, side, device=device)
            before, after = float("inf"), float("inf")
            for _ in range(rounds):  # interleaved, so both see the same background load
                before = min(before, fastest_ms(masked, x, threads, min_run_time))
                after = min(after, fastest_ms(shrunk.eval(), x, threads, min_run_time))
            speedup = before / after
            rows.append({
                "model": name, "input": side, "device": device, "threads": None if on_gpu else threads, "batch": batch,
                "macs_dense": dense_macs, "macs_shrunk": shrunk_macs, "macs_ratio": shrunk_macs / dense_macs,
                "ms_dense": before, "ms_shrunk": after, "speedup": speedup,
                "speedup_over_macs_ratio": speedup * shrunk_macs / dense_macs,
            })
            sys.stderr.write(json.dumps(rows[-1]) + "\n")
    return rows


def table(rows: list[dict]) -> str:
    """Markdown table of the measurements."""
    lines = ["| model | input | threads | batch | MACs shrunk / dense | ms dense | ms shrunk | speedup "
             "| speedup / (dense/shrunk MACs) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['input']} | {r['threads'] or r.get('device')} | {r['batch']} | {r['macs_ratio']:.3f} "
                     f"| {r['ms_dense']:.2f} | {r['ms_shrunk']:.2f} | {r['speedup']:.2f}x "
                     f"| {r['speedup_over_macs_ratio']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/structured/results/latency.json"))
    parser.add_argument("--min-run-time", type=float, default=0.5, help="seconds per timing block")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved dense/shrunk timing rounds")
    parser.add_argument("--models", nargs="*", help="zoo names (default: all of MODELS)")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for the GPU rows")
    args = parser.parse_args()
    chosen = [m for m in MODELS if not args.models or m[0] in args.models]
    rows = [row for spec in chosen
            for row in bench(*spec, min_run_time=args.min_run_time, rounds=args.rounds, device=args.device)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
            "cpus": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None}
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    sys.stdout.write(table(rows) + "\n")


if __name__ == "__main__":
    main()
