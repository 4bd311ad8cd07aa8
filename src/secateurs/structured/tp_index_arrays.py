"""torch-pruning's channel index mappings applied to arrays of positions instead of lists of tuples.

Torch-pruning follows a group's channels as Python lists of ``_HybridIndex(idx, root_idx)`` tuples,
one object per position. Through reshapes that it maps with a stride (a flatten), one channel becomes
``stride`` positions, and two such reshapes in a row (EfficientViT's attention: strides 29 then 32)
turn 64 channels into 178,176 objects, built one by one on every step of the search. Here the same
positions are two int64 arrays, :class:`Positions` (the position, and the root channel it came
from), and every index mapping of torch-pruning 1.6 has an array form that yields the same
``(position, root)`` pairs as its ``__call__``, in the same order but for the reverse flatten, which
torch-pruning deduplicates through a ``set`` (whose order is arbitrary): here the first of each pair
is kept, in list order. A mapping of another type, or one that would divide by zero, falls back to
its own ``__call__`` on a list (which raises as torch-pruning's does).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["NO_ROOT", "Positions", "first_of_each_pair", "map_positions"]

#: The root of a position mapped by ``_GQAIndexMapping``, which sets ``root_idx=None``.
NO_ROOT = -1


@dataclass(frozen=True)
class Positions:
    """Positions along a node's pruned dimension, each with the root channel it was reached from."""

    idx: np.ndarray
    root: np.ndarray

    @classmethod
    def of(cls, idx: Any, root: Any) -> Positions:
        return cls(np.asarray(idx, dtype=np.int64).reshape(-1), np.asarray(root, dtype=np.int64).reshape(-1))

    def __len__(self) -> int:
        return int(self.idx.shape[0])

    def where(self, keep: np.ndarray) -> Positions:
        return Positions(self.idx[keep], self.root[keep])

    def roots(self) -> list[int | None]:
        return [None if r == NO_ROOT else r for r in self.root.tolist()]


def _int64(value: Any) -> bool:
    # A slice from the end keeps its start as an unsigned wrap-around (-3 as 2**64 - 3): Python ints then.
    return isinstance(value, int) and -(2**63) <= value < 2**63


def first_of_each_pair(idx: np.ndarray, root: np.ndarray) -> Positions:
    """The first of each (position, root) pair, in order (``dict.fromkeys`` over pairs)."""
    if idx.size <= 1:
        return Positions(idx, root)
    low = int(root.min())
    span = int(root.max()) - low + 1
    key = (idx - int(idx.min())) * span + (root - low)  # one integer per (position, root) pair
    _, first = np.unique(key, return_index=True)
    first.sort()
    return Positions(idx[first], root[first])


def map_positions(mapping: Any, pos: Positions, tp: Any, charge: Callable[[int], None]) -> Positions:
    """``mapping(positions)`` for one of torch-pruning's index mappings.

    Args:
        mapping: An index mapping object of a dependency (``dep.index_mapping[k]``).
        pos: The positions at the dependency's source.
        tp: The ``torch_pruning`` module.
        charge: Called with the number of positions a flatten mapping handles (the index-explosion
            guard of :mod:`secateurs.structured.tp_compat`; it raises past its bound).
    """
    im = tp.dependency.index_mapping
    kind = type(mapping)
    idx, root = pos.idx, pos.root
    if hasattr(mapping, "map_arrays"):  # secateurs' own mappings (tp_unflatten) map arrays themselves
        return Positions(*mapping.map_arrays(idx, root))
    reverse = bool(getattr(mapping, "reverse", False))
    if kind is im._FlattenIndexMapping and int(mapping._stride) > 0:
        stride = int(mapping._stride)
        charge(len(pos) * (1 if reverse else stride))
        if reverse:
            return first_of_each_pair(idx // stride, root)
        spread = idx[:, None] * stride + np.arange(stride, dtype=np.int64)
        return Positions(spread.reshape(-1), np.repeat(root, stride))
    if kind is im._ConcatIndexMapping or kind is im._SplitIndexMapping:
        start, end = int(mapping.offset[0]), int(mapping.offset[1])
        # concat: forward shifts into the concatenation, reverse takes one input's range back out;
        # split: the other way round.
        takes_range = reverse if kind is im._ConcatIndexMapping else not reverse
        if takes_range:
            keep = (idx >= start) & (idx < end)
            return Positions(idx[keep] - start, root[keep])
        return Positions(idx + start, root)
    if kind is im._SliceIndexMapping and all(_int64(v) for v in (mapping.start, mapping.step, mapping.end)) \
            and mapping.step != 0:
        start, step, end = int(mapping.start), int(mapping.step), int(mapping.end)
        if reverse:
            return Positions(idx * step + start, root)
        keep = (idx >= start) & (idx < end) & ((idx - start) % step == 0)
        return Positions((idx[keep] - start) // step, root[keep])
    if kind is im._GQAIndexMapping and (not reverse or (int(mapping.head_dim) > 0 and int(mapping.repeat) > 0)):
        if not reverse:
            return Positions(idx[:0], root[:0])
        head_dim, repeat = int(mapping.head_dim), int(mapping.repeat)
        mapped = idx - idx // (head_dim * repeat) * head_dim * (repeat - 1) - idx // head_dim % repeat * head_dim
        return Positions(mapped, np.full_like(root, NO_ROOT))
    # A mapping this module does not know, or a zero stride, step or head size (it divides by zero
    # where torch-pruning's would, and raises the same): its own call, on a list.
    hybrid = tp._helpers._HybridIndex
    out = mapping([hybrid(idx=i, root_idx=None if r == NO_ROOT else r)
                   for i, r in zip(idx.tolist(), root.tolist(), strict=True)])
    return Positions.of([i.idx for i in out], [NO_ROOT if i.root_idx is None else i.root_idx for i in out])
