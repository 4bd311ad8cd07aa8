"""Which channels to remove: from filter masks and coupled groups to a removal plan.

Per-layer filter masks need not agree across coupled layers: a residual addition couples the output
channels of several convolutions, and a method that prunes each layer on its own may prune channel 7
in one of them but not in another. A channel can leave the network only where *every* producer of
its group has pruned it, so the plan removes that intersection and reports the rest, which stays in
the model as zero filters (the shrunk model still computes what the masked one computes).

The plan is pure data: it is computed from groups and masks without touching a model, and it is
what ``secateurs inspect --prunability`` shows and what ``secateurs shrink`` executes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import torch

from secateurs.core.granularity import Filter
from secateurs.core.masks import MaskSet
from secateurs.core.selection import rounded_keep
from secateurs.errors import UsageError
from secateurs.structured.groups import ChannelGroup

__all__ = ["GroupPlan", "RemovalPlan", "plan_removal"]


@dataclass(frozen=True)
class GroupPlan:
    """What happens to one group.

    Attributes:
        root: The group's root layer.
        channels: Channels before.
        keep: Channels kept, sorted, numbered as the root's output channels.
        dead: Channels whose every producer is pruned (a superset of the removed ones): they are
            zeroed in the whole group, including channels kept only for ``round_to`` or chunking.
        masked: Channels pruned by some producer but kept (another producer keeps them, or the group
            cannot be removed): they stay as zero filters.
        note: Why pruned channels stayed, or None.
    """

    root: str
    channels: int
    keep: tuple[int, ...]
    dead: tuple[int, ...]
    masked: int
    note: str | None = None

    @property
    def removed(self) -> tuple[int, ...]:
        """Channels removed physically, sorted."""
        kept = set(self.keep)
        return tuple(c for c in range(self.channels) if c not in kept)


@dataclass(frozen=True)
class RemovalPlan:
    """The removal decided for every group, in group order."""

    groups: tuple[GroupPlan, ...]
    round_to: int = 1

    @property
    def removed_channels(self) -> int:
        """Channels removed over all groups."""
        return sum(len(g.removed) for g in self.groups)

    @property
    def masked_channels(self) -> int:
        """Pruned channels that stay in the model as zeros."""
        return sum(g.masked for g in self.groups)

    def by_root(self) -> dict[str, GroupPlan]:
        """Group plans keyed by root layer."""
        return {g.root: g for g in self.groups}

    def refusing(self, reasons: Mapping[str, str], *, untouched: bool = False) -> RemovalPlan:
        """This plan with the named groups kept whole: their removed channels stay, as zeros.

        Args:
            reasons: Group root -> why its channels cannot be removed after all.
            untouched: Also forget their dead channels, so that nothing of these groups is zeroed
                beyond the masks (when the group's members do not say where its channels are).
        """
        groups = tuple(
            replace(g, keep=tuple(range(g.channels)), masked=g.masked + len(g.removed), note=reasons[g.root],
                    dead=() if untouched else g.dead)
            if g.root in reasons else g for g in self.groups
        )
        return RemovalPlan(groups, self.round_to)


def _pruned_by(group: ChannelGroup, masks: MaskSet) -> tuple[torch.Tensor, torch.Tensor]:
    """(pruned by every producer, pruned by at least one producer) over the group's channels."""
    everywhere = torch.ones(group.channels, dtype=torch.bool)
    somewhere = torch.zeros(group.channels, dtype=torch.bool)
    for member in group.producers:
        entry = masks.get(member.param)
        if entry is None or member.dim != 0 or not isinstance(entry.granularity, Filter):
            everywhere[:] = False  # a live producer keeps every channel alive
            continue
        index = torch.tensor(member.index, dtype=torch.long)
        channel = torch.tensor(member.channel, dtype=torch.long)
        # Positions past the mask mean the traced indices do not fit this tensor (the group is then
        # blocked): only the positions it has count.
        inside = index < entry.mask.numel()
        index, channel = index[inside], channel[inside]
        pruned_at = ~entry.mask[index]
        # A channel is pruned in this producer only if all of its positions are pruned.
        live = torch.zeros(group.channels, dtype=torch.long).index_add_(0, channel, (~pruned_at).long()) > 0
        touched = torch.zeros(group.channels, dtype=torch.bool)
        touched[channel] = True
        everywhere &= ~live | ~touched
        somewhere |= touched & ~live
    return everywhere, somewhere


def _balance(dead: torch.Tensor, chunks: int) -> torch.Tensor:
    """Keep only channels dead at the same offset in every chunk (grouped convs stay equal-width)."""
    if chunks <= 1:
        return dead
    return dead.view(chunks, -1).all(dim=0).repeat(chunks)


def _keep_for_shape(removed: torch.Tensor, chunks: int, round_to: int) -> torch.Tensor:
    """Give channels back (lowest offsets first) so each chunk keeps one and counts hit ``round_to``."""
    per_chunk = removed.view(chunks, -1)[0].clone()  # balanced: all chunks equal
    width = per_chunk.numel()
    step = math.lcm(round_to, chunks) // chunks  # kept-per-chunk must be a multiple of this
    kept = width - int(per_chunk.sum())
    target = rounded_keep(kept, width, step)
    for offset in torch.nonzero(per_chunk).flatten().tolist():
        if kept >= target:
            break
        per_chunk[offset] = False
        kept += 1
    return per_chunk.repeat(chunks)


def _keep_every_layer_alive(
    group: ChannelGroup, removed: torch.Tensor, shapes: Mapping[str, Sequence[int]]
) -> torch.Tensor:
    """Give channels back until no member tensor loses all of its positions along its dimension.

    A layer reading only some of a group's channels (a slice of a concatenation) can be left with
    zero width although the group keeps channels elsewhere; a layer cut to zero width does not run.
    """
    removed = removed.clone()
    width = group.channels // group.chunks
    for _ in range(group.channels):
        emptied = next((m for m in group.members if m.param in shapes and m.index
                        and len(m.tensor_positions(removed, shapes[m.param][m.dim])) == shapes[m.param][m.dim]), None)
        if emptied is None:
            break
        offset = emptied.channel[0] % width
        removed.view(group.chunks, width)[:, offset] = False
    return removed


def plan_removal(
    groups: list[ChannelGroup],
    masks: MaskSet,
    *,
    round_to: int = 1,
    approximate: bool = False,
    shapes: Mapping[str, Sequence[int]] | None = None,
) -> RemovalPlan:
    """Decide which channels of each group leave the network.

    Args:
        groups: The model's groups (:func:`secateurs.structured.coupled_channel_groups`).
        masks: Filter-granularity masks of the (squashed) model's weights.
        round_to: Keep channel counts at multiples of this (kernel-friendly widths); channels given
            back for it stay zero. Not applied to groups seen by LayerNorms (``ChannelGroup.norms``).
        approximate: Also remove groups seen by a normalisation across channels that cannot be
            masked (GroupNorm, LayerNorm without affine weight, weight-standardized convolutions);
            the result then differs slightly from the masked model.
        shapes: Parameter name -> shape of the model's parameters; with them, no layer is cut to
            zero width (a channel is kept for it). ``shrink`` and the size predictions pass them.

    Returns:
        The plan.

    Raises:
        UsageError: If ``round_to`` is not a positive integer or a mask is not Filter granularity.
    """
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise UsageError(f"round_to must be a positive integer, got {round_to!r}")
    for name, entry in masks.items():
        if not isinstance(entry.granularity, Filter):
            raise UsageError(f"structural removal needs filter-granularity masks; {name} is {entry.granularity}")
    plans = []
    for group in groups:
        everywhere, somewhere = _pruned_by(group, masks)
        note = None
        if not group.removable:
            dead = torch.zeros_like(everywhere)
            note = group.blocker
        elif not group.exact and not approximate:
            dead = torch.zeros_like(everywhere)
            note = "a normalisation across channels sees them (shrink with approximate removal)"
        else:
            dead = _balance(everywhere, group.chunks)
            if bool((everywhere & ~dead).any()):
                note = "grouped convolution: only channels pruned in every group are removed"
        # A channel kept as zero for rounding would still enter a LayerNorm's statistics in the shrunk
        # model, where the masked model left it out: groups seen by LayerNorms are not rounded.
        rounding = 1 if group.norms else round_to
        removed = _keep_for_shape(dead, group.chunks, rounding) if bool(dead.any()) else dead
        if shapes is not None and bool(removed.any()):
            alive = _keep_every_layer_alive(group, removed, shapes)
            if note is None and bool((removed & ~alive).any()):
                note = "a layer would lose all of its channels: one stays"
            removed = alive
        if note is None and bool((somewhere & ~everywhere).any()):
            note = "coupled layers keep some of the pruned channels"
        elif note is None and bool((dead & ~removed).any()):
            note = f"kept to round channel counts to {round_to}" if rounding > 1 else "a group keeps one channel"
        masked = int((somewhere & ~removed).sum())
        plans.append(GroupPlan(
            root=group.root, channels=group.channels, keep=_indices(~removed), dead=_indices(dead),
            masked=masked, note=note if masked else None,
        ))
    return RemovalPlan(tuple(plans), round_to)


def _indices(flags: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(c) for c in torch.nonzero(flags).flatten())
