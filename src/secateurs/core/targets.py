"""Which weights are pruned.

Default: every convolution and linear weight except the first convolution (the stem sees raw pixels
and holds few parameters) and the classifier (the last linear layer), the usual convention of the
pruning literature. Users override with glob patterns on parameter names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

import torch
from torch import nn

from secateurs.core.parametrize import original_name
from secateurs.errors import UsageError

__all__ = ["Target", "default_target_names", "select_targets"]

_PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class Target:
    """One weight to prune: its original parameter name and shape."""

    name: str
    shape: torch.Size

    @property
    def module_name(self) -> str:
        """Name of the module owning the weight."""
        return self.name.rpartition(".")[0]


def _prunable_weights(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [
        (f"{name}.weight" if name else "weight", m) for name, m in model.named_modules() if isinstance(m, _PRUNABLE)
    ]


def default_target_names(model: nn.Module, *, include_first: bool = False) -> list[str]:
    """Conv and linear weights in module order, minus the first conv (unless ``include_first``)
    and the last linear."""
    weights = _prunable_weights(model)
    convs = [n for n, m in weights if not isinstance(m, nn.Linear)]
    linears = [n for n, m in weights if isinstance(m, nn.Linear)]
    skip = set(convs[:0 if include_first else 1]) | set(linears[-1:])
    chosen = [n for n, _ in weights if n not in skip]
    # A model with a single prunable layer would have nothing left: prune it anyway.
    return chosen or [n for n, _ in weights]


def select_targets(
    model: nn.Module,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    *,
    include_first: bool = False,
) -> list[Target]:
    """Choose the weights to prune.

    Args:
        model: the network.
        include_first: keep the first convolution in the default choice (for pruning coupled
            channel groups, where the stem's output channels are those of the first stage).
        include: glob patterns over parameter names (e.g. ``"layer*.conv*.weight"``); when given they
            replace the default choice and may name any parameter of at least 2 dimensions.
        exclude: glob patterns removed from the choice.

    Raises:
        UsageError: a pattern matches nothing, or nothing is left to prune.
    """
    shapes = {}
    for pname, p in model.named_parameters():
        name = original_name(pname)
        if name is not None:
            shapes[name] = p.shape
    if include:
        names = []
        for pattern in include:
            hits = [n for n in shapes if fnmatchcase(n, pattern) and len(shapes[n]) >= 2]
            if not hits:
                raise UsageError(f"include pattern {pattern!r} matches no weight of the model")
            names += [h for h in hits if h not in names]
    else:
        names = default_target_names(model, include_first=include_first)
    for pattern in exclude or ():
        if not any(fnmatchcase(n, pattern) for n in names):
            raise UsageError(f"exclude pattern {pattern!r} matches no target weight")
        names = [n for n in names if not fnmatchcase(n, pattern)]
    if not names:
        raise UsageError("no weight is left to prune after the include/exclude patterns")
    return [Target(n, shapes[n]) for n in names]
