"""Attention whose head width follows the residual stream: one group with the embedding dimension.

Several timm attention modules (ConViT's GPSA and MHSA, CaiT's talking-heads and class attention,
the window attention of GCViT, NesT and Swin-V2-CR, and others in Twins, VOLO...) take the head width from their input instead of storing it:
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

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

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
    "verified_stream_attentions",
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
    dims_major: bool = False

    def layer(self, child: str) -> str:
        return f"{self.name}.{child}" if self.name else child

    def proj_column(self, p: int) -> int:
        """The column of ``proj`` that reads head dimension ``p`` (``p % head_dim`` of head
        ``p // head_dim``): the heads' outputs are concatenated head by head, or, with
        ``dims_major`` (NesT: ``permute(..., head_dim, heads)`` before the reshape), dimension by dimension."""
        head_dim = self.width // self.heads
        return (p % head_dim) * self.heads + p // head_dim if self.dims_major else p


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


def verified_stream_attentions(model: nn.Module, example_input: Any) -> list[StreamAttention]:
    """The :class:`StreamAttention` modules of ``model`` that really behave as one: cutting the first
    offset of every head from a copy of the module (with the stream's columns) reproduces the
    masked module on the input it gets in one forward pass of ``example_input``.

    The attributes say what the projections are, not how ``forward`` lays out the heads: a module
    that interleaves q, k and v per head (TinyViT), pools or normalises over the head dimensions
    (MViT-v2), or attends over the dimensions themselves (XCiT's cross-covariance attention, DaViT's
    channel attention) fails the check and keeps its own, blocked groups.
    """
    candidates = _stream_attentions(model)
    if not candidates:
        return []
    seen = _first_inputs(model, example_input, [a.name for a in candidates])
    found = []
    for attn in candidates:
        if attn.name not in seen:
            continue
        module = model.get_submodule(attn.name)
        for layout in (attn, replace(attn, dims_major=True)):
            if _cuts_exactly(module, layout, *seen[attn.name]):
                found.append(layout)
                break
    return found


def _first_inputs(model: nn.Module, example_input: Any, names: list[str]) -> dict[str, tuple[tuple, dict]]:
    """Positional and keyword inputs of the first call of each named module in one forward pass."""
    seen: dict[str, tuple[tuple, dict]] = {}

    def keep(name: str) -> Any:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            seen.setdefault(name, (args, kwargs))
        return hook

    handles = [model.get_submodule(n).register_forward_pre_hook(keep(n), with_kwargs=True) for n in names]
    modes = [(m, m.training) for m in model.modules()]
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    try:
        model.eval()
        with torch.no_grad():
            model(*inputs)
    except Exception:  # noqa: BLE001 - a model that does not run couples nothing
        return {}
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes:
            module.training = training
    return seen


@torch.no_grad()
def _cuts_exactly(module: nn.Module, attn: StreamAttention, args: tuple, kwargs: dict) -> bool:
    head_dim = attn.width // attn.heads
    removed = [h * head_dim for h in range(attn.heads)]
    kept = torch.tensor([p for p in range(attn.width) if p not in set(removed)])

    def stream(x: Any) -> bool:
        return isinstance(x, torch.Tensor) and x.is_floating_point() and x.dim() >= 2 and x.shape[-1] == attn.width

    def zeroed(x: Any) -> Any:
        if not stream(x):
            return x
        x = x.clone()
        x[..., removed] = 0
        return x

    def narrowed(x: Any) -> Any:
        return x[..., kept] if stream(x) else x

    # Random weights and inputs of the shapes seen: the answer must not depend on the model's own
    # values (a freshly built model being cut to a saved shape has other weights than the trained one).
    g = torch.Generator().manual_seed(0)

    def noise(x: Any) -> Any:
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            return torch.randn(x.shape, generator=g).to(dtype=x.dtype, device=x.device)
        return x

    args, kwargs = tuple(noise(a) for a in args), {k: noise(v) for k, v in kwargs.items()}
    try:
        masked = copy.deepcopy(module)
        masked.eval()  # not chained: some modules' train() returns None (TinyViT's attention)
        for p in masked.parameters():
            p.copy_(noise(p) * p.shape[-1] ** -0.5 if p.dim() > 1 else 0.1 * noise(p))
        cut = copy.deepcopy(masked)
        for child, letters in attn.projections:
            layer = masked.get_submodule(child)
            rows = [s * attn.width + p for s in range(len(letters)) for p in removed]
            layer.weight[rows] = 0
            if layer.bias is not None:
                layer.bias[rows] = 0
            _narrow_input_(cut.get_submodule(child), kept)
        masked.proj.weight[:, [attn.proj_column(p) for p in removed]] = 0
        _narrow_output_(cut.proj, kept)
        _cut_heads_(cut, attn, removed)
        expected = masked(*[zeroed(a) for a in args], **{k: zeroed(v) for k, v in kwargs.items()})
        got = cut(*[narrowed(a) for a in args], **{k: narrowed(v) for k, v in kwargs.items()})
    except Exception:  # noqa: BLE001 - a module the cut breaks is not one
        return False
    if not (isinstance(expected, torch.Tensor) and isinstance(got, torch.Tensor)) or expected.shape[-1] != attn.width:
        return False
    expected = expected[..., kept]
    if expected.shape != got.shape or expected.abs().max() == 0:
        return False
    return float((expected - got).abs().max()) <= 1e-4 * max(1.0, float(expected.abs().max()))


def _narrow_input_(layer: nn.Linear, kept: torch.Tensor) -> None:
    layer.weight = nn.Parameter(layer.weight[:, kept].clone())
    layer.in_features = len(kept)


def _narrow_output_(layer: nn.Linear, kept: torch.Tensor) -> None:
    layer.weight = nn.Parameter(layer.weight[kept].clone())
    if layer.bias is not None:
        layer.bias = nn.Parameter(layer.bias[kept].clone())
    layer.out_features = len(kept)


def couple_stream_attention(
    model: nn.Module, groups: list[ChannelGroup], attentions: Sequence[StreamAttention]
) -> list[ChannelGroup]:
    """The groups with the head dimensions of each of ``attentions`` (from
    :func:`verified_stream_attentions`) joined to the stream group that its input projections read
    (see the module docstring); the groups rooted at those projections (blocked: their reshape into
    heads) are dropped."""
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
        columns = tuple(attn.proj_column(p) for p in everything)
        members.append(GroupMember(f"{attn.layer('proj')}.weight", 1, "in", False, columns, everything))
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


def attentions_read_by(attentions: Sequence[StreamAttention], layers: Sequence[str]) -> list[StreamAttention]:
    """Those of ``attentions`` whose input projections are among ``layers``."""
    names = set(layers)
    return [a for a in attentions if any(a.layer(c) in names for c, _ in a.projections)]


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
    _cut_heads_(model.get_submodule(attn.name), attn, removed)


def _cut_heads_(module: nn.Module, attn: StreamAttention, removed: Sequence[int]) -> None:
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
    columns = torch.tensor(sorted(attn.proj_column(int(p)) for p in kept))
    proj.weight = nn.Parameter(proj.weight[:, columns.to(proj.weight.device)].clone(), requires_grad=proj.weight.requires_grad)
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
