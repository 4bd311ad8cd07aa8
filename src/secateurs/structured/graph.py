"""Channel dependencies of a model, found with torch-pruning's DependencyGraph.

This is the only module of secateurs that imports ``torch_pruning`` (lazily, inside the functions;
its fixes of torch-pruning's behaviour live in :mod:`secateurs.structured.tp_compat`):
everything else works with the plain :class:`~secateurs.structured.groups.ChannelGroup` values it
returns, so the dependency can be replaced without touching methods, metrics or the command line.

Torch-pruning traces one forward pass through autograd and links every convolution, linear layer,
normalisation and free parameter to the channels it shares through residual additions,
concatenations, splits, flattening and grouped or depthwise convolutions. :class:`ChannelGraph`
turns each of its groups into parameter dimensions and says which groups can be removed physically;
:meth:`ChannelGraph.remove_channels_` then cuts them with torch-pruning's layer functions.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from secateurs.errors import UsageError
from secateurs.structured.attention_heads import attention_group, attention_of, cut_head_dims_
from secateurs.structured.groups import ChannelGroup, GroupMember
from secateurs.structured.layer_adapters import (
    detached_weight_computations,
    equal_split_readers,
    is_weight_standardized,
    narrow_slice_widths_,
    per_channel_extras,
    refresh_partial_splits_,
    refresh_split_sizes_,
    refresh_view_shapes_,
)
from secateurs.structured.masked_norm import maskable_norm
from secateurs.structured.module_caches import preserved_module_caches
from secateurs.structured.stream_attention import (
    attentions_read_by,
    couple_stream_attention,
    cut_stream_heads_,
    verified_stream_attentions,
)
from secateurs.structured.tied_channels import tied_chunks, tied_roots
from secateurs.structured.tp_compat import new_group, patched
from secateurs.structured.tp_speedups import index_mappings_once
from secateurs.structured.tp_unflatten import view_shapes

__all__ = ["ChannelGraph", "coupled_channel_groups"]

_NORMS_ACROSS_CHANNELS = (nn.LayerNorm, nn.GroupNorm)


def _as_tuple(example_input: Any) -> tuple[Any, ...]:
    return example_input if isinstance(example_input, tuple) else (example_input,)


def _tracked(inputs: tuple[Any, ...]) -> tuple[Any, ...]:
    """Floating-point inputs that require grad: the first layers still record a gradient function
    when their own weights are detached for tracing (weight-standardized convolutions)."""
    return tuple(x.detach().clone().requires_grad_(True) if isinstance(x, torch.Tensor) and x.is_floating_point()
                 else x for x in inputs)


class ChannelGraph:
    """Torch-pruning's dependency graph of one model, addressed by module and parameter names.

    Building the graph runs one forward pass with gradients enabled (autograd records the graph);
    the model's train/eval modes are restored afterwards and its weights are not changed.

    Args:
        model: The model (without parametrizations attached for :meth:`remove_channels_`).
        example_input: One input tensor, or a tuple of positional inputs.

    Raises:
        UsageError: If the model cannot be traced on the example input.
    """

    def __init__(self, model: nn.Module, example_input: Any) -> None:
        import torch_pruning as tp

        self.model = model
        self._tp = tp
        modes = [(m, m.training) for m in model.modules()]
        try:
            with torch.enable_grad(), warnings.catch_warnings(), preserved_module_caches(model), \
                    detached_weight_computations(model), patched(tp):
                warnings.simplefilter("ignore")  # torch-pruning warns through print-like channels
                self._dg = tp.DependencyGraph().build_dependency(
                    model, example_inputs=_tracked(_as_tuple(example_input)), verbose=False
                )
        except Exception as exc:  # noqa: BLE001 - whatever the model or the tracer raise: one clear refusal
            raise UsageError(f"cannot trace {type(model).__name__} for channel dependencies: "
                             f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        finally:
            for module, training in modes:
                module.training = training
        self._names = {module: name for name, module in model.named_modules()}
        self._equal_splits = equal_split_readers(model)
        self._example_input = example_input
        self._coupled: list[Any] | None = None

    def _stream_attentions(self) -> list[Any]:
        """Attention modules whose head width follows the residual stream (checked once, on the
        model as it is now: :func:`~secateurs.structured.stream_attention.verified_stream_attentions`)."""
        if self._coupled is None:
            with preserved_module_caches(self.model):
                self._coupled = verified_stream_attentions(self.model, self._example_input)
        return self._coupled

    # ------------------------------------------------------------------------------------ groups
    def groups(self) -> list[ChannelGroup]:
        """Every channel group rooted at a convolution or linear layer, in trace order.

        Like torch-pruning's ``get_all_groups``, but a group whose channels torch-pruning cannot
        follow (it raises) becomes a blocked group instead of ending the enumeration.
        """
        # The model does not change during the walk: torch-pruning's index mappings are derived once,
        # not once per group (its own search re-derives all of them for every group).
        with patched(self._tp), index_mappings_once(self._tp):
            return self._walk_groups()

    def _walk_groups(self) -> list[ChannelGroup]:
        dg, found, seen = self._dg, [], set()
        for module in list(dg.module2node):
            if not isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)) or module in seen:
                continue
            heads = attention_group(self.model, self._names.get(module, "")) if isinstance(module, nn.Linear) else None
            if heads is not None:  # per-head dimensions: a known structure the generic trace cannot follow
                seen.add(module)
                found.append(heads)
                continue
            pruner = dg.get_pruner_of_module(module)
            channels = None if pruner is None else pruner.get_out_channels(module)
            if channels is None:
                continue
            new_group()
            try:
                group = dg.get_pruning_group(module, pruner.prune_out_channels, list(range(channels)))
            except (IndexError, KeyError, ValueError, ZeroDivisionError, RuntimeError, AssertionError) as exc:
                seen.add(module)
                found.append(self._untraceable(module, channels, exc))
                continue
            seen.update(item.dep.target.module for item in group
                        if dg.is_out_channel_pruning_fn(item.dep.handler))
            found.append(self._describe(group))
        return couple_stream_attention(self.model, found, self._stream_attentions())

    def _untraceable(self, module: nn.Module, channels: int, exc: Exception) -> ChannelGroup:
        name = self._names.get(module, "")
        weight = f"{name}.weight" if name else "weight"
        member = GroupMember(weight, 0, "out", True, tuple(range(channels)), tuple(range(channels)))
        return ChannelGroup(root=name, channels=channels, members=(member,),
                            blocker=f"torch-pruning cannot follow these channels ({type(exc).__name__})")

    def _describe(self, group: Any) -> ChannelGroup:
        tp = self._tp
        root_module = group[0].dep.target.module
        root = self._names.get(root_module, "")
        channels = len(group[0].idxs)
        members: list[GroupMember] = []
        blockers: list[str] = []
        exact = True
        chunk_counts: list[int] = []
        norms: list[str] = []
        for item in group:
            node = item.dep.target
            module = node.module
            is_out = self._dg.is_out_channel_pruning_fn(item.dep.handler)
            # The model's output is an _OutputOp node, or (when the last op is a layer) a node
            # whose output nothing reads.
            if is_out and (not node.outputs or any(o.type == tp.ops.OPTYPE.OUTPUT for o in node.outputs)):
                blockers.append("feeds the model output")
            idxs, roots = item.idxs, item.root_idxs
            if any(r is None for r in roots):  # its grouped-query expand mapping drops the root channel
                blockers.append("positions whose channel torch-pruning loses (a grouped-query expand)")
                kept = [(i, r) for i, r in zip(idxs, roots, strict=True) if r is not None]
                idxs, roots = [i for i, _ in kept], [r for _, r in kept]
            found, blocker = self._members(module, node, is_out, idxs, roots)
            if node.type == tp.ops.OPTYPE.RESHAPE and not _understood_reshape(tp, self._dg, node):
                blocker = "a reshape that regroups channels (e.g. a channel shuffle)"
            elif getattr(node, "_secateurs_unmapped", False):
                blocker = "an operation whose channel sizes torch-pruning cannot infer"
            if blocker:
                blockers.append(blocker)
            owner = self._owner(module)
            if owner is not None:
                norms.append(owner)  # exact against masked norms
            elif maskable_norm(module):
                norms.append(self._names.get(module, ""))  # exact against masked LayerNorms
            elif isinstance(module, _NORMS_ACROSS_CHANNELS) or (not is_out and is_weight_standardized(module)):
                exact = False  # statistics over the channels (or over the weights reading them) change
            for member in found:
                if member.chunks > 1:
                    if member.index != member.channel:
                        blockers.append("grouped convolution behind a reshape or concatenation")
                    chunk_counts.append(member.chunks)
            members.extend(found)
        if _paired_halves(members, channels):
            chunk_counts.append(2)
        for member in members:
            split = self._equal_splits.get(member.param) if member.role == "in" else None
            if split is not None:  # the slice width is fixed by the module: equal cuts from every slice
                part, parts = split
                if channels % parts or any(c != part * (channels // parts) + i
                                           for i, c in zip(member.index, member.channel, strict=True)):
                    blockers.append("an input split into equal slices that the channels do not line up with")
                chunk_counts.append(parts)
        tied = tied_chunks(_merge(members), channels, self._sizes(members), tied_roots(group))
        if tied is None:
            blockers.append("channels share tensor positions in a pattern removal cannot follow")
        elif tied > 1:
            chunk_counts.append(tied)
        misfit = self._misfit(root_module, channels, members)
        if misfit:
            blockers.insert(0, misfit)
        chunks = math.lcm(*chunk_counts) if chunk_counts else 1
        if channels % chunks:
            blockers.append(f"{channels} channels do not split into {chunks} equal groups")
        if not any(m.producer for m in members):
            blockers.append("no layer produces these channels")
        return ChannelGroup(root=root, channels=channels, members=tuple(_merge(members)),
                            blocker=blockers[0] if blockers else None, exact=exact, chunks=chunks,
                            norms=tuple(dict.fromkeys(norms)))

    def _owner(self, module: Any) -> str | None:
        """For a free parameter of a maskable norm (a GRN's weight and bias, which the trace sees as
        parameters, not as a layer): the norm's name; else None."""
        if not isinstance(module, nn.Parameter):
            return None
        name = self._dg._param_to_name.get(module)
        if name is None or "." not in name:
            return None
        owner = name.rpartition(".")[0]
        try:
            return owner if maskable_norm(self.model.get_submodule(owner)) else None
        except AttributeError:
            return None

    def _sizes(self, members: list[GroupMember]) -> dict[tuple[str, int], int]:
        sizes = {}
        for member in members:
            try:
                sizes[(member.param, member.dim)] = self.model.get_parameter(member.param).shape[member.dim]
            except AttributeError:
                continue
        return sizes

    def _misfit(self, root_module: nn.Module, channels: int, members: list[GroupMember]) -> str | None:
        """Why torch-pruning's indices of a group cannot be right, or None when they fit the layers.

        Its index mapping loses track on some concatenations of slices of one tensor (CSP and DPN
        blocks): the root then seems to have more channels than it has, or a member's positions
        run past its tensor. Cutting such a group would remove the wrong channels or fail.
        """
        pruner = self._dg.get_pruner_of_module(root_module)
        if pruner is not None and pruner.get_out_channels(root_module) != channels:
            return "torch-pruning's channel indices do not fit the layers (a concatenation of slices)"
        for member in members:
            try:
                size = self.model.get_parameter(member.param).shape[member.dim] * member.chunks
            except AttributeError:
                continue
            if any(i >= size for i in member.index):
                return "torch-pruning's channel indices do not fit the layers (a concatenation of slices)"
        return None

    def _members(
        self, module: Any, node: Any, is_out: bool, idxs: Sequence[int], root_idxs: Sequence[int]
    ) -> tuple[list[GroupMember], str | None]:
        """The parameter dimensions of one group item, or why the item blocks removal."""
        tp = self._tp
        index, channel = tuple(int(i) for i in idxs), tuple(int(c) for c in root_idxs)

        def member(param: str, dim: int, role: str, producer: bool, chunks: int = 1) -> GroupMember:
            return GroupMember(param, dim, role, producer, index, channel, chunks)  # type: ignore[arg-type]

        if isinstance(module, nn.Parameter):
            name = self._dg._param_to_name.get(module)
            if name is None:
                return [], "a parameter that cannot be named"
            # A free parameter added to the features (position embedding, class token) follows the
            # channel: a shared group's mask gates it with the filters, and removal cuts it.
            return [member(name, node.pruning_dim % module.dim(), "out", False)], None
        prefix = self._names.get(module)
        if prefix is None:  # one of torch-pruning's placeholders for functional operations
            return [], _placeholder_blocker(tp, module)
        prefix = f"{prefix}." if prefix else ""
        for types, describe in _LAYER_MEMBERS:
            if isinstance(module, types):
                return describe(module, prefix, is_out, member)
        return [], f"unsupported layer {type(module).__name__}"

    # ----------------------------------------------------------------------------------- removal
    def remove_channels_(self, root: str, channels: Sequence[int]) -> None:
        """Physically remove channels of the group rooted at ``root`` from every coupled layer.

        Args:
            root: Name of the group's root layer (:attr:`ChannelGroup.root`).
            channels: Channels to remove, numbered as the root layer's output channels.

        Raises:
            UsageError: If the model has no layer of that name.
        """
        if not channels:
            return
        try:
            module = self.model.get_submodule(root)
        except AttributeError:
            raise UsageError(f"the model has no layer {root!r}") from None
        attn = attention_of(self.model, root) if isinstance(module, nn.Linear) else None
        if attn is not None:
            try:
                cut_head_dims_(attn, channels)
            except ValueError as exc:
                raise UsageError(f"cannot cut the head dimensions of {root}: {exc}") from None
            return
        pruner = self._dg.get_pruner_of_module(module)
        if pruner is None or module not in self._dg.module2node:
            raise UsageError(f"layer {root!r} is not part of the traced forward pass")
        new_group()
        with patched(self._tp):
            group = self._dg.get_pruning_group(module, pruner.prune_out_channels, sorted(int(c) for c in channels))
        _unique_positions_(group)
        cut_out: dict[nn.Module, set[int]] = {}  # layer -> its output channels this cut removes
        for item in group:
            if self._dg.is_out_channel_pruning_fn(item.dep.handler):
                cut_out.setdefault(item.dep.target.module, set()).update(int(i) for i in item.idxs)
        extras = [(m, sorted(idxs), per_channel_extras(m), m.out_channels) for m, idxs in cut_out.items()
                  if per_channel_extras(m)]
        heads = self._stream_heads(group)
        with patched(self._tp):
            group.prune(record_history=False)
        for layer, idxs, names, before in extras:
            _cut_extras_(layer, names, before, idxs)
        for attn, columns in heads:
            try:
                cut_stream_heads_(self.model, attn, columns)
            except ValueError as exc:
                raise UsageError(f"cannot cut the head dimensions of {attn.name}: {exc}") from None
        refresh_split_sizes_(self.model)
        refresh_view_shapes_(self.model)
        narrow_slice_widths_(self.model, cut_out)
        refresh_partial_splits_(self.model, self._split_sizes_read_by)
        self._refresh_index_mappings()

    def _split_sizes_read_by(self, layer: nn.Module) -> list[int] | None:
        """Current sizes of the ``torch.split`` whose output ``layer`` reads (torch-pruning's split
        pruner keeps them up to date), or None."""
        node = self._dg.module2node.get(layer)
        split = next((n for n in getattr(node, "inputs", ()) if n.type == self._tp.ops.OPTYPE.SPLIT), None)
        sizes = None if split is None else getattr(split.module, "split_sizes", None)
        return list(sizes) if sizes and all(isinstance(c, int) for c in sizes) else None

    def _stream_heads(self, group: Any) -> list[tuple[Any, list[int]]]:
        """The stream attentions whose input columns the group cuts (the same columns in each of
        their projections), with those columns: their head dimensions go too."""
        columns: dict[str, list[int]] = {}
        for item in group:
            module = item.dep.target.module
            if isinstance(module, nn.Linear) and self._dg.is_in_channel_pruning_fn(item.dep.handler):
                columns[self._names.get(module, "")] = sorted({int(i) for i in item.idxs})
        found = []
        for attn in attentions_read_by(self._stream_attentions(), list(columns)):
            cut = [columns.get(attn.layer(child)) for child, _ in attn.projections]
            if cut[0] is not None and all(c == cut[0] for c in cut):
                found.append((attn, cut[0]))
        return found

    def _refresh_index_mappings(self) -> None:
        """Re-derive the slice offsets of splits and concatenations from their current widths.

        torch-pruning computes them once, when the graph is built, and its split and concat pruners
        update only the sizes: after one group is cut, the next group's channels would be mapped
        through the old offsets (into the wrong slice, or past the end).
        """
        tp, dg = self._tp, self._dg
        kinds = (tp.ops.OPTYPE.SPLIT, tp.ops.OPTYPE.CONCAT)
        nodes = [node for node in dg.module2node.values() if node.type in kinds]
        if not nodes:
            return
        for node in nodes:
            sizes = getattr(node.module, "split_sizes", None) if node.type == tp.ops.OPTYPE.SPLIT else None
            # A split whose sizes torch-pruning could not infer (None) keeps the offsets it has.
            if sizes and all(isinstance(s, int) for s in sizes) and getattr(node.module, "offsets", None) is not None:
                node.module.offsets = [0, *itertools.accumulate(sizes)]
        with patched(tp), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its shape inference warns on deep recursion
            for node in nodes:
                mapping = tp.dependency.index_mapping
                update = mapping.update_split_index_mapping if node.type == tp.ops.OPTYPE.SPLIT \
                    else mapping.update_concat_index_mapping
                update(dg, node)

    def out_channels(self, root: str) -> int | None:
        """Output channels of a layer as torch-pruning counts them (None if not a prunable layer)."""
        try:
            module = self.model.get_submodule(root)
        except AttributeError:
            return None
        pruner = self._dg.get_pruner_of_module(module)
        return None if pruner is None else pruner.get_out_channels(module)


