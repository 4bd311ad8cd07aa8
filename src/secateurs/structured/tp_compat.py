"""Fixes for torch-pruning's behaviours, active only while secateurs traces or cuts a model.

Checked against torch-pruning 1.6.0 (:data:`CHECKED_VERSION`; a test fails on any other version so
that the fixes are re-checked, and tests of the upstream behaviours fail once a release fixes them):

1. ``index_mapping.update_reshape_index_mapping`` divides by zero on reshapes whose channel counts it
   infers as 0 (ShuffleNet's channel shuffle after a split): the node is marked
   ``_secateurs_unmapped`` instead, and the groups through it are blocked.
2. ``index_mapping.update_concat_index_mapping`` raises ``TypeError`` (``sum`` over a ``None`` size)
   on concatenations of inputs it cannot size (Swin-S): same treatment.
3. ``_FlattenIndexMapping.__call__`` multiplies the index lists round a cycle of reshapes until memory
   runs out (Swin, MaxViT): past a bound it raises :class:`IndexExplosionError`, and the group is
   reported as untraceable.

4. ``index_mapping.update_split_index_mapping`` gives the ``i``-th consumer it found of a
   ``torch.split`` the ``i``-th slice, whatever slice it reads: where the search meets the consumers
   in another order (MixNet's mixed convolutions split a concatenation of two convolutions), the
   channels of one slice are mapped onto the layer reading the other. Each consumer gets the slice
   its autograd edge comes from instead (the ``input_nr`` of the edge to the split).
5. ``index_mapping.update_slice_index_mapping`` takes a slice along dimension 1 of any 4-D tensor for
   a slice of channels: on a channels-last ``(B, H, W, C)`` tensor (LeViT's subsampling
   ``x.view(B, H, W, C)[:, ::2, ::2]``) it maps a stride over rows onto the channels. A slice whose
   dimension does not have the input's channel count is left unmapped (it keeps every channel).
6. ``DependencyGraph.get_pruning_group`` can take minutes on sliced and recombined channels
   (ReXNet, DPN) and on reshapes it maps with a stride (EfficientViT, FocalNet): the bounded group
   search over arrays of :mod:`secateurs.structured.tp_speedups` (fix 3's bound applies to it too).
7. ``shape_infer.init_shape_information`` and ``update_split_index_mapping`` handle splits along
   dimension 1 only, and the graph turns the mapping off for every split downstream of a 3-D free
   parameter (a ViT position embedding): a split of a channels-last ``(B, N, C)`` tensor along its
   channels (the GLU MLP's ``fc1(x).chunk(2, dim=-1)`` in EVA-02, gMLP's gating unit) then gets no
   mapping, and every channel seems to reach both halves' readers. Such splits get their sizes and
   mappings.
8. The norm pruners cut ``bias`` whenever the norm is affine, and fail on an affine GroupNorm whose
   bias was set to None (timm's ``GroupNorm1NoBias`` in PoolFormerV2): cutting a missing parameter
   leaves it missing.
9. ``update_concat_index_mapping`` infers the sizes of the joined tensors by searching the graph, and
   on DPN's dual-path blocks (``cat([x_s1 + out1, x_s2, out2])``, ``x_s2`` a slice of a slice) it gets
   them wrong; the sum then disagrees with the output and the concatenation is left unmapped, so the
   dense path's new channels seem to be the residual path's first ones. The sizes are read from
   autograd instead (the shape of each joined tensor), where each joined tensor is one input.
10. ``index_mapping.update_reshape_index_mapping`` reads ``(B, P*C, ...) -> (B, P, C, ...)`` (SKNet's
    per-path attention weights) as the inverse of a flatten and maps channel ``i`` to ``i // P``
    instead of ``i % C``: :mod:`secateurs.structured.tp_unflatten`.

The fixes replace module attributes and class methods of torch-pruning, so they are installed by
:func:`patched` for the duration of a ``with`` block and the originals restored afterwards: importing
secateurs, or using torch-pruning elsewhere in the same process, sees torch-pruning unchanged.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from secateurs.structured.tp_speedups import search_patches
from secateurs.structured.tp_unflatten import with_periodic_unflatten

__all__ = ["CHECKED_VERSION", "IndexExplosionError", "MAX_INDICES_PER_GROUP", "MAX_MAPPED_INDICES", "patched"]

CHECKED_VERSION = "1.6.0"
#: More indices than this in one flatten mapping, or through flatten mappings while following one
#: group, means torch-pruning is going round reshapes (each index is a Python object: memory).
MAX_MAPPED_INDICES = 1 << 18
MAX_INDICES_PER_GROUP = 1 << 22


class IndexExplosionError(RuntimeError):
    """torch-pruning's flatten index mapping grew without bound."""


