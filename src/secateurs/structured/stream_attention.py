"""Attention whose head width follows the residual stream: one group with the embedding dimension.

Several timm attention modules (ConViT's GPSA and MHSA, CaiT's talking-heads and class attention,
DaViT's and GCViT's window attention) take the head width from their input instead of storing it:
``qkv(x).reshape(B, N, 3, heads, C // heads)`` with ``C = x.shape[-1]``, and ``reshape(B, N, C)`` of
the heads' output. Removing channels of the residual stream (the embedding dimension) then changes
the head width too, and cutting the stream alone breaks the model: q, k and v keep ``C`` rows each.

So the stream channels and the head dimensions are cut together. Stream channel ``p`` (column ``p``
of the attention's input projections) goes with dimension ``p % head_dim`` of head ``p // head_dim``
of q, k and v (rows ``s*C + p`` of a fused projection) and with column ``p`` of ``proj``; the group's
chunks become a multiple of the heads, so every head loses the same offsets and keeps one width. In
the masked model those rows are masked with the stream's filters (they are producers of the group):
a zero dimension of q and k adds nothing to a score, a zero dimension of v nothing to the output, so
removing them is exact once the scores keep their scale. When the module makes its own query, its
rows are multiplied by ``f = sqrt(new / old head_dim)`` and ``scale`` divided by ``f``, which keeps
``q·k·scale`` equal for an explicit scale and for the fused kernel's default alike; a query that
comes from elsewhere (GCViT's global query, itself stream channels) keeps the stored scale.

Modules are recognised by their attributes (``num_heads``, a square ``proj``, input projections
named ``qkv``/``qk``/``kv``/``q``/``k``/``v`` that read the stream and make whole multiples of it);
ViT-style attention that stores ``head_dim`` is left to :mod:`secateurs.structured.attention_heads`,
whose head-dimension group is independent of the stream.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from secateurs.structured.attention_heads import attention_of
from secateurs.structured.groups import ChannelGroup, GroupMember

__all__ = [
    "StreamAttention",
    "attentions_read_by",
    "couple_stream_attention",
    "cut_stream_heads_",
    "stream_attention",
    "stream_head_share",
]

#: Input projections, and the role of each block of ``C`` rows they make.
_PROJECTIONS = (("qkv", "qkv"), ("qk", "qk"), ("kv", "kv"), ("q", "q"), ("k", "k"), ("v", "v"))


@dataclass(frozen=True)
class StreamAttention:
    """An attention module whose head width is its input width over its heads.

    Attributes:
        name: Module name.
        heads: Number of heads.
        width: Input (stream) width ``C``.
        projections: ``(child name, roles)`` of each input projection: ``roles[s]`` is what rows
            ``s*C ... (s+1)*C`` are (``"q"``, ``"k"`` or ``"v"``).
    """

    name: str
    heads: int
    width: int
    projections: tuple[tuple[str, str], ...]

    def layer(self, child: str) -> str:
        return f"{self.name}.{child}" if self.name else child


def stream_attention(model: nn.Module, name: str) -> StreamAttention | None:
    """The module ``name`` as a :class:`StreamAttention`, or None when it is not one."""
    attn = model.get_submodule(name)
    heads, proj = getattr(attn, "num_heads", None), getattr(attn, "proj", None)
    if not isinstance(heads, int) or isinstance(heads, bool) or heads < 1 or not isinstance(proj, nn.Linear):
        return None
    width = proj.in_features
    if proj.out_features != width or width % heads or width // heads < 2:
        return None
    found, roles = [], ""
    for child, letters in _PROJECTIONS:
        layer = getattr(attn, child, None)
        if not isinstance(layer, nn.Linear):
            continue
        if layer.in_features != width or layer.out_features % width:
            return None
        blocks = layer.out_features // width
        if child == "qkv" and blocks == 2:
            letters = "kv"  # a fused projection of two blocks beside an outside query (GCViT's global attention)
        if blocks != len(letters):
            return None
        found.append((child, letters))
        roles += letters
    if sorted(roles) not in (sorted("qkv"), sorted("kv")):
        return None
    if "qkv" in dict(found) and attention_of(model, f"{name}.qkv" if name else "qkv") is not None:
        return None  # stores its head width: its own head-dimension group
    return StreamAttention(name, heads, width, tuple(found))


def _stream_attentions(model: nn.Module) -> list[StreamAttention]:
    return [found for name, _ in model.named_modules() if (found := stream_attention(model, name)) is not None]


def couple_stream_attention(model: nn.Module, groups: list[ChannelGroup]) -> list[ChannelGroup]:
    """The groups with every :class:`StreamAttention`'s head dimensions joined to the stream group
    that its input projections read (see the module docstring); the groups rooted at those
    projections (blocked: their reshape into heads) are dropped."""
    attentions = _stream_attentions(model)
    if not attentions:
        return groups
    groups = list(groups)
    dropped: set[str] = set()
    for attn in attentions:
        position = _stream_group(groups, attn)
        if position is None:
            continue
        group = groups[position]
        members = list(group.members)
        everything = tuple(range(attn.width))
        for child, letters in attn.projections:
            layer = attn.layer(child)
            rows = tuple(s * attn.width + p for s in range(len(letters)) for p in everything)
            channels = everything * len(letters)
            members.append(GroupMember(f"{layer}.weight", 0, "out", True, rows, channels))
            if isinstance(model.get_submodule(layer).bias, torch.Tensor):
                members.append(GroupMember(f"{layer}.bias", 0, "out", False, rows, channels))
            dropped.add(layer)
        members.append(GroupMember(f"{attn.layer('proj')}.weight", 1, "in", False, everything, everything))
        chunks = math.lcm(group.chunks, attn.heads)
        blocker = group.blocker
        if blocker is None and group.channels % chunks:
            blocker = f"{group.channels} channels do not split into {chunks} equal groups"
        groups[position] = replace(group, members=tuple(members), chunks=chunks, blocker=blocker)
    return [g for g in groups if g.root not in dropped]


def _stream_group(groups: list[ChannelGroup], attn: StreamAttention) -> int | None:
    """Index of the group whose channel ``p`` is input column ``p`` of every projection of ``attn``."""
    found = None
    everything = tuple(range(attn.width))
    for child, _ in attn.projections:
        weight = f"{attn.layer(child)}.weight"
        hit = [(i, m) for i, g in enumerate(groups) for m in g.members
               if m.param == weight and m.dim == 1 and m.role == "in"]
        if len(hit) != 1:
            return None
        position, member = hit[0]
        if groups[position].channels != attn.width or member.index != everything or member.channel != everything:
            return None
        if found is not None and found != position:
            return None
        found = position
    return found


def attentions_read_by(model: nn.Module, layers: Sequence[str]) -> list[StreamAttention]:
    """The stream attentions whose input projections are among ``layers``."""
    names = set(layers)
    return [a for a in _stream_attentions(model) if any(a.layer(c) in names for c, _ in a.projections)]


@torch.no_grad()
def cut_stream_heads_(model: nn.Module, attn: StreamAttention, removed: Sequence[int]) -> None:
    """Cut the head dimensions that follow removed stream channels (after the stream's own cut).

    Args:
        model: The model (its stream already cut: the projections' input columns are gone).
        attn: The attention module, as found before the cut.
        removed: The removed stream channels (columns of the projections' input before the cut).

    Raises:
        ValueError: If the channels are not the same offsets in every head, or would leave none.
    """
    module = model.get_submodule(attn.name)
    old = attn.width // attn.heads
    offsets = sorted({int(p) % old for p in removed})
    if {int(p) for p in removed} != {h * old + d for h in range(attn.heads) for d in offsets} or len(offsets) >= old:
        raise ValueError("stream channels must leave the same offsets in every head, and one must stay")
    kept = torch.tensor([p for p in range(attn.width) if p % old not in offsets])
    new = old - len(offsets)
    factor = math.sqrt(new / old)
    owns_query = any("q" in letters for _, letters in attn.projections)
    for child, letters in attn.projections:
        layer = module.get_submodule(child)
        rows = torch.cat([s * attn.width + kept for s in range(len(letters))])
        weight = layer.weight[rows.to(layer.weight.device)].clone()
        bias = layer.bias[rows.to(layer.weight.device)].clone() if layer.bias is not None else None
        for s, role in enumerate(letters):
            if role == "q":  # q·k over fewer dimensions, scaled by the new 1/sqrt(head_dim)
                weight[s * len(kept):(s + 1) * len(kept)] *= factor
                if bias is not None:
                    bias[s * len(kept):(s + 1) * len(kept)] *= factor
        layer.weight = nn.Parameter(weight, requires_grad=layer.weight.requires_grad)
        if bias is not None:
            layer.bias = nn.Parameter(bias, requires_grad=layer.bias.requires_grad)
        layer.out_features = weight.shape[0]
    proj = module.proj
    proj.weight = nn.Parameter(proj.weight[:, kept.to(proj.weight.device)].clone(), requires_grad=proj.weight.requires_grad)
    proj.in_features = len(kept)
    if isinstance(getattr(module, "head_dim", None), int):
        module.head_dim = new
    if isinstance(getattr(module, "dim", None), int) and module.dim == attn.width:
        module.dim = len(kept)
    if owns_query and isinstance(getattr(module, "scale", None), float):
        module.scale = module.scale / factor  # new ** -0.5 for the usual 1/sqrt(head_dim)


def stream_head_share(model: nn.Module, groups: Sequence[ChannelGroup], removed: dict[str, int]) -> dict[str, tuple[int, int]]:
    """Stream attention module name -> (kept, total) head width, where its group loses channels.

    Args:
        model: The unshrunk model.
        groups: Its groups (from :func:`couple_stream_attention`).
        removed: Group root -> number of channels removed.
    """
    owner = {(m.param, m.dim): g for g in groups for m in g.members}
    kept = {}
    for attn in _stream_attentions(model):
        group = owner.get((f"{attn.layer('proj')}.weight", 1))
        if group is None or (f"{attn.layer(attn.projections[0][0])}.weight", 0) not in group.params:
            continue
        n = removed.get(group.root, 0)
        if n:
            kept[attn.name] = (attn.width - n, attn.width)
    return kept
