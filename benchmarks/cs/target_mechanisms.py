"""How should CS hit an exact sparsity? Compare target mechanisms (and baselines) at one target.

Each variant is one ``secateurs prune`` run through the public API (``RunConfig`` + ``execute``);
the table goes to stdout and ``OUT/results.md``, the raw reports to ``OUT/<variant>/report.json``.
Runs are resumed/reused when the script is run again.

    PYTHONPATH=src python benchmarks/cs/target_mechanisms.py --out runs/cs-bench \\
        --epochs 3 --sparsity 0.9 --limit-train 20000 --variants adapt topk gmp
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from secateurs.experiment import RunConfig, execute
from secateurs.train import TrainConfig

#: variant name -> (method, method options beyond sparsity)
VARIANTS: dict[str, tuple[str, dict]] = {
    "adapt": ("cs", {}),
    "adapt-r30": ("cs", {"adapt_rate": 30.0}),
    "adapt-r300": ("cs", {"adapt_rate": 300.0}),
    "adapt-until0.8": ("cs", {"adapt_until": 0.8}),
    "topk": ("cs", {"target_method": "topk"}),
    "topk-s0-0.1": ("cs", {"target_method": "topk", "s0": -0.1}),
    "free-s0-0.1": ("cs", {"free": True, "s0": -0.1}),
    "adapt-global": ("cs", {"scope": "global"}),
    "topk-global": ("cs", {"target_method": "topk", "scope": "global"}),
    "gmp": ("gmp", {}),
    "magnitude": ("magnitude", {}),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--model", default="lenet5")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--limit-train", type=int, default=None)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--variants", nargs="+", default=["adapt", "topk", "gmp"], choices=sorted(VARIANTS))
    args = p.parse_args(argv)
    out = Path(args.out)
    rows = []
    for seed in args.seeds:  # seed-major: a partial run still compares every variant
        for variant in args.variants:
            method, options = VARIANTS[variant]
            opts = dict(options)
            if not opts.get("free"):
                opts["sparsity"] = args.sparsity
            cfg = RunConfig(model=args.model, data=args.data, method=method, method_options=opts, seed=seed,
                            device=args.device, limit_train=args.limit_train,
                            train=TrainConfig(epochs=args.epochs, lr=args.lr))
            t0 = time.perf_counter()
            report = execute(cfg, out / f"{variant}-s{seed}", resume=True)
            cs = report.get("cs", {})
            rows.append({"variant": variant, "seed": seed, "accuracy": report["accuracy"],
                         "sparsity": report["achieved_sparsity"], "natural": cs.get("natural_sparsity"),
                         "changed": cs.get("selection_changed_fraction"), "seconds": report["train_seconds"]})
            print(json.dumps(rows[-1]), f"({time.perf_counter() - t0:.0f} s)", flush=True)  # noqa: T201
    lines = [f"{args.model} on {args.data}, {args.epochs} epochs, target {args.sparsity}, "
             f"limit_train {args.limit_train}, torch {torch.__version__}", "",
             "| variant | seed | accuracy % | sparsity | natural sparsity | units changed by top-k | train s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        nat = "n/a" if r["natural"] is None else f"{r['natural']:.4f}"
        chg = "n/a" if r["changed"] is None else f"{r['changed']:.4f}"
        lines.append(f"| {r['variant']} | {r['seed']} | {r['accuracy']:.2f} | {r['sparsity']:.4f} | {nat} | {chg} "
                     f"| {r['seconds']:.0f} |")
    text = "\n".join(lines) + "\n"
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
