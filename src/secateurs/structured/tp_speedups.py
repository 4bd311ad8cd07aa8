"""Bounded-time group search for torch-pruning: each channel index is followed through a node once.

``DependencyGraph.get_pruning_group`` follows dependencies from the root with a list of channel
indices, and re-explores a node whenever it arrives there with a list it has not seen *as a whole*
(``Group.has_pruning_op``, itself a linear scan comparing lists). Where channels are sliced and
recombined (ReXNet's partial residuals ``x[:, :c] += shortcut``, DPN), every path brings another
subset of the same indices, and the search grows combinatorially: one ReXNet group collected over
a million items and took minutes on one CPU thread.

Index mappings act on each index on its own (an offset, a filter, a stride), so following an index
through a node a second time can only reach what the first time reached. :func:`bounded_search_patches`
makes the search remember, per ``(node, pruning function)``, the indices already followed, and
follow only the new ones: the group's items cover the same indices (torch-pruning merges each
node's items afterwards), and the work is linear in the number of (node, index) pairs.
The merge of the items found into one item per node, quadratic as shipped, gets a table too.
:func:`bounded_search_patches` only builds the replacement methods; :func:`secateurs.structured.tp_compat.patched`
installs them for the duration of a ``with`` block, so torch-pruning used elsewhere in the process
runs as shipped.
"""

from __future__ import annotations

from typing import Any

__all__ = ["bounded_search_patches"]


def bounded_search_patches(tp: Any) -> dict[str, Any]:
    """Replacements for methods of torch-pruning's ``Group`` (name -> function): ``add_dep`` records
    the indices followed per node, ``has_pruning_op`` drops the ones already followed (answering True
    when none is new), ``add_and_merge`` merges through a table. They wrap the methods as they are now."""
    group_class = tp.dependency.group.Group
    add_dep = group_class.add_dep

    def followed(group: Any, dep: Any) -> set:
        table = group.__dict__.setdefault("_secateurs_followed", {})
        return table.setdefault((dep.target, dep.handler), set())

    def add_dep_recording(self: Any, dep: Any, idxs: Any) -> None:
        add_dep(self, dep, idxs)
        followed(self, dep).update(idxs)

    def has_pruning_op_followed(self: Any, dep: Any, idxs: Any) -> bool:
        seen = followed(self, dep)
        new = [i for i in idxs if i not in seen]
        if not new:
            return True
        if len(new) < len(idxs) and isinstance(idxs, list):
            idxs[:] = new  # the caller adds and follows this very list: only the new indices
        return False

    def add_and_merge_indexed(self: Any, dep: Any, idxs: Any) -> None:
        # As torch-pruning's: one item per (node, function), its indices the union keeping the first
        # of each index; the items found by a table instead of a scan, the union grown in place.
        table = self.__dict__.setdefault("_secateurs_merged", {})
        key = (dep.target, dep.handler)
        if key not in table:
            self.add_dep(dep, list(idxs))  # a copy: the search shares index lists between items
            table[key] = [len(self._group) - 1, None]
            return
        entry = table[key]
        position, seen = entry
        item = self._group[position]
        if seen is None:  # first merge: the first list itself is deduplicated, as torch-pruning does
            merged, seen = [], set()
            for index in item.idxs:
                if index.idx not in seen:
                    merged.append(index)
                    seen.add(index.idx)
            self._group[position] = tp._helpers.GroupItem(dep=item.dep, idxs=merged)
            entry[1] = seen
            item = self._group[position]
        for index in idxs:
            if index.idx not in seen:
                item.idxs.append(index)
                seen.add(index.idx)

    return {"add_dep": add_dep_recording, "has_pruning_op": has_pruning_op_followed,
            "add_and_merge": add_and_merge_indexed}