class _Budget:
    """Indices mapped through flatten mappings since the current group started."""

    def __init__(self) -> None:
        self.used = 0
        self.depth = 0


_BUDGET = _Budget()


def new_group() -> None:
    """Start counting the indices of a new group (call before each ``get_pruning_group``)."""
    _BUDGET.used = 0


def _tolerant(update: Any) -> Any:
    def update_index_mapping(graph: Any, node: Any) -> None:
        try:
            update(graph, node)
        except (ZeroDivisionError, TypeError):  # sizes it could not infer (fixes 1 and 2)
            node._secateurs_unmapped = True

    return update_index_mapping


def _sizes_from_autograd(update: Any, tp: Any) -> Any:
    concat_mapping = tp.dependency.index_mapping._ConcatIndexMapping

    def update_concat_index_mapping(graph: Any, node: Any) -> None:  # fix 9
        if not getattr(node, "_secateurs_sizes_known", False):
            update(graph, node)
            return
        # Known sizes along the channels: map as torch-pruning does, without its check of the sum
        # against a size inferred from the consumers (a consumer that slices misleads it).
        offsets = [0, *itertools.accumulate(node.module.concat_sizes)]
        node.module.offsets = offsets
        if not node.enable_index_mapping:
            return
        for i, source in enumerate(node.inputs):
            for dep in node.dependencies:
                if dep.target is source:
                    dep.index_mapping[1] = concat_mapping(offset=offsets[i:i + 2], reverse=True)
                    break
            for dep in source.dependencies:
                if dep.target is node:
                    dep.index_mapping[1] = concat_mapping(offset=offsets[i:i + 2], reverse=False)
                    break

    return update_concat_index_mapping


def _concat_input_sizes(node: Any) -> list[int] | None:
    """The sizes along its dimension of the tensors a ``torch.cat`` joined, read from autograd.

    None unless every joined tensor is one of the node's inputs, in the same order (a tensor that
    needs no gradient, or the same one joined twice, leaves torch-pruning's inputs out of step).
    """
    grad_fn = node.grad_fn
    dim = getattr(grad_fn, "_saved_dim", None)
    edges = getattr(grad_fn, "next_functions", ())
    if dim is None or not edges or len(edges) != len(node.inputs) or len(set(map(id, node.inputs))) != len(edges):
        return None
    sizes = []
    for (fn, index), source in zip(edges, node.inputs, strict=True):
        if fn is None or fn is not getattr(source, "grad_fn", None):
            return None
        try:
            shape = fn._input_metadata[index].shape  # the forward output's shape
        except (AttributeError, IndexError, RuntimeError):
            return None
        if len(shape) not in (2, 4) or _wrapped_dim(dim, len(shape)) != 1:
            # Only (B, C) and (B, C, H, W) joined along C: dimension 1 of a (B, N, C) sequence is
            # its tokens (a class token joined), which torch-pruning's own rules handle.
            return None
        sizes.append(int(shape[1]))
    return sizes


def _split_output(split: Any, consumer: Any) -> int | None:
    """Which output of the split node ``consumer`` reads, from its autograd edges (None: not one)."""
    fn = getattr(consumer, "grad_fn", None)
    found = {index for edge, index in getattr(fn, "next_functions", ()) if edge is not None and edge is split.grad_fn}
    return found.pop() if len(found) == 1 else None


