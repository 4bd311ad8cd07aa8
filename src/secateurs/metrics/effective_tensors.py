"""Tensors as a model uses them: the parametrized (masked) value of a weight, the parameters owned by
parametrizations, and an evaluation mode that restores itself (stochastic masks give their hard mask)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.utils import parametrize

__all__ = ["effective_tensor", "eval_mode", "is_conv_or_linear", "parametrization_internal_ids"]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Puts ``model`` in eval mode and restores every submodule's own mode on exit.

    Modules can be in mixed modes (e.g. frozen batch norms during fine-tuning), so each module's
    flag is saved and restored, not just the root's.

    Args:
        model: The model.

    Yields:
        The same model, in eval mode.
    """
    saved = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in saved:
            module.training = training


def is_conv_or_linear(module: nn.Module) -> bool:
    """Whether ``module`` is a convolution (any dimension, transposed too) or a linear layer."""
    return isinstance(module, (nn.Linear, nn.modules.conv._ConvNd))


def parametrization_internal_ids(model: nn.Module) -> set[int]:
    """Ids of the parameters owned by parametrization modules (mask scores, logits, ...).

    These are state of a pruning method, not parameters of the model: the parametrized tensor
    itself is stored as ``parametrizations.<name>.original``, which is not included here.

    Args:
        model: The model.

    Returns:
        ``id()`` of every parameter inside ``module.parametrizations.<name>[i]``.
    """
    ids: set[int] = set()
    for module in model.modules():
        if not parametrize.is_parametrized(module):
            continue
        for plist in module.parametrizations.values():
            # Iterating a ParametrizationList yields its parametrization modules; `original`
            # is a direct parameter of the list, so it is not reached here.
            for parametrization in plist:
                ids.update(id(p) for p in parametrization.parameters())
    return ids


@torch.no_grad()
def effective_tensor(module: nn.Module, name: str) -> torch.Tensor:
    """The value ``module`` uses for tensor ``name``: the parametrized value when parametrized.

    Call inside :func:`eval_mode` so stochastic parametrizations give their deterministic mask.

    Args:
        module: The module owning the tensor.
        name: The tensor's attribute name, e.g. ``"weight"``.

    Returns:
        The tensor, detached.
    """
    return getattr(module, name).detach()