def _unique_positions_(group: Any) -> None:
    """Each position once per item: an item reached from several tied channels (one position carrying
    channels ``c`` and ``C + c``) lists it once per channel, and torch-pruning's layer functions count
    the list's length as the number of channels to remove."""
    for i, item in enumerate(group):
        unique = list(dict.fromkeys(int(k) for k in item.idxs))
        if len(unique) != len(item.idxs):
            roots = list(getattr(item, "root_idxs", ()) or ())
            group[i] = type(item)(item.dep, unique)
            group[i].root_idxs = roots


@torch.no_grad()
def _cut_extras_(layer: nn.Module, names: list[str], before: int, removed: Sequence[int]) -> None:
    """Cut a convolution's extra per-output-channel parameters as torch-pruning cut its weight."""
    gone = set(int(i) for i in removed)
    keep = torch.tensor([i for i in range(before) if i not in gone], dtype=torch.long)
    for name in names:
        old = layer._parameters[name]
        layer._parameters[name] = nn.Parameter(old.index_select(0, keep.to(old.device)).clone(),
                                               requires_grad=old.requires_grad)


def _conv_members(module: Any, prefix: str, is_out: bool, member: Any) -> tuple[list[GroupMember], str | None]:
    if module.transposed:
        return [], "transposed convolution"
    if module.groups == module.out_channels and module.out_channels > 1:
        # Depthwise: its input and output channels are the same channels, so it produces them too.
        return _with_bias(module, prefix, member), None
    if is_out:
        return _with_bias(module, prefix, member, module.groups), None
    return [member(prefix + "weight", 1, "in", False, module.groups)], None


