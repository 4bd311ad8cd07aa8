"""Seconds per training epoch of ResNet-20 on Fashion-MNIST, with and without the speed settings.

Each setting trains a fresh model (a pruning method attached, masks included in the step) for a few
epochs through ``secateurs.train.fit`` and reports the median time of the epochs after the first,
which carries the compile. An epoch's time is what ``fit`` logs: the training steps plus the
evaluation of the 10,000 test images. Writes one JSON object per setting to ``--out`` and prints a
Markdown table. Meant for a GPU (the issue's target: under 1 s per epoch on an H100); it runs on a CPU too
with ``--limit-train`` for a quick check. A machine without the Debian package needs the four
Fashion-MNIST IDX files copied next to the checkout and ``--data-dir`` pointing at them.

    python benchmarks/speed/epoch_time.py --device cuda --out epoch_time.jsonl
    python benchmarks/speed/epoch_time.py --device cpu --limit-train 2048 --epochs 2 --settings eager compile
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from secateurs.data import build_data
from secateurs.methods import build_method
from secateurs.models import build_model
from secateurs.train import TrainConfig, fit

SETTINGS = {
    "eager": {},
    "channels-last": {"channels_last": True},
    "compile": {"compile": "default"},
    "compile+channels-last": {"compile": "default", "channels_last": True},
    "cuda-graphs": {"compile": "reduce-overhead"},
    "cuda-graphs+channels-last": {"compile": "reduce-overhead", "channels_last": True},
}


def measure(setting: str, args: argparse.Namespace) -> dict:
    data = build_data("fashion-mnist", data_dir=args.data_dir, batch_size=args.batch_size, device=args.device,
                      limit_train=args.limit_train, seed=0)
    torch.manual_seed(0)
    model = build_model("resnet20", in_channels=data.in_channels, num_classes=data.num_classes,
                        image_size=data.image_size).to(args.device)
    method = build_method(args.method, sparsity=0.9) if args.method != "dense" else None
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, **SETTINGS[setting])
    started = time.perf_counter()
    result = fit(model, data.train, config=config, method=method, eval_loader=data.test)
    wall = time.perf_counter() - started
    ends = [r["seconds"] for r in result.history]
    per_epoch = [b - a for a, b in zip(ends, ends[1:])]
    return {
        "setting": setting, "device": torch.cuda.get_device_name() if "cuda" in args.device else args.device,
        "method": args.method, "train_images": args.limit_train or 60000, "steps_per_epoch": len(data.train),
        "batch_size": args.batch_size, "first_epoch_s": round(ends[0], 3),
        "epoch_s_median": round(statistics.median(per_epoch), 3) if per_epoch else None,
        "wall_s": round(wall, 1), "final_accuracy": result.final.get("accuracy"), "torch": torch.__version__,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--data-dir")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--limit-train", type=int)
    p.add_argument("--method", default="gmp", help="a pruning method, or dense")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--out", type=Path, default=Path("epoch_time.jsonl"))
    args = p.parse_args()
    rows = []
    for setting in args.settings:
        if "cuda-graphs" in setting and "cuda" not in args.device:
            continue
        row = measure(setting, args)
        rows.append(row)
        with args.out.open("a") as f:
            f.write(json.dumps(row) + "\n")
    print("| setting | first epoch (s) | later epochs, median (s) | final accuracy |")  # noqa: T201
    print("|---|---|---|---|")  # noqa: T201
    for r in rows:
        print(f"| {r['setting']} | {r['first_epoch_s']} | {r['epoch_s_median']} | {r['final_accuracy']} |")  # noqa: T201


if __name__ == "__main__":
    main()
