"""A tiny manual training loop that drives a method through its hooks, as a user's own loop would.

Plain SGD without momentum keeps the optimizer stateless, so a run interrupted at an epoch boundary
and resumed from ``model.state_dict()`` + ``method.state_dict()`` must reproduce an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from secateurs.methods import Horizon, PruningMethod


def make_optimizer(model: nn.Module, method: PruningMethod, lr: float) -> torch.optim.Optimizer:
    mask_ids = {id(p) for p in method.mask_parameters()}
    weights = [p for p in model.parameters() if id(p) not in mask_ids]
    return torch.optim.SGD([{"params": weights}, *method.mask_param_groups()], lr=lr)


def run(
    method: PruningMethod,
    model: nn.Module,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    epochs: int,
    *,
    pretrained: bool = False,
    lr: float = 0.05,
    attach: bool = True,
    start_epoch: int = 0,
    stop_epoch: int | None = None,
    on_step: Callable[[int], None] | None = None,
    on_phase_start: Callable[[int, int], None] | None = None,
    targets: list | None = None,
    channel_groups: list | None = None,
) -> int:
    """Train ``model`` with ``method`` from ``start_epoch`` up to (excluding) ``stop_epoch``.

    Returns the number of optimizer steps done so far (over the whole run). ``on_step(step)`` is called
    after each ``method.on_step``; ``on_phase_start(phase_index, step)`` after each
    ``method.on_phase_start``.
    """
    horizon = Horizon(epochs=epochs, steps_per_epoch=len(batches), pretrained=pretrained)
    if attach:
        method.attach(model, targets, horizon=horizon, channel_groups=channel_groups)
    stop_epoch = epochs if stop_epoch is None else stop_epoch
    phases = method.phases()
    assert sum(p.epochs for p in phases) == epochs, "phases must fill the epoch budget"
    step = start_epoch * len(batches)
    epoch = 0
    optimizer = None
    for index, phase in enumerate(phases):
        first = epoch
        for epoch in range(first, first + phase.epochs):
            if not start_epoch <= epoch < stop_epoch:
                continue
            if epoch == first:
                optimizer = make_optimizer(model, method, lr)
                method.on_phase_start(index)
                if on_phase_start is not None:
                    on_phase_start(index, step)
            elif optimizer is None:  # resumed in the middle of a phase
                optimizer = make_optimizer(model, method, lr)
            model.train()
            method.on_epoch_start(epoch)
            for x, y in batches:
                optimizer.zero_grad(set_to_none=True)
                loss = nn.functional.cross_entropy(model(x), y)
                penalty = method.penalty()
                if penalty is not None:
                    loss = loss + penalty
                loss.backward()
                optimizer.step()
                step += 1
                method.on_step(step)
                if on_step is not None:
                    on_step(step)
            logs = method.on_epoch_end(epoch)
            assert isinstance(logs, dict)
        epoch = first + phase.epochs
    return step
