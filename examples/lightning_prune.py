"""Prune an MLP inside a Lightning Trainer with one callback (needs the `lightning` extra).

    python examples/lightning_prune.py                                   # synthetic data, seconds
    python examples/lightning_prune.py --data fashion-mnist --limit 6000 --method cs
    python examples/lightning_prune.py --devices 2                       # DDP, 2 processes on CPU

The LightningModule is an ordinary one: the callback adds the method's penalty to its loss, gives the
mask state its own optimizer group, steps the method's schedules and saves its state in the
checkpoints Lightning writes (``--out``). Prints the accuracy and sparsity of each pruned layer.
"""

from __future__ import annotations

import argparse
import sys

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from secateurs.errors import UsageError
from secateurs.integrations.lightning import SecateursPruning


class Classifier(pl.LightningModule):
    """A 784-300-100-10 MLP (LeNet-300-100) trained with SGD and a cosine learning-rate schedule."""

    def __init__(self, features: int, classes: int, lr: float = 0.05) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Flatten(), nn.Linear(features, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
                                   nn.Linear(100, classes))
        self.lr = lr

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.model(x), y)

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("accuracy", 100.0 * (self.model(x).argmax(1) == y).float().mean(), sync_dist=True)

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9, weight_decay=5e-4)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def load(name: str, limit: int) -> tuple[TensorDataset, TensorDataset, int]:
    """Train and test sets as float tensors in [0, 1]: Fashion-MNIST, or separable synthetic classes."""
    if name == "fashion-mnist":
        from secateurs.data import load_fashion_mnist

        splits = load_fashion_mnist()
        scale = lambda x: x.float().flatten(1) / 255.0  # noqa: E731
        return (TensorDataset(scale(splits.x_train[:limit]), splits.y_train[:limit]),
                TensorDataset(scale(splits.x_test[:2000]), splits.y_test[:2000]), splits.num_classes)
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(10, 784, generator=g)
    y = torch.randint(0, 10, (limit + 2000,), generator=g)
    x = 0.2 * centres[y] + torch.randn(len(y), 784, generator=g)  # overlapping classes: not trivial
    return TensorDataset(x[:limit], y[:limit]), TensorDataset(x[limit:], y[limit:]), 10


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="gmp", help="any name of `secateurs list methods` (default gmp)")
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data", choices=("synthetic", "fashion-mnist"), default="synthetic")
    parser.add_argument("--limit", type=int, default=2048, help="training samples (default 2048)")
    parser.add_argument("--devices", type=int, default=1, help="CPU processes (2 or more: DDP)")
    parser.add_argument("--out", default="runs/lightning", help="Lightning's checkpoints and logs")
    args = parser.parse_args(argv)

    pl.seed_everything(0, verbose=False)
    try:
        pruning = SecateursPruning(args.method, sparsity=args.sparsity, submodule="model")
        train, test, classes = load(args.data, args.limit)
    except UsageError as exc:
        print(f"lightning_prune: {exc}", file=sys.stderr)
        return 2
    module = Classifier(train.tensors[0].shape[1], classes)
    trainer = pl.Trainer(max_epochs=args.epochs, accelerator="cpu", devices=args.devices,
                         strategy="ddp" if args.devices > 1 else "auto", callbacks=[pruning],
                         default_root_dir=args.out, logger=False, enable_progress_bar=False,
                         enable_model_summary=False)
    try:  # the method checks the trainer's budget when it attaches (e.g. lottery's rounds need epochs)
        trainer.fit(module, DataLoader(train, batch_size=64, shuffle=True))
    except UsageError as exc:
        print(f"lightning_prune: {exc}", file=sys.stderr)
        return 2
    (scores,) = trainer.test(module, DataLoader(test, batch_size=500), verbose=False)
    if trainer.is_global_zero:
        masks = pruning.masks
        print(f"{args.method}: accuracy {scores['accuracy']:.2f} %, sparsity {masks.sparsity():.4f} "
              f"({args.devices} process{'es' if args.devices > 1 else ''})")
        for name in masks:
            print(f"  {name:<16} {tuple(masks[name].weight_shape)!s:<12} sparsity {masks.sparsity(name):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
