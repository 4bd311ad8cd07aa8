"""Channels of one group that share a tensor position: they can only be removed together.

A group numbers its channels by its root layer's outputs, and each member says which position of
its tensor carries each channel. Usually every position carries one channel. Where several share a
position, cutting one cuts the position, hence the others too:

* GhostNet's module concatenates a convolution's output ``x1`` with a depthwise convolution of it,
  ``cat([x1, dw(x1)])``: channels ``c`` and ``C/2 + c`` of the sum both come from row ``c`` of the
  first convolution;
* selective-kernel attention (SKNet) weighs ``P`` paths with one convolution of ``P*C`` outputs:
  its rows ``c, C + c, ...`` all weigh channel ``c`` of the paths.

torch-pruning keeps one channel per position when it merges what its search found for a layer
(the first one met), so the sharing is invisible in its groups; the bounded search records the
channels that met at a position (:func:`tied_roots`), wherever it was (a layer's weight, or an
element-wise product as in a gated unit ``a * act(b)``).

When the channels sharing positions are ``o, o + n/P, ..., o + (P-1)n/P`` for every offset ``o``, the
group is ``P`` tied chunks (:attr:`ChannelGroup.chunks`: the same offsets go from every chunk). Any
other sharing cannot be expressed, and the group is blocked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from secateurs.structured.groups import GroupMember

__all__ = ["tied_chunks", "tied_roots"]


def tied_roots(group: Any) -> list[tuple[int, int]]:
    """Pairs of a group's channels that the group search met at one position of one node (tied), as
    recorded by :mod:`secateurs.structured.tp_speedups`."""
    return list(getattr(group, "_secateurs_tied", None) or ())


def tied_chunks(
    members: Sequence[GroupMember], channels: int, sizes: Mapping[tuple[str, int], int],
    tied: Sequence[tuple[int, int]] = (),
) -> int | None:
    """How many tied chunks the members' shared positions make of a group.

    Args:
        members: The group's members.
        channels: The group's channel count.
        sizes: ``(param, dim)`` -> the tensor's size along ``dim`` (members not listed are skipped).
        tied: Pairs of channels known to share a position elsewhere (:func:`tied_roots`).

    Returns:
        1 when no position carries two channels; ``P`` when the channels sharing positions are the
        same offset of ``P`` equal consecutive chunks; None when they share positions otherwise.
    """
    parent = list(range(channels))

    def find(c: int) -> int:
        while parent[c] != c:
            parent[c] = parent[parent[c]]
            c = parent[c]
        return c

    tied_any = False
    for a, b in tied:
        if 0 <= a < channels and 0 <= b < channels and find(a) != find(b):
            parent[max(find(a), find(b))] = min(find(a), find(b))
            tied_any = True
    for member in members:
        size = sizes.get((member.param, member.dim))
        if size is None or member.chunks > 1:  # a grouped convolution's input shares positions by design
            continue
        first: dict[int, int] = {}
        for position, channel in zip(member.index, member.channel, strict=True):
            if not 0 <= channel < channels:
                continue
            owner = first.setdefault(position % size, channel)
            a, b = find(owner), find(channel)
            if a != b:
                parent[max(a, b)] = min(a, b)
                tied_any = True
    if not tied_any:
        return 1
    classes: dict[int, list[int]] = {}
    for c in range(channels):
        classes.setdefault(find(c), []).append(c)
    parts = len(classes[0])
    if parts < 2 or channels % parts:
        return None
    step = channels // parts
    for root, chans in classes.items():
        if chans != [root + k * step for k in range(parts)]:
            return None
    return parts
