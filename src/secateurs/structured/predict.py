"""What a removal plan does to a model, computed before (and independently of) the removal.

``predict_shrunk_size`` counts parameters and MACs from the groups' parameter dimensions alone, with
no physical surgery, so ``secateurs inspect --prunability`` can say what ``secateurs shrink`` will
deliver, and the tests can hold the shrinker to it. ``zero_dead_channels_`` writes the plan into a
model in place (every coupled tensor zeroed at the removed channels): the reference the shrunk model
must match exactly.
"""

from __future__ import annotations

import copy
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from secateurs.core.masks import MaskSet
from secateurs.metrics import count_macs
from secateurs.structured.attention_heads import attention_matmul_macs, kept_head_share
from secateurs.structured.stream_attention import stream_head_share
from secateurs.structured.groups import ChannelGroup
from secateurs.structured.masked_norm import install_masked_norms_, remove_masked_norms_
from secateurs.structured.plan import RemovalPlan, plan_removal

__all__ = [
    "SizePrediction", "masked_norm_channels", "predict_from_masks", "predict_shrunk_size", "predicted_shapes",
    "reference_model", "zero_dead_channels_",
]


@dataclass(frozen=True)
class SizePrediction:
    """Parameters and MACs of a model before and after a removal plan.

    Attributes:
        params_before: Parameters of the model as it is.
        params_after: Parameters after removing the plan's channels.
        macs_before: MACs of one forward pass on the example input.
        macs_after: MACs after removal (convolutions and linear layers scale with their weights;
            other operations are counted unchanged).
    """

    params_before: int
    params_after: int
    macs_before: int
    macs_after: int


def _positions(
    groups: list[ChannelGroup], plan: RemovalPlan, model: nn.Module, which: str,
    roles: tuple[str, ...] = ("out", "in"),
) -> dict[tuple[str, int], set[int]]:
    """(param, dim) -> positions hit by the plan's removed (``which="removed"``) or dead channels,
    in the members of the given roles."""
    params = dict(model.named_parameters())
    by_root = plan.by_root()
    hit: dict[tuple[str, int], set[int]] = defaultdict(set)
    for group in groups:
        decided = by_root.get(group.root)
        chosen = decided.removed if decided is not None and which == "removed" else (
            decided.dead if decided is not None else ())
        if not chosen:
            continue
        vector = torch.zeros(group.channels, dtype=torch.bool)
        vector[list(chosen)] = True
        for member in group.members:
            if member.param in params and member.role in roles:
                size = params[member.param].shape[member.dim]
                hit[(member.param, member.dim)].update(member.tensor_positions(vector, size).tolist())
    return hit


def predicted_shapes(model: nn.Module, groups: list[ChannelGroup], plan: RemovalPlan) -> dict[str, tuple[int, ...]]:
    """Every parameter's shape once the plan's channels are removed, by name.

    Args:
        model: The unshrunk model.
        groups: Its channel groups.
        plan: The removal plan.
    """
    removed = _positions(groups, plan, model, "removed")
    shapes = {name: list(param.shape) for name, param in model.named_parameters()}
    for (name, dim), positions in removed.items():
        if name in shapes:
            shapes[name][dim] -= len(positions)
    return {name: tuple(shape) for name, shape in shapes.items()}


def predict_shrunk_size(
    model: nn.Module, groups: list[ChannelGroup], plan: RemovalPlan, example_input: Any
) -> SizePrediction:
    """Parameters and MACs the model will have once the plan's channels are removed.

    Args:
        model: The unshrunk model.
        groups: Its channel groups.
        plan: The removal plan.
        example_input: Input of the MAC count (its batch size scales the MACs).

    Returns:
        The counts before and after.
    """
    shapes = predicted_shapes(model, groups, plan)
    new_numel = {name: math.prod(shape) for name, shape in shapes.items()}
    before = sum(p.numel() for p in model.parameters())
    after = sum(new_numel.values())
    macs = count_macs(model, example_input)
    macs_after = macs.dense
    for layer in macs.per_layer:
        weight = f"{layer.name}.weight" if layer.name else "weight"
        old = model.get_parameter(weight).numel()
        # Convolution and linear MACs are (weight elements) x (output positions): they scale exactly.
        macs_after += layer.dense * new_numel.get(weight, old) // old - layer.dense
    # q·k and weights·v inside attention scale with the head width (not a layer's weight).
    removed = {g.root: len(g.removed) for g in plan.groups if g.removed}
    shares = {**kept_head_share(model, groups, removed), **stream_head_share(model, groups, removed)}
    if shares:
        products = attention_matmul_macs(model, example_input, list(shares))
        for name, (kept, total) in shares.items():
            macs_after -= products[name] - products[name] * kept // total
    return SizePrediction(before, after, macs.dense, macs_after)