def _with_bias(module: Any, prefix: str, member: Any, chunks: int = 1) -> list[GroupMember]:
    found = [member(prefix + "weight", 0, "out", True, chunks)]
    if getattr(module, "bias", None) is not None:
        found.append(member(prefix + "bias", 0, "out", False, chunks))
    # e.g. the gain of a weight-standardized convolution, cut with the weight
    found.extend(member(prefix + name, 0, "out", False, chunks) for name in per_channel_extras(module))
    return found


def _linear_members(module: Any, prefix: str, is_out: bool, member: Any) -> tuple[list[GroupMember], str | None]:
    return (_with_bias(module, prefix, member) if is_out else [member(prefix + "weight", 1, "in", False)]), None


def _norm_members(module: Any, prefix: str, is_out: bool, member: Any) -> tuple[list[GroupMember], str | None]:
    # BatchNorm, InstanceNorm, GroupNorm, LayerNorm: per-channel scale and shift follow the channel.
    if isinstance(module, nn.LayerNorm) and len(module.normalized_shape) != 1:
        return [], "LayerNorm over several dimensions"
    chunks = module.num_groups if isinstance(module, nn.GroupNorm) else 1
    return [member(prefix + n, 0, "out", False, chunks) for n in ("weight", "bias")
            if getattr(module, n, None) is not None], None


