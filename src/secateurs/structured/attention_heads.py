"""Per-head dimensions of multi-head self-attention as a channel group that shrinks exactly.

timm's ``Attention`` (ViT, DeiT, EVA without rotary embeddings...) computes
``qkv(x).reshape(B, N, 3, heads, head_dim)``, attends per head, and projects the heads' outputs back
with ``proj``. The reshape splits channels into heads, so the generic trace blocks the group. Its
structure is known, though: dimension ``d`` of every head of q, k and v can go together, with the
columns of ``proj`` that read v's dimension ``d``. When q's and k's dimension ``d`` are zero (their
rows of ``qkv``), it adds nothing to any attention score; when v's is zero, it adds nothing to the
output: removing it is exact if the scores keep their scale. The cut therefore multiplies q's rows by
``sqrt(new / old head_dim)``, which keeps ``q·k / sqrt(head_dim)`` (the fused kernel's scale) equal,
and sets ``head_dim``, ``scale`` and ``attn_dim`` to the new width.

As a :class:`~secateurs.structured.groups.ChannelGroup`, the qkv output is ``3 * heads`` chunks of
``head_dim`` channels: removal takes the same offsets out of every chunk (all heads keep one width).
Attention modules are recognised by their attributes; anything else (query/key norms, gates, a norm
over the heads' output, rotary embeddings) is left to the generic trace, which blocks it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from secateurs.structured.groups import ChannelGroup, GroupMember

__all__ = ["attention_group", "attention_matmul_macs", "attention_of", "cut_head_dims_", "kept_head_share"]


def attention_of(model: nn.Module, qkv_name: str) -> nn.Module | None:
    """The attention module whose fused ``qkv`` projection is ``qkv_name``, when it can shrink exactly."""
    parent_name, _, child = qkv_name.rpartition(".")
    if child != "qkv":
        return None
    attn = model.get_submodule(parent_name)
    heads, head_dim = getattr(attn, "num_heads", None), getattr(attn, "head_dim", None)
    qkv, proj = getattr(attn, "qkv", None), getattr(attn, "proj", None)
    if not (isinstance(heads, int) and isinstance(head_dim, int) and isinstance(qkv, nn.Linear)
            and isinstance(proj, nn.Linear) and hasattr(attn, "fused_attn") and hasattr(attn, "scale")):
        return None
    width = heads * head_dim
    plain = all(isinstance(getattr(attn, name, nn.Identity()), nn.Identity) for name in ("q_norm", "k_norm", "norm"))
    if qkv.out_features != 3 * width or proj.in_features != width or not plain or getattr(attn, "gate", None):
        return None
    if head_dim < 2 or any(hasattr(attn, name) for name in ("rope", "rotary_emb", "rel_pos")):
        return None
    return attn


def attention_group(model: nn.Module, qkv_name: str) -> ChannelGroup | None:
    """The head-dimension group rooted at ``qkv_name`` (see the module docstring), or None."""
    attn = attention_of(model, qkv_name)
    if attn is None:
        return None
    prefix = qkv_name.rpartition(".")[0]
    width = attn.num_heads * attn.head_dim
    everything = tuple(range(3 * width))
    members = [GroupMember(f"{qkv_name}.weight", 0, "out", True, everything, everything)]
    if attn.qkv.bias is not None:
        members.append(GroupMember(f"{qkv_name}.bias", 0, "out", False, everything, everything))
    members.append(GroupMember(f"{prefix}.proj.weight", 1, "in", False, tuple(range(width)),
                               tuple(2 * width + i for i in range(width))))
    return ChannelGroup(root=qkv_name, channels=3 * width, members=tuple(members), chunks=3 * attn.num_heads)


@torch.no_grad()
def cut_head_dims_(attn: nn.Module, removed: Sequence[int]) -> None:
    """Remove per-head dimensions from an attention module, in place.

    Args:
        attn: A module accepted by :func:`attention_of`.
        removed: Channels of the group (qkv output channels): the same offsets in every head of q, k
            and v.

    Raises:
        ValueError: If the channels are not the same offsets in every chunk, or would leave no dimension.
    """
    heads, old = attn.num_heads, attn.head_dim
    width = heads * old
    offsets = sorted({int(c) % old for c in removed})
    expected = {s * width + h * old + d for s in range(3) for h in range(heads) for d in offsets}
    if set(int(c) for c in removed) != expected or len(offsets) >= old:
        raise ValueError("head dimensions must be removed at the same offsets in every head of q, k and v, "
                         "and at least one must stay")
    keep = [d for d in range(old) if d not in offsets]
    new = len(keep)
    rows = torch.tensor([s * width + h * old + d for s in range(3) for h in range(heads) for d in keep])
    cols = torch.tensor([h * old + d for h in range(heads) for d in keep])
    qkv, proj = attn.qkv, attn.proj
    weight = qkv.weight[rows.to(qkv.weight.device)].clone()
    bias = qkv.bias[rows.to(qkv.weight.device)].clone() if qkv.bias is not None else None
    # q·k over fewer dimensions, scaled by the new 1/sqrt(head_dim): q's rows make up the difference.
    factor = math.sqrt(new / old)
    weight[: heads * new] *= factor
    if bias is not None:
        bias[: heads * new] *= factor
    qkv.weight = nn.Parameter(weight, requires_grad=qkv.weight.requires_grad)
    if bias is not None:
        qkv.bias = nn.Parameter(bias, requires_grad=qkv.bias.requires_grad)
    qkv.out_features = 3 * heads * new
    proj.weight = nn.Parameter(proj.weight[:, cols.to(proj.weight.device)].clone(),
                               requires_grad=proj.weight.requires_grad)
    proj.in_features = heads * new
    attn.head_dim = new
    attn.scale = new ** -0.5
    if isinstance(getattr(attn, "attn_dim", None), int):
        attn.attn_dim = heads * new


def kept_head_share(model: nn.Module, groups: Sequence[ChannelGroup], removed: dict[str, int]) -> dict[str, tuple[int, int]]:
    """Attention module name -> (kept, total) channels of its head-dimension group, where some go.

    Args:
        model: The unshrunk model.
        groups: Its groups.
        removed: Group root -> number of channels removed.
    """
    kept = {}
    for group in groups:
        n = removed.get(group.root, 0)
        if n and attention_of(model, group.root) is not None:
            kept[group.root.rpartition(".")[0]] = (group.channels - n, group.channels)
    return kept


def attention_matmul_macs(model: nn.Module, example_input: Any, names: Sequence[str]) -> dict[str, int]:
    """MACs of the named attention modules besides their layers (the q·k and weights·v products,
    which scale with ``head_dim``), on one forward pass."""
    from torch.utils.flop_counter import FlopCounterMode

    from secateurs.metrics.flops import _frozen_parameters, _tracker_key

    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    counter = FlopCounterMode(display=False)
    training = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad(), counter, _frozen_parameters(model):
            model(*inputs)
    finally:
        for module, mode in training:
            module.training = mode
    counts = counter.get_flop_counts()

    def total(fqn: str) -> int:
        return sum(counts.get(_tracker_key(model, fqn), {}).values())

    def own(name: str) -> int:
        # The module's MACs less those of the layers inside it (projections, talking heads, a relative
        # position MLP called through a method of its parent...): each outermost one that counts.
        counted: list[str] = []
        rest = total(name)
        for sub, _ in model.get_submodule(name).named_modules():
            if not sub or any(sub.startswith(f"{c}.") for c in counted):
                continue
            macs = total(f"{name}.{sub}" if name else sub)
            if macs:
                rest -= macs
                counted.append(sub)
        return rest

    return {name: own(name) // 2 for name in names}