def predict_from_masks(
    model: nn.Module, masks: MaskSet, example_input: Any, *, groups: list[ChannelGroup] | None = None,
    round_to: int = 1,
) -> SizePrediction:
    """Parameters and MACs after ``shrink(..., round_to=round_to)`` of a filter-masked model.

    Args:
        model: The model (masks baked in or not: only their shapes and the groups matter).
        masks: Filter-granularity masks.
        example_input: One input of the model (batch 1 gives per-image MACs).
        groups: The model's channel groups; traced from ``example_input`` when not given.
        round_to: Channel counts rounded up to multiples of this, as ``shrink`` does.

    Raises:
        UsageError: If the model cannot be traced or a mask is not filter granularity.
    """
    if groups is None:
        from secateurs.structured.graph import coupled_channel_groups

        groups = coupled_channel_groups(model, example_input)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    return predict_shrunk_size(model, groups, plan_removal(groups, masks, shapes=shapes, round_to=round_to),
                               example_input)


def masked_norm_channels(
    model: nn.Module, groups: list[ChannelGroup], plan: RemovalPlan, which: str = "removed"
) -> dict[str, torch.Tensor]:
    """LayerNorm name -> kept channels (boolean), for every LayerNorm that sees channels of the plan.

    These are the LayerNorms that must normalise over the kept channels only
    (:mod:`secateurs.structured.masked_norm`) for the model to compute what the shrunk one computes.

    Args:
        model: The unshrunk model.
        groups: Its channel groups.
        plan: The removal plan.
        which: ``"removed"`` (what the shrunk model leaves out) or ``"dead"`` (what the masks pruned).
    """
    hit = _positions(groups, plan, model, which, roles=("out",))
    kept: dict[str, torch.Tensor] = {}
    for group in groups:
        for norm in group.norms:
            weight = f"{norm}.weight" if norm else "weight"
            positions = hit.get((weight, 0))
            if positions and norm not in kept:
                vector = torch.ones(model.get_parameter(weight).shape[0], dtype=torch.bool)
                vector[sorted(positions)] = False
                kept[norm] = vector
    return kept


def reference_model(model: nn.Module, groups: list[ChannelGroup], plan: RemovalPlan) -> nn.Module:
    """A copy of ``model`` that computes what the shrunk model must compute, exactly.

    The plan's dead channels are zeroed in every coupled tensor (:func:`zero_dead_channels_`), and
    the LayerNorms that see removed channels normalise over the others only
    (:func:`masked_norm_channels`; the hooks stay on the copy).
    """
    reference = zero_dead_channels_(copy.deepcopy(model), groups, plan)
    remove_masked_norms_(reference)
    install_masked_norms_(reference, masked_norm_channels(model, groups, plan))
    return reference


@torch.no_grad()
def zero_dead_channels_(
    model: nn.Module, groups: list[ChannelGroup], plan: RemovalPlan, *, roles: tuple[str, ...] = ("out", "in")
) -> nn.Module:
    """Zero, in place, every coupled tensor at the plan's dead channels.

    Filters, biases and normalisation scales and shifts of a dead channel become zero, and so do the
    input weights of the layers reading it, so the channel contributes nothing anywhere: exactly what
    removing it does. (A filter mask alone zeroes only the filter; a following batch norm still adds
    its shift, which physical removal drops.)

    Args:
        model: The model to change.
        groups: Its channel groups.
        plan: The removal plan.
        roles: Which members to zero: ``("out",)`` zeroes the channels' values only (filters, biases,
            normalisation affines), leaving the weights that read them.

    Returns:
        ``model``.
    """
    for (name, dim), positions in _positions(groups, plan, model, "dead", roles).items():
        if positions:
            param = model.get_parameter(name)
            param.index_fill_(dim, torch.tensor(sorted(positions), device=param.device), 0.0)
    return model