def _prelu_members(module: Any, prefix: str, is_out: bool, member: Any) -> tuple[list[GroupMember], str | None]:
    return ([member(prefix + "weight", 0, "out", False)] if module.num_parameters > 1 else []), None


def _embedding_members(module: Any, prefix: str, is_out: bool, member: Any) -> tuple[list[GroupMember], str | None]:
    return [member(prefix + "weight", 1, "out", True)], None


def _lstm_members(module: Any, prefix: str, is_out: bool, member: Any) -> tuple[list[GroupMember], str | None]:
    # An LSTM reading the channels (Sequencer's token mixers) reads them through its input weights
    # only: those columns go. Its own hidden units are not followed.
    if is_out:
        return [], "an LSTM's hidden units"
    if module.num_layers != 1:
        return [], "a multi-layer LSTM"
    suffixes = ("", "_reverse") if module.bidirectional else ("",)
    return [member(f"{prefix}weight_ih_l0{s}", 1, "in", False) for s in suffixes], None


def _attention_members(module: Any, prefix: str, is_out: bool, member: Any) -> tuple[list[GroupMember], str | None]:
    return [], "multi-head attention (the head width would change)"


_NORMS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.GroupNorm, nn.LayerNorm)
_LAYER_MEMBERS: tuple[tuple[Any, Any], ...] = (
    (nn.modules.conv._ConvNd, _conv_members),
    (nn.Linear, _linear_members),
    (_NORMS, _norm_members),
    (nn.PReLU, _prelu_members),
    (nn.Embedding, _embedding_members),
    (nn.LSTM, _lstm_members),
    (nn.MultiheadAttention, _attention_members),
)