def _split_by_output(update: Any, tp: Any) -> Any:
    slice_mapping = tp.dependency.index_mapping._SplitIndexMapping

    def update_split_index_mapping(graph: Any, node: Any) -> None:  # fixes 4 and 7
        update(graph, node)  # the channel-dimension checks and the offsets, as shipped
        offsets = getattr(node.module, "offsets", None)
        if node.type != tp.ops.OPTYPE.SPLIT or offsets is None or not node.enable_index_mapping:
            return
        # torch-pruning maps only splits along dimension 1; a channels-last one (fix 7) gets its
        # mapping here, where every consumer must be placed (else its channels pass unmapped).
        channels_last = getattr(node, "_secateurs_channels_last", False)
        for consumer in node.outputs:
            k = _split_output(node, consumer)
            if k is None or k + 1 >= len(offsets):
                if channels_last:
                    node._secateurs_unmapped = True
                continue
            for dep in node.dependencies:
                if dep.target is consumer and (channels_last or isinstance(dep.index_mapping[0], slice_mapping)):
                    dep.index_mapping[0] = slice_mapping(offset=offsets[k:k + 2], reverse=False)
            for dep in consumer.dependencies:
                if dep.target is node and (channels_last or isinstance(dep.index_mapping[0], slice_mapping)):
                    dep.index_mapping[0] = slice_mapping(offset=offsets[k:k + 2], reverse=True)

    return update_split_index_mapping


def _split_sizes(grad_fn: Any, outputs: int) -> list[int] | None:
    """The sizes a split (``torch.split``/``chunk``) cut its input into, from its autograd node."""
    sizes = getattr(grad_fn, "_saved_split_sizes", None)
    if sizes is not None:
        return [int(s) for s in sizes]
    size, shape, dim = (getattr(grad_fn, name, None) for name in ("_saved_split_size", "_saved_self_sym_sizes",
                                                                     "_saved_dim"))
    if size is None or shape is None or dim is None:
        return None
    total = int(shape[_wrapped_dim(dim, len(shape))])
    return [min(int(size), total - i * int(size)) for i in range(outputs)]


def _wrapped_dim(dim: int, ndim: int) -> int:
    # autograd saves a negative dimension as an unsigned 64-bit integer (-1: 2**64 - 1).
    dim = int(dim)
    if dim >= 1 << 63:
        dim -= 1 << 64
    return dim % ndim if -ndim <= dim < ndim else -1


def _known_concat_channels(infer: Any, tp: Any) -> Any:
    def infer_out_channels_recursively(graph: Any, node: Any, recursive_depth: list) -> int | None:  # fix 9
        if getattr(node, "_secateurs_sizes_known", False):  # only concatenations are marked
            return sum(node.module.concat_sizes)  # kept current by the concat pruner after cuts
        return infer(graph, node, recursive_depth)

    return infer_out_channels_recursively


def _shapes_from_autograd(init: Any, tp: Any) -> Any:
    def init_shape_information(graph: Any) -> None:  # fixes 7 and 9
        init(graph)
        infer = tp.dependency.shape_infer.infer_out_channels_recursively
        for node in graph.module2node.values():
            if node.type == tp.ops.OPTYPE.CONCAT and getattr(node.module, "concat_sizes", None) is None:
                # Before any mapping, so that the channel counts inferred through them are right.
                sizes = _concat_input_sizes(node)
                if sizes is not None:
                    node.module.concat_sizes = sizes
                    node._secateurs_sizes_known = True
        for node in graph.module2node.values():
            if node.type != tp.ops.OPTYPE.SPLIT:
                continue
            grad_fn = node.grad_fn
            shape, dim = getattr(grad_fn, "_saved_self_sym_sizes", None), getattr(grad_fn, "_saved_dim", None)
            if shape is None or dim is None or len(shape) < 3 or _wrapped_dim(dim, len(shape)) != len(shape) - 1:
                continue
            channels = next((c for c in (infer(graph, n, [0]) for n in node.inputs) if c), None)
            # Only a split of the channels of a (B, ..., C) tensor; a 4-D one whose dimension 1 has
            # as many entries could be a (B, C, H, W) split along its width.
            if channels is None or int(shape[-1]) != channels or (len(shape) > 3 and int(shape[1]) == channels):
                continue
            sizes = _split_sizes(grad_fn, len(node.outputs))
            if not sizes or sum(sizes) != channels:
                continue
            node.module.split_sizes = sizes
            node.module.offsets = [0, *itertools.accumulate(sizes)]
            node._secateurs_channels_last = True
            # Its ViT work-around turns the mapping off for every split after a 3-D free parameter
            # (meant for the class token's concatenation along the tokens): this one splits channels.
            node.enable_index_mapping = True

    return init_shape_information


