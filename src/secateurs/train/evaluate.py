"""Evaluation: loss and top-1 accuracy of a model on a loader."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import nullcontext

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from secateurs.train.distributed import World
from secateurs.train.speed import to_memory_format

__all__ = ["autocast_for", "evaluate", "masks_computed_once"]


def autocast_for(device: torch.device, enabled: bool):  # noqa: ANN201 - context manager
    """bfloat16 autocast on CUDA (no gradient scaler needed); nothing on CPU."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


def masks_computed_once(model: nn.Module):  # noqa: ANN201 - context manager
    """Compute every parametrized (masked) weight once for the whole context instead of once per batch.

    Eval-mode masks are deterministic functions of the weights and mask state, which do not change
    while evaluating, so each batch would recompute the same tensors (a DPP layer's top-k, a Gibbs
    layer's ground state). Not for compiled modules: dynamo would guard on the cache flag.
    """
    if hasattr(model, "_orig_mod"):  # torch.compile's wrapper
        return nullcontext()
    return parametrize.cached()


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable[tuple[Tensor, Tensor]], *, amp: bool = True,
             channels_last: bool = False, world: World | None = None) -> dict[str, float]:
    """Mean cross-entropy and top-1 accuracy (percent) in eval mode; restores the previous mode.

    Sums stay on the device until the end: one host synchronisation per evaluation, not per batch.
    With a ``world`` of several processes, each evaluates its share of ``loader`` (a sharded one)
    and the sums are added over the processes: every process returns the whole set's scores.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.long)
    count = 0
    try:
        with masks_computed_once(model):
            for x, y in loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                x = to_memory_format(x, channels_last)
                with autocast_for(device, amp):
                    out = model(x)
                loss_sum += nn.functional.cross_entropy(out.float(), y, reduction="sum").double()
                correct += (out.argmax(1) == y).sum()
                count += y.numel()
    finally:
        model.train(was_training)
    if world is not None and world.distributed:
        counted = torch.tensor(count, device=device, dtype=torch.long)
        world.sum_(loss_sum, correct, counted)
        count = int(counted)
    if count == 0:
        return {"loss": float("nan"), "accuracy": float("nan")}
    return {"loss": float(loss_sum) / count, "accuracy": 100.0 * int(correct) / count}
