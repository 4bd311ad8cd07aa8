"""Bounded-time group search for torch-pruning: each position of a node is followed once, as arrays.

``DependencyGraph.get_pruning_group`` follows dependencies from the root with a list of channel
indices, and re-explores a node whenever it arrives there with a list it has not seen *as a whole*
(``Group.has_pruning_op``, itself a linear scan comparing lists). Where channels are sliced and
recombined (ReXNet's partial residuals ``x[:, :c] += shortcut``, DPN), every path brings another
subset of the same indices, and the search grows combinatorially: one ReXNet group collected over
a million items and took minutes on one CPU thread. Where reshapes are mapped with a stride
(EfficientViT's and FocalNet's attention, EfficientFormerV2), each channel becomes ``stride``
positions, one Python object each, and two strides in a row turn 64 channels into 178,176 objects.

:func:`search_patches` replaces the search with the same walk (the same dependencies, in the same
order, from the same root positions) that

* remembers, per ``(node, pruning function)``, the positions already followed and follows only new
  ones: index mappings act on each position on its own (an offset, a filter, a stride), so following
  a position a second time can only reach what the first time reached. The memo is per position, not
  per (position, root channel) pair: where reshapes bring a position back as another channel, pairs
  multiplied the work by the number of channels. Every position torch-pruning's search reaches is
  reached; where a position is reached from several root channels, the first is kept, as
  torch-pruning's merge keeps the first (which one is first depends on the order of the walk);
* records the root channels that meet at one position of a node, besides the one kept there
  (``group._secateurs_tied``, read by :func:`secateurs.structured.tied_channels.tied_roots`): such
  channels share a position and can only be removed together (GhostNet, SKNet, gated halves);
* carries positions as numpy arrays (:mod:`secateurs.structured.tp_index_arrays`), merged at the end
  into one item per node keeping the first of each position, as torch-pruning's ``add_and_merge``;

:func:`index_mappings_once` lets a walk over every group of an unchanged graph derive the graph's
index mappings once, where ``get_pruning_group`` re-derives all of them (recursive shape inference
over the whole graph) for each group.

These functions only build replacements; :func:`secateurs.structured.tp_compat.patched` installs them
for the duration of a ``with`` block, so torch-pruning used elsewhere in the process runs as shipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from numbers import Number
from typing import Any

import numpy as np
from torch import nn

from secateurs.structured.tp_index_arrays import Positions, map_positions

__all__ = ["index_mappings_once", "search_patches"]


@contextmanager
def index_mappings_once(tp: Any) -> Iterator[None]:
    """Within the block, ``update_index_mapping`` derives each graph's index mappings once.

    Only for a graph whose model does not change in the block (the groups of one model): derived
    from the layers' sizes, the mappings are the same at every call until a cut changes them.
    """
    module = tp.dependency.index_mapping
    update, done = module.update_index_mapping, set()

    def update_once(graph: Any) -> None:
        if id(graph) not in done:
            update(graph)
            done.add(id(graph))

    module.update_index_mapping = update_once
    try:
        yield
    finally:
        module.update_index_mapping = update


class _Followed:
    """The positions of one (node, pruning function) already followed: a bitmap over the range seen."""

    def __init__(self) -> None:
        self.low, self.bits = 0, np.zeros(0, dtype=bool)

    def add(self, idx: np.ndarray) -> None:
        if not idx.size:
            return
        low, high = min(self.low, int(idx.min())), max(self.low + self.bits.size, int(idx.max()) + 1)
        if (low, high) != (self.low, self.low + self.bits.size):
            bits = np.zeros(high - low, dtype=bool)
            bits[self.low - low:self.low - low + self.bits.size] = self.bits
            self.low, self.bits = low, bits
        self.bits[idx - self.low] = True

    def new(self, idx: np.ndarray) -> np.ndarray:
        """Mask of the positions not followed yet."""
        at = idx - self.low
        inside = (at >= 0) & (at < self.bits.size)
        fresh = ~inside
        fresh[inside] = ~self.bits[at[inside]]
        return fresh


class _Walk:
    """The items of one group search: every (dependency, positions) added, and the positions followed."""

    #: At most this many positions met again are kept for finding tied channels (memory bound).
    MAX_REVISITED = 1 << 20

    def __init__(self) -> None:
        self.items: list[tuple[Any, Positions]] = []
        self.followed: dict[tuple[Any, Any], _Followed] = {}
        self.revisited: list[tuple[Any, Positions]] = []
        self.revisited_size = 0

    def revisit(self, dep: Any, pos: Positions) -> None:
        if self.revisited_size + len(pos) <= self.MAX_REVISITED:
            self.revisited.append((dep, pos))
            self.revisited_size += len(pos)

    def add(self, dep: Any, pos: Positions) -> None:
        self.items.append((dep, pos))
        self.followed.setdefault((dep.target, dep.handler), _Followed()).add(pos.idx)

    def new_only(self, dep: Any, pos: Positions) -> Positions:
        seen = self.followed.get((dep.target, dep.handler))
        return pos if seen is None else pos.where(seen.new(pos.idx))


def search_patches(tp: Any, charge: Callable[[int], None]) -> dict[str, Any]:
    """Replacement for ``DependencyGraph.get_pruning_group`` (name -> function), same arguments and result.

    Args:
        tp: The ``torch_pruning`` module.
        charge: Called with the number of positions each flatten mapping handles (the index-explosion
            guard: it raises past its bound).
    """
    dependency_class, group_class = tp.dependency.dependency.Dependency, tp.dependency.group.Group
    group_item = tp._helpers.GroupItem

    def get_pruning_group(self: Any, module: nn.Module, pruning_fn: Any, idxs: Any) -> Any:
        # The prelude of torch-pruning 1.6's get_pruning_group, unchanged.
        if module not in self.module2node:
            raise ValueError(f"Module {module} is not in the dependency graph.")
        if isinstance(module, tp.ops.TORCH_CONV) and module.groups == module.out_channels and module.out_channels > 1:
            pruning_fn = tp.pruner.function.prune_depthwise_conv_out_channels
        if isinstance(idxs, Number):
            idxs = [idxs]
        root = [int(i) for i in idxs]
        tp.dependency.index_mapping.update_index_mapping(self)
        root_node = self.module2node[module]
        root_dep = dependency_class(pruning_fn, pruning_fn, source=root_node, target=root_node)

        walk = _walk(root_dep, Positions.of(root, root), tp, charge)
        group = _merged(self, walk.items, group_class, group_item)
        group._secateurs_tied = _tied_roots(group, [*walk.items, *walk.revisited])
        return group

    return {"get_pruning_group": get_pruning_group}


def _walk(root_dep: Any, root: Positions, tp: Any, charge: Callable[[int], None]) -> _Walk:
    """Depth first from the root, as torch-pruning's ``_fix_dependency_graph_non_recursive``, but a node
    already followed is reached again only with the positions it has not followed yet."""
    walk, visited = _Walk(), set()
    walk.add(root_dep, root)
    stack = [(root_dep, root)]
    while stack:
        dep, pos = stack.pop()
        node, fn = dep.target, dep.handler
        visited.add(node)
        for new_dep in node.dependencies:
            if not new_dep.is_triggered_by(fn):
                continue
            mapped = pos
            for mapping in new_dep.index_mapping:
                if mapping is not None:
                    mapped = map_positions(mapping, mapped, tp, charge)
            if len(mapped) and new_dep.target in visited:
                fresh = walk.new_only(new_dep, mapped)
                if len(fresh) < len(mapped):
                    walk.revisit(new_dep, mapped)  # perhaps from other root channels: tied to the first
                mapped = fresh
            if not len(mapped):
                continue
            walk.add(new_dep, mapped)
            stack.append((new_dep, mapped))
    return walk


def _merged(graph: Any, items: list[tuple[Any, Positions]], group_class: Any, group_item: Any) -> Any:
    """One group item per (node, pruning function), its positions the first of each in walk order
    (torch-pruning's ``add_and_merge``), with plain ``idxs`` and ``root_idxs`` lists."""
    per_key: dict[tuple[Any, Any], list[Any]] = {}
    for dep, pos in items:
        target = dep.target.module
        if isinstance(target, nn.Parameter) and any(target is p for p in graph.ignored_params):
            continue
        per_key.setdefault((dep.target, dep.handler), [dep]).append(pos)
    group = group_class()
    for dep, *parts in per_key.values():
        idx = np.concatenate([p.idx for p in parts])
        root = np.concatenate([p.root for p in parts])
        _, first = np.unique(idx, return_index=True)
        first.sort()
        merged = Positions(idx[first], root[first])
        item = group_item(dep, merged.idx.tolist())
        item.root_idxs = merged.roots()
        group._group.append(item)
    group._DG = graph
    return group


def _tied_roots(group: Any, met: list[tuple[Any, Positions]]) -> list[tuple[int, int]]:
    """``(kept root, other root)`` pairs of channels met at one position of one node: the search keeps
    the first root channel of each position, the others share it."""
    kept = {(item.dep.target, item.dep.handler): item for item in group._group}
    parts: dict[tuple[Any, Any], list[Positions]] = {}
    for dep, pos in met:
        parts.setdefault((dep.target, dep.handler), []).append(pos)
    found: set[tuple[int, int]] = set()
    for key, pieces in parts.items():
        item = kept.get(key)
        if item is None or not item.idxs:
            continue
        order = np.argsort(np.asarray(item.idxs, dtype=np.int64), kind="stable")
        idx_sorted = np.asarray(item.idxs, dtype=np.int64)[order]
        roots = np.asarray([-1 if r is None else r for r in item.root_idxs], dtype=np.int64)[order]
        idx = np.concatenate([p.idx for p in pieces])
        root = np.concatenate([p.root for p in pieces])
        at = np.clip(np.searchsorted(idx_sorted, idx), 0, idx_sorted.size - 1)
        other = (idx_sorted[at] == idx) & (roots[at] != root) & (root >= 0) & (roots[at] >= 0)
        if other.any():
            pairs = np.unique(np.stack([roots[at][other], root[other]], axis=1), axis=0)
            found.update((int(a), int(b)) for a, b in pairs)
    return sorted(found)
