"""`make demo`: train LeNet-5 on Fashion-MNIST, prune it to 90 % with GMP, compare in a table.

Uses only the public API. Runs go to runs/demo/ and are resumed (or reused) when run again.
A few minutes on 2 CPU cores.
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

from secateurs.errors import UsageError
from secateurs.experiment import RunConfig, execute
from secateurs.train import TrainConfig

EPOCHS = 3


def main() -> int:
    console = Console()
    train = TrainConfig(epochs=EPOCHS, lr=0.05, batch_size=128)
    dense_cfg = RunConfig(model="lenet5", data="fashion-mnist", train=train, seed=0)
    try:
        console.print(f"[bold]1/2[/] training a dense LeNet-5 on Fashion-MNIST for {EPOCHS} epochs ...")
        dense = execute(dense_cfg, "runs/demo/dense", resume=True, show_progress=console.is_terminal)
        pruned_cfg = RunConfig(
            model="lenet5", data="fashion-mnist", method="gmp", method_options={"sparsity": 0.9},
            train=train, seed=0, from_checkpoint="runs/demo/dense",
        )
        console.print(f"[bold]2/2[/] pruning 90 % of its weights with gradual magnitude pruning, {EPOCHS} epochs ...")
        pruned = execute(pruned_cfg, "runs/demo/gmp-0.9", resume=True, show_progress=console.is_terminal)
    except UsageError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2

    table = Table(title="LeNet-5 on Fashion-MNIST (test set)")
    for col in ("", "accuracy %", "sparsity", "non-zero params", "effective MACs", "latency ms (batch 1)"):
        table.add_column(col, justify="right")
    for name, r in (("dense", dense), ("gmp 90 %", pruned)):
        table.add_row(
            name, f"{r['accuracy']:.2f}", f"{r['achieved_sparsity']:.3f}", f"{r['params_nonzero']:,}",
            f"{r['macs_effective']:,}", f"{r['latency_ms_batch1']:.3f}",
        )
    console.print(table)
    console.print(
        "Latency is that of the masked model (zeros still computed); `secateurs inspect runs/demo/gmp-0.9` "
        "shows the per-layer table."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
