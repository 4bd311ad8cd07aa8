"""Optimizer groups of a model's own weights: what is decayed, what is not, and what is left out.

Learned mask state (scores, logits) sits inside the parametrizations, so ``model.parameters()`` yields
it too; it belongs to the pruning method, which gives it groups of its own
(:meth:`secateurs.methods.PruningMethod.param_groups`), and is left out here.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from secateurs.core.parametrize import original_name

__all__ = ["decay_split", "weight_groups", "weight_parameters"]

#: Layers whose parameters are normalisation scales and shifts (never decayed when biases are not).
_NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)


def weight_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The model's own trainable parameters: every one except the learned mask state."""
    return [p for n, p in model.named_parameters() if original_name(n) is not None and p.requires_grad]


def decay_split(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """The model's trainable weights, split into (decayed, not decayed) the way training recipes do.

    Not decayed: biases, the parameters of normalisation layers, and any other 1-D parameter (a
    per-channel scale or shift): pulling them towards zero regularises nothing and shifts what the
    layer computes. Learned mask state inside parametrizations is neither (the method owns it).
    """
    decayed, kept = [], []
    for name, p in model.named_parameters():  # each shared parameter once
        if original_name(name) is None or not p.requires_grad:
            continue
        owner, _, leaf = name.rpartition(".")
        module = model.get_submodule(owner) if owner else model
        if isinstance(module, _NORM_LAYERS) or leaf == "bias" or p.ndim <= 1:
            kept.append(p)
        else:
            decayed.append(p)
    return decayed, kept


def weight_groups(model: nn.Module, weight_decay: float = 0.0, *, decay_bias_norm: bool = False) -> list[dict[str, Any]]:
    """Parameter groups of the model's own weights: the :func:`decay_split` halves with and without
    ``weight_decay`` (the default, as in ``TrainConfig``), or with ``decay_bias_norm=True`` one group
    decayed as a whole."""
    if decay_bias_norm:
        return [{"params": weight_parameters(model), "weight_decay": weight_decay}]
    decayed, kept = decay_split(model)
    return [{"params": decayed, "weight_decay": weight_decay}, {"params": kept, "weight_decay": 0.0}]
