"""A reshape that unflattens the channel dimension into ``(parts, channels)``: torch-pruning fix 10.

``x.view(B, P, C, H, W)`` of a ``(B, P*C, H, W)`` tensor puts its channel ``p*C + c`` at channel
``c`` of part ``p``: selective-kernel attention (SKNet's ``SelectiveKernelAttn``) computes one weight
per path and channel with one convolution of ``P*C`` outputs, views it as ``(B, P, C, 1, 1)`` and
multiplies the stacked paths by it. torch-pruning reads every reshape that lowers the channel count
as the inverse of a flatten, ``(B, C*k) -> (B, C, ...)``, and maps channel ``i`` to ``i // P``:
the attention rows are then tied to the wrong channels of the paths, and the cut that follows breaks
the model (``shrink`` then refuses the group). Here such reshapes map ``i`` to ``i % C`` and back to
``c, C + c, ..., (P-1)*C + c``; several channels of the group then share each position of the paths,
which :func:`secateurs.structured.tied_channels.tied_chunks` turns into ``P`` tied chunks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from secateurs.structured.tp_index_arrays import first_of_each_pair

__all__ = ["PeriodicIndexMapping", "unflatten_parts", "with_periodic_unflatten"]


class PeriodicIndexMapping:
    """Channel ``i`` of the flat tensor is channel ``i % period`` of each of ``parts`` parts.

    Args:
        period: Channels per part (``C``).
        parts: Number of parts (``P``).
        reverse: True maps flat channels to part channels (``i -> i % C``); False maps a part
            channel to its flat channels (``c -> c, C + c, ...``).
    """

    def __init__(self, period: int, parts: int, reverse: bool = False) -> None:
        self.period, self.parts, self.reverse = period, parts, reverse

    def __call__(self, idxs: Any) -> list[Any]:
        if not idxs:
            return []
        from secateurs.structured.tp_compat import charge_mapped  # the index-explosion guard (fix 3)

        charge_mapped(len(idxs) * (1 if self.reverse else self.parts))
        hybrid = type(idxs[0])  # torch-pruning's (idx, root_idx) pairs
        if self.reverse:
            return list(dict.fromkeys(hybrid(idx=i.idx % self.period, root_idx=i.root_idx) for i in idxs))
        return [hybrid(idx=i.idx + p * self.period, root_idx=i.root_idx) for i in idxs for p in range(self.parts)]

    def map_arrays(self, idx: np.ndarray, root: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``__call__`` on position and root arrays, the same pairs in the same order (used by the
        array search of :mod:`secateurs.structured.tp_speedups`)."""
        if len(idx):
            from secateurs.structured.tp_compat import charge_mapped  # the index-explosion guard (fix 3)

            charge_mapped(len(idx) * (1 if self.reverse else self.parts))
        if self.reverse:
            kept = first_of_each_pair(idx % self.period, root)
            return kept.idx, kept.root
        spread = idx[:, None] + np.arange(self.parts, dtype=np.int64) * self.period
        return spread.reshape(-1), np.repeat(root, self.parts)


def view_shapes(grad_fn: Any) -> tuple[list[int], list[int]] | None:
    """``(input shape, output shape)`` of a reshape/view autograd node, or None when it saved no sizes."""
    before = getattr(grad_fn, "_saved_self_sym_sizes", None) or getattr(grad_fn, "_saved_self_sizes", None)
    try:
        after = grad_fn._input_metadata[0].shape  # the forward output's shape
    except (AttributeError, IndexError, RuntimeError):
        return None
    if before is None:
        return None
    return [int(d) for d in before], [int(d) for d in after]


def unflatten_parts(node: Any) -> tuple[int, int] | None:
    """``(parts, channels)`` when the reshape node views ``(B, P*C, 1, ...)`` as ``(B, P, C, 1, ...)``, else None."""
    shapes = view_shapes(node.grad_fn)
    if shapes is None:
        return None
    before, after = shapes
    if len(before) < 2 or len(after) != len(before) + 1 or before[0] != after[0] or before[2:] != after[3:]:
        return None
    parts, channels = after[1], after[2]
    # (B, C, 1) -> (B, C, 1, 1) has the shapes of C parts of one channel: an unsqueeze, not this.
    if parts < 2 or channels < 2 or before[1] != parts * channels:
        return None
    # Only a vector per sample (no spatial or token extent): the same view of a feature map is how
    # attention splits channels into heads, which this mapping must not tie (heads are regrouped
    # further on, and the views back and forth would multiply the positions without end).
    if any(d != 1 for d in before[2:]):
        return None
    return parts, channels


def with_periodic_unflatten(update: Any, tp: Any) -> Any:
    """Wrap torch-pruning's ``update_reshape_index_mapping`` with fix 10 (see the module docstring)."""

    infer = tp.dependency.shape_infer.infer_out_channels_recursively

    def channels_first(graph: Any, node: Any) -> bool:
        # Dimension 1 must be the channels (a (B, H*W, C) -> (B, H, W, C) view of tokens matches the
        # shapes too); a last dimension of the same size leaves it ambiguous: not handled.
        before = [int(d) for d in node.grad_fn._saved_self_sym_sizes]
        channels = next((c for c in (infer(graph, n, [0]) for n in node.inputs) if c), None)
        return channels == before[1] and (len(before) == 2 or before[-1] != channels)

    def update_reshape_index_mapping(graph: Any, node: Any) -> None:
        found = unflatten_parts(node) if node.type == tp.ops.OPTYPE.RESHAPE else None
        if found is not None and not channels_first(graph, node):
            found = None
        if found is None:
            update(graph, node)
            return
        parts, channels = found
        node._secateurs_unflatten = found
        for out_node in node.outputs:
            for dep in node.dependencies:
                if dep.target is out_node:
                    dep.index_mapping[0] = PeriodicIndexMapping(channels, parts, reverse=True)
            for dep in out_node.dependencies:
                if dep.target is node:
                    dep.index_mapping[0] = PeriodicIndexMapping(channels, parts, reverse=False)

    return update_reshape_index_mapping