def _understood_reshape(tp: Any, dg: Any, node: Any) -> bool:
    """Whether torch-pruning's channel indices stay right through a reshape.

    They do for a flatten of ``(N, C, H, W)`` into features (torch-pruning maps channel ``c`` to
    features ``c*H*W ...``), and for reshapes that keep the channel dimension (dimension 1, or the
    last one for channels-last tensors such as a linear layer's ``(B, L, C)`` input) and only merge or
    split the others. A channel shuffle or a split into attention heads regroups channels.
    """
    flatten = tp.dependency.index_mapping._FlattenIndexMapping
    if any(isinstance(m, flatten) for dep in node.dependencies for m in dep.index_mapping):
        return True
    if getattr(node, "_secateurs_unflatten", None):  # (B, P*C, ...) -> (B, P, C, ...): tp_compat fix 10
        return True
    if _inside_linear(node):
        return True
    shapes = view_shapes(node.grad_fn)
    if shapes is None:
        return False
    before, after = shapes
    if len(before) == 4 and len(after) == 2 and before[2] * before[3] == 1:
        return True  # (N, C, 1, 1) -> (N, C)
    if _one_axis(before) is not None and _one_axis(before) == _one_axis(after):
        # A vector given broadcast axes (layer scale: gamma.reshape(1, -1, 1, 1)) or losing them:
        # its entries stay in order along the one non-trivial axis.
        return True
    channels = next((c for c in (tp.dependency.shape_infer.infer_out_channels_recursively(dg, n, [0])
                                 for n in node.inputs) if c), None)
    if channels is None or len(before) < 2 or len(after) < 2:
        return False
    keeps_dim1 = before[1] == after[1] == channels and math.prod(before[2:]) == math.prod(after[2:])
    return keeps_dim1 or before[-1] == after[-1] == channels


