"""Rounds with rewinding, shared by the methods that search a ticket (lottery, continuous sparsification).

A round-based method prunes a little more after each round (the same fraction of what is left, so
round ``r`` of ``R`` reaches ``1 - (1 - S)**(r / R)``), and may rewind the weights to an early iterate
while keeping the mask it found.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from secateurs.core.parametrize import original_name

__all__ = ["rewind_", "round_sparsity", "snapshot"]


def round_sparsity(sparsity: float, round_index: int, rounds: int) -> float:
    """Sparsity after round ``round_index`` (1-based) of ``rounds`` on the way to ``sparsity``."""
    density = 1.0 - float(sparsity)
    return 1.0 - density ** (round_index / rounds)


@torch.no_grad()
def snapshot(model: nn.Module) -> dict[str, Tensor]:
    """A copy of the model's weights and buffers (BatchNorm running statistics) without the mask state.

    Mask state (scores, logits, fixed masks) lives inside the parametrizations and is left out: it is
    what a rewind keeps.
    """
    return {k: v.detach().clone() for k, v in model.state_dict().items() if original_name(k) is not None}


@torch.no_grad()
def rewind_(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Copy a :func:`snapshot` back into ``model`` in place (optimizers keep their tensors)."""
    current = model.state_dict()
    for k, v in state.items():
        current[k].copy_(v)
