"""The binder: puts a method's masks on a model, one per target weight or one per shared group.

A pruning method only says how to build the mask of one weight (``make_parametrization``); the
binder decides where the masks go and keeps the bookkeeping that a coupled channel group needs (see
:mod:`secateurs.structured.coupled_masks`): the shared gate, a :class:`SharedGateMask` on every
tensor of the group, the hooks that bracket each forward pass. Methods then read every weight the
same way (:meth:`MaskBinder.weights`: a layer's weight, or a shared group's group weight) and change
weights through :meth:`MaskBinder.scale_weights_`, never knowing whether a mask is shared.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from secateurs.core.granularity import Granularity
from secateurs.core.masks import MaskSet
from secateurs.core.parametrize import MaskParametrization, attach_, original_name, original_tensor, squash_
from secateurs.core.targets import Target
from secateurs.structured.coupled_masks import (
    SharedGate,
    SharedGateMask,
    SharedGroup,
    install_pass_hooks,
    plan_shared_groups,
    remove_pass_hooks,
)
from secateurs.structured.groups import ChannelGroup
from secateurs.structured.masked_norm import freeze_masked_norms_, install_masked_norms_, maskable_norm

__all__ = ["MakeMask", "MaskBinder"]

#: Builds the mask of one target from its (group) weight: a method's ``make_parametrization``.
MakeMask = Callable[[Target, Tensor], MaskParametrization]


class MaskBinder:
    """The masks of one method on one model.

    Attributes:
        parametrizations: The method's masks by key: a target weight's name, or a shared group's name
            (its root weight).
        shared_groups: Shared groups by key, with their shared gates.
    """

    def __init__(self) -> None:
        self.model: nn.Module | None = None
        self.parametrizations: dict[str, MaskParametrization] = {}
        self.shared_groups: dict[str, tuple[SharedGroup, SharedGate]] = {}
        self._hooks: list[RemovableHandle] = []

    @staticmethod
    def plan(model: nn.Module, targets: Sequence[Target],
             channel_groups: Sequence[ChannelGroup] | None) -> tuple[list[SharedGroup], list[Target]]:
        """Split ``targets`` into shared groups and the weights that keep a mask of their own.

        Without ``channel_groups`` every target keeps its own mask.
        """
        if channel_groups is None:
            return [], list(targets)
        shapes = {n: p.shape for pn, p in model.named_parameters() if (n := original_name(pn)) is not None}
        return plan_shared_groups(channel_groups, targets, shapes)

    def bind(self, model: nn.Module, shared_groups: Sequence[SharedGroup], own: Sequence[Target], make: MakeMask) -> None:
        """Put the masks on ``model``: the shared groups' first (in order), then every other target's.

        ``make`` is called once per key, in that order (a method drawing random initial state from
        its generator draws it in a fixed order).
        """
        if self.model is not None:
            raise RuntimeError("these masks are already bound to a model")
        device = next(iter(model.parameters())).device
        self.model = model
        for group in shared_groups:
            self._bind_shared_group(model, group, make, device)
        for t in own:
            weight = model.get_parameter(t.name)
            p = make(t, weight)
            attach_(model, t.name, p.to(weight.device))
            self.parametrizations[t.name] = p
        if self.shared_groups:
            self._hooks = install_pass_hooks(model, [shared for _, shared in self.shared_groups.values()])
        # LayerNorms that see a shared group normalise over its kept channels only (masked == shrunk).
        install_masked_norms_(model, dict.fromkeys(_masked_norm_names(model, shared_groups)))

    def _bind_shared_group(self, model: nn.Module, group: SharedGroup, make: MakeMask, device: torch.device) -> None:
        shared_params = {m.param for g, _ in self.shared_groups.values() for m in g.producers}
        rows = [group.rows(member).to(device) for member in group.producers]  # once, not at every step
        held = [None if (u := group.held_units(member)) is None else u.to(device) for member in group.producers]
        root = group.producers[0].param

        def group_weight() -> Tensor:
            return group.group_weight(lambda name: original_tensor(model, name), rows, held)

        mask = make(group.target, group_weight()).to(device)
        shared = SharedGate(mask, group_weight, stand_in=lambda: original_tensor(model, root))
        for member in group.members:
            shape = original_tensor(model, member.param).shape
            follower = SharedGateMask(shared, member, shape, units=group.units, chunks=group.chunks,
                                         owner=member.param == group.name)
            # A norm after a concatenation follows several groups, and a filter bank may produce the
            # channels of several (at different rows): their masks chain on its tensors.
            attach_(model, member.param, follower.to(device), chain=member.columns is None or member.param in shared_params)
        self.parametrizations[group.name] = mask
        self.shared_groups[group.name] = (group, shared)

    def weights(self) -> Iterator[tuple[str, MaskParametrization, Tensor]]:
        """``(key, parametrization, weight)``: the original weight, or a shared group's group weight.

        A group weight is a fresh tensor: change weights in place through :meth:`scale_weights_`.
        """
        assert self.model is not None, "attach the method to a model first"
        for name, p in self.parametrizations.items():
            group = self.shared_groups.get(name)
            yield name, p, (group[1].weight() if group is not None else original_tensor(self.model, name))

    @torch.no_grad()
    def scale_weights_(self, name: str, factor: Tensor | float) -> None:
        """Multiply the weights behind key ``name`` by ``factor`` in place: one weight, or every filter
        bank of a shared group (followers take no scale: see ``MaskParametrization.follower_gate``)."""
        assert self.model is not None, "attach the method to a model first"
        group = self.shared_groups.get(name)
        if group is None:
            weight = original_tensor(self.model, name)
            weight.mul_(torch.as_tensor(factor, dtype=weight.dtype, device=weight.device))
            return
        for member in group[0].producers:  # filter banks: dim 0
            weight = original_tensor(self.model, member.param)
            per_unit = torch.full((group[0].units,), float(factor), dtype=weight.dtype, device=weight.device)
            weight.mul_(member.spread(per_unit).reshape(-1, *[1] * (weight.dim() - 1)))

    @torch.no_grad()
    def hard_masks(self, granularity: Granularity, targets: Sequence[Target]) -> MaskSet:
        """Deterministic boolean masks of every target in the current state.

        A shared group's mask is written onto each of its filter banks (the targets), at the positions
        of its channels.
        """
        masks: dict[str, Tensor] = {}
        for name, p, w in self.weights():
            unit = p.hard_mask(w)
            group = self.shared_groups.get(name)
            if group is None:
                masks[name] = unit
                continue
            for member in group[0].producers:  # rows outside the group spread as True
                spread = member.spread(unit.to(torch.bool))
                masks[member.param] = spread & masks[member.param] if member.param in masks else spread
        return MaskSet.from_masks(masks, granularity, {t.name: t.shape for t in targets})

    def squash(self) -> None:
        """Bake the hard masks into the weights and take every mask and pass hook off the model.

        The masked LayerNorms stay, fixed to the final masks' kept channels: the finalised model
        computes what the masked one did (and what the shrunk one will).
        """
        if self.model is None:
            return
        freeze_masked_norms_(self.model)
        squash_(self.model)
        self.parametrizations.clear()
        if self._hooks:
            remove_pass_hooks(self.model, self._hooks)
        self._hooks, self.shared_groups = [], {}


def _masked_norm_names(model: nn.Module, shared_groups: Sequence[SharedGroup]) -> list[str]:
    """The LayerNorms whose affine weight follows a shared group."""
    names = []
    for group in shared_groups:
        for member in group.members:
            module_name, _, attr = member.param.rpartition(".")
            if attr == "weight" and maskable_norm(model.get_submodule(module_name)):
                names.append(module_name)
    return list(dict.fromkeys(names))