def _channel_slices_only(update: Any, tp: Any) -> Any:
    def update_slice_index_mapping(graph: Any, node: Any) -> None:  # fix 5
        infer = tp.dependency.shape_infer.infer_out_channels_recursively
        grad_fn = node.grad_fn
        sizes, dim = getattr(grad_fn, "_saved_self_sym_sizes", None), getattr(grad_fn, "_saved_dim", None)
        if node.type == tp.ops.OPTYPE.SLICE and sizes is not None and isinstance(dim, int) and -len(sizes) <= dim < len(sizes):
            channels = next((c for c in (infer(graph, n, [0]) for n in node.inputs) if c), None)
            if channels is not None and int(sizes[dim]) != channels:
                return  # a slice of rows, columns or tokens: the channels pass unchanged
        update(graph, node)

    return update_slice_index_mapping


def _none_stays_none(cut: Any) -> Any:
    def prune_parameter(self: Any, weight: Any, keep_idxs: Any, pruning_dim: int) -> Any:  # fix 8
        return None if weight is None else cut(self, weight, keep_idxs, pruning_dim)

    return prune_parameter


def _charge(size: int) -> None:  # fix 3: ``size`` indices handled by one flatten mapping
    _BUDGET.used += size
    if size > MAX_MAPPED_INDICES or _BUDGET.used > MAX_INDICES_PER_GROUP:
        raise IndexExplosionError("channel indices multiply through reshapes")


def charge_mapped(size: int) -> None:
    """Count ``size`` indices handled by one of secateurs' own index mappings against the
    index-explosion guard (fix 3); raises :class:`IndexExplosionError` past its bounds."""
    _charge(size)


def _bounded(call: Any) -> Any:
    def bounded_call(self: Any, idxs: Any) -> Any:  # fix 3
        _charge(len(idxs) * (1 if self.reverse else self._stride))
        return call(self, idxs)

    return bounded_call


@contextmanager
def patched(tp: Any) -> Iterator[None]:
    """Install the fixes on the module ``tp`` (``torch_pruning``) for the ``with`` block; re-entrant."""
    module = tp.dependency.index_mapping
    flatten = module._FlattenIndexMapping
    if _BUDGET.depth:
        _BUDGET.depth += 1
        try:
            yield
        finally:
            _BUDGET.depth -= 1
        return
    originals = (module.update_concat_index_mapping, module.update_reshape_index_mapping, flatten.__call__,
                 module.update_split_index_mapping, module.update_slice_index_mapping)
    shapes = tp.dependency.shape_infer
    init_shapes, infer_channels = shapes.init_shape_information, shapes.infer_out_channels_recursively
    graph_class = tp.dependency.graph.DependencyGraph
    search = search_patches(tp, _charge)  # fix 6
    shipped = {name: graph_class.__dict__[name] for name in search}
    module.update_concat_index_mapping = _tolerant(_sizes_from_autograd(originals[0], tp))
    module.update_reshape_index_mapping = _tolerant(with_periodic_unflatten(originals[1], tp))  # fixes 1 and 10
    flatten.__call__ = _bounded(originals[2])
    module.update_split_index_mapping = _split_by_output(originals[3], tp)
    module.update_slice_index_mapping = _channel_slices_only(originals[4], tp)
    shapes.init_shape_information = _shapes_from_autograd(init_shapes, tp)
    shapes.infer_out_channels_recursively = _known_concat_channels(infer_channels, tp)
    for name, method in search.items():
        setattr(graph_class, name, method)
    base = tp.pruner.function.BasePruningFunc
    cut_parameter = base.__dict__["_prune_parameter_and_grad"]
    base._prune_parameter_and_grad = _none_stays_none(cut_parameter)
    _BUDGET.depth, _BUDGET.used = 1, 0
    try:
        yield
    finally:
        (module.update_concat_index_mapping, module.update_reshape_index_mapping, flatten.__call__,
         module.update_split_index_mapping, module.update_slice_index_mapping) = originals
        shapes.init_shape_information, shapes.infer_out_channels_recursively = init_shapes, infer_channels
        for name, method in shipped.items():
            setattr(graph_class, name, method)
        base._prune_parameter_and_grad = cut_parameter
        _BUDGET.depth = 0
