"""Accuracy of Gibbs pruning against gmp and magnitude at equal epoch budgets (a CPU-sized stand-in).

Each configuration is one ``secateurs prune`` run (called in-process); the table collects test
accuracy, achieved sparsity and effective MACs from the runs' ``report.json``. Runs already present in
``--out`` are reused, so an interrupted sweep continues where it stopped.

Example (the CPU stand-in reported in docs/results/gibbs.md)::

    PYTHONPATH=src .venv/bin/python benchmarks/gibbs/accuracy.py --model lenet5 --epochs 3 \\
        --limit-train 6000 --limit-test 2000 --unstructured 0.95 0.98 --structured 0.75 --out /tmp/gibbs-acc
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from secateurs.cli.main import main as cli

#: Methods compared at each granularity.
METHODS = {"unstructured": ("gibbs", "gmp", "magnitude"), "kernel": ("gibbs", "gmp"), "filter": ("gibbs", "gmp")}


def run_one(args: argparse.Namespace, method: str, granularity: str, sparsity: float, seed: int,
            options: tuple[str, ...] = ()) -> dict:
    """Run (or reuse) one prune run (with ``-o`` options) and return its report."""
    tag = "".join(f"-{o}" for o in options)
    out = args.out / f"{args.model}-{granularity}-{method}{tag}-{sparsity}-s{seed}"
    report = out / "report.json"
    if not report.exists():
        argv = ["prune", "--model", args.model, "--data", args.data, "--method", method,
                "--granularity", granularity, "--sparsity", str(sparsity), "--epochs", str(args.epochs),
                "--batch-size", str(args.batch_size), "--seed", str(seed), "--device", "cpu", "--out", str(out)]
        if args.limit_train:
            argv += ["--limit-train", str(args.limit_train)]
        if args.limit_test:
            argv += ["--limit-test", str(args.limit_test)]
        for option in options:
            argv += ["-o", option]
        code = cli(argv)
        if code != 0:
            raise SystemExit(f"run failed ({code}): {' '.join(argv)}")
    return json.loads(report.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--limit-train", type=int, default=0)
    parser.add_argument("--limit-test", type=int, default=0)
    parser.add_argument("--seeds", type=int, nargs="*", default=[0])
    parser.add_argument("--unstructured", type=float, nargs="*", default=[0.9, 0.95, 0.98],
                        help="unstructured sparsities (the issue's 90/95/98 %%)")
    parser.add_argument("--structured", type=float, nargs="*", default=[0.5, 0.75],
                        help="kernel and filter sparsities (the issue's 50/75 %% of units)")
    parser.add_argument("--gibbs-variant", nargs="*", default=[], metavar="KEY=VALUE",
                        help="also run gibbs with these -o options (e.g. beta_start=1000) at every point")
    parser.add_argument("--variant-at", nargs="*", default=["unstructured"],
                        help="granularities at which the gibbs variant runs")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    rows = []
    sweep = [("unstructured", args.unstructured), ("kernel", args.structured), ("filter", args.structured)]
    for granularity, sparsities in sweep:
        for sparsity in sparsities:
            variants = [(m, ()) for m in METHODS[granularity]]
            if args.gibbs_variant and granularity in args.variant_at:
                variants.append(("gibbs", tuple(args.gibbs_variant)))
            for method, options in variants:
                label = method + (f" ({', '.join(options)})" if options else "")
                for seed in args.seeds:
                    r = run_one(args, method, granularity, sparsity, seed, options)
                    rows.append({"granularity": granularity, "sparsity": sparsity, "method": label, "seed": seed,
                                 "accuracy": r["accuracy"], "achieved_sparsity": r["achieved_sparsity"],
                                 "macs_effective": r["macs_effective"], "macs_dense": r["macs_dense"],
                                 "train_seconds": r["train_seconds"]})
    (args.out / "summary.json").write_text(json.dumps(rows, indent=2))
    print("| granularity | target | method | seed | test acc (%) | achieved sparsity | effective MACs (M) | train s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['granularity']} | {r['sparsity']} | {r['method']} | {r['seed']} | {r['accuracy']:.2f} | "
              f"{r['achieved_sparsity']:.4f} | {r['macs_effective'] / 1e6:.2f} / {r['macs_dense'] / 1e6:.2f} | "
              f"{r['train_seconds']:.0f} |")


if __name__ == "__main__":
    main()