def _inside_linear(node: Any) -> bool:
    """Whether a reshape is the view of a matrix product that a linear layer makes of its own output.

    A linear layer on a non-contiguous 3-D input (``x.flatten(2).transpose(1, 2)`` in PVT-v2's and
    SegFormer's MLPs) runs as reshape, ``mm`` with its weight, a view back to 3-D, then the bias
    add, which is where torch-pruning places the layer. It reads the ``mm`` as element-wise, so the
    layer's input channels seem to run through the view of its output: the view is the layer's
    own, and the layer's input channels are where torch-pruning says.
    """
    if len(node.outputs) != 1 or not isinstance(node.outputs[0].module, nn.Linear) or not node.inputs:
        return False
    weight = node.outputs[0].module.weight

    def own_weight(n: Any) -> bool:  # the transpose of the layer's own weight
        edges = getattr(n.grad_fn, "next_functions", ())
        return type(n.grad_fn).__name__ == "TBackward0" and any(
            getattr(fn, "variable", None) is weight for fn, _ in edges)

    return all(type(n.grad_fn).__name__ in ("MmBackward0", "AddmmBackward0") and any(own_weight(i) for i in n.inputs)
               for n in node.inputs)


def _one_axis(shape: list[int]) -> int | None:
    """The size of the only axis of ``shape`` longer than 1, or None when there are several (or none)."""
    long = [d for d in shape if d != 1]
    return long[0] if len(long) == 1 else None


