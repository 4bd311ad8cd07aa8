"""MACs targets: the uniform per-tensor sparsity that leaves a given fraction of the dense MACs.

``macs_effective`` (see :func:`secateurs.metrics.count_macs`) counts each conv/linear layer's MACs
times the density of its weight. With the same sparsity ``s`` in every pruned tensor it is
``fixed + (1 - s) * prunable``, where ``prunable`` are the dense MACs of the pruned layers and
``fixed`` everything else (the stem, the classifier, layers left out). So the sparsity for a target
fraction ``f`` of the dense MACs is ``s = 1 - (f * dense - fixed) / prunable``, measured once on the
freshly built model. Rounding to whole units (filters, kernels) moves the achieved MACs a little;
the report shows the measured value. Methods that spread sparsity unevenly (``scope: global``) would
miss the target, so MACs targets need a per-tensor or per-group scope.

Filter pruning on coupled channel groups is different: removing a channel also removes the input
weights that read it, so the shrunk model's MACs (``macs_shrunk`` in ``report.json``) fall roughly
with the square of the density. :func:`sparsity_for_shrunk_macs` finds the per-group sparsity that
leaves the target fraction of those, by bisection over the predicted shrunk size. With ``round_to``
it predicts the size ``shrink --round-to`` delivers (kept channel counts rounded up to multiples,
the channels given back staying zero), so the target still holds after rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from secateurs.core.granularity import Filter
from secateurs.core.masks import MaskSet
from secateurs.core.selection import keep_count
from secateurs.core.targets import Target
from secateurs.errors import UsageError
from secateurs.metrics import count_macs
from secateurs.structured import coupled_channel_groups, predict_from_masks
from secateurs.structured.coupled_masks import plan_shared_groups

__all__ = ["MacsSplit", "measure_macs_split", "sparsity_for_macs", "sparsity_for_shrunk_macs"]


@dataclass(frozen=True)
class MacsSplit:
    """The dense MACs of a model, split into the pruned layers' share and the rest."""

    dense: int
    prunable: int

    @property
    def fixed(self) -> int:
        """MACs of everything that is not pruned."""
        return self.dense - self.prunable


def measure_macs_split(model: nn.Module, targets: Sequence[Target], example: Tensor) -> MacsSplit:
    """Count the dense MACs of ``model`` on ``example`` and the share of the layers holding ``targets``."""
    pruned_modules = {t.module_name for t in targets}
    macs = count_macs(model, example)
    prunable = sum(layer.dense for layer in macs.per_layer if layer.name in pruned_modules)
    return MacsSplit(dense=macs.dense, prunable=prunable)


def sparsity_for_macs(split: MacsSplit, fraction: float, *, scope: str = "tensor") -> float:
    """The uniform sparsity of the pruned tensors that leaves ``fraction`` of the dense MACs.

    Raises:
        UsageError: the target is below what the unpruned layers alone cost, or the scope is global.
    """
    if scope == "global":
        raise UsageError("a MACs target sets one sparsity for every tensor; use scope tensor or group, not global")
    if split.prunable <= 0:
        raise UsageError("the pruned layers do no multiply-accumulates; a MACs target cannot be met")
    need = fraction * split.dense
    sparsity = 1.0 - (need - split.fixed) / split.prunable
    if sparsity >= 1.0:
        raise UsageError(
            f"{fraction:.0%} of the dense MACs cannot be met: the layers that are not pruned alone take "
            f"{split.fixed / split.dense:.1%}"
        )
    return round(max(sparsity, 0.0), 6)


def sparsity_for_shrunk_macs(model: nn.Module, targets: Sequence[Target], example: Tensor, fraction: float, *,
                             scope: str = "tensor", model_name: str = "the model", tolerance: float = 1e-3,
                             round_to: int = 1) -> float:
    """The per-group filter sparsity whose shrunk model keeps ``fraction`` of the dense MACs.

    At a per-tensor or per-group scope every method keeps ``keep_count(units, s)`` units of each tied
    channel group and of each filter bank pruned on its own, and those counts (not which channels)
    fix the shrunk size; so the size is predicted from masks that keep the first units. Returns the
    smallest sparsity on the bisection grid that reaches the target (at most the target), counting
    the channels that ``shrink(..., round_to=round_to)`` gives back to round each group's width up.

    Raises:
        UsageError: the target cannot be met (the layers that cannot shrink cost more), or the scope
            is global.
    """
    if scope == "global":
        raise UsageError("a MACs target sets one sparsity for every group; use scope tensor or group, not global")
    groups = coupled_channel_groups(model, example)
    shapes = {name: p.shape for name, p in model.named_parameters()}
    shared, alone = plan_shared_groups(groups, targets, shapes)

    def shrunk_fraction(sparsity: float) -> float:
        masks = {t.name: torch.arange(t.shape[0]) < keep_count(t.shape[0], sparsity) for t in alone}
        for group in shared:
            keep = torch.arange(group.units) < keep_count(group.units, sparsity)
            masks.update({member.param: member.spread(keep) for member in group.producers})
        mask_set = MaskSet.from_masks(masks, Filter(), {name: shapes[name] for name in masks})
        size = predict_from_masks(model, mask_set, example, groups=groups, round_to=round_to)
        return size.macs_after / size.macs_before

    low, high = 0.0, 0.99
    if shrunk_fraction(high) > fraction:
        rounding = f" with channel counts rounded to multiples of {round_to}" if round_to > 1 else ""
        raise UsageError(f"{fraction:.0%} of the dense MACs cannot be met by removing channels of {model_name}"
                         f"{rounding}: even 99 % filter sparsity leaves {shrunk_fraction(high):.1%}")
    while high - low > tolerance:
        middle = 0.5 * (low + high)
        if shrunk_fraction(middle) > fraction:
            low = middle
        else:
            high = middle
    return round(high, 6)
