"""Coupled channel groups as plain data: which tensor dimensions carry the same channels.

A *channel group* is a set of channels that must be removed together: the output channels of a
convolution, the matching entries of its bias and of the batch norm after it, the input channels of
every layer that reads them and, through residual additions, the output channels of every other
layer added to them. Each tensor dimension that carries the group's channels is a
:class:`GroupMember`; the group lists them all, so a method can score a group as one unit and the
shrinker can cut every member consistently.

These objects hold names and integers only (no modules, no torch-pruning objects), so they can be
stored, compared and turned into JSON. :mod:`secateurs.structured.graph` builds them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from secateurs.core.granularity import Filter
from secateurs.core.masks import MaskSet

__all__ = ["ChannelGroup", "GroupMember", "group_filter_masks"]

Role = Literal["out", "in"]


@dataclass(frozen=True)
class GroupMember:
    """One dimension of one parameter that carries a group's channels.

    Attributes:
        param: Parameter name as in ``model.named_parameters()`` (e.g. ``"layer1.0.conv1.weight"``).
        dim: The dimension of that parameter along which the channels lie.
        role: ``"out"`` when the tensor shapes the channel's value (filters, bias, normalisation
            affine), ``"in"`` when it reads the channel (the next layer's input weights).
        producer: True for filter banks that create the channel's signal (convolution and linear
            filters, embeddings); False for followers such as biases, normalisation scales and free
            parameters added to the features (a transformer's position embedding and class token),
            which a shared group's mask gates along with the filters. A channel is removable only
            where every producer has pruned it.
        index: Positions along ``dim`` (in ``[0, chunk_size * chunks)``, see ``chunks``).
        channel: The group channel of each position (same length as ``index``); a flattened
            feature map gives several positions per channel.
        chunks: For the input dimension of a grouped convolution: its number of groups. The weight
            holds only ``size / chunks`` positions, shared by all chunks, so ``index`` counts over the
            whole input and the tensor position is ``index % shape[dim]``.
    """

    param: str
    dim: int
    role: Role
    producer: bool
    index: tuple[int, ...]
    channel: tuple[int, ...]
    chunks: int = 1

    @property
    def module(self) -> str:
        """Name of the module owning the parameter (``""`` for a parameter of the root module)."""
        return self.param.rpartition(".")[0]

    def tensor_positions(self, channels: torch.Tensor, size: int) -> torch.Tensor:
        """Sorted unique positions of the parameter's dimension that carry the given group channels.

        Args:
            channels: Boolean vector over the group's channels (True: selected).
            size: ``param.shape[dim]``.

        Returns:
            A 1-D ``int64`` tensor of positions along ``dim``.
        """
        index = torch.tensor(self.index, dtype=torch.long)
        chosen = channels[torch.tensor(self.channel, dtype=torch.long)]
        return torch.unique(index[chosen] % size)

    def to_dict(self) -> dict[str, object]:
        """Plain values for JSON."""
        return {
            "param": self.param, "dim": self.dim, "role": self.role, "producer": self.producer,
            "index": list(self.index), "channel": list(self.channel), "chunks": self.chunks,
        }


@dataclass(frozen=True)
class ChannelGroup:
    """Channels coupled across layers, removed (or kept) together.

    Attributes:
        root: Name of the convolution or linear layer whose output channels number the group
            (channel ``i`` of the group is output channel ``i`` of the root).
        channels: Number of channels.
        members: Every parameter dimension carrying the channels.
        blocker: Why the group cannot be removed structurally (it feeds the model's output, it runs
            through multi-head attention, an unknown operation...), or None when it can.
        exact: False when a normalisation across channels (LayerNorm, GroupNorm) sees the group:
            removing a channel then changes the statistics of the others, so a shrunk model is close
            to the masked one but not equal.
        chunks: Removal must take the same channels out of each of ``chunks`` equal consecutive
            slices (grouped convolutions keep equal group widths); 1 when free.
        norms: LayerNorms whose statistics include the channels (a transformer's residual stream).
            Removal is exact against a masked model whose LayerNorms normalise over the kept
            channels only (:mod:`secateurs.structured.masked_norm`, what shared masks do), so the
            group's channel count is not rounded: a channel kept as zero would enter the statistics.
    """

    root: str
    channels: int
    members: tuple[GroupMember, ...]
    blocker: str | None = None
    exact: bool = True
    chunks: int = 1
    norms: tuple[str, ...] = ()

    @property
    def removable(self) -> bool:
        """Whether channels of this group can be removed physically."""
        return self.blocker is None

    @property
    def producers(self) -> tuple[GroupMember, ...]:
        """The members that create the channels' signal."""
        return tuple(m for m in self.members if m.producer)

    @property
    def params(self) -> tuple[tuple[str, int], ...]:
        """``(param name, dim)`` of every member."""
        return tuple((m.param, m.dim) for m in self.members)

    @property
    def layers(self) -> tuple[str, ...]:
        """Names of the modules holding producer weights, in member order, without repeats."""
        return tuple(dict.fromkeys(m.module for m in self.producers))

    def to_dict(self) -> dict[str, object]:
        """Plain values for JSON."""
        return {
            "root": self.root, "channels": self.channels, "blocker": self.blocker, "exact": self.exact,
            "chunks": self.chunks, "norms": list(self.norms), "members": [m.to_dict() for m in self.members],
        }


def group_filter_masks(
    model: nn.Module, groups: list[ChannelGroup], keep: Mapping[str, torch.Tensor]
) -> MaskSet:
    """Filter masks on every producer weight of the groups, from one keep vector per group.

    This is how a method that selects whole coupled groups writes its decision as the library's
    one mask type: every convolution/linear weight whose output channels belong to the group gets
    the same channels pruned, so the shrinker can remove all of them.

    Args:
        model: The model the groups were built from.
        groups: Groups from :func:`secateurs.structured.coupled_channel_groups`.
        keep: Group root name -> boolean vector over the group's channels (True: keep). Groups not
            named here are left unmasked.

    Returns:
        A MaskSet with Filter granularity over the producers' weights (output dimension 0).
    """
    shapes = {name: p.shape for name, p in model.named_parameters()}
    masks: dict[str, torch.Tensor] = {}
    for group in groups:
        if group.root not in keep:
            continue
        vector = keep[group.root].to(torch.bool).cpu()
        if vector.shape != (group.channels,):
            raise ValueError(f"keep vector of group {group.root} has shape {tuple(vector.shape)}, "
                             f"expected ({group.channels},)")
        for member in group.producers:
            if member.dim != 0 or member.param not in shapes or len(shapes[member.param]) < 2:
                continue  # only filter banks (dim 0 of a conv/linear weight) carry Filter masks
            size = shapes[member.param][0]
            unit = masks.get(member.param, torch.ones(size, dtype=torch.bool))
            dropped = member.tensor_positions(~vector, size)
            unit[dropped] = False
            masks[member.param] = unit
    return MaskSet.from_masks(masks, Filter(), {n: shapes[n] for n in masks})

