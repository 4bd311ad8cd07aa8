"""Analysis units: the coupled channel groups whose filters the singularity analysis counts.

A unit is one removable channel group (:class:`secateurs.structured.ChannelGroup`): the output
channels of a convolution with its batch norm, or, across residual additions, the channels shared
by every convolution added together. Its *producers* are the filter banks that create the channels
(the method's masks), its *consumers* the layers that read them (the next convolutions, projection
shortcuts, the classifier): the gradient matrix of the unit is built from what the consumers read.

Only groups the shrinker can remove exactly, with ungrouped consumers and one mask unit per channel,
are units; any other target keeps all its filters (the table says which groups were left out).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from secateurs.core.parametrize import original_name
from secateurs.core.targets import Target
from secateurs.structured.groups import ChannelGroup, GroupMember

__all__ = ["AnalysisUnit", "ConsumerRead", "analysis_units"]


@dataclass(frozen=True)
class ConsumerRead:
    """How one consumer layer reads a unit's channels.

    Attributes:
        param: The consumer's weight (original name), e.g. ``"layer1.0.conv2.weight"``.
        module: The consumer module's name (its forward input is what it reads).
        index: ``(channels, positions)`` positions along the consumer's input dimension (dim 1 of its
            weight and of its input) holding each channel: one per channel for a convolution, one per
            spatial position for a linear layer after a flatten.
    """

    param: str
    module: str
    index: torch.Tensor


@dataclass(frozen=True)
class AnalysisUnit:
    """One coupled channel group as the analysis and the ``singularity`` method see it.

    Attributes:
        key: The mask key of the group in a coupled filter method (the root weight name).
        group: The channel group.
        width: Target weight elements per channel (over every producer): what one removed channel
            takes out of the pruned weights, for sparsity accounting.
        consumers: The layers reading the channels.
    """

    key: str
    group: ChannelGroup
    width: int
    consumers: tuple[ConsumerRead, ...]

    @property
    def channels(self) -> int:
        """Number of channels (filters) of the unit."""
        return self.group.channels

    @property
    def layers(self) -> tuple[str, ...]:
        """The producer layers."""
        return self.group.layers


def analysis_units(
    model: nn.Module, groups: Sequence[ChannelGroup], targets: Sequence[Target]
) -> tuple[list[AnalysisUnit], dict[str, str]]:
    """The groups the analysis can count, and why the others cannot.

    Args:
        model: The model (parametrized or not).
        groups: Its channel groups (:func:`secateurs.structured.coupled_channel_groups`).
        targets: The weights that may be pruned; a group is a unit only if all its producers are targets.

    Returns:
        ``(units, skipped)``: the units in group order, and group root -> reason for the rest.
    """
    shapes = {n: p.shape for pn, p in model.named_parameters() if (n := original_name(pn)) is not None}
    target_names = {t.name for t in targets}
    units: list[AnalysisUnit] = []
    skipped: dict[str, str] = {}
    taken: set[str] = set()
    for group in groups:
        reason = _unsuitable(group, target_names, shapes)
        consumers: list[ConsumerRead] = []
        if reason is None:
            for member in group.members:
                if member.role != "in":
                    continue
                read = _consumer(model, member, group.channels, shapes)
                if read is None:
                    reason = f"{member.param} reads the channels in a way the analysis does not follow"
                    break
                consumers.append(read)
        if reason is None and not consumers:
            reason = "no layer reads the channels"
        producers = {m.param for m in group.producers}
        if reason is None and producers & taken:
            reason = "its filters belong to an earlier group"
        if reason is not None:
            skipped[group.root] = reason
            continue
        taken |= producers
        width = sum(shapes[p].numel() // shapes[p][0] for p in dict.fromkeys(m.param for m in group.producers))
        root = f"{group.root}.weight" if group.root else "weight"
        key = root if root in producers else group.producers[0].param
        units.append(AnalysisUnit(key, group, width, tuple(consumers)))
    return units, skipped


def _unsuitable(group: ChannelGroup, targets: set[str], shapes: dict[str, torch.Size]) -> str | None:
    if not group.removable:
        return group.blocker or "cannot be removed"
    if not group.exact:
        return "a normalisation across channels sees it"
    if group.chunks != 1:
        return "grouped convolution"
    if not group.producers:
        return "no producer"
    for member in group.producers:
        if member.param not in targets:
            return f"{member.param} is not a pruning target"
        if member.dim != 0 or member.param not in shapes or len(shapes[member.param]) < 2:
            return f"{member.param} is not a filter bank"
        positions = sorted(member.index)
        if positions != list(range(group.channels)) or len(set(member.channel)) != group.channels:
            return f"{member.param} does not hold each channel once"
    return None


def _consumer(model: nn.Module, member: GroupMember, channels: int,
              shapes: dict[str, torch.Size]) -> ConsumerRead | None:
    """The consumer read of an ``in`` member, or None when it is not a plain conv/linear input."""
    if member.dim != 1 or member.chunks != 1 or member.param not in shapes or not member.param.endswith(".weight"):
        return None
    module = model.get_submodule(member.module)
    if isinstance(module, nn.modules.conv._ConvNd):
        if module.groups != 1:
            return None
    elif not isinstance(module, nn.Linear):
        return None
    by_channel: dict[int, list[int]] = defaultdict(list)
    for position, channel in zip(member.index, member.channel):
        by_channel[channel].append(position)
    counts = {len(v) for v in by_channel.values()}
    if sorted(by_channel) != list(range(channels)) or len(counts) != 1:
        return None
    per = counts.pop()
    if isinstance(module, nn.modules.conv._ConvNd) and per != 1:
        return None
    index = torch.tensor([sorted(by_channel[c]) for c in range(channels)], dtype=torch.long)
    return ConsumerRead(member.param, member.module, index)