def _paired_halves(members: list[GroupMember], channels: int) -> bool:
    """Whether the layers reading a group read one half of its channels only: a gated (GLU) unit.

    ``a, b = x.chunk(2); y = a * act(b)`` feeds channel ``c`` and channel ``c + C/2`` into the
    same position of the next layer, and torch-pruning numbers that position by one of them only. The
    two halves are one channel each: removing one removes the other (it would cut the shared
    position), so the group is treated as two tied chunks.
    """
    readers = [m for m in members if m.role == "in"]
    if not readers or channels % 2:
        return False
    read = {c for m in readers for c in m.channel}
    half = channels // 2
    return read in (set(range(half)), set(range(half, channels)))


def _placeholder_blocker(tp: Any, module: Any) -> str | None:
    ops = tp.ops
    if isinstance(module, ops._OutputOp):
        return "feeds the model output"
    if isinstance(module, ops._CustomizedOp):
        return "a customised layer"
    if isinstance(module, ops._ElementWiseOp) and str(module._grad_fn) == "Unknown":
        return "an unknown operation"
    return None


def _merge(members: list[GroupMember]) -> list[GroupMember]:
    """One member per (param, dim): a layer reached twice (e.g. a shared block) lists its positions once."""
    merged: dict[tuple[str, int], GroupMember] = {}
    for m in members:
        key = (m.param, m.dim)
        if key not in merged:
            merged[key] = m
            continue
        old = merged[key]
        pairs = dict.fromkeys(zip(old.index, old.channel, strict=True))
        pairs.update(dict.fromkeys(zip(m.index, m.channel, strict=True)))
        index, channel = zip(*pairs, strict=True) if pairs else ((), ())
        merged[key] = GroupMember(old.param, old.dim, old.role, old.producer or m.producer, tuple(index),
                                  tuple(channel), max(old.chunks, m.chunks))
    return list(merged.values())


def coupled_channel_groups(model: nn.Module, example_input: Any) -> list[ChannelGroup]:
    """The model's coupled channel groups (residual adds, concatenation, grouped convs, norms).

    Args:
        model: The model. Its weights and modes are left unchanged.
        example_input: One input tensor of the model, or a tuple of positional inputs (a batch of 1
            at the real image size is enough).

    Returns:
        One :class:`ChannelGroup` per set of coupled channels, each rooted at a convolution or
        linear layer; :attr:`ChannelGroup.blocker` says where physical removal is impossible.
    """
    return ChannelGraph(model, example_input).groups()
