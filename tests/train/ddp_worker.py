"""The processes of ``test_distributed.py``: ``torchrun --nproc-per-node 2 ddp_worker.py OUT STEP ARGS...``.

1. For each method of :data:`METHODS`, train a tiny network on both processes with a checksum of every
   mask parametrization's output (the masked weight of each forward pass: the step's stochastic
   mask) recorded; gather both processes' checksums and exit non-zero if they differ anywhere; rank
   0 saves the final weights, masks, scores and history as ``OUT/NAME.pt``.
2. Train Gibbs with another seed on each process: both must stop with a DivergedError (rank 0
   writes its message to ``OUT/diverged.txt``).
3. Then run the command line ``ARGS`` and kill both processes (SIGKILL) as they reach optimizer step
   STEP, as a lost job would be.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from secateurs.core.parametrize import MaskParametrization
from secateurs.data import build_data
from secateurs.errors import DivergedError
from secateurs.methods import build_method
from secateurs.train import TrainConfig, fit
from secateurs.train.distributed import World, launched

METHODS = {**{name: {"sparsity": 0.75} for name in ("gmp", "cs", "dpp", "gibbs", "random")},
           "lottery": {"sparsity": 0.75, "rounds": 1}}  # a round, then the rewind and the ticket's round
CONFIG = TrainConfig(epochs=2, batch_size=30, lr=0.05)


def data():
    # 91 samples in batches of 30: the last batch has one sample, so one process gets none of it;
    # the 41 test samples split 21/20.
    return build_data("synthetic", batch_size=CONFIG.batch_size, limit_train=91, limit_test=41, seed=3)


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 13 * 13, 10))


def train(name: str, world: World, record: list[torch.Tensor] | None = None):
    """Train ``model()`` with method ``name``; with ``record``, append a position-weighted checksum of
    each mask parametrization's output to it."""
    net = model()
    method = build_method(name, **METHODS[name])
    attach = method.attach

    def attach_and_watch(*args, **kwargs):
        attach(*args, **kwargs)
        for module in net.modules():
            if isinstance(module, MaskParametrization) and record is not None:
                module.register_forward_hook(lambda m, i, out: record.append(_checksum(out)))

    method.attach = attach_and_watch
    bundle = data()
    result = fit(net, bundle.train, config=CONFIG, method=method, eval_loader=bundle.test, world=world)
    return net, method, result


def _checksum(t: torch.Tensor) -> torch.Tensor:
    flat = t.detach().double().reshape(-1)
    return (flat * torch.arange(1, flat.numel() + 1, dtype=torch.float64)).sum()


def compare_methods(world: World, out: Path) -> None:
    for name in METHODS:
        record: list[torch.Tensor] = []
        net, method, result = train(name, world, record)
        mine = torch.stack(record)
        both = [torch.empty_like(mine) for _ in range(world.size)]
        dist.all_gather(both, mine)
        if not torch.equal(both[0], both[1]):
            steps = (both[0] != both[1]).nonzero().flatten().tolist()
            raise SystemExit(f"{name}: the processes' masks differ at forward passes {steps}")
        if world.is_main:
            masks = {k: e.mask for k, e in method.hard_masks().items()}
            torch.save({"state": net.state_dict(), "masks": masks, "final": result.final,
                        "losses": [r["train_loss"] for r in result.history], "checks": len(record)},
                       out / f"{name}.pt")


def diverging(world: World, out: Path) -> None:
    net = model()
    method = build_method("gibbs", sparsity=0.75, seed=world.rank)  # each process draws its own masks
    bundle = data()
    try:
        fit(net, bundle.train, config=CONFIG, method=method, world=world)
    except DivergedError as exc:
        if world.is_main:
            (out / "diverged.txt").write_text(str(exc))
    else:
        raise SystemExit("the processes drew different masks, and nothing noticed")


def killed_cli(step: int, argv: list[str]) -> None:
    """Run the command line; every process kills itself before optimizer step ``step``."""
    from secateurs.cli.main import main
    from secateurs.train import loop

    step_once = loop._Lane.step

    def step_or_die(self, x, y, done, *args, **kwargs):
        if done == step:
            os.kill(os.getpid(), signal.SIGKILL)
        return step_once(self, x, y, done, *args, **kwargs)

    loop._Lane.step = step_or_die
    sys.exit(main(argv))


if __name__ == "__main__":
    with launched() as world:
        assert world.size == 2, world
        compare_methods(world, Path(sys.argv[1]))
        diverging(world, Path(sys.argv[1]))
        killed_cli(int(sys.argv[2]), sys.argv[3:])
