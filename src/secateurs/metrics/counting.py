"""Counting parameters: all of them, and the non-zero ones of the weights the model uses."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from secateurs.metrics.effective_tensors import effective_tensor, eval_mode, parametrization_internal_ids

__all__ = ["count_nonzero_params", "count_params"]


def count_params(model: nn.Module) -> int:
    """Counts the model's parameters, each shared tensor once.

    A parametrized weight counts once, through its ``original``; parameters that live inside
    parametrization modules (learned mask scores, logits) belong to the pruning method, not the
    model, and are not counted.

    Args:
        model: The model.

    Returns:
        The number of parameter elements.
    """
    excluded = parametrization_internal_ids(model)
    # parameters() already yields each shared tensor once.
    return sum(p.numel() for p in model.parameters() if id(p) not in excluded)


def count_nonzero_params(model: nn.Module) -> int:
    """Counts the non-zero elements of the parameters as the model uses them.

    A parametrized tensor counts the non-zeros of its parametrized (e.g. masked) value, computed
    in eval mode without gradients; the model's train/eval modes are restored afterwards.
    Parametrization-internal parameters are ignored, as in :func:`count_params`.

    Args:
        model: The model.

    Returns:
        The number of non-zero parameter elements.
    """
    handled = parametrization_internal_ids(model)
    total = 0
    with eval_mode(model), torch.no_grad():
        for module in model.modules():
            if not parametrize.is_parametrized(module):
                continue
            for name, plist in module.parametrizations.items():
                originals = [p for p in plist.parameters(recurse=False)]
                if not originals or any(id(p) in handled for p in originals):
                    # A buffer (not a parameter) was parametrized, or a tied tensor already
                    # counted through another module.
                    continue
                handled.update(id(p) for p in originals)
                total += int(torch.count_nonzero(effective_tensor(module, name)))
        for param in model.parameters():
            if id(param) not in handled:
                total += int(torch.count_nonzero(param))
    return total
